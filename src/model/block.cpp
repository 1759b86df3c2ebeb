#include "model/block.hpp"

#include <cmath>

#include "kernels/attention.hpp"
#include "kernels/gemm.hpp"
#include "kernels/norms.hpp"

namespace furnace::model {

namespace k = furnace::kernels;
using k::View1;
using k::View2;
using memory::ParamInfo;
using memory::ParamKind;
using memory::StateStore;

NormParams register_norm(const GptSpec& s, StateStore& ps, const std::string& prefix) {
  NormParams p;
  p.w = ps.add({.name = prefix + ".w", .shape = {s.d_model}, .decay = false, .init_std = -1,
                .init_value = 1.0f});
  if (!s.rmsnorm)
    p.b = ps.add({.name = prefix + ".b", .shape = {s.d_model}, .decay = false, .init_std = -1,
                  .init_value = 0.0f});
  return p;
}

void norm_forward(const GptSpec& s, const StateStore& ps, const NormParams& p, View2<const float> x,
                  View2<float> y, View1<float> mean, View1<float> rstd) {
  auto w = ps.v1(ps.params(), p.w);
  if (s.rmsnorm)
    k::rmsnorm_forward<float>(x, w, s.norm_eps, y, rstd);
  else
    k::layernorm_forward<float>(x, w, ps.v1(ps.params(), p.b), s.norm_eps, y, mean, rstd);
}

void norm_backward(const GptSpec& s, const StateStore& ps, const NormParams& p,
                   View2<const float> dy, View2<const float> x, View1<const float> mean,
                   View1<const float> rstd, View2<float> dx) {
  auto w = ps.v1(ps.params(), p.w);
  if (s.rmsnorm)
    k::rmsnorm_backward<float>(dy, x, w, rstd, dx, ps.v1(ps.grads(), p.w));
  else
    k::layernorm_backward<float>(dy, x, w, mean, rstd, dx, ps.v1(ps.grads(), p.w),
                                 ps.v1(ps.grads(), p.b));
}

BlockActivations BlockActivations::allocate(const GptSpec& s, memory::Arena& arena,
                                            bool with_probs) {
  const std::int64_t d = s.d_model, n = std::int64_t(s.batch) * s.seq;
  BlockActivations a;
  a.h1 = arena.operand(s.stored_operands, n, d);
  a.qkv = arena.operand(s.stored_operands, n, 3 * d);
  a.att = arena.operand(s.stored_operands, n, d);
  a.mid = arena.view2<float>(n, d);
  a.h2 = arena.view2<float>(n, d);
  a.ffn_out = arena.view2<float>(n, d);
  a.mean1 = arena.view1<float>(n);
  a.rstd1 = arena.view1<float>(n);
  a.mean2 = arena.view1<float>(n);
  a.rstd2 = arena.view1<float>(n);
  if (with_probs) a.probs = allocate_probs(s, arena);
  return a;
}

k::View4<float> BlockActivations::allocate_probs(const GptSpec& s, memory::Arena& arena) {
  return arena.view4<float>(s.batch, s.heads, s.seq, s.seq);
}

Block::Block(const GptSpec& s, int layer, StateStore& ps, memory::Arenas& arenas,
             const RecomputeBuffers& shared, moe::MoeScratchSlot& moe_scratch)
    : s_(s) {
  const std::string pre = "blocks." + std::to_string(layer);
  const std::int64_t d = s.d_model, n = std::int64_t(s.batch) * s.seq;
  // Residual projections get a smaller init so the residual stream's variance does
  // not grow with depth (GPT-2).
  const double out_std = s.init_std / std::sqrt(2.0 * s.layers);
  first_param_ = int(ps.infos().size());
  norm1_ = register_norm(s, ps, pre + ".ln1");
  wqkv_ = ps.add({.name = pre + ".attn.wqkv", .shape = {d, 3 * d}, .init_std = s.init_std});
  wo_ = ps.add({.name = pre + ".attn.wo", .shape = {d, d}, .init_std = out_std});
  norm2_ = register_norm(s, ps, pre + ".ln2");
  const bool swiglu = s.activation == moe::Activation::Swiglu;
  if (s.is_moe(layer)) {
    const std::int64_t E = s.router.experts, El = s.local_experts, H = s.expert_hidden;
    const std::int64_t H1 = swiglu ? 2 * H : H;
    router_ = ps.add({.name = pre + ".moe.router", .shape = {d, E}, .init_std = s.init_std});
    w1_ = ps.add({.name = pre + ".moe.w1", .shape = {El, d, H1}, .global_shape = {E, d, H1},
                  .global_offset0 = s.first_expert, .kind = ParamKind::Expert,
                  .init_std = s.init_std});
    w2_ = ps.add({.name = pre + ".moe.w2", .shape = {El, H, d}, .global_shape = {E, H, d},
                  .global_offset0 = s.first_expert, .kind = ParamKind::Expert,
                  .init_std = out_std});
    moe_ = std::make_unique<moe::MoeLayer>(s.router, s.d_model, s.expert_hidden, s.activation, n,
                                           arenas, s.exchange, s.ep_size, &moe_scratch, s.moe_buffer_rows,
                                           s.precision, s.stored_operands);
  } else {
    const std::int64_t H = s.ffn_hidden, H1 = swiglu ? 2 * H : H;
    // Stored [d, H1] / [H, d]; viewed as a group of one expert.
    w1_ = ps.add({.name = pre + ".ffn.w1", .shape = {d, H1}, .init_std = s.init_std});
    w2_ = ps.add({.name = pre + ".ffn.w2", .shape = {H, d}, .init_std = out_std});
    dense_ = s.recompute == Recompute::Block
                 ? shared.dense
                 : std::make_shared<moe::ExpertFFN>(1, s.d_model, s.ffn_hidden, s.activation, n,
                                                    arenas, nullptr, s.stored_operands);
    dense_->set_precision(s.precision);
    dense_offsets_ = {0, n};
  }
  last_param_ = int(ps.infos().size()) - 1;
  switch (s.recompute) {
    case Recompute::None:
      a_ = BlockActivations::allocate(s, arenas.activations, true);
      break;
    case Recompute::Attention:
      a_ = BlockActivations::allocate(s, arenas.activations, false);
      a_.probs = shared.act.probs;
      break;
    case Recompute::Block:
      a_ = shared.act;
      break;
  }
}

moe::MoeWeights Block::moe_weights(const StateStore& ps, View1<float> buf) const {
  if (moe_) return {ps.v2(buf, router_), ps.v3(buf, w1_), ps.v3(buf, w2_)};
  // A dense FFN is a group of one expert: view the matrices as [1, rows, cols].
  auto as3 = [&](int i) {
    auto m = ps.v2(buf, i);
    return k::View3<float>(m.data(), 1, m.extent(0), m.extent(1));
  };
  return {{}, as3(w1_), as3(w2_)};
}

void Block::forward_to_ffn(const StateStore& ps, View2<const float> x, BlockScratch& sc) {
  const int n = x.extent(0), d = s_.d_model;
  const auto& P = ps.params();
  const auto h1 = a_.h1.target(sc.dh, n);  // fp32, staged when h1 is kept in 16 bits
  norm_forward(s_, ps, norm1_, x, h1, a_.mean1, a_.rstd1);
  a_.h1.store(h1, n);
  const auto qkv = a_.qkv.target(sc.dqkv, n);
  k::gemm(s_.precision, k::Op::N, k::Op::N, n, 3 * d, d, 1.0f, a_.h1, 0, ps.v2(P, wqkv_).data(), 3 * d, 0.0f,
          qkv.data(), 3 * d);
  a_.qkv.store(qkv, n);
  const auto att = a_.att.target(sc.datt, n);
  k::attention_forward(a_.qkv, s_.batch, s_.seq, s_.heads, a_.probs, att, s_.precision);
  a_.att.store(att, n);
  Kokkos::deep_copy(a_.mid, x);
  k::gemm(s_.precision, k::Op::N, k::Op::N, n, d, d, 1.0f, a_.att, 0, ps.v2(P, wo_).data(), d, 1.0f,
          a_.mid.data(), d);
  norm_forward(s_, ps, norm2_, a_.mid, a_.h2, a_.mean2, a_.rstd2);
}

void Block::recompute(const StateStore& ps, View2<const float> x, BlockScratch& sc) {
  switch (s_.recompute) {
    case Recompute::None:
      return;
    case Recompute::Attention:
      k::attention_probs(a_.qkv, s_.batch, s_.seq, s_.heads, a_.probs, s_.precision);
      return;
    case Recompute::Block:
      forward_to_ffn(ps, x, sc);
      // An MoE layer kept its routed rows: running it again would repeat the token
      // exchange. The dense FFN is shared by the blocks, so it runs again for its
      // hidden activations (its output lands in the shared ffn_out, unread).
      if (dense_) {
        const auto w = moe_weights(ps, ps.params());
        dense_->forward(a_.h2, dense_offsets_, w.w1, w.w2, a_.ffn_out);
      }
      return;
  }
}

void Block::forward(const StateStore& ps, View2<const float> x, View2<float> out, BlockScratch& sc) {
  forward_to_ffn(ps, x, sc);
  const auto w = moe_weights(ps, ps.params());
  if (moe_)
    moe_->forward(a_.h2, w, a_.ffn_out);
  else
    dense_->forward(a_.h2, dense_offsets_, w.w1, w.w2, a_.ffn_out);
  auto mid = a_.mid, f = a_.ffn_out;  // captured by value: no `this` inside device lambdas
  Kokkos::parallel_for(
      "Block::forward", k::Range(0, out.size()),
      KOKKOS_LAMBDA(const std::int64_t i) { out.data()[i] = mid.data()[i] + f.data()[i]; });
}

void Block::backward(const StateStore& ps, View2<const float> x, View2<float> dres,
                     BlockScratch& sc) {
  const int n = x.extent(0), d = s_.d_model;
  const auto& P = ps.params();
  const auto& G = ps.grads();
  recompute(ps, x, sc);
  // FFN: dres (= d out = d mid's residual share) -> dh2 -> dres += norm2 backward.
  auto dh = View2<float>(sc.dh.data(), n, d);
  const auto w = moe_weights(ps, P);
  const auto g = moe_weights(ps, G);
  if (moe_) {
    Kokkos::deep_copy(dh, 0.0f);
    moe_->backward(dres, a_.h2, w, dh, g);
  } else {
    dense_->backward(dres, a_.h2, w.w1, w.w2, dh, g.w1, g.w2);
  }
  norm_backward(s_, ps, norm2_, dh, a_.mid, a_.mean2, a_.rstd2, dres);
  // Attention projection: datt = dres wo^T, dwo += att^T dres.
  auto datt = View2<float>(sc.datt.data(), n, d);
  k::gemm(s_.precision, k::Op::N, k::Op::T, n, d, d, 1.0f, dres.data(), d, ps.v2(P, wo_).data(), d, 0.0f,
                 datt.data(), d);
  k::gemm(s_.precision, k::Op::T, k::Op::N, d, d, n, 1.0f, a_.att, 0, dres.data(), d, 1.0f, ps.v2(G, wo_).data(),
          d);
  auto dqkv = View2<float>(sc.dqkv.data(), n, 3 * d);
  Kokkos::deep_copy(dqkv, 0.0f);
  k::attention_backward(a_.qkv, a_.probs, datt, s_.batch, s_.seq, s_.heads, sc.dprobs, dqkv,
                              s_.precision);
  // QKV projection: dh1 = dqkv wqkv^T, dwqkv += h1^T dqkv.
  k::gemm(s_.precision, k::Op::N, k::Op::T, n, d, 3 * d, 1.0f, dqkv.data(), 3 * d,
                 ps.v2(P, wqkv_).data(), 3 * d, 0.0f, dh.data(), d);
  k::gemm(s_.precision, k::Op::T, k::Op::N, d, 3 * d, n, 1.0f, a_.h1, 0, dqkv.data(), 3 * d, 1.0f,
          ps.v2(G, wqkv_).data(), 3 * d);
  norm_backward(s_, ps, norm1_, dh, x, a_.mean1, a_.rstd1, dres);
}

}  // namespace furnace::model
