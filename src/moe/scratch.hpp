// Backward-only buffers of the MoE layers. One layer runs at a time and none of these
// outlives its layer's backward, so the MoE layers of one model share one set, sized
// by the first layer built (every MoE layer of a GptSpec has the same shape); what a
// layer's backward reads from its own forward stays in that layer.
#pragma once
#include <cstdint>
#include <memory>

#include "kernels/views.hpp"
#include "memory/arena.hpp"
#include "moe/experts.hpp"
#include "moe/router.hpp"

namespace furnace::moe {

struct MoeScratchShape {
  int d_model = 0, experts = 0, top_k = 0, hidden = 0, hidden_in = 0;
  std::int64_t tokens = 0;       // this rank's tokens
  std::int64_t rows = 0;         // token copies this rank routes (send side)
  std::int64_t expert_rows = 0;  // rows its experts compute (received, with ep > 1)
  bool exchange = false;         // ep > 1: the expert side has buffers of its own
};

struct MoeScratch {
  MoeScratch(const MoeScratchShape& shape, memory::Arenas& arenas);
  // Whether a layer of `shape` can use these buffers: the same widths, no more rows.
  bool fits(const MoeScratchShape& shape) const;

  MoeScratchShape shape;
  const memory::Arenas* arenas;  // where the views live
  kernels::View2<float> dxp, dyp;  // [rows, d]
  kernels::View2<float> dweight;   // [tokens, top_k]
  kernels::View2<float> dxe, dye;  // [expert_rows, d], communication (exchange only)
  FfnGradBuffers ffn;              // [expert_rows, H1 | H]
  RouterGradBuffers router;        // [tokens, experts]
};

// Where the MoE layers of one model find their shared MoeScratch: the first layer
// allocates it, later ones reuse it. The model (model::Gpt) owns the slot, so a
// Measure build and the real build each allocate their own.
class MoeScratchSlot {
 public:
  MoeScratchSlot() = default;
  MoeScratchSlot(const MoeScratchSlot&) = delete;
  MoeScratchSlot& operator=(const MoeScratchSlot&) = delete;
  // The slot's scratch, allocated from `arenas` on first use. Throws std::logic_error
  // when a layer does not fit it, or asks from other arenas than the first one did.
  std::shared_ptr<MoeScratch> get(const MoeScratchShape& shape, memory::Arenas& arenas);

 private:
  std::shared_ptr<MoeScratch> scratch_;
};

}  // namespace furnace::moe
