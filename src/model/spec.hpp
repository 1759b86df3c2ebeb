// The shape of a Furnace GPT: everything the model needs to know, and nothing about
// files or processes (src/train maps the run configuration onto it).
#pragma once
#include "comm/alltoall.hpp"
#include "moe/experts.hpp"
#include "kernels/precision.hpp"
#include "moe/router.hpp"

namespace furnace::model {

// Activations the forward drops and the backward recomputes (memory.recompute).
enum class Recompute { None, Attention, Block };

struct GptSpec {
  int vocab = 256, seq = 128, d_model = 128, layers = 4, heads = 4, ffn_hidden = 512;
  bool rmsnorm = false;
  moe::Activation activation = moe::Activation::Gelu;
  float norm_eps = 1e-5f;
  double init_std = 0.02;
  int moe_every = 1;         // block l is MoE when experts > 0 and (l + 1) % moe_every == 0
  int expert_hidden = 256;
  int local_experts = 0;     // experts held by this rank (== router.experts in one process)
  int first_expert = 0;      // global id of the first local expert
  moe::RouterConfig router;  // router.experts == 0: a dense model
  int batch = 16;            // sequences per step on this rank
  int ep_size = 1;           // ranks sharing the experts of one MoE layer
  comm::RowExchange* exchange = nullptr;  // token exchange of the ep group (ep_size > 1)
  // Expert-side rows of each MoE layer's buffers (ep_size > 1); 0: what any step can
  // bring (the capacity bound). Dropless runs cap it from memory.moe_buffer_mb.
  std::int64_t moe_buffer_rows = 0;
  Recompute recompute = Recompute::None;
  // train.precision: the GEMMs of attention, the FFNs, the experts and the head. The
  // router's GEMMs, norms, softmax and losses stay fp32.
  kernels::Precision precision = kernels::Precision::FP32;
  // What the activations that only those GEMMs read are kept in (memory.activations):
  // `precision` itself, or FP32 (kernels/operand.hpp).
  kernels::Precision stored_operands = kernels::Precision::FP32;

  bool is_moe(int layer) const { return router.experts > 0 && (layer + 1) % moe_every == 0; }
  int moe_layers() const {
    int n = 0;
    for (int l = 0; l < layers; ++l) n += is_moe(l);
    return n;
  }
  int head_dim() const { return d_model / heads; }
};

}  // namespace furnace::model
