// Checkpoints: one parallel HDF5 file per save, written collectively by every rank and
// readable on any parallel layout (tensors are stored in their global shape). The file
// format is documented in docs/checkpoint-format.md.
#pragma once
#include <cstddef>
#include <stdexcept>
#include <string>

#include "comm/groups.hpp"
#include "memory/param_store.hpp"

namespace furnace::io {

struct CheckpointMeta {
  long step = 0;                 // training steps completed
  long long tokens_seen = 0;
  std::string config_json;       // the resolved config (io::to_json)
  unsigned long long seed = 0;
  int world = 1, dp = 1, ep = 1;  // the layout that wrote the file (read: as stored)
};

// A missing, incomplete (.tmp), truncated or corrupt checkpoint, or one that does not
// match the model. The message names the file (and dataset) and is identical on every rank.
struct CheckpointError : std::runtime_error {
  using runtime_error::runtime_error;
};

// Host copies to write, laid out like ps.params() (offsets of ps.infos()): lets the
// trainer write a snapshot in the background while training continues.
struct CheckpointBuffers {
  const float* params;
  const float* exp_avg;
  const float* exp_avg_sq;
  long optimizer_step;
};

// Collective over g.world(). Writes <dir>/step_XXXXXXXX.h5.tmp (XXXXXXXX = meta.step),
// closes it, renames it to .h5, rewrites <dir>/latest atomically (latest.tmp + rename)
// with the file name, and deletes the oldest step_*.h5 beyond `keep` (and older
// leftover .tmp files). `alignment`: H5Pset_alignment for objects >= 64 KiB.
// Returns the final path; CheckpointError (same on every rank) on failure, leaving no
// file under the final name.
std::string write_checkpoint(const std::string& dir, const memory::ParamStore& ps, const CheckpointBuffers& b,
                             const CheckpointMeta& meta, const comm::Groups& g, int keep,
                             std::size_t alignment);

// Collective over g.world(). Checks format and version and that every tensor of ps is
// present with the same global shape, reads this rank's slab of every tensor (any
// layout: another ep or world size just means other slabs) into ps.params(),
// ps.exp_avg() and ps.exp_avg_sq(), sets *optimizer_step (when not null) and returns
// the stored meta. On any failure nothing of ps is changed.
CheckpointMeta read_checkpoint(const std::string& path, memory::ParamStore& ps, const comm::Groups& g,
                               long* optimizer_step);

// What to resume from. spec "auto": the file named by <dir>/latest, or "" when there is
// no latest; spec a directory: its latest (error when it has none); spec a file: that
// file (CheckpointError when it is missing or an incomplete .tmp). Not collective.
std::string resolve_resume(const std::string& dir, const std::string& spec);

// "step_00000042.h5"
std::string checkpoint_file_name(long step);

}  // namespace furnace::io
