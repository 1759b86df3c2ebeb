// `furnace ckpt inspect` (see cmd_ckpt.hpp): a report of io::inspect_checkpoint, which
// runs the same checks as a load (io::read_checkpoint) on the file alone.
#include "app/cmd_ckpt.hpp"

#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "app/commands.hpp"
#include "io/checkpoint.hpp"

namespace furnace::app {
namespace {

std::string shape_str(const std::vector<hsize_t>& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

double elements(const io::TensorEntry& t) {
  double n = 1;
  for (hsize_t d : t.shape) n *= double(d);
  return n;
}

void print_report(const io::CheckpointReport& r, bool verify) {
  const auto& h = r.header;
  std::printf("checkpoint %s (%.1f MiB)\n", r.path.c_str(), double(r.file_bytes) / double(1 << 20));
  std::printf("  format          furnace-checkpoint, version %d (a checksum per block of every tensor)\n",
              h.format_version);
  std::printf("  written by      furnace %s (git %s), created %s\n", h.furnace_version.c_str(),
              h.git_revision.c_str(), h.created.c_str());
  std::printf("  step            %ld, tokens seen %lld, seed %llu\n", h.meta.step, h.meta.tokens_seen, h.meta.seed);
  std::printf("  layout          world %d = dp %d x ep %d (any layout may read it)\n", h.meta.world, h.meta.dp,
              h.meta.ep);
  std::printf("  optimizer step  %ld\n", h.optimizer_step);
  std::printf("  config_json     %zu bytes\n", h.meta.config_json.size());
  std::size_t w = 6;
  for (const auto& t : h.tensors) w = std::max(w, t.name.size());
  std::printf("\n  %-*s  %-18s %-7s %10s\n", int(w), "tensor", "shape", "kind", "MiB");
  double total = 0;
  for (const auto& t : h.tensors) {
    total += elements(t);
    std::printf("  %-*s  %-18s %-7s %10.3f\n", int(w), t.name.c_str(), shape_str(t.shape).c_str(),
                t.kind == memory::ParamKind::Expert ? "expert" : "dense", 4 * elements(t) / double(1 << 20));
  }
  std::printf("\n  %zu tensors, %.0f parameters, %.1f MiB of parameters (%.1f MiB with both moments)\n",
              h.tensors.size(), total, 4 * total / double(1 << 20), 12 * total / double(1 << 20));
  if (verify) {
    std::printf("\n  verify: every block of every dataset read, its checksum and values checked\n");
    std::printf("  %-*s  %-10s %14s %14s %14s\n", int(w), "tensor", "dataset", "min", "max", "mean|x|");
    for (const auto& d : r.datasets)
      std::printf("  %-*s  %-10s %14.6g %14.6g %14.6g\n", int(w), d.tensor.c_str(), d.family.c_str(), d.stats.min,
                  d.stats.max, d.stats.n ? d.stats.sum_abs / double(d.stats.n) : 0.0);
  }
}

}  // namespace

int cmd_ckpt_inspect(const std::string& path_in, bool verify) {
  int initialized = 0, rank = 0, size = 1;
  MPI_Initialized(&initialized);
  if (initialized) {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
  }
  int rc = kOk;
  if (rank == 0) {
    try {
      std::error_code ec;
      const std::string path =
          std::filesystem::is_directory(path_in, ec) ? io::resolve_resume(path_in, path_in) : path_in;  // its `latest`
      const io::CheckpointReport report = io::inspect_checkpoint(path, verify);
      print_report(report, verify);
      std::printf("  intact%s\n", verify ? " (every checksum matches; all values finite, second moments >= 0)"
                                         : " (metadata and every dataset checked; --verify reads the data)");
    } catch (const io::CheckpointError& e) {
      std::fflush(stdout);
      std::fprintf(stderr, "furnace: %s\n", e.what());
      rc = kBadData;
    }
    std::fflush(stdout);
  }
  if (initialized && size > 1) MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
  return rc;
}

}  // namespace furnace::app
