// `furnace bench kernels`: shape parsing, option checks, one tiny end-to-end run, and
// the FLOP count the benchmark divides by.
#include "app/bench_kernels.hpp"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "memory/arena.hpp"

namespace furnace::app {
namespace {

TEST(BenchKernels, DefaultShapesAreTheModelAndTheWideLayer) {
  const auto shapes = default_expert_bench_shapes();
  ASSERT_EQ(shapes.size(), 2u);
  EXPECT_EQ(shapes[0].label(), "E8 d256 h512 rows4096");
  EXPECT_EQ(shapes[1].label(), "E8 d1024 h4096 rows4096");
  EXPECT_EQ(shapes[1].tokens, 2048);
  EXPECT_EQ(shapes[1].top_k, 2);
}

TEST(BenchKernels, ParsesShapeSpecs) {
  auto s = parse_expert_bench_shape("d_model=1024,hidden=4096");
  EXPECT_EQ(s.d_model, 1024);
  EXPECT_EQ(s.hidden, 4096);
  EXPECT_EQ(s.experts, 8);  // untouched keys keep their defaults
  s = parse_expert_bench_shape("tokens=64,top_k=1,experts=4,act=swiglu");
  EXPECT_EQ(s.rows(), 64);
  EXPECT_EQ(s.experts, 4);
  EXPECT_EQ(s.activation, moe::Activation::Swiglu);
  EXPECT_EQ(s.label(), "E4 d256 h512 rows64 swiglu");
  EXPECT_EQ(parse_expert_bench_shape("").label(), ExpertBenchShape{}.label());
  for (const char* bad : {"width=3", "hidden=", "hidden=0", "hidden=12x", "act=relu", "d_model"})
    EXPECT_THROW(parse_expert_bench_shape(bad), std::invalid_argument) << bad;
}

TEST(BenchKernels, RunsATinyShapeAndRejectsBadOptions) {
  BenchKernelsOptions opt;
  opt.reps = 1;
  opt.csv = true;
  opt.shapes = {parse_expert_bench_shape("tokens=24,top_k=2,experts=4,d_model=8,hidden=16")};
  ::testing::internal::CaptureStdout();
  EXPECT_EQ(bench_kernels(opt), 0);
  const std::string out = ::testing::internal::GetCapturedStdout();
  EXPECT_EQ(out.rfind("shape,", 0), 0u) << out;
  EXPECT_NE(out.find("\nE4 d8 h16 rows48,4,8,16,48,"), std::string::npos) << out;

  opt.reps = 0;
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(bench_kernels(opt), 2);
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("reps"), std::string::npos);
  opt.reps = 1;
  opt.shapes[0].top_k = 5;  // more than the 4 experts
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(bench_kernels(opt), 2);
  ::testing::internal::GetCapturedStderr();
}

// The benchmark's GFLOP/s divide by this; it must be the 2mnk of the six GEMMs.
TEST(BenchKernels, ExpertFfnFlopCountIsItsSixGemms) {
  for (auto act : {moe::Activation::Gelu, moe::Activation::Swiglu}) {
    const int E = 3, d = 8, h = 12, h1 = act == moe::Activation::Swiglu ? 2 * h : h;
    const std::vector<std::int64_t> offsets = {0, 5, 5, 12};  // uneven, one empty expert
    memory::Ledger ledger;
    memory::Arenas arenas("test", ledger);
    auto& arena = arenas.workspace;
    moe::ExpertFFN ffn(E, d, h, act, offsets.back(), arenas);
    auto buf2 = [&](int r, int c) {
      auto v = arena.view2<float>(r, c);
      Kokkos::deep_copy(v, 0.5f);
      return v;
    };
    auto buf3 = [&](int r, int c) {
      kernels::View3<float> v(arena.allocate<float>(std::size_t(E) * r * c), E, r, c);
      Kokkos::deep_copy(v, 0.25f);
      return v;
    };
    auto x = buf2(12, d), y = buf2(12, d), dy = buf2(12, d), dx = buf2(12, d);
    auto w1 = buf3(d, h1), w2 = buf3(h, d), dw1 = buf3(d, h1), dw2 = buf3(h, d);
    ffn.forward(x, offsets, w1, w2, y);
    ffn.backward(dy, x, w1, w2, dx, dw1, dw2);
    double want = 0;
    for (int e = 0; e < E; ++e) {
      const double m = double(offsets[e + 1] - offsets[e]);
      want += 2 * m * d * h1 * 3;  // x@w1, x^T@da, da@w1^T
      want += 2 * m * h * d * 3;   // h@w2, dy@w2^T, h^T@dy
    }
    EXPECT_DOUBLE_EQ(ffn.flops_forward_backward(), want);
  }
}

}  // namespace
}  // namespace furnace::app
