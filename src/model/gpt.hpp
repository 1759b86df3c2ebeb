// The whole model: embeddings, L blocks, final norm, tied LM head, cross-entropy.
//
//   tokens [B, T] -> x0 [n, d] = wte[tok] + wpe[t]         (n = B * T)
//   x_{l+1} = block_l(x_l)
//   logits [n, V] = norm_f(x_L) @ wte^T
//   objective = ce + aux_coef * sum aux_l + z_coef * sum z_l
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "memory/arena.hpp"
#include "memory/state_store.hpp"
#include "model/block.hpp"
#include "model/spec.hpp"

namespace furnace::model {

struct LossParts {
  double ce_sum = 0;       // sum of per-token cross-entropy on this rank
  double aux = 0, z = 0;   // summed over MoE layers (already global means)
  int moe_rounds = 1;      // the most exchange rounds an MoE layer ran (bounded dropless buffers)
  std::int64_t bad_targets = 0;
};

// Called around each block's forward and backward: memory.experts = nvme brings a
// layer's experts into memory and out again there (train::Trainer). Any may be empty.
struct LayerHooks {
  std::function<void(int layer)> before_forward, before_backward, after_backward;
};

class Gpt {
 public:
  // Registers every parameter in `ps`; the caller then allocates and initialises it.
  Gpt(const GptSpec& spec, memory::StateStore& ps, memory::Arenas& arenas);

  const GptSpec& spec() const { return spec_; }
  void set_reducer(const moe::SumReducer& r);
  void set_layer_hooks(LayerHooks hooks) { hooks_ = std::move(hooks); }

  // inputs, targets: [batch * seq] on the device.
  LossParts forward(kernels::View1<const kernels::index_t> inputs,
                    kernels::View1<const kernels::index_t> targets);
  // Gradients of ce_sum / global_tokens + aux and z terms accumulate into ps.grads().
  // `ready(i)` is called once per parameter as soon as its gradient is final (for
  // gradient reductions that overlap the rest of the backward).
  // loss_scale (fp16 loss scaling): every gradient comes out multiplied by it.
  void backward(double global_tokens, const std::function<void(int)>& ready = {}, float loss_scale = 1.0f);

  kernels::View2<const float> logits() const { return logits_; }
  const std::vector<std::unique_ptr<Block>>& blocks() const { return blocks_; }
  // Forward FLOPs per token of the dense parts + active expert compute (for MFU-like stats).
  double flops_per_token() const;

 private:
  LayerHooks hooks_;
  // Fills recompute_ with one copy of what spec_.recompute drops from every block.
  void allocate_recompute_buffers(memory::Arenas& arenas);

  GptSpec spec_;
  memory::StateStore& ps_;
  int wte_ = -1, wpe_ = -1;
  NormParams normf_;
  RecomputeBuffers recompute_;
  moe::MoeScratchSlot moe_scratch_;  // the MoE layers' shared backward buffers (before blocks_)
  std::vector<std::unique_ptr<Block>> blocks_;
  std::vector<kernels::View2<float>> x_;  // residual stream x_0 .. x_L
  kernels::View2<float> hf_, logits_, dlogits_, dres_, dhf_;
  kernels::View1<float> meanf_, rstdf_, losses_;
  kernels::View1<const kernels::index_t> inputs_, targets_;
  BlockScratch scratch_;
};

}  // namespace furnace::model
