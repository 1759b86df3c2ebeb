// memory.recompute: the forward drops activations and the backward recomputes them.
// The gradients must be bitwise those of `none`, step after step, and the activation
// bytes must drop by what each mode no longer keeps per layer.
#include <gtest/gtest.h>

#include <Kokkos_Core.hpp>
#include <cstring>
#include <vector>

#include "comm/groups.hpp"
#include "io/config.hpp"
#include "memory/arena.hpp"
#include "memory/state_store.hpp"
#include "model/gpt.hpp"
#include "train/trainer.hpp"

using namespace furnace;
using model::Recompute;

namespace {

constexpr int kSteps = 3;
constexpr float kLearningRate = 0.05f;  // large enough that every step sees new weights
constexpr std::uint64_t kSeed = 7;

// Dense blocks 0 and 2, MoE blocks 1 and 3 (both kinds of FFN); batch > 1 so the
// recomputed attention's per-sequence offsets matter; capacity 1.0 drops some tokens.
model::GptSpec small_spec(Recompute mode, bool rmsnorm_swiglu) {
  model::GptSpec s;
  s.vocab = 61;
  s.seq = 19;
  s.d_model = 32;
  s.layers = 4;
  s.heads = 4;
  s.ffn_hidden = 48;
  s.expert_hidden = 24;
  s.moe_every = 2;
  s.router = {.experts = 4, .top_k = 2, .capacity_factor = 1.0, .aux_loss_coef = 0.01,
              .z_loss_coef = 0.001};
  s.local_experts = s.router.experts;
  s.batch = 3;
  s.rmsnorm = rmsnorm_swiglu;
  s.activation = rmsnorm_swiglu ? moe::Activation::Swiglu : moe::Activation::Gelu;
  s.recompute = mode;
  return s;
}

struct Steps {
  std::vector<std::vector<float>> grads;  // per step, the whole grad family
  std::vector<double> ce;                 // per step
};

std::vector<float> to_host(kernels::View1<float> v) {
  std::vector<float> out(v.size());
  Kokkos::deep_copy(kernels::View1<float>(out.data(), out.size()), v);
  return out;
}

// kSteps of forward, backward and plain SGD on fixed pseudo-random tokens.
Steps run_steps(const model::GptSpec& spec) {
  memory::Ledger ledger;
  memory::StateStore ps;
  memory::Arenas arenas("test", ledger);
  model::Gpt gpt(spec, ps, arenas);
  ps.allocate(ledger);
  ps.initialize(kSeed);
  const std::int64_t n = std::int64_t(spec.batch) * spec.seq;
  // The host is the memory space of this build (Kokkos Serial), as in the other model tests.
  std::vector<kernels::index_t> in(n), tg(n);
  for (std::int64_t i = 0; i < n; ++i) {
    in[i] = kernels::index_t((i * 37 + 11) % spec.vocab);
    tg[i] = kernels::index_t((i * 53 + 5) % spec.vocab);
  }
  const kernels::View1<const kernels::index_t> inputs(in.data(), n), targets(tg.data(), n);
  Steps run;
  for (int step = 0; step < kSteps; ++step) {
    Kokkos::deep_copy(ps.grads(), 0.0f);
    run.ce.push_back(gpt.forward(inputs, targets).ce_sum);
    gpt.backward(double(n));
    run.grads.push_back(to_host(ps.grads()));
    auto p = ps.params(), g = ps.grads();
    Kokkos::parallel_for(
        "test::sgd", kernels::Range(0, p.size()),
        KOKKOS_LAMBDA(const std::int64_t i) { p(i) -= kLearningRate * g(i); });
  }
  return run;
}

void expect_bitwise_equal(const Steps& want, const Steps& got, const char* what) {
  ASSERT_EQ(want.grads.size(), got.grads.size());
  for (std::size_t step = 0; step < want.grads.size(); ++step) {
    EXPECT_EQ(want.ce[step], got.ce[step]) << what << " step " << step;
    ASSERT_EQ(want.grads[step].size(), got.grads[step].size());
    EXPECT_EQ(std::memcmp(want.grads[step].data(), got.grads[step].data(),
                          want.grads[step].size() * sizeof(float)),
              0)
        << what << ": gradients differ at step " << step;
  }
}

std::uint64_t peak(const memory::Ledger& l, memory::Category c) {
  return l.peak(c, memory::Tier::Device);
}

}  // namespace

TEST(Recompute, GradientsAreBitwiseThoseOfNone) {
  for (const bool variant : {false, true}) {
    const Steps none = run_steps(small_spec(Recompute::None, variant));
    expect_bitwise_equal(none, run_steps(small_spec(Recompute::Attention, variant)),
                         variant ? "attention, rmsnorm+swiglu" : "attention");
    expect_bitwise_equal(none, run_steps(small_spec(Recompute::Block, variant)),
                         variant ? "block, rmsnorm+swiglu" : "block");
  }
}

// What each mode stops keeping per layer, through the trainer's own measurement
// (make_spec reads memory.recompute).
TEST(Recompute, MeasuredActivationsDropByWhatIsNoLongerKept) {
  io::Config c;
  c.moe.every = 2;  // dense and MoE blocks both
  comm::Groups g(MPI_COMM_SELF, 1, 1);
  auto measure = [&](const char* mode) {
    c.memory.recompute = mode;
    return train::measure_memory(c, train::make_spec(c, g.layout()));
  };
  const auto none = measure("none"), attention = measure("attention"), block = measure("block");
  const std::uint64_t f = sizeof(float), L = c.model.n_layers, n = std::uint64_t(c.train.batch_size) * c.model.seq_len,
                      d = c.model.d_model, H = c.model.ffn_hidden;
  const std::uint64_t probs = f * c.train.batch_size * c.model.n_heads * c.model.seq_len * c.model.seq_len;
  // h1, qkv (3d), att, mid, h2, ffn_out; mean and rstd of both norms.
  const std::uint64_t rest_of_block = f * n * (8 * d + 4);
  const std::uint64_t dense_ffn = f * n * 2 * H;  // gelu: pre- and post-activation hidden rows
  const std::uint64_t dense_blocks = L / 2;
  using memory::Category;
  EXPECT_EQ(peak(none, Category::Activations) - peak(attention, Category::Activations), L * probs);
  EXPECT_EQ(peak(attention, Category::Workspace) - peak(none, Category::Workspace), probs);
  // The dense blocks share one FFN, whose hidden rows stay activations.
  EXPECT_EQ(peak(attention, Category::Activations) - peak(block, Category::Activations),
            L * rest_of_block + (dense_blocks - 1) * dense_ffn);
}
