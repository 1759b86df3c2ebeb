#include "moe/scratch.hpp"

#include <stdexcept>

namespace furnace::moe {

MoeScratch::MoeScratch(const MoeScratchShape& s, memory::Arenas& a) : shape(s), arenas(&a) {
  dxp = a.workspace.view2<float>(s.rows, s.d_model);
  dyp = a.workspace.view2<float>(s.rows, s.d_model);
  dweight = a.workspace.view2<float>(s.tokens, s.top_k);
  if (s.exchange) {
    // Gradients on the expert side of the exchange: communication buffers, like the
    // rows they mirror.
    dxe = a.communication.view2<float>(s.expert_rows, s.d_model);
    dye = a.communication.view2<float>(s.expert_rows, s.d_model);
  }
  ffn.da = a.workspace.view2<float>(s.expert_rows, s.hidden_in);
  ffn.dh = a.workspace.view2<float>(s.expert_rows, s.hidden);
  router.dprobs = a.workspace.view2<float>(s.tokens, s.experts);
  router.dlogits = a.workspace.view2<float>(s.tokens, s.experts);
}

bool MoeScratch::fits(const MoeScratchShape& s) const {
  return s.d_model == shape.d_model && s.experts == shape.experts && s.top_k == shape.top_k &&
         s.hidden == shape.hidden && s.hidden_in == shape.hidden_in && s.tokens <= shape.tokens &&
         s.rows <= shape.rows && s.expert_rows <= shape.expert_rows && (!s.exchange || shape.exchange);
}

std::shared_ptr<MoeScratch> MoeScratchSlot::get(const MoeScratchShape& shape, memory::Arenas& arenas) {
  if (!scratch_) {
    scratch_ = std::make_shared<MoeScratch>(shape, arenas);
    return scratch_;
  }
  if (scratch_->arenas != &arenas)
    throw std::logic_error("MoeScratchSlot: a layer of another model's arenas asks for this model's scratch");
  if (!scratch_->fits(shape))
    throw std::logic_error("MoeScratchSlot: a MoE layer needs more or differently shaped backward buffers "
                           "than the first layer of the model allocated");
  return scratch_;
}

}  // namespace furnace::moe
