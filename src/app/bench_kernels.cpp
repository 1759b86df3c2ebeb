// `furnace bench kernels` (see bench_kernels.hpp). ExpertFFN and the plain sgemm loop
// run on the same inputs and weights, alternately, so both see the same machine state.
#include "app/bench_kernels.hpp"

#include "app/bench_util.hpp"
#include "kernels/gemm.hpp"

#include <cblas.h>
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "kernels/blas_runtime.hpp"
#include "kernels/random.hpp"
#include "memory/arena.hpp"

namespace furnace::app {
namespace {

using kernels::View2;
using kernels::View3;

// Buffers of one shape. The plain loop shares the inputs, weights and gradients with
// ExpertFFN and has its own copies of the activations ExpertFFN keeps privately.
struct Problem {
  ExpertBenchShape s;
  int h1 = 0;  // columns of x @ w1: hidden, or 2 * hidden for SwiGLU
  std::vector<std::int64_t> offsets;
  View2<float> x, y, dy, dx;
  View3<float> w1, w2, dw1, dw2;
  View2<float> a, h, dh, da;  // the plain loop's activations
};

View3<float> view3(memory::Arena& arena, int e, int r, int c) {
  return View3<float>(arena.allocate<float>(std::size_t(e) * r * c), e, r, c);
}

void randomise(kernels::View1<float> v, std::uint64_t key, double stddev) {
  kernels::fill_normal<float>(v, key, 0, stddev);
}

Problem make_problem(const ExpertBenchShape& s, memory::Arena& arena) {
  Problem p;
  p.s = s;
  p.h1 = s.activation == moe::Activation::Swiglu ? 2 * s.hidden : s.hidden;
  const std::int64_t rows = s.rows();
  for (int e = 0; e <= s.experts; ++e) p.offsets.push_back(rows * e / s.experts);
  p.x = arena.view2<float>(rows, s.d_model);
  p.y = arena.view2<float>(rows, s.d_model);
  p.dy = arena.view2<float>(rows, s.d_model);
  p.dx = arena.view2<float>(rows, s.d_model);
  p.w1 = view3(arena, s.experts, s.d_model, p.h1);
  p.w2 = view3(arena, s.experts, s.hidden, s.d_model);
  p.dw1 = view3(arena, s.experts, s.d_model, p.h1);
  p.dw2 = view3(arena, s.experts, s.hidden, s.d_model);
  p.a = arena.view2<float>(rows, p.h1);
  p.h = arena.view2<float>(rows, s.hidden);
  p.dh = arena.view2<float>(rows, s.hidden);
  p.da = arena.view2<float>(rows, p.h1);
  // Weights at the usual 1/sqrt(fan_in) scale keep activations O(1) (GELU sees a real
  // mix of negative and positive inputs).
  const std::uint64_t seed = 1234;
  randomise(kernels::flat(p.x), kernels::stream_key(seed, "x"), 1.0);
  randomise(kernels::flat(p.dy), kernels::stream_key(seed, "dy"), 1.0);
  randomise(kernels::flat(p.w1), kernels::stream_key(seed, "w1"), 1.0 / std::sqrt(s.d_model));
  randomise(kernels::flat(p.w2), kernels::stream_key(seed, "w2"), 1.0 / std::sqrt(s.hidden));
  randomise(kernels::flat(p.h), kernels::stream_key(seed, "h"), 1.0);
  randomise(kernels::flat(p.da), kernels::stream_key(seed, "da"), 1.0);
  kernels::fill<float>(kernels::flat(p.dw1), 0.0f);
  kernels::fill<float>(kernels::flat(p.dw2), 0.0f);
  Kokkos::fence();
  return p;
}

// C [m,n] = op(A) op(B) (+ C when accumulate), row-major; returns its 2mnk FLOPs.
double sgemm(bool ta, bool tb, int m, int n, int k, const float* a, int lda, const float* b,
             int ldb, bool accumulate, float* c, int ldc) {
  if (m == 0 || n == 0 || k == 0) return 0.0;
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m,
              n, k, 1.0f, a, lda, b, ldb, accumulate ? 1.0f : 0.0f, c, ldc);
  return 2.0 * m * n * k;
}

// The six GEMMs of ExpertFFN forward + backward, per expert, in its order (one
// projection across all experts, then the next). Returns the FLOPs done.
double plain_sgemms(Problem& p) {
  const int d = p.s.d_model, h = p.s.hidden, h1 = p.h1, E = p.s.experts;
  const auto& off = p.offsets;
  auto m = [&](int e) { return int(off[e + 1] - off[e]); };
  auto row = [&](auto& v, int e) { return v.data() + off[e] * std::int64_t(v.extent(1)); };
  double flops = 0.0;
  for (int e = 0; e < E; ++e)  // a = x @ w1
    flops += sgemm(false, false, m(e), h1, d, row(p.x, e), d, &p.w1(e, 0, 0), h1, false, row(p.a, e), h1);
  for (int e = 0; e < E; ++e)  // y = h @ w2
    flops += sgemm(false, false, m(e), d, h, row(p.h, e), h, &p.w2(e, 0, 0), d, false, row(p.y, e), d);
  for (int e = 0; e < E; ++e)  // dh = dy @ w2^T
    flops += sgemm(false, true, m(e), h, d, row(p.dy, e), d, &p.w2(e, 0, 0), d, false, row(p.dh, e), h);
  for (int e = 0; e < E; ++e)  // dw2 += h^T @ dy
    flops += sgemm(true, false, h, d, m(e), row(p.h, e), h, row(p.dy, e), d, true, &p.dw2(e, 0, 0), d);
  for (int e = 0; e < E; ++e)  // dw1 += x^T @ da
    flops += sgemm(true, false, d, h1, m(e), row(p.x, e), d, row(p.da, e), h1, true, &p.dw1(e, 0, 0), h1);
  for (int e = 0; e < E; ++e)  // dx = da @ w1^T
    flops += sgemm(false, true, m(e), d, h1, row(p.da, e), h1, &p.w1(e, 0, 0), h1, false, row(p.dx, e), d);
  return flops;
}

template <class F>
double time_it(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  Kokkos::fence();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct Result {
  double ffn_gflops = 0, plain_gflops = 0;
  double bf16_gflops = 0;  // the same ExpertFFN with train.precision = bf16 (its flops counted as fp32's)
  double ffn_flops = 0, plain_flops = 0;  // per forward + backward, as each side counts
};

Result run_shape(const ExpertBenchShape& s, int reps) {
  memory::Ledger ledger;
  memory::Arenas arenas("bench_kernels", ledger);
  Problem p = make_problem(s, arenas.workspace);
  moe::ExpertFFN ffn(s.experts, s.d_model, s.hidden, s.activation, s.rows(), arenas);
  auto ffn_step = [&] {
    ffn.forward(p.x, p.offsets, p.w1, p.w2, p.y);
    ffn.backward(p.dy, p.x, p.w1, p.w2, p.dx, p.dw1, p.dw2);
  };
  Result r;
  time_it(ffn_step);  // warm-up: page faults, BLAS thread start, caches
  time_it([&] { r.plain_flops = plain_sgemms(p); });
  r.ffn_flops = ffn.flops_forward_backward();
  std::vector<double> t_ffn, t_plain;
  for (int i = 0; i < reps; ++i) {
    t_ffn.push_back(time_it(ffn_step));
    t_plain.push_back(time_it([&] { plain_sgemms(p); }));
  }
  r.ffn_gflops = r.ffn_flops / median(t_ffn) * 1e-9;
  r.plain_gflops = r.plain_flops / median(t_plain) * 1e-9;
  // bf16 after the fp32 runs, not interleaved: OpenBLAS's threads spin for a while
  // after each call and would take the cores from oneDNN's.
  ffn.set_precision(kernels::Precision::BF16);
  time_it(ffn_step);
  std::vector<double> t_bf16;
  for (int i = 0; i < reps; ++i) t_bf16.push_back(time_it(ffn_step));
  r.bf16_gflops = r.ffn_flops / median(t_bf16) * 1e-9;
  return r;
}

std::string validate(const BenchKernelsOptions& opt, const std::vector<ExpertBenchShape>& shapes) {
  if (opt.reps < 1) return "reps must be at least 1 (got " + std::to_string(opt.reps) + ")";
  for (const auto& s : shapes) {
    if (s.tokens < 1 || s.top_k < 1 || s.experts < 1 || s.d_model < 1 || s.hidden < 1)
      return "shape " + s.label() + ": every size must be positive";
    if (s.top_k > s.experts) return "shape " + s.label() + ": top_k exceeds the expert count";
    const std::int64_t widest = std::max<std::int64_t>(s.d_model, 2 * std::int64_t(s.hidden));
    if (s.rows() > INT_MAX || widest > INT_MAX / 2)
      return "shape " + s.label() + ": too large for 32-bit BLAS dimensions";
  }
  return "";
}

}  // namespace

std::string ExpertBenchShape::label() const {
  std::string out = "E";  // appended piecewise: GCC 12 warns falsely on "E" + to_string(...)
  out += std::to_string(experts) + " d" + std::to_string(d_model) + " h" +
         std::to_string(hidden) + " rows" + std::to_string(rows());
  if (activation == moe::Activation::Swiglu) out += " swiglu";
  return out;
}

std::vector<ExpertBenchShape> default_expert_bench_shapes() {
  ExpertBenchShape model;  // the defaults above
  ExpertBenchShape wide;
  wide.d_model = 1024;
  wide.hidden = 4096;
  return {model, wide};
}

ExpertBenchShape parse_expert_bench_shape(std::string_view spec) {
  ExpertBenchShape s;
  while (!spec.empty()) {
    const auto comma = spec.find(',');
    const std::string_view item = spec.substr(0, comma);
    spec = comma == std::string_view::npos ? std::string_view{} : spec.substr(comma + 1);
    const auto eq = item.find('=');
    const std::string key(item.substr(0, eq));
    const std::string value(eq == std::string_view::npos ? "" : item.substr(eq + 1));
    if (key == "act") {
      if (value == "gelu") s.activation = moe::Activation::Gelu;
      else if (value == "swiglu") s.activation = moe::Activation::Swiglu;
      else throw std::invalid_argument("bench shape: act must be gelu or swiglu, not '" + value + "'");
      continue;
    }
    long long n = 0;
    std::size_t used = 0;
    try {
      n = std::stoll(value, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (value.empty() || used != value.size() || n < 1 || n > INT_MAX)
      throw std::invalid_argument("bench shape: '" + std::string(item) +
                                  "' needs a positive integer value");
    if (key == "tokens") s.tokens = n;
    else if (key == "top_k") s.top_k = int(n);
    else if (key == "experts") s.experts = int(n);
    else if (key == "d_model") s.d_model = int(n);
    else if (key == "hidden") s.hidden = int(n);
    else
      throw std::invalid_argument("bench shape: unknown key '" + key +
                                  "' (known: tokens, top_k, experts, d_model, hidden, act)");
  }
  return s;
}

int bench_kernels(const BenchKernelsOptions& opt) {
  const auto shapes = opt.shapes.empty() ? default_expert_bench_shapes() : opt.shapes;
  int rank = 0, ranks = 1, mpi_up = 0;
  MPI_Initialized(&mpi_up);
  if (mpi_up) MPI_Comm_rank(MPI_COMM_WORLD, &rank), MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  if (const auto bad = validate(opt, shapes); !bad.empty()) {
    if (rank == 0) std::fprintf(stderr, "furnace bench kernels: %s\n", bad.c_str());
    return 2;
  }
  const std::string core = kernels::blas_core_in_use();
  const int threads = kernels::blas_threads();
  if (rank == 0) {
    if (opt.csv)
      std::printf("shape,experts,d_model,hidden,rows,gflop,expert_ffn_gflops,sgemm_gflops,ratio,"
                  "blas_core,threads,ranks,bf16_gflops,bf16_over_fp32\n");
    else
      std::printf("Expert FFN forward+backward vs plain cblas_sgemm of the same 6 GEMMs per expert, and the\n"
                  "same ExpertFFN in bf16 (%s)\n"
                  "(median of %d, OpenBLAS core %s, %d thread%s per rank, %d rank%s%s)\n\n"
                  "%-30s %9s %14s %14s %7s %-10s %7s %10s %9s\n",
                  kernels::gemm16_description(kernels::Precision::BF16).c_str(), opt.reps, core.c_str(), threads,
                  threads == 1 ? "" : "s", ranks, ranks == 1 ? "" : "s",
                  ranks > 1 ? ": every rank runs each shape at the same time, GF/s summed over the ranks" : "",
                  "shape", "GFLOP", "ExpertFFN GF/s", "sgemm GF/s", "ratio", "core", "threads", "bf16 GF/s",
                  "bf16/fp32");
    std::fflush(stdout);
  }
  for (const auto& s : shapes) {
    // Ranks start each shape together and their rates add up: what the node does at
    // this layout (1 rank x N threads against N ranks x 1 thread: scripts/bench-threads).
    if (mpi_up && ranks > 1) MPI_Barrier(MPI_COMM_WORLD);
    Result r = run_shape(s, opt.reps);
    if (mpi_up && ranks > 1) {
      double rates[3] = {r.ffn_gflops, r.plain_gflops, r.bf16_gflops};
      MPI_Allreduce(MPI_IN_PLACE, rates, 3, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
      r.ffn_gflops = rates[0], r.plain_gflops = rates[1], r.bf16_gflops = rates[2];
    }
    if (rank != 0) continue;
    // Both sides count the same six GEMMs; a mismatch means flops_forward_backward is off.
    if (std::abs(r.ffn_flops - r.plain_flops) > 1e-9 * r.plain_flops)
      std::fprintf(stderr, "furnace bench kernels: warning: ExpertFFN counts %.6g FLOPs, the six "
                   "GEMMs do %.6g\n", r.ffn_flops, r.plain_flops);
    const double ratio = r.ffn_gflops / r.plain_gflops;
    if (opt.csv)
      std::printf("%s,%d,%d,%d,%lld,%.4f,%.2f,%.2f,%.3f,%s,%d,%d,%.2f,%.3f\n", s.label().c_str(), s.experts,
                  s.d_model, s.hidden, static_cast<long long>(s.rows()), r.ffn_flops * 1e-9,
                  r.ffn_gflops, r.plain_gflops, ratio, core.c_str(), threads, ranks, r.bf16_gflops,
                  r.bf16_gflops / r.ffn_gflops);
    else
      std::printf("%-30s %9.2f %14.1f %14.1f %7.3f %-10s %7d %10.1f %9.3f\n", s.label().c_str(),
                  r.ffn_flops * 1e-9, r.ffn_gflops, r.plain_gflops, ratio, core.c_str(), threads, r.bf16_gflops,
                  r.bf16_gflops / r.ffn_gflops);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace furnace::app
