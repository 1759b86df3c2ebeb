// A machine description for `furnace plan` (configs/machines/*.toml): per-rank compute
// and memory, the network's two tiers, the I/O paths. `furnace bench calibrate` writes
// one for the machine it runs on; the others are written from public specifications,
// each number with its source in a comment. Every key is listed in docs/plan.md.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "comm/exchange_cost.hpp"

namespace furnace::app {

// Achieved GEMM rate of one thread (or one accelerator) as a function of the work of
// one call: (flops of the call, flop/s) points, interpolated log-linearly in flops and
// clamped at both ends. A machine without a measured curve gives peak x efficiency.
struct GemmCurve {
  std::vector<std::pair<double, double>> points;  // ascending flops
  double rate(double flops) const;
};

// One network tier as alpha-beta (the same type the trainer's comm.alltoall = auto uses).
using Link = comm::Link;

struct Machine {
  std::string name, path;
  int cores_per_node = 1;        // CPU cores (threads) a node gives its ranks
  int ranks_per_node = 1;        // the default layout: GPUs per node, or 1 rank per socket
  int max_nodes = 1;             // the largest machine (plan refuses more)
  bool device_is_host = true;    // CPU build: the device tier is host memory
  double device_bytes = 0;       // per rank (HBM); unused when device_is_host
  double host_bytes = 0;         // per node
  double nvme_bytes = 0;         // per node (0: no nvme tier)
  // Compute, per rank: peak flop/s and the GEMM curves. A CPU's curves are one
  // thread's; a rank with t threads runs big GEMMs at t x the rate of a t-th of the
  // call, times thread_efficiency (measured at all cores on a large GEMM).
  bool per_thread = true;        // CPU: curves per thread; accelerator: per rank
  double peak_fp32 = 0, peak_16bit = 0;  // flop/s per rank
  GemmCurve gemm_fp32, gemm_16bit;
  // CPU: the curves of one rank using all cores_per_node threads (measured, optional);
  // a rank with every core of the node uses these instead of scaling one thread's.
  GemmCurve gemm_fp32_node, gemm_16bit_node;
  double thread_efficiency = 1;
  double memory_bandwidth = 0;         // bytes/s per node (all cores)
  double memory_bandwidth_thread = 0;  // bytes/s one thread reaches (CPU; 0: node / ranks)
  // What the trainer's memory-bound kernels reach on one thread (0: the triad figures);
  // the elementwise term divides by it.
  double kernel_bandwidth = 0;
  // The same for the activation function (GELU / SwiGLU, forward and backward), which
  // computes more per float than it moves (0: kernel_bandwidth).
  double activation_bandwidth = 0;
  int kernel_threads = 0;  // threads those kernels use per rank: 0 = all the rank's cores, 1 = a Serial build
  Link intra, inter;
  std::string inter_note;  // save_machine: where the inter-node figures come from (calibrate)
  // A tapered fat tree: groups of taper_group nodes are non-blocking; traffic between
  // groups gets inter.bandwidth / taper (1: no taper).
  int taper_group = 0;
  double taper = 1;
  double h2d = 0, d2h = 0;             // bytes/s per rank (host <-> device)
  double nvme_read = 0, nvme_write = 0;  // bytes/s per node
  double checkpoint_write = 0;           // bytes/s per node to the checkpoint file system
};

// The slowest transfer rate a machine file may state (bytes/s; 1e-6 GB/s): a floor so
// that no time in the model divides by zero.
inline constexpr double kMinRateBytes = 1e3;

// Reads and checks a machine file; throws io::ConfigError naming the file and key.
Machine load_machine(const std::string& path);

// Writes `m` as a machine file (what `bench calibrate --out` leaves); throws on I/O errors.
void save_machine(const Machine& m, const std::string& path, const std::string& comment);

}  // namespace furnace::app
