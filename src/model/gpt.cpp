#include "model/gpt.hpp"

#include <algorithm>

#include "kernels/embedding.hpp"
#include "kernels/gemm.hpp"
#include "kernels/softmax.hpp"

namespace furnace::model {

namespace k = furnace::kernels;
using k::View1;
using k::View2;

Gpt::Gpt(const GptSpec& spec, memory::StateStore& ps, memory::Arenas& arenas)
    : spec_(spec), ps_(ps) {
  const std::int64_t n = std::int64_t(spec.batch) * spec.seq, d = spec.d_model, V = spec.vocab;
  wte_ = ps.add({.name = "wte", .shape = {V, d}, .init_std = spec.init_std});
  wpe_ = ps.add({.name = "wpe", .shape = {spec.seq, d}, .init_std = spec.init_std});
  allocate_recompute_buffers(arenas);
  for (int l = 0; l < spec.layers; ++l)
    blocks_.push_back(std::make_unique<Block>(spec_, l, ps, arenas, recompute_, moe_scratch_));
  normf_ = register_norm(spec_, ps, "lnf");
  // Saved for the backward: the residual stream, the final norm and the logits.
  auto& act = arenas.activations;
  for (int l = 0; l <= spec.layers; ++l) x_.push_back(act.view2<float>(n, d));
  hf_ = act.view2<float>(n, d);
  logits_ = act.view2<float>(n, V);
  meanf_ = act.view1<float>(n);
  rstdf_ = act.view1<float>(n);
  // Scratch of the loss and the backward, shared by every block.
  auto& ws = arenas.workspace;
  dhf_ = ws.view2<float>(n, d);
  dres_ = ws.view2<float>(n, d);
  dlogits_ = ws.view2<float>(n, V);
  losses_ = ws.view1<float>(n);
  scratch_.dh = ws.view2<float>(n, d);
  scratch_.datt = ws.view2<float>(n, d);
  scratch_.dqkv = ws.view2<float>(n, 3 * d);
  scratch_.dprobs = ws.view4<float>(spec.batch, spec.heads, spec.seq, spec.seq);
}

void Gpt::allocate_recompute_buffers(memory::Arenas& arenas) {
  // Workspace: what one block's backward recomputes lives only until that backward ends.
  auto& ws = arenas.workspace;
  switch (spec_.recompute) {
    case Recompute::None:
      return;
    case Recompute::Attention:
      recompute_.act.probs = BlockActivations::allocate_probs(spec_, ws);
      return;
    case Recompute::Block: {
      recompute_.act = BlockActivations::allocate(spec_, ws, true);
      bool any_dense = false;
      for (int l = 0; l < spec_.layers; ++l) any_dense |= !spec_.is_moe(l);
      if (any_dense)
        recompute_.dense = std::make_shared<moe::ExpertFFN>(
            1, spec_.d_model, spec_.ffn_hidden, spec_.activation,
            std::int64_t(spec_.batch) * spec_.seq, arenas, nullptr, spec_.stored_operands);
      return;
    }
  }
}

void Gpt::set_reducer(const moe::SumReducer& r) {
  for (auto& b : blocks_) b->set_reducer(r);
}

LossParts Gpt::forward(View1<const k::index_t> inputs, View1<const k::index_t> targets) {
  const int n = inputs.extent(0), d = spec_.d_model, V = spec_.vocab;
  inputs_ = inputs;
  targets_ = targets;
  const auto& P = ps_.params();
  k::embedding_forward<float>(inputs, spec_.seq, ps_.v2(P, wte_), ps_.v2(P, wpe_), x_[0]);
  LossParts out;
  for (int l = 0; l < spec_.layers; ++l) {
    if (hooks_.before_forward) hooks_.before_forward(l);
    blocks_[l]->forward(ps_, x_[l], x_[l + 1], scratch_);
    if (const auto* m = blocks_[l]->moe()) {
      out.aux += m->stats().aux_loss;
      out.z += m->stats().z_loss;
      out.moe_rounds = std::max(out.moe_rounds, m->rounds());
    }
  }
  norm_forward(spec_, ps_, normf_, x_[spec_.layers], hf_, meanf_, rstdf_);
  // Tied head: logits = hf @ wte^T.
  k::gemm(spec_.precision, k::Op::N, k::Op::T, n, V, d, 1.0f, hf_.data(), d, ps_.v2(P, wte_).data(), d, 0.0f,
                 logits_.data(), V);
  out.bad_targets = k::cross_entropy_forward<float>(logits_, targets, losses_);
  auto losses = losses_;  // captured by value: no `this` inside device lambdas
  Kokkos::parallel_reduce(
      "Gpt::forward", k::Range(0, n),
      KOKKOS_LAMBDA(const int i, double& acc) { acc += losses(i); }, out.ce_sum);
  return out;
}

void Gpt::backward(double global_tokens, const std::function<void(int)>& ready, float loss_scale) {
  auto done = [&](int first, int last) {
    if (ready)
      for (int i = first; i <= last; ++i) ready(i);
  };
  const int n = inputs_.extent(0), d = spec_.d_model, V = spec_.vocab;
  const auto& P = ps_.params();
  const auto& G = ps_.grads();
  Kokkos::deep_copy(dlogits_, 0.0f);
  k::cross_entropy_backward<float>(logits_, targets_, float(loss_scale / global_tokens), dlogits_);
  for (auto& b : blocks_) b->set_loss_scale(loss_scale);
  // logits = hf wte^T: dhf = dlogits wte, dwte += dlogits^T hf.
  k::gemm(spec_.precision, k::Op::N, k::Op::N, n, d, V, 1.0f, dlogits_.data(), V, ps_.v2(P, wte_).data(), d,
                 0.0f, dhf_.data(), d);
  k::gemm(spec_.precision, k::Op::T, k::Op::N, V, d, n, 1.0f, dlogits_.data(), V, hf_.data(), d, 1.0f,
                 ps_.v2(G, wte_).data(), d);
  Kokkos::deep_copy(dres_, 0.0f);
  norm_backward(spec_, ps_, normf_, dhf_, x_[spec_.layers], meanf_, rstdf_, dres_);
  done(normf_.w, normf_.b < 0 ? normf_.w : normf_.b);
  for (int l = spec_.layers - 1; l >= 0; --l) {
    if (hooks_.before_backward) hooks_.before_backward(l);
    blocks_[l]->backward(ps_, x_[l], dres_, scratch_);
    done(blocks_[l]->first_param(), blocks_[l]->last_param());
    if (hooks_.after_backward) hooks_.after_backward(l);
  }
  k::embedding_backward<float>(inputs_, spec_.seq, dres_, ps_.v2(G, wte_), ps_.v2(G, wpe_));
  done(std::min(wte_, wpe_), std::max(wte_, wpe_));
}

double Gpt::flops_per_token() const {
  const double d = spec_.d_model, T = spec_.seq;
  const double H1 = spec_.activation == moe::Activation::Swiglu ? 2 : 1;
  double f = 2.0 * d * spec_.vocab;  // head
  for (int l = 0; l < spec_.layers; ++l) {
    f += 2.0 * d * 3 * d + 2.0 * d * d + 2.0 * 2 * T / 2 * d;  // qkv, wo, attention (causal)
    if (spec_.is_moe(l))
      f += 2.0 * d * spec_.router.experts +
           spec_.router.top_k * 2.0 * d * spec_.expert_hidden * (H1 + 1);
    else
      f += 2.0 * d * spec_.ffn_hidden * (H1 + 1);
  }
  return f;
}

}  // namespace furnace::model
