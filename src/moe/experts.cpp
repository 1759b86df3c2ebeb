#include "moe/experts.hpp"

#include <stdexcept>
#include <string>

#include "kernels/activations.hpp"
#include "kernels/convert.hpp"
#include "kernels/gemm.hpp"
#include "kernels/random.hpp"

namespace furnace::moe {

using kernels::GemmDesc;
using kernels::Op;
using kernels::View2;

ExpertFFN::ExpertFFN(int experts, int d_model, int hidden, Activation act, std::int64_t max_rows,
                     memory::Arenas& arenas, const FfnGradBuffers* shared, kernels::Precision stored)
    : experts_(experts), d_(d_model), hidden_(hidden), act_(act), prec_(stored) {
  a_ = arenas.activations.view2<float>(max_rows, hidden_in());
  h_ = arenas.activations.operand(stored, max_rows, hidden_);
  if (shared) {
    // The backward views them as [rows, H1] and [rows, H]: the widths must match.
    if (std::int64_t(shared->da.extent(0)) < max_rows || int(shared->da.extent(1)) != hidden_in() ||
        std::int64_t(shared->dh.extent(0)) < max_rows || int(shared->dh.extent(1)) != hidden_)
      throw std::logic_error("ExpertFFN: the shared gradient buffers are smaller than [max_rows, H1 | H]");
    da_ = shared->da;
    dh_ = shared->dh;
  } else {
    da_ = arenas.workspace.view2<float>(max_rows, hidden_in());
    dh_ = arenas.workspace.view2<float>(max_rows, hidden_);
  }
}

void ExpertFFN::set_precision(kernels::Precision p) {
  if (h_.is_16bit() && p != h_.stored)
    throw std::logic_error(std::string("ExpertFFN: hidden activations kept in ") + kernels::precision_name(h_.stored) +
                           " cannot feed " + kernels::precision_name(p) + " GEMMs");
  prec_ = p;
}

namespace {

// One GEMM per expert: C_e (m_e x n) = op(A_e) op(B_e), where A_e, C_e are row blocks
// (or, for weight gradients, the transposed row block) and B_e is expert e's matrix.
template <class F>
void grouped(kernels::Precision p, Op op_a, Op op_b, float beta, int experts, F&& desc_of) {
  std::vector<GemmDesc<float>> group;
  group.reserve(experts);
  for (int e = 0; e < experts; ++e) group.push_back(desc_of(e));
  kernels::gemm_grouped(p, op_a, op_b, 1.0f, group, beta);
}

// The same where expert e's A is the row block of `a` from row row0(e) on (desc_of
// leaves .a unset): fp32 or 16-bit storage alike.
template <class R, class F>
void grouped(kernels::Precision p, Op op_a, Op op_b, float beta, int experts, const kernels::GemmOperand& a,
             R&& row0, F&& desc_of) {
  if (!a.is_16bit())
    return grouped(p, op_a, op_b, beta, experts, [&](int e) {
      GemmDesc<float> g = desc_of(e);
      g.a = a.f32.data() + row0(e) * a.cols();
      return g;
    });
  std::vector<GemmDesc<float, std::uint16_t>> group;
  group.reserve(experts);
  for (int e = 0; e < experts; ++e) {
    const GemmDesc<float> g = desc_of(e);
    group.push_back({.m = g.m, .n = g.n, .k = g.k, .a = a.h16.data() + row0(e) * a.cols(), .lda = g.lda, .b = g.b,
                     .ldb = g.ldb, .c = g.c, .ldc = g.ldc});
  }
  kernels::gemm_grouped(p, op_a, op_b, 1.0f, group, beta);
}

}  // namespace

void ExpertFFN::forward(kernels::View2<const float> x, const std::vector<std::int64_t>& offsets,
                        kernels::View3<const float> w1, kernels::View3<const float> w2,
                        kernels::View2<float> y) {
  forward_hidden(x, offsets, w1);
  const int d = d_, h = hidden_;
  auto m = [&](int e) { return int(offsets[e + 1] - offsets[e]); };
  auto row0 = [&](int e) { return offsets[e]; };
  // y = h @ w2
  grouped(prec_, Op::N, Op::N, 0.0f, experts_, h_, row0, [&](int e) {
    return GemmDesc<float>{.m = m(e),
                           .n = d,
                           .k = h,
                           .lda = h,
                           .b = &w2(e, 0, 0),
                           .ldb = d,
                           .c = y.data() + offsets[e] * d,
                           .ldc = d};
  });
  // 16-bit: the outputs are 16-bit values, as the dispatch carries them back (ep > 1);
  // rounded in every layout so that the layouts train alike.
  kernels::round_values(prec_, kernels::flat(y));
}

void ExpertFFN::forward_hidden(kernels::View2<const float> x, const std::vector<std::int64_t>& offsets,
                               kernels::View3<const float> w1) {
  if (static_cast<int>(offsets.size()) != experts_ + 1)
    throw std::invalid_argument("ExpertFFN::forward: offsets must have experts+1 entries");
  const std::int64_t rows = offsets[experts_];
  if (rows > static_cast<std::int64_t>(a_.extent(0)))
    throw std::invalid_argument("ExpertFFN::forward: " + std::to_string(rows) +
                                " rows exceed the planned maximum");
  offsets_ = offsets;
  const int h1 = hidden_in(), d = d_, h = hidden_;
  auto m = [&](int e) { return int(offsets[e + 1] - offsets[e]); };
  // a = x @ w1
  grouped(prec_, Op::N, Op::N, 0.0f, experts_, [&](int e) {
    return GemmDesc<float>{.m = m(e),
                           .n = h1,
                           .k = d,
                           .a = x.data() + offsets[e] * d,
                           .lda = d,
                           .b = &w1(e, 0, 0),
                           .ldb = h1,
                           .c = a_.data() + offsets[e] * h1,
                           .ldc = h1};
  });
  auto a = View2<const float>(a_.data(), rows, h1);
  // h in fp32: h_ itself, or staged in da_ (free until the backward) and rounded into h_.
  auto hv = h_.target(View2<float>(da_.data(), rows, h), rows);
  if (act_ == Activation::Gelu)
    kernels::gelu_forward<float>(kernels::flat(a), kernels::flat(hv));
  else
    kernels::swiglu_forward<float>(a, hv);
  h_.store(hv, rows);
}

void ExpertFFN::backward(kernels::View2<const float> dy, kernels::View2<const float> x,
                         kernels::View3<const float> w1, kernels::View3<const float> w2,
                         kernels::View2<float> dx, kernels::View3<float> dw1,
                         kernels::View3<float> dw2) {
  const auto& off = offsets_;
  const std::int64_t rows = off[experts_];
  const int h1 = hidden_in(), d = d_, h = hidden_;
  auto m = [&](int e) { return int(off[e + 1] - off[e]); };
  // dh = dy @ w2^T
  grouped(prec_, Op::N, Op::T, 0.0f, experts_, [&](int e) {
    return GemmDesc<float>{.m = m(e),
                           .n = h,
                           .k = d,
                           .a = dy.data() + off[e] * d,
                           .lda = d,
                           .b = &w2(e, 0, 0),
                           .ldb = d,
                           .c = dh_.data() + off[e] * h,
                           .ldc = h};
  });
  // dw2 += h^T @ dy
  grouped(prec_, Op::T, Op::N, 1.0f, experts_, h_, [&](int e) { return off[e]; }, [&](int e) {
    return GemmDesc<float>{.m = h,
                           .n = d,
                           .k = m(e),
                           .lda = h,
                           .b = dy.data() + off[e] * d,
                           .ldb = d,
                           .c = &dw2(e, 0, 0),
                           .ldc = d};
  });
  // da = act'(a) * dh
  auto a = View2<const float>(a_.data(), rows, h1);
  auto da = View2<float>(da_.data(), rows, h1);
  // kernels::fill, not Kokkos::deep_copy(da, 0): Kokkos 3.4's fill does not vectorise and
  // took as long as the GELU itself (measured 2-4x slower than fill).
  kernels::fill<float>(kernels::flat(da), 0.0f);
  auto dhv = View2<const float>(dh_.data(), rows, h);
  if (act_ == Activation::Gelu)
    kernels::gelu_backward<float>(kernels::flat(a), kernels::flat(dhv), kernels::flat(da));
  else
    kernels::swiglu_backward<float>(a, dhv, da);
  // dw1 += x^T @ da
  grouped(prec_, Op::T, Op::N, 1.0f, experts_, [&](int e) {
    return GemmDesc<float>{.m = d,
                           .n = h1,
                           .k = m(e),
                           .a = x.data() + off[e] * d,
                           .lda = d,
                           .b = da_.data() + off[e] * h1,
                           .ldb = h1,
                           .c = &dw1(e, 0, 0),
                           .ldc = h1};
  });
  // dx = da @ w1^T
  grouped(prec_, Op::N, Op::T, 0.0f, experts_, [&](int e) {
    return GemmDesc<float>{.m = m(e),
                           .n = d,
                           .k = h1,
                           .a = da_.data() + off[e] * h1,
                           .lda = h1,
                           .b = &w1(e, 0, 0),
                           .ldb = h1,
                           .c = dx.data() + off[e] * d,
                           .ldc = d};
  });
  kernels::round_values(prec_, kernels::flat(dx));  // as y in forward
}

double ExpertFFN::flops_forward_backward() const {
  const double rows = offsets_.empty() ? 0.0 : double(offsets_.back());
  // forward: 2 GEMMs; backward: 4 GEMMs of the same sizes.
  return 6.0 * rows * (double(d_) * hidden_in() + double(hidden_) * d_);
}

}  // namespace furnace::moe
