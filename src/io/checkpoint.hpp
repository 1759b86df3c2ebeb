// Checkpoints: one parallel HDF5 file per save, written collectively by every rank and
// readable on any parallel layout (tensors are stored in their global shape), with a
// checksum per block of every tensor. The file format is docs/checkpoint-format.md.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <hdf5.h>
#include <stdexcept>
#include <string>
#include <vector>

#include "comm/groups.hpp"
#include "memory/state_store.hpp"

namespace furnace::io {

struct CheckpointMeta {
  long step = 0;                 // training steps completed
  long long tokens_seen = 0;
  std::string config_json;       // the resolved config (io::to_json)
  unsigned long long seed = 0;
  int world = 1, dp = 1, ep = 1;  // the layout that wrote the file (read: as stored)
  // fp16 dynamic loss scaling (train.precision = fp16): the scale as log2 and the
  // finite steps since it last changed; loss_scale_log2 < 0: not written (another precision).
  // At most kMaxLossScaleLog2: train.loss_scale <= 1e30 < 2^100 and the scale only halves
  // from there, or doubles up to 2^24.
  static constexpr int kMaxLossScaleLog2 = 99;
  int loss_scale_log2 = -1;
  long long loss_scale_good_steps = 0;
};

// A missing, incomplete (.tmp), truncated or corrupt checkpoint, or one that does not
// match the model. The message names the file (and dataset) and is identical on every rank.
struct CheckpointError : std::runtime_error {
  using runtime_error::runtime_error;
};

// Tensors that are in memory only while their group is (memory.experts = nvme,
// memory::StateOffload): the checkpoint code asks for a group before it touches the
// bytes of one of its tensors. Writing: bring(g) puts the group's parameters and
// moments in memory (evicting any other group). Reading: bring(g) commits them as
// zeros, the read fills them, and done(g) writes them to the nvme tier.
struct OffloadAccess {
  std::function<int(int tensor)> group_of;  // -1: always in memory
  std::function<void(int group)> bring, done;
};

// Host copies to write, laid out like ps.params() (offsets of ps.infos()) and the
// moments like ps.exp_avg() (ZeRO-1: this rank's packed parts, ps.shards()): lets the
// trainer write a snapshot in the background while training continues.
struct CheckpointBuffers {
  const float* params;
  const float* exp_avg;
  const float* exp_avg_sq;
  long optimizer_step;
  const OffloadAccess* offload = nullptr;  // the buffers are the store's own then
};

struct CheckpointWriteOptions {
  int keep = 3;                      // complete files kept (>= 1)
  std::size_t alignment = 1 << 20;   // H5Pset_alignment for objects >= 64 KiB (0: none)
  bool fsync = true;                 // file, then directory, durable before `latest` moves
};

// Collective over g.world(). Writes <dir>/step_XXXXXXXX.h5.tmp (XXXXXXXX = meta.step):
// every rank writes its share independently (Dense tensors spread over the ranks,
// Expert slabs by their dp_rank-0 holders, ZeRO-1 moments by their owners), with a checksum per block; closes it,
// fsyncs it (opt.fsync), renames it to .h5, rewrites <dir>/latest atomically and
// durably, and deletes the oldest step_*.h5 beyond opt.keep (and older .tmp files).
// Returns the final path; CheckpointError (same on every rank) on failure, leaving no
// file under the final name.
std::string write_checkpoint(const std::string& dir, const memory::StateStore& ps, const CheckpointBuffers& b,
                             const CheckpointMeta& meta, const comm::Groups& g,
                             const CheckpointWriteOptions& opt);

// Which world rank writes each Dense tensor (-1 for Expert tensors, which their
// dp_rank-0 holders write): largest first onto the least-loaded rank. Not collective.
std::vector<int> dense_writers(const memory::StateStore& ps, const comm::Groups& g);

// Collective over g.world(). Checks the file's metadata (format, version, /meta, the
// manifest) and that the model's tensors are exactly the manifest's (names, shapes),
// then reads this rank's slab of every tensor (any layout) straight into ps.params(),
// and the moments this rank owns (ps.shards(); any ZeRO-1 setting) into ps.exp_avg()
// and ps.exp_avg_sq(), verifying each block's checksum and that every
// value is finite (and exp_avg_sq >= 0). Sets *optimizer_step (when not null) and
// returns the stored meta. A metadata failure leaves ps untouched; a data failure
// (checksum, value, read error) leaves it partly overwritten: load another checkpoint
// or re-initialise it. Either way every rank throws the same CheckpointError.
// With `offload`, each group of offloaded tensors is read on its own, between bring and
// done (the resident tensors first).
CheckpointMeta read_checkpoint(const std::string& path, memory::StateStore& ps, const comm::Groups& g,
                               long* optimizer_step, const OffloadAccess* offload = nullptr);

// What to resume from. spec "auto": the file named by <dir>/latest, or "" when there is
// no latest; spec a directory: its latest (error when it has none); spec a file: that
// file (CheckpointError when it is missing or an incomplete .tmp). Not collective.
std::string resolve_resume(const std::string& dir, const std::string& spec);

// "step_00000042.h5"
std::string checkpoint_file_name(long step);

// --- Inspection (furnace ckpt inspect): one process, no model needed. -------------

struct TensorEntry {
  std::string name;
  memory::ParamKind kind = memory::ParamKind::Dense;
  std::vector<hsize_t> shape;  // global
};

struct CheckpointHeader {
  int format_version = 0;
  std::string furnace_version, git_revision, created;
  CheckpointMeta meta;
  long optimizer_step = 0;
  std::vector<TensorEntry> tensors;  // the manifest
};

struct ValueStats {
  double min = 0, max = 0, sum_abs = 0;
  long long n = 0, nonfinite = 0, negative = 0;
};

struct DatasetReport {
  std::string tensor, family;  // family: param | exp_avg | exp_avg_sq
  ValueStats stats;            // read_data only
};

struct CheckpointReport {
  std::string path;
  std::uint64_t file_bytes = 0;
  CheckpointHeader header;
  std::vector<DatasetReport> datasets;  // every tensor x family, in manifest order
};

// The same checks as read_checkpoint on the file alone: metadata, manifest, every
// dataset of every tensor (present, contiguous float32 of its shape, storage inside
// the file, checksum attribute), and with read_data every block's checksum and every
// value. Throws CheckpointError on the first problem.
CheckpointReport inspect_checkpoint(const std::string& path, bool read_data);

}  // namespace furnace::io
