// Causal attention: forward against plain loops, backward against finite differences.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kernels/attention.hpp"
#include "testing.hpp"

namespace furnace {
namespace {

using kernels::View2;
using kernels::View4;
using testing::Tensor;

struct Shape {
  int batch, seq, heads, hd;
  int d() const { return heads * hd; }
  int tokens() const { return batch * seq; }
  std::size_t probs() const { return std::size_t(batch) * heads * seq * seq; }
};

std::string describe(const Shape& s) {
  return "B=" + std::to_string(s.batch) + " seq=" + std::to_string(s.seq) +
         " heads=" + std::to_string(s.heads) + " hd=" + std::to_string(s.hd);
}

// seq = 150 spans two of the kernel's 128-row causal blocks.
const Shape kShapes[] = {{2, 5, 3, 4}, {1, 1, 1, 8}, {3, 1, 2, 2}, {1, 6, 1, 3}, {2, 150, 2, 4}};

// Textbook causal attention in double: probs [B, H, S, S] and out [B*S, d].
template <class T>
void reference(const Tensor<T>& qkv, const Shape& s, std::vector<double>& probs,
               std::vector<double>& out) {
  const int d = s.d(), ld = 3 * d;
  probs.assign(s.probs(), 0.0);
  out.assign(std::size_t(s.tokens()) * d, 0.0);
  for (int b = 0; b < s.batch; ++b)
    for (int h = 0; h < s.heads; ++h)
      for (int i = 0; i < s.seq; ++i) {
        double* p = &probs[((std::size_t(b) * s.heads + h) * s.seq + i) * s.seq];
        const T* q = &qkv[(std::size_t(b) * s.seq + i) * ld + h * s.hd];
        double total = 0;
        for (int j = 0; j <= i; ++j) {
          const T* k = &qkv[(std::size_t(b) * s.seq + j) * ld + d + h * s.hd];
          double score = 0;
          for (int c = 0; c < s.hd; ++c) score += double(q[c]) * k[c];
          p[j] = std::exp(score / std::sqrt(double(s.hd)));
          total += p[j];
        }
        for (int j = 0; j <= i; ++j) {
          p[j] /= total;
          const T* v = &qkv[(std::size_t(b) * s.seq + j) * ld + 2 * d + h * s.hd];
          for (int c = 0; c < s.hd; ++c)
            out[(std::size_t(b) * s.seq + i) * d + h * s.hd + c] += p[j] * v[c];
        }
      }
}

template <class T>
void forward(Tensor<T>& qkv, const Shape& s, Tensor<T>& probs, Tensor<T>& out) {
  kernels::attention_forward<T>(qkv.v2(s.tokens(), 3 * s.d()), s.batch, s.seq, s.heads,
                                probs.v4(s.batch, s.heads, s.seq, s.seq),
                                out.v2(s.tokens(), s.d()));
}

TEST(Attention, ForwardMatchesReferenceLoops) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(describe(s));
    auto qkv = testing::random_tensor<float>(std::size_t(s.tokens()) * 3 * s.d(), 11);
    // NaN-filled outputs: every entry must be written, masked ones exactly 0.
    Tensor<float> probs(s.probs(), nan), out(std::size_t(s.tokens()) * s.d(), nan);
    forward(qkv, s, probs, out);
    std::vector<double> want_p, want_out;
    reference(qkv, s, want_p, want_out);
    for (std::size_t i = 0; i < probs.size(); ++i) {
      const std::size_t q = i / s.seq % s.seq, key = i % s.seq;
      if (key > q)
        ASSERT_EQ(probs[i], 0.0f) << "masked entry " << i;
      else
        ASSERT_NEAR(probs[i], want_p[i], 1e-5) << "probs entry " << i;
    }
    for (std::size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], want_out[i], 2e-5) << i;
  }
}

TEST(Attention, BackwardMatchesFiniteDifferences) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(describe(s));
    const std::size_t n_out = std::size_t(s.tokens()) * s.d(), n_qkv = 3 * n_out;
    auto qkv = testing::random_tensor<double>(n_qkv, 21);
    auto r = testing::random_tensor<double>(n_out, 22);  // loss = dot(out, r), so dout = r
    Tensor<double> probs(s.probs()), out(n_out);
    auto loss = [&] {
      forward(qkv, s, probs, out);
      return testing::dot(out, r);
    };
    loss();
    // dqkv starts non-zero to check that the kernel accumulates; dprobs is scratch.
    const auto dqkv0 = testing::random_tensor<double>(n_qkv, 23);
    Tensor<double> dqkv = dqkv0, dprobs(s.probs(), nan);
    kernels::attention_backward<double>(qkv.v2(s.tokens(), 3 * s.d()),
                                        probs.v4(s.batch, s.heads, s.seq, s.seq),
                                        r.v2(s.tokens(), s.d()), s.batch, s.seq, s.heads,
                                        dprobs.v4(s.batch, s.heads, s.seq, s.seq),
                                        dqkv.v2(s.tokens(), 3 * s.d()));
    std::vector<double> grad(n_qkv);
    for (std::size_t i = 0; i < n_qkv; ++i) grad[i] = dqkv[i] - dqkv0[i];
    // 101 samples: on the large shape a stride coprime to 3d, so q, k, v, every head
    // and both row blocks are sampled; most small shapes are checked in full.
    testing::expect_gradient_matches(qkv.data, grad, loss, "dqkv", 1e-6, 1e-7, 1e-5, 101);
  }
}

}  // namespace
}  // namespace furnace
