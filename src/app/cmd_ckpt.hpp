// `furnace ckpt inspect`: what a checkpoint holds (format, writer, step, layout, every
// tensor with its AdamW moments) and whether it is intact, without building a model.
#pragma once
#include <string>

namespace furnace::app {

// Prints, on rank 0, the file's format and version, the writer's furnace version and
// git revision, the creation time, step, tokens seen, seed, the layout that wrote it
// (world = dp x ep), the optimizer step, then one row per tensor of the manifest
// (name, global shape, kind, MiB) and the totals. Integrity: everything
// io::read_checkpoint checks about the file (io::inspect_checkpoint): header,
// manifest, every dataset of every tensor; `verify` also reads every block, checks
// its checksum and values, and prints min/max/mean|x| per dataset. PATH may be a
// checkpoint directory (its `latest` is inspected). Single process: under mpiexec only
// rank 0 reads and every rank returns its code. Returns 0 when intact, 3 (kBadData)
// with one line on stderr naming the file and the dataset when not.
int cmd_ckpt_inspect(const std::string& path, bool verify);

}  // namespace furnace::app
