// A group of feed-forward networks applied to row blocks of one matrix: expert e
// transforms rows [offsets[e], offsets[e+1]) of x. One grouped GEMM per projection
// covers every local expert. With a single group it is the dense FFN of the model.
//
//   a_e = x_e @ w1[e]            x_e [rows_e, d], w1 [E, d, H1], H1 = H (gelu) or 2H (swiglu)
//   h_e = act(a_e)               [rows_e, H]
//   y_e = h_e @ w2[e]            w2 [E, H, d] -> y_e [rows_e, d]
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/operand.hpp"
#include "kernels/precision.hpp"
#include "kernels/views.hpp"
#include "memory/arena.hpp"

namespace furnace::moe {

enum class Activation { Gelu, Swiglu };

// The backward-only buffers of an ExpertFFN: da [rows, H1], dh [rows, H]. MoE layers
// of one model share one pair (one layer runs at a time).
struct FfnGradBuffers {
  kernels::View2<float> da, dh;
};

class ExpertFFN {
 public:
  // max_rows: the most rows any step will pass (sizes the saved activations).
  // shared == nullptr: the gradient buffers come from arenas.workspace.
  // stored: what h = act(a), read by GEMMs only, is kept in (kernels/operand.hpp); a
  // 16-bit format requires GEMMs in that precision (set_precision).
  ExpertFFN(int experts, int d_model, int hidden, Activation act, std::int64_t max_rows,
            memory::Arenas& arenas, const FfnGradBuffers* shared = nullptr,
            kernels::Precision stored = kernels::Precision::FP32);

  int experts() const { return experts_; }
  // The precision of the six GEMMs (train.precision); fp32 until set, or the storage
  // precision of h when that is 16-bit. Another precision than h's 16 bits is refused.
  void set_precision(kernels::Precision p);
  int hidden_in() const { return act_ == Activation::Swiglu ? 2 * hidden_ : hidden_; }

  // offsets [E+1] on the host. x and y hold offsets[E] rows.
  void forward(kernels::View2<const float> x, const std::vector<std::int64_t>& offsets,
               kernels::View3<const float> w1, kernels::View3<const float> w2,
               kernels::View2<float> y);
  // Only a = x @ w1 and h = act(a), what backward reads: the rows of an earlier forward
  // computed again (a multi-round dispatch keeps one round's rows at a time).
  void forward_hidden(kernels::View2<const float> x, const std::vector<std::int64_t>& offsets,
                      kernels::View3<const float> w1);
  // dx (=, not +=) [rows, d]; dw1, dw2 accumulate. Needs the same x as forward.
  void backward(kernels::View2<const float> dy, kernels::View2<const float> x,
                kernels::View3<const float> w1, kernels::View3<const float> w2,
                kernels::View2<float> dx, kernels::View3<float> dw1, kernels::View3<float> dw2);

  // Floating-point operations of the last forward+backward (for the benchmark).
  double flops_forward_backward() const;

 private:
  int experts_, d_, hidden_;
  Activation act_;
  kernels::Precision prec_ = kernels::Precision::FP32;
  std::vector<std::int64_t> offsets_;     // of the last forward
  kernels::View2<float> a_, da_, dh_;  // [max_rows, H1 | H]
  kernels::GemmOperand h_;             // [max_rows, H], staged in da_ when 16-bit
};

}  // namespace furnace::moe
