// `--resume auto`: the newest checkpoint of a directory that actually loads, and what
// a resumed run is told about the ways its config differs from the checkpoint's.
#pragma once
#include <string>
#include <vector>

#include "comm/groups.hpp"
#include "io/checkpoint.hpp"
#include "memory/state_store.hpp"

namespace furnace::train {

struct Resumed {
  std::string path;  // "" when nothing was loaded
  io::CheckpointMeta meta;
  long optimizer_step = 0;
};

// The checkpoints of `dir` to try, in order: the file `latest` names, then every
// step_*.h5 from the highest step down, each once. `notes` (when not null) receives
// why `latest` was not used and which incomplete writes (.tmp) are ignored. Reads
// the directory only; not collective.
std::vector<std::string> resume_candidates(const std::string& dir, std::vector<std::string>* notes);

// Collective over g.world(). Tries rank 0's resume_candidates in order with
// io::read_checkpoint (which changes nothing when it fails, with the same error on
// every rank) and returns the first that loads; rank 0 prints why each newer one
// was skipped. No checkpoint at all: returns an empty path, after saying that the
// run starts at step 0. Checkpoints of which none loads: io::CheckpointError (a fresh
// start would overwrite the metrics and, by checkpoint.keep, the checkpoints).
Resumed resume_auto(const std::string& dir, memory::StateStore& ps, const comm::Groups& g,
                    const io::OffloadAccess* offload = nullptr);

// One line per setting whose value differs between two resolved configs
// (io::to_json): "train.seed: 1 in checkpoint, 2 now", in the order of `now_json`,
// then settings only the checkpoint has. Unreadable JSON is one line saying so.
std::vector<std::string> config_differences(const std::string& checkpoint_json, const std::string& now_json);

}  // namespace furnace::train
