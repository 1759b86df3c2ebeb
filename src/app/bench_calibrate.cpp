// `furnace bench calibrate --out FILE`: measures this machine for `furnace plan` and
// writes a machine description (plan_machine.hpp): one thread's GEMM curve in fp32
// and 16 bits, all cores on a large GEMM, memory bandwidth of one thread and of all
// ranks at once, MPI alpha-beta from a ping-pong between ranks 0 and 1, and the
// sequential write and read rates of a directory. Run with one rank per core
// (`mpiexec -n <cores>`) so that the bandwidth of all cores and the network are seen.
#include <fcntl.h>
#include <mpi.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <Kokkos_Core.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <vector>

#include "app/bench_calibrate.hpp"
#include "app/bench_util.hpp"
#include "app/commands.hpp"
#include "app/plan_machine.hpp"
#include "app/setup_check.hpp"
#include "comm/exchange_cost.hpp"
#include "comm/groups.hpp"
#include "comm/wait.hpp"
#include "kernels/blas_runtime.hpp"
#include "kernels/activations.hpp"
#include "kernels/gemm.hpp"
#include "kernels/norms.hpp"

namespace furnace::app {

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// A barrier that yields while it waits, so that an idle rank leaves its core to the
// one measuring (MPICH's blocking calls spin).
void quiet_barrier(MPI_Comm c) {
  MPI_Request r;
  mpiCheck(MPI_Ibarrier(c, &r));
  comm::wait_all(1, &r, comm::WaitMode::Yield);
}

// The best rate (flop/s) of an n x n x n GEMM over repetitions lasting ~budget_s.
double gemm_rate(int n, kernels::Precision p, double budget_s) {
  std::vector<float> a(std::size_t(n) * n, 0.5f), b(a), c(a.size());
  auto once = [&] {
    kernels::gemm(p, kernels::Op::N, kernels::Op::N, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
  };
  once();  // warm: packing buffers, plugin load
  double best = 1e300;
  const double end = now() + budget_s;
  for (int r = 0; r < 3 || (now() < end && r < 10000); ++r) {
    const double t0 = now();
    once();
    best = std::min(best, now() - t0);
  }
  return 2.0 * n * n * n / best;
}

// Triad a = b + s c over 3 x 64 MiB: bytes moved per second (best of 5).
double triad_bandwidth() {
  const std::size_t n = std::size_t(16) << 20;
  std::vector<float> a(n, 0), b(n, 1), c(n, 2);
  double best = 1e300;
  for (int r = 0; r < 5; ++r) {
    const double t0 = now();
    float* __restrict pa = a.data();
    const float *__restrict pb = b.data(), *__restrict pc = c.data();
    for (std::size_t i = 0; i < n; ++i) pa[i] = pb[i] + 0.5f * pc[i];
    best = std::min(best, now() - t0);
  }
  volatile float sink = a[n / 2];
  (void)sink;
  return 3.0 * double(n) * sizeof(float) / best;
}

// The bytes per second the trainer's memory-bound kernels reach, counted as the planner
// counts them: layer norm forward and backward (what the elementwise term of a step
// divides its floats by) and GELU forward and backward (its activation floats: erf
// makes it about half as fast per float, and a single rate of both overestimated the
// other kernels' time by ~40 % at 1 rank), on [8192, 256] (our kernels are plain loops,
// far from triad).
// The median of passes taken at three points of the calibration (sample() before the
// GEMM curves, after them and after the triad), not the best of one burst: this term
// is half of a small model's step, and on a shared VM the best of 5 ranged 1.6-2.5 GB/s
// from one calibration to the next; a neighbour's burst during one sample now moves
// the median of the pooled passes little. The step time it predicts is a median too.
class KernelRate {
 public:
  KernelRate()
      : xs_(std::size_t(kRows) * kCols, 0.5f), ys_(xs_.size(), 0.25f), dxs_(xs_.size()), ws_(kCols, 1.0f),
        bs_(kCols), dws_(kCols), dbs_(kCols), means_(kRows), rstds_(kRows) {}

  void sample(int passes) {
    namespace k = kernels;
    // Host vectors under unmanaged views: this measures a Serial/OpenMP (host) build.
    const k::View2<float> x(xs_.data(), kRows, kCols), y(ys_.data(), kRows, kCols), dx(dxs_.data(), kRows, kCols);
    const k::View1<float> w(ws_.data(), kCols), b(bs_.data(), kCols), dw(dws_.data(), kCols), db(dbs_.data(), kCols);
    const k::View1<float> mean(means_.data(), kRows), rstd(rstds_.data(), kRows);
    const k::View1<float> x1(x.data(), x.size()), y1(y.data(), y.size()), dx1(dx.data(), dx.size());
    for (int r = 0; r < passes; ++r) {
      const double t0 = now();
      k::layernorm_forward<float>(x, w, b, 1e-5f, y, mean, rstd);
      k::layernorm_backward<float>(y, x, w, mean, rstd, dx, dw, db);
      Kokkos::fence();
      const double t1 = now();
      k::gelu_forward<float>(x1, y1);
      k::gelu_backward<float>(x1, y1, dx1);
      Kokkos::fence();
      norm_s_.push_back(t1 - t0);
      gelu_s_.push_back(now() - t1);
    }
  }
  // Floats moved: norm forward 2, backward 4 (dy, x, dx read, dx written); GELU 2 and 3.
  double norm_bytes_per_second() const { return double(kRows) * kCols * sizeof(float) * (2 + 4) / median(norm_s_); }
  double gelu_bytes_per_second() const { return double(kRows) * kCols * sizeof(float) * (2 + 3) / median(gelu_s_); }

 private:
  static constexpr int kRows = 8192, kCols = 256;
  std::vector<float> xs_, ys_, dxs_, ws_, bs_, dws_, dbs_, means_, rstds_;
  std::vector<double> norm_s_, gelu_s_;
};

// Sequential write and read of `mb` MiB in `dir` as the nvme tier does them (O_DIRECT,
// 4 MiB requests; buffered plus fsync where the file system refuses O_DIRECT): bytes/s,
// or 0 and a note when the directory cannot be used.
std::pair<double, double> disk_rates(const std::string& dir, int mb, std::string& note) {
  const std::string path = dir + "/furnace-calibrate.tmp";
  bool direct = true;
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_DIRECT, 0600);
  if (fd < 0 && errno == EINVAL) direct = false, fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) {
    note = sys_error("cannot create", path);
    return {0, 0};
  }
  const std::size_t piece = std::size_t(4) << 20, total = std::size_t(mb) << 20;
  void* mem = nullptr;
  if (::posix_memalign(&mem, 4096, piece) != 0) mem = nullptr;
  char* block = static_cast<char*>(mem);
  bool ok = block != nullptr;
  if (ok) std::memset(block, 1, piece);
  const double t0 = now();
  for (std::size_t off = 0; ok && off < total; off += piece) ok = full_io(true, fd, block, piece, off_t(off));
  ok = ok && ::fsync(fd) == 0;
  const double tw = now() - t0;
  if (!direct) ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  const double t1 = now();
  for (std::size_t off = 0; ok && off < total; off += piece) ok = full_io(false, fd, block, piece, off_t(off));
  const double tr = now() - t1;
  std::free(mem);
  ::close(fd);
  ::unlink(path.c_str());
  if (!ok) {
    note = sys_error("cannot write and read", path);
    return {0, 0};
  }
  return {double(total) / tw, double(total) / tr};
}

}  // namespace

int bench_calibrate(const BenchCalibrateOptions& opt) {
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm node;
  mpiCheck(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node));
  int node_ranks = 1;
  mpiCheck(MPI_Comm_size(node, &node_ranks));
  // The node's cores are its ranks' CPUs (their affinity), not the machine's: on an
  // emulated node or in a Slurm cpuset they are a share. Rank 0 runs the all-cores
  // GEMMs on its own CPUs.
  const NodeCpus cpus = node_cpus(MPI_COMM_WORLD);
  const int cores = std::max(1, cpus.mine);
  const int my_threads = kernels::blas_threads();
  auto say = [&](const char* fmt, auto... v) {
    if (rank == 0) std::fprintf(stderr, fmt, v...), std::fflush(stderr);
  };

  Machine m;
  m.name = opt.name;
  m.cores_per_node = std::max(cpus.node, node_ranks);
  m.ranks_per_node = node_ranks;
  m.max_nodes = 1;
  const bool has16 = kernels::gemm16_engine_error(kernels::Gemm16Engine::Auto, kernels::Precision::BF16).empty();
  KernelRate kernel_rate;  // rank 0's, sampled at three points (see KernelRate)
  if (rank == 0) kernel_rate.sample(7);
  // 1. GEMM curves of one thread, the other ranks asleep; then all cores on one GEMM.
  if (rank == 0) {
    say("calibrate: GEMM curves, 13 sizes from n = 16 to 1024, one thread\n");
    kernels::set_blas_threads(1);
    kernels::set_gemm16_threads(1);
    for (int n : {16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024}) {
      const double flops = 2.0 * n * n * n;
      m.gemm_fp32.points.emplace_back(flops, gemm_rate(n, kernels::Precision::FP32, opt.seconds));
      m.gemm_16bit.points.emplace_back(flops, gemm_rate(n, has16 ? kernels::Precision::BF16 : kernels::Precision::FP32,
                                                        opt.seconds));
    }
    kernels::set_blas_threads(cores);
    kernels::set_gemm16_threads(cores);
    if (cores > 1) {
      say("calibrate: the same on %d threads\n", cores);
      for (const auto& [flops, rate] : m.gemm_fp32.points) {
        const int n = int(std::lround(std::cbrt(flops / 2)));
        m.gemm_fp32_node.points.emplace_back(flops, gemm_rate(n, kernels::Precision::FP32, opt.seconds));
        m.gemm_16bit_node.points.emplace_back(
            flops, gemm_rate(n, has16 ? kernels::Precision::BF16 : kernels::Precision::FP32, opt.seconds));
      }
    }
    const double all = gemm_rate(1536, kernels::Precision::FP32, 4 * opt.seconds);
    const double all16 = has16 ? gemm_rate(1536, kernels::Precision::BF16, 4 * opt.seconds) : all;
    m.peak_fp32 = all;
    m.peak_16bit = all16;
    m.thread_efficiency = std::min(1.0, all / (cores * m.gemm_fp32.rate(2.0 * 1536 * 1536 * 1536 / cores)));
    kernels::set_blas_threads(my_threads);
    kernels::set_gemm16_threads(my_threads);
    say("calibrate: GEMM fp32 %.1f GF/s on one thread, %.1f on %d; 16-bit %.1f on %d %s\n",
        m.gemm_fp32.points.back().second / 1e9, all / 1e9, cores, all16 / 1e9, cores, has16 ? "" : "(no 16-bit engine: fp32)");
  }
  quiet_barrier(MPI_COMM_WORLD);
  // 2. Memory bandwidth: one thread alone, then every rank at once (summed over a node:
  //    the key is a node's).
  if (rank == 0) {
    kernel_rate.sample(7);
    m.memory_bandwidth_thread = triad_bandwidth();
    kernel_rate.sample(7);
    m.kernel_bandwidth = kernel_rate.norm_bytes_per_second();
    m.activation_bandwidth = kernel_rate.gelu_bytes_per_second();
  }
  m.kernel_threads = Kokkos::DefaultExecutionSpace().concurrency() > 1 ? 0 : 1;
  quiet_barrier(MPI_COMM_WORLD);
  double mine = triad_bandwidth(), sum = 0;
  mpiCheck(MPI_Allreduce(&mine, &sum, 1, MPI_DOUBLE, MPI_SUM, node));
  mpiCheck(MPI_Comm_free(&node));
  m.memory_bandwidth = std::max(sum, m.memory_bandwidth_thread);
  say("calibrate: memory %.1f GB/s one thread, %.1f GB/s %d rank(s) of a node at once; the trainer's kernels %.1f "
      "GB/s\n",
      m.memory_bandwidth_thread / 1e9, m.memory_bandwidth / 1e9, node_ranks, m.kernel_bandwidth / 1e9);
  // 3. MPI alpha-beta: rank 0 to a rank on its node (intra) and to the first rank on
  //    another node (inter), as comm.alltoall = auto measures them; a tier without a
  //    pair copies the other.
  if (world >= 2) {
    const comm::Groups groups(MPI_COMM_WORLD, 1, 0);
    const comm::MeasuredLinks l = comm::measure_links(groups, std::size_t(16) << 20, 200, 10);
    m.intra = l.intra, m.inter = l.inter;
    if (l.has_inter) m.inter_note = "measured: rank 0 to the first rank on another node";
    if (!l.has_intra) say("calibrate: one rank per node: the intra-node keys copy the inter-node ones\n");
    m.max_nodes = std::max(1, world / node_ranks);
  } else {
    say("calibrate: one rank: no MPI measurement; the network keys are copied from the memory bandwidth\n");
    m.intra = m.inter = {1e-6, m.memory_bandwidth_thread / 2};
  }
  say("calibrate: MPI intra-node %.2f us, %.2f GB/s; inter-node %.2f us, %.2f GB/s (%s)\n", m.intra.latency_s * 1e6,
      m.intra.bandwidth / 1e9, m.inter.latency_s * 1e6, m.inter.bandwidth / 1e9,
      m.inter_note.empty() ? "one node: the intra-node path stands in" : m.inter_note.c_str());
  // 4. Disk and memory size (rank 0).
  if (rank == 0) {
    std::string note;
    const auto [w, r] = disk_rates(opt.dir, opt.disk_mb, note);
    if (!note.empty()) say("calibrate: disk: %s\n", note.c_str());
    // Without a usable directory the checkpoint rate is the loader's floor (1 kB/s):
    // the plan then shows checkpoint amortisation as dominant instead of hiding it.
    m.nvme_write = w, m.nvme_read = r, m.checkpoint_write = std::max(w, kMinRateBytes);
    struct statvfs vfs{};
    if (::statvfs(opt.dir.c_str(), &vfs) == 0) m.nvme_bytes = double(vfs.f_bavail) * double(vfs.f_frsize);
    m.host_bytes = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE));
    say("calibrate: disk '%s' write %.2f GB/s, read %.2f GB/s\n", opt.dir.c_str(), w / 1e9, r / 1e9);
    // Written, then read back with the loader `furnace plan` uses: a measurement outside
    // its accepted ranges is reported here, where it was made, not at the next plan.
    std::string error;
    try {
      save_machine(m, opt.out,
                   "# Written by `furnace bench calibrate` (" + std::to_string(world) + " rank(s), " +
                       std::to_string(node_ranks) + " per node on " + std::to_string(m.cores_per_node) +
                       " core(s)). Keys: docs/plan.md.");
      try {
        (void)load_machine(opt.out);
      } catch (const std::exception& e) {
        throw std::runtime_error(std::string(e.what()) + " (measured by bench calibrate: rerun it on an idle node)");
      }
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (!error.empty()) {
      std::fprintf(stderr, "furnace: %s\n", error.c_str());
      quiet_barrier(MPI_COMM_WORLD);
      return kBadConfig;
    }
    std::printf("calibrate: wrote %s\n", opt.out.c_str());
  }
  quiet_barrier(MPI_COMM_WORLD);
  return kOk;
}

}  // namespace furnace::app
