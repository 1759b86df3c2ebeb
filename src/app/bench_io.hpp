// `furnace bench io`: how close the collective HDF5 checkpoint (io::write_checkpoint /
// io::read_checkpoint) comes to plain POSIX I/O of the same bytes to the same
// directory, and what an async checkpoint would stall the training loop for (the copy
// of params and both AdamW moments into a host snapshot) next to a synchronous write.
// All ranks form one ep group (ep = world size); the store is a realistic MoE model
// (embeddings, attention, norms, router, expert FFNs) sized to `size_mb`.
#pragma once
#include <string>

namespace furnace::app {

struct BenchIoOptions {
  std::string dir = "runs/bench-io";  // checkpoint and baseline files go here
  double size_mb = 256;               // global parameter bytes (MiB); files are 3x (params + 2 moments)
  int reps = 3;                       // timed repetitions of each, median reported
  bool fsync = false;                 // include fsync in both write timings (durable writes)
  bool keep_files = false;            // keep <dir>/step_00000001.h5 and <dir>/latest afterwards
  double step_ms = 300;               // simulated step between an async save and the next update
                                      // (the default model's step on 2 cores)
};

// Collective over MPI_COMM_WORLD (needs MPI and Kokkos initialised). Rank 0 prints a
// table: MB/s of checkpoint and plain write and read, their ratios, and the async
// snapshot copy time against the synchronous write time. Returns 0; 1 when the data
// read back differs from what was written or an I/O call fails; 2 for invalid options.
int bench_io(const BenchIoOptions& opt);

}  // namespace furnace::app
