// `furnace ckpt inspect`: what a checkpoint holds (format, writer, step, layout, every
// tensor with its AdamW moments) and whether it is intact, without building a model.
#pragma once
#include <string>

namespace furnace::app {

// Prints, on rank 0, the file's format and version, the writer's furnace version and
// git revision, the creation time, step, tokens seen, seed, the layout that wrote it
// (world = dp x ep), the optimizer step, then one row per tensor under /model (name,
// global shape, dtype, MiB, whether /optim/<name>/exp_avg and exp_avg_sq are present
// with the same shape) and the total parameter count and bytes.
// Integrity: the path is not a .tmp, exists, is HDF5 and opens (not truncated); the
// format attributes, /meta and /optim are present; every /model tensor has both moments
// of its shape; every dataset's storage lies inside the file. `verify` also reads every
// dataset (model and both moments), prints min/max/mean|x| per dataset and fails on
// NaN or Inf. PATH may be a checkpoint directory (its `latest` is inspected).
// Single process: under mpiexec only rank 0 reads and every rank returns its code.
// Returns 0 when intact, 3 (kBadData) with one line on stderr naming the file and the
// dataset when not.
int cmd_ckpt_inspect(const std::string& path, bool verify);

}  // namespace furnace::app
