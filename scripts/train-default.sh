#!/usr/bin/env bash
# The main job (`make train`): prepare the bundled fortunes corpus if needed, then
# train the default MoE model. Extra arguments go to `furnace train` (e.g. --set ...).
# NP (MPI ranks) defaults to 2: one rank per core, ep = 2 (configs/default.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/bin/furnace
NP=${NP:-2}
if [ ! -f data/fortunes/train.h5 ] || [ ! -f data/fortunes/valid.h5 ]; then
  "$BIN" data prepare --out data/fortunes
fi
exec mpiexec -n "$NP" "$BIN" train --config configs/default.toml "$@"
