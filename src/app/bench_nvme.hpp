// `furnace bench nvme`: how close the nvme tier (memory::NvmeStore: aligned regions,
// staging slots, one background I/O thread) comes to a plain sequential write and
// read of the same bytes in the same directory, and how much of a read the store's
// prefetch hides behind work on the previous region.
#pragma once
#include <string>

namespace furnace::app {

struct BenchNvmeOptions {
  std::string dir = "runs/bench-nvme";  // the store's rank<R>/ directory and the plain file go here
  double size_mb = 2048;                // MiB per rank
  double region_mb = 64;                // MiB per region (a layer's experts, a tensor's moments)
  int repeat = 5;                       // timed repetitions of each, median reported
  double compute_ms = 0;                // work per region in the overlap row; 0: the plain read time of one region
  bool buffered = false;                // force buffered I/O in the store (and so in the baseline)
};

// Collective over MPI_COMM_WORLD (each rank its own files). Rank 0 prints GB/s of the
// store and the baseline for write, read and read + compute, and the median of the
// paired ratios. Returns 0; 1 when an I/O call fails or data read back differs; 2 for
// invalid options or an unusable directory.
int bench_nvme(const BenchNvmeOptions& opt);

}  // namespace furnace::app
