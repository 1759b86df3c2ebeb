// One pre-norm transformer block:
//   mid = x + attn(norm1(x)) @ wo
//   out = mid + ffn(norm2(mid))        ffn: dense FFN or an MoE layer
#pragma once
#include <memory>
#include <string>

#include "memory/arena.hpp"
#include "memory/state_store.hpp"
#include "model/spec.hpp"
#include "moe/moe_layer.hpp"

namespace furnace::model {

// A norm's parameters and the statistics its backward needs.
struct NormParams {
  int w = -1, b = -1;  // parameter indices (b = -1 for RMSNorm)
};

// Forward/backward of LayerNorm or RMSNorm, as the spec says.
void norm_forward(const GptSpec& s, const memory::StateStore& ps, const NormParams& p,
                  kernels::View2<const float> x, kernels::View2<float> y,
                  kernels::View1<float> mean, kernels::View1<float> rstd);
void norm_backward(const GptSpec& s, const memory::StateStore& ps, const NormParams& p,
                   kernels::View2<const float> dy, kernels::View2<const float> x,
                   kernels::View1<const float> mean, kernels::View1<const float> rstd,
                   kernels::View2<float> dx);
NormParams register_norm(const GptSpec& s, memory::StateStore& ps, const std::string& prefix);

// What a block's backward reads back from its forward, [n, ...] with n = batch * seq.
struct BlockActivations {
  kernels::GemmOperand h1, qkv, att;      // [n, d], [n, 3d], [n, d]: read by GEMMs only (spec.stored_operands)
  kernels::View2<float> mid, h2, ffn_out;  // [n, d]
  kernels::View1<float> mean1, rstd1, mean2, rstd2;     // [n]
  kernels::View4<float> probs;                          // [B, heads, T, T]

  // Every view from `arena`; probs only when `with_probs`.
  static BlockActivations allocate(const GptSpec& s, memory::Arena& arena, bool with_probs);
  static kernels::View4<float> allocate_probs(const GptSpec& s, memory::Arena& arena);
};

// One copy, for all blocks, of what spec.recompute drops from each block: the backward
// recomputes its own block's share into it before reading it (one block runs at a time).
struct RecomputeBuffers {
  BlockActivations act;  // attention: probs only; block: all
  // block: the FFN of every dense block, whose hidden activations the recompute refills.
  std::shared_ptr<moe::ExpertFFN> dense;
};

// Scratch shared by all blocks (one block runs at a time). The forward stages the
// 16-bit operands h1, att and qkv in dh, datt and dqkv, which only the backward uses
// otherwise.
struct BlockScratch {
  kernels::View2<float> dh, datt, dqkv;  // [n, d], [n, d], [n, 3d]
  kernels::View4<float> dprobs;          // [B, heads, T, T]
};

class Block {
 public:
  // `shared` holds the views of what spec.recompute drops (unused with Recompute::None);
  // `moe_scratch` is the model's slot for the MoE layers' shared backward buffers.
  Block(const GptSpec& s, int layer, memory::StateStore& ps, memory::Arenas& arenas,
        const RecomputeBuffers& shared, moe::MoeScratchSlot& moe_scratch);

  void set_reducer(moe::SumReducer r) { if (moe_) moe_->set_reducer(std::move(r)); }
  void set_loss_scale(float s) { if (moe_) moe_->set_loss_scale(s); }
  // out = block(x). x must stay unchanged until backward.
  void forward(const memory::StateStore& ps, kernels::View2<const float> x, kernels::View2<float> out,
               BlockScratch& scratch);
  // On entry dres = dL/d(out); on exit dres = dL/dx. Parameter grads accumulate.
  void backward(const memory::StateStore& ps, kernels::View2<const float> x,
                kernels::View2<float> dres, BlockScratch& scratch);

  const moe::MoeLayer* moe() const { return moe_.get(); }
  // This block's parameters are the consecutive indices [first, last] of the store.
  int first_param() const { return first_param_; }
  int last_param() const { return last_param_; }

 private:
  moe::MoeWeights moe_weights(const memory::StateStore& ps, kernels::View1<float> buf) const;
  // norm1, attention, residual and norm2: everything of the forward before the FFN.
  void forward_to_ffn(const memory::StateStore& ps, kernels::View2<const float> x, BlockScratch& scratch);
  // Brings back what spec.recompute dropped, bitwise as the forward computed it.
  void recompute(const memory::StateStore& ps, kernels::View2<const float> x, BlockScratch& scratch);

  const GptSpec& s_;
  NormParams norm1_, norm2_;
  int first_param_ = -1, last_param_ = -1;
  int wqkv_ = -1, wo_ = -1, w1_ = -1, w2_ = -1, router_ = -1;
  BlockActivations a_;  // this block's own, or the shared ones that recompute refills
  std::shared_ptr<moe::ExpertFFN> dense_;  // one-group FFN for dense blocks
  std::unique_ptr<moe::MoeLayer> moe_;
  std::vector<std::int64_t> dense_offsets_;
};

}  // namespace furnace::model
