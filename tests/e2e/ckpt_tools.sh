#!/usr/bin/env bash
# Checkpoint tools on real files: `furnace ckpt inspect` (intact: exit 0 and every
# tensor listed; truncated, .tmp, missing, not HDF5, a group for a tensor, a flipped
# bit: exit 3 naming the file and dataset),
# `scripts/export-torch` and its check against tests/reference/model.py's
# param_shapes and the HDF5 data. Two checkpoints: one written by training the tiny
# config (checkpoint.every), one by `bench io --keep` on 2 ranks (Expert slabs from
# two writers).
source "$(dirname "$0")/lib/common.sh"
PY=/usr/bin/python3
ROOT=$(cd "$(dirname "$0")/../.." && pwd)


# 1. A checkpoint from training (tiny config, 4 steps, a checkpoint every 2).
"$BIN" train "${TINY[@]}" --set train.steps=4 --set train.eval_every=0 --set checkpoint.every=2 \
  --set checkpoint.dir="\"$SCRATCH/ck\"" --set output.dir="\"$SCRATCH/out\"" > "$SCRATCH/train.log" 2>&1 ||
  fail "training the tiny config failed: $(tail -3 "$SCRATCH/train.log")"
CK=$SCRATCH/ck/step_00000004.h5
[ -f "$CK" ] || fail "training with checkpoint.every=2 wrote no $CK (files: $(ls "$SCRATCH/ck" 2>&1))"

# 2. The same kind of file written by 2 ranks (bench io keeps it).
mpiexec -n 2 "$BIN" bench io --size-mb 2 --reps 1 --dir "$SCRATCH/bio" --keep > "$SCRATCH/bench.log" 2>&1 ||
  fail "bench io failed: $(tail -3 "$SCRATCH/bench.log")"
BK=$SCRATCH/bio/step_00000001.h5
[ -f "$BK" ] || fail "bench io --keep left no $BK"

for f in "$CK" "$BK"; do
  expect 0 "intact" "$BIN" ckpt inspect --verify "$f"
  expect 0 "blocks.1.moe.w1 " "$BIN" ckpt inspect "$f"
done
expect 0 "blocks.1.moe.w1 *\[4, 32, 32\]" "$BIN" ckpt inspect "$CK"
expect 0 "step            4" "$BIN" ckpt inspect "$SCRATCH/ck"   # a directory: its latest

# 3. Broken files: exit 3, one line naming the file.
head -c $(( $(stat -c %s "$CK") / 2 )) "$CK" > "$SCRATCH/trunc.h5"
expect 3 "trunc.h5' cannot be opened" "$BIN" ckpt inspect "$SCRATCH/trunc.h5"
cp "$CK" "$SCRATCH/step_00000004.h5.tmp"
expect 3 "step_00000004.h5.tmp' is an incomplete write" "$BIN" ckpt inspect "$SCRATCH/step_00000004.h5.tmp"
expect 3 "nope.h5' not found" "$BIN" ckpt inspect "$SCRATCH/nope.h5"
head -c 4096 /dev/urandom > "$SCRATCH/junk.h5"
expect 3 "junk.h5' is not a valid HDF5 file" "$BIN" ckpt inspect "$SCRATCH/junk.h5"
# A missing moment: copy the file without /optim/wte/exp_avg_sq.
"$PY" - "$CK" "$SCRATCH/nomoment.h5" <<'PYEOF'
import shutil, sys, h5py
shutil.copy(sys.argv[1], sys.argv[2])
with h5py.File(sys.argv[2], "r+") as f:
    del f["optim/wte/exp_avg_sq"]
PYEOF
expect 3 "nomoment.h5' has no dataset /optim/wte/exp_avg_sq" "$BIN" ckpt inspect "$SCRATCH/nomoment.h5"
# A group in place of a tensor, and one flipped bit in an expert's slab (h5py rewrites
# the data, keeping the stored checksums): inspect --verify, the load and export-torch
# all refuse them, naming the dataset.
"$PY" - "$CK" "$SCRATCH" <<'PYEOF'
import shutil, sys, h5py, numpy as np
src, out = sys.argv[1], sys.argv[2]
shutil.copy(src, out + "/group.h5")
with h5py.File(out + "/group.h5", "r+") as f:
    del f["model/wpe"]
    f["model"].create_group("wpe")
shutil.copy(src, out + "/flip.h5")
with h5py.File(out + "/flip.h5", "r+") as f:
    d = f["model/blocks.1.moe.w1"]
    a = d[...]
    a.view(np.uint32)[2, 5, 7] ^= 1 << 27
    d[...] = a
PYEOF
expect 3 "group.h5' has /model/wpe, but it is not a dataset" "$BIN" ckpt inspect "$SCRATCH/group.h5"
expect 0 "intact" "$BIN" ckpt inspect "$SCRATCH/flip.h5"   # metadata only: the data is not read
expect 3 "flip.h5' dataset /model/blocks.1.moe.w1 block 2 (expert 2) fails its checksum" \
  "$BIN" ckpt inspect --verify "$SCRATCH/flip.h5"
expect 3 "flip.h5' dataset /model/blocks.1.moe.w1 block 2 (expert 2) fails its checksum" \
  "$BIN" train "${TINY[@]}" --set train.steps=6 --set output.dir="\"$SCRATCH/flipped\"" --resume "$SCRATCH/flip.h5"
expect 3 "blocks.1.moe.w1 block 2 fails its checksum" "$ROOT/scripts/export-torch" "$SCRATCH/flip.h5" "$SCRATCH/x.pt"
# Impossible metadata: a negative step is refused by inspect and the load; a step
# beyond train.steps by the trainer.
"$PY" - "$CK" "$SCRATCH/negstep.h5" <<'PYEOF'
import shutil, sys, h5py, numpy as np
shutil.copy(sys.argv[1], sys.argv[2])
with h5py.File(sys.argv[2], "r+") as f:
    f["meta"].attrs.modify("step", np.int64(-5))
PYEOF
expect 3 "negstep.h5' has a negative /meta step (-5)" "$BIN" ckpt inspect "$SCRATCH/negstep.h5"
expect 3 "negstep.h5' has a negative /meta step (-5)" \
  "$BIN" train "${TINY[@]}" --set output.dir="\"$SCRATCH/neg\"" --resume "$SCRATCH/negstep.h5"
expect 3 "is at step 4, beyond train.steps = 2" \
  "$BIN" train "${TINY[@]}" --set train.steps=2 --set output.dir="\"$SCRATCH/short\"" --resume "$CK"

# 4. PyTorch export, checked against param_shapes and the HDF5 data.
"$ROOT/scripts/export-torch" "$CK" "$SCRATCH/tiny.pt" --optim
"$PY" "$ROOT/tests/reference/check_export.py" "$SCRATCH/tiny.pt" "$CK" --optim
expect 3 "is an incomplete write" "$ROOT/scripts/export-torch" "$SCRATCH/step_00000004.h5.tmp" "$SCRATCH/x.pt"
[ ! -e "$SCRATCH/x.pt" ] || fail "export-torch left $SCRATCH/x.pt after a failure"
echo "ckpt_tools: inspect, export-torch and their error paths work"
