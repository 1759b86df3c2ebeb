// Causal attention as batched GEMMs (one GEMM per head, heads batched per sequence)
// around two row-wise Kokkos kernels (the causal softmax and its backward).
#include "kernels/attention.hpp"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/gemm.hpp"
#include "kernels/math.hpp"
#include "kernels/operand.hpp"
#include "kernels/rowwise.hpp"

namespace furnace::kernels {
namespace {

// Query rows [r0, r1) attend only to keys [0, r1), so every GEMM is split into row
// blocks that stop at column r1: about half the flops of the full square for long
// sequences, while blocks stay large enough for the GEMMs to run at full speed.
constexpr int kRowBlock = 128;

// Where sequence b's operands start; head h is `hd` columns further on in qkv / out
// (the batch stride of every GEMM below) and seq*seq entries further on in probs.
template <class QKV, class P, class O>
struct Layout {
  int seq, heads, d, hd;
  QKV* qkv;  // [B*seq, 3d]
  P* probs;  // [B, heads, seq, seq]
  O* out;    // [B*seq, d]: out in the forward, dout in the backward
  int ld() const { return 3 * d; }
  std::int64_t pstride() const { return std::int64_t(seq) * seq; }
  QKV* q(int b, int r) const { return qkv + (std::int64_t(b) * seq + r) * ld(); }
  QKV* k(int b) const { return q(b, 0) + d; }
  QKV* v(int b) const { return q(b, 0) + 2 * d; }
  P* p(int b, int r) const {
    return probs + std::int64_t(b) * heads * pstride() + std::int64_t(r) * seq;
  }
  O* o(int b, int r) const { return out + (std::int64_t(b) * seq + r) * d; }

  // f(b, r0, r1) for every sequence and row block, in order.
  template <class F>
  void for_each_block(int batch, F&& f) const {
    for (int b = 0; b < batch; ++b)
      for (int r0 = 0; r0 < seq; r0 += kRowBlock) f(b, r0, std::min(seq, r0 + kRowBlock));
  }
};

template <class T>
View2<T> rows_of(View4<T> p) {  // [B, heads, seq, seq] as [B*heads*seq, seq]
  const std::size_t seq = p.extent(3);
  return View2<T>(p.data(), seq ? p.size() / seq : 0, seq);
}

// In place over scores: row r is query i = r % seq; keys j > i are masked to exactly 0.
// One team per row (rowwise.hpp), its threads splitting the row's visible keys: on a
// GPU a row of seq = 2048 is then one team's coalesced work instead of one thread's
// loop; on host backends a team is one thread and this is the plain loop, same order.
template <class T>
void causal_softmax(View4<T> probs) {
  View2<T> p = rows_of(probs);
  const int seq = int(p.extent(1));
  Kokkos::parallel_for("kernels::causal_softmax", row_teams(p.extent(0)), KOKKOS_LAMBDA(const Member& t) {
    const std::int64_t r = t.league_rank();
    const int visible = int(r % seq) + 1;  // keys 0..i
    const T m = team_max<T>(t, visible, [&](int j) { return p(r, j); });
    const acc_t s = team_sum(t, visible, [&](int j) { return p(r, j) = fexp(p(r, j) - m); });
    const T inv = T(1 / s);
    team_for(t, visible, [&](int j) { p(r, j) *= inv; });
    team_for(t, seq - visible, [&](int j) { p(r, visible + j) = 0; });
  });
}

// In place over dP: dS = P * (dP - sum_j dP * P) * scale, masked keys exactly 0 (the
// dQ / dK GEMMs read the block's whole column range, diagonal block included).
template <class T>
void causal_softmax_backward(View4<const T> probs, View4<T> dprobs, T scale) {
  View2<const T> p = rows_of(probs);
  View2<T> dp = rows_of(dprobs);
  const int seq = int(p.extent(1));
  Kokkos::parallel_for("kernels::causal_softmax_backward", row_teams(p.extent(0)), KOKKOS_LAMBDA(const Member& t) {
    const std::int64_t r = t.league_rank();
    const int visible = int(r % seq) + 1;
    const T s = T(team_sum(t, visible, [&](int j) { return dp(r, j) * p(r, j); }));
    team_for(t, visible, [&](int j) { dp(r, j) = p(r, j) * (dp(r, j) - s) * scale; });
    team_for(t, seq - visible, [&](int j) { dp(r, visible + j) = 0; });
  });
}

// The batched GEMMs of attention in precision p (16-bit only for float operands). A
// std::uint16_t operand is qkv held in 16 bits (GemmOperand): p must be that format.
template <class T, class TA, class TB>
void batched(Precision p, Op op_a, Op op_b, int m, int n, int k, T alpha, const TA* a, int lda,
             std::int64_t stride_a, const TB* b, int ldb, std::int64_t stride_b, T beta, T* c, int ldc,
             std::int64_t stride_c, int batch) {
  constexpr bool any16 = std::is_same_v<TA, std::uint16_t> || std::is_same_v<TB, std::uint16_t>;
  if constexpr (any16) {
    static_assert(std::is_same_v<T, float>, "16-bit qkv with float attention only");
    gemm_strided_batched<TA, TB>(p, op_a, op_b, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc,
                                 stride_c, batch);
  } else if constexpr (std::is_same_v<T, float>) {
    gemm_strided_batched(p, op_a, op_b, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc,
                         stride_c, batch);
  } else {
    if (p != Precision::FP32) throw std::invalid_argument("attention: 16-bit GEMMs take float operands");
    gemm_strided_batched(op_a, op_b, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc,
                         stride_c, batch);
  }
}

// The three passes over qkv elements of type Q (T, or std::uint16_t when qkv is held
// in 16 bits), d = the model width.
template <class T, class Q>
void probs_impl(const Q* qkv, int d, int batch, int seq, int heads, View4<T> probs, Precision prec) {
  const int hd = d / heads;
  const Layout<const Q, T, T> L{seq, heads, d, hd, qkv, probs.data(), nullptr};
  const T scale = T(1) / fsqrt(T(hd));
  // Scores S = scale * Q K^T, only the columns each row block can see.
  L.for_each_block(batch, [&](int b, int r0, int r1) {
    batched(prec, Op::N, Op::T, r1 - r0, r1, hd, scale, L.q(b, r0), L.ld(), hd, L.k(b), L.ld(), hd, T(0),
            L.p(b, r0), seq, L.pstride(), heads);
  });
  causal_softmax(probs);
}

template <class T, class Q>
void forward_impl(const Q* qkv, int batch, int seq, int heads, View4<T> probs, View2<T> out, Precision prec) {
  const int d = int(out.extent(1)), hd = d / heads;
  const Layout<const Q, T, T> L{seq, heads, d, hd, qkv, probs.data(), out.data()};
  probs_impl(qkv, d, batch, seq, heads, probs, prec);
  // out = P V, written into each head's column slice of out.
  L.for_each_block(batch, [&](int b, int r0, int r1) {
    batched(prec, Op::N, Op::N, r1 - r0, hd, r1, T(1), L.p(b, r0), seq, L.pstride(), L.v(b), L.ld(), hd, T(0),
            L.o(b, r0), d, hd, heads);
  });
}

template <class T, class Q>
void backward_impl(const Q* qkv, View4<const T> probs, View2<const T> dout, int batch, int seq, int heads,
                   View4<T> dprobs, View2<T> dqkv, Precision prec) {
  const int d = int(dout.extent(1)), hd = d / heads;
  const Layout<const Q, const T, const T> L{seq, heads, d, hd, qkv, probs.data(), dout.data()};
  // The same offsets into the gradients: dqkv is laid out as qkv, dprobs as probs.
  const Layout<T, T, const T> G{seq, heads, d, hd, dqkv.data(), dprobs.data(), dout.data()};
  const T scale = T(1) / fsqrt(T(hd));
  L.for_each_block(batch, [&](int b, int r0, int r1) {
    // dP = dOut V^T
    batched(prec, Op::N, Op::T, r1 - r0, r1, hd, T(1), L.o(b, r0), d, hd, L.v(b), L.ld(), hd, T(0), G.p(b, r0),
            seq, L.pstride(), heads);
    // dV[0:r1] += P[r0:r1, 0:r1]^T dOut[r0:r1]
    batched(prec, Op::T, Op::N, r1, hd, r1 - r0, T(1), L.p(b, r0), seq, L.pstride(), L.o(b, r0), d, hd, T(1),
            G.v(b), L.ld(), hd, heads);
  });
  causal_softmax_backward(probs, dprobs, scale);
  L.for_each_block(batch, [&](int b, int r0, int r1) {
    // dQ[r0:r1] += dS[r0:r1, 0:r1] K[0:r1]
    batched(prec, Op::N, Op::N, r1 - r0, hd, r1, T(1), G.p(b, r0), seq, L.pstride(), L.k(b), L.ld(), hd, T(1),
            G.q(b, r0), L.ld(), hd, heads);
    // dK[0:r1] += dS[r0:r1, 0:r1]^T Q[r0:r1]
    batched(prec, Op::T, Op::N, r1, hd, r1 - r0, T(1), G.p(b, r0), seq, L.pstride(), L.q(b, r0), L.ld(), hd, T(1),
            G.k(b), L.ld(), hd, heads);
  });
}

// qkv held in 16 bits must be in the GEMMs' own format.
void check_stored(const GemmOperand& qkv, Precision prec) {
  if (qkv.is_16bit() && qkv.stored != prec)
    throw std::logic_error(std::string("attention: qkv kept in ") + precision_name(qkv.stored) + " read by " +
                           precision_name(prec) + " GEMMs");
}

}  // namespace

template <class T>
void attention_probs(View2<const T> qkv, int batch, int seq, int heads, View4<T> probs, Precision prec) {
  probs_impl(qkv.data(), int(qkv.extent(1)) / 3, batch, seq, heads, probs, prec);
}

template <class T>
void attention_forward(View2<const T> qkv, int batch, int seq, int heads, View4<T> probs,
                       View2<T> out, Precision prec) {
  forward_impl(qkv.data(), batch, seq, heads, probs, out, prec);
}

template <class T>
void attention_backward(View2<const T> qkv, View4<const T> probs, View2<const T> dout, int batch,
                        int seq, int heads, View4<T> dprobs, View2<T> dqkv, Precision prec) {
  backward_impl(qkv.data(), probs, dout, batch, seq, heads, dprobs, dqkv, prec);
}

void attention_probs(const GemmOperand& qkv, int batch, int seq, int heads, View4<float> probs, Precision prec) {
  check_stored(qkv, prec);
  if (qkv.is_16bit()) return probs_impl<float>(qkv.h16.data(), int(qkv.cols()) / 3, batch, seq, heads, probs, prec);
  probs_impl<float>(qkv.f32.data(), int(qkv.cols()) / 3, batch, seq, heads, probs, prec);
}

void attention_forward(const GemmOperand& qkv, int batch, int seq, int heads, View4<float> probs, View2<float> out,
                       Precision prec) {
  check_stored(qkv, prec);
  if (qkv.is_16bit()) return forward_impl<float>(qkv.h16.data(), batch, seq, heads, probs, out, prec);
  forward_impl<float>(qkv.f32.data(), batch, seq, heads, probs, out, prec);
}

void attention_backward(const GemmOperand& qkv, View4<const float> probs, View2<const float> dout, int batch, int seq,
                        int heads, View4<float> dprobs, View2<float> dqkv, Precision prec) {
  check_stored(qkv, prec);
  if (qkv.is_16bit()) return backward_impl<float>(qkv.h16.data(), probs, dout, batch, seq, heads, dprobs, dqkv, prec);
  backward_impl<float>(qkv.f32.data(), probs, dout, batch, seq, heads, dprobs, dqkv, prec);
}

#define FURNACE_INSTANTIATE(T)                                                                 \
  template void attention_probs<T>(View2<const T>, int, int, int, View4<T>, Precision);        \
  template void attention_forward<T>(View2<const T>, int, int, int, View4<T>, View2<T>,        \
                                     Precision);                                              \
  template void attention_backward<T>(View2<const T>, View4<const T>, View2<const T>, int, int, \
                                      int, View4<T>, View2<T>, Precision);
FURNACE_INSTANTIATE(float)
FURNACE_INSTANTIATE(double)
#undef FURNACE_INSTANTIATE

}  // namespace furnace::kernels
