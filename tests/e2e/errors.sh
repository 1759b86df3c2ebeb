#!/usr/bin/env bash
# Bad inputs end with one clear line and the documented exit code, never a hang.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/one_line.sh"


expect 2 "unknown key model.experts" "$BIN" train "${TINY[@]}" --set model.experts=3
expect 2 "top_k" "$BIN" train "${TINY[@]}" --set moe.top_k=9
expect 2 "config file 'nope.toml' not found" "$BIN" train --config nope.toml
expect 3 "not found" "$BIN" train "${TINY[@]}" --set data.train='"/nonexistent/train.h5"'
head -c 4096 /dev/urandom > "$SCRATCH/junk.h5"
expect 3 "not a valid HDF5 file" "$BIN" train "${TINY[@]}" --set data.train="\"$SCRATCH/junk.h5\""
head -c 20000 "$DATA/train.h5" > "$SCRATCH/trunc.h5"
expect 3 "trunc.h5" "$BIN" train "${TINY[@]}" --set data.train="\"$SCRATCH/trunc.h5\""
# The same errors under MPI: one message, every rank exits, no hang.
expect 2 "does not divide" mpiexec -n 2 "$BIN" train "${TINY[@]}" --set parallel.ep=3 --set moe.experts=3 --set moe.top_k=1
expect 3 "not a valid HDF5 file" mpiexec -n 2 "$BIN" train "${TINY[@]}" --set data.train="\"$SCRATCH/junk.h5\""
# A token outside the vocabulary deep inside the file is found when a batch reads it,
# on one rank: the job ends with the reason (exit 4), no rank is left waiting.
/usr/bin/python3 - "$SCRATCH/badtok.h5" <<'PY'
import sys, h5py, numpy as np
t = np.random.default_rng(0).integers(0, 100, 200000).astype(np.uint8)
t[100000:] = 250  # >= vocab_size 100
with h5py.File(sys.argv[1], "w") as f:
    d = f.create_dataset("tokens", data=t)
    d.attrs["vocab_size"] = np.int32(100)
PY
expect 4 "holds token 250" mpiexec -n 2 "$BIN" train "${TINY[@]}" --set model.vocab_size=100 \
  --set data.train="\"$SCRATCH/badtok.h5\"" --set data.valid="\"$SCRATCH/badtok.h5\""

# Issue 7: each bad input is one line on stderr with the documented exit code, also
# under mpiexec (once, from one rank), and nothing is read or echoed without bound.
HUGE=$(head -c 100000 /dev/zero | tr '\0' a)
expect_line 2 "config file '/dev/zero' is larger than 1 MiB" "$BIN" train --config /dev/zero
expect_line 2 "larger than 1 MiB" mpiexec -n 2 "$BIN" train --config /dev/zero
expect_line 2 "train.eval_batches = 2000000000 is out of range" "$BIN" train "${TINY[@]}" --set train.eval_batches=2000000000
expect_line 2 "unknown key model.name" "$BIN" train "${TINY[@]}" --set model.name="$HUGE"
expect_line 2 "model.norm" mpiexec -n 2 "$BIN" train "${TINY[@]}" --set model.norm="$HUGE"
expect_line 2 "unknown command 'trian'" "$BIN" trian
expect_line 2 "'furnace bench' needs a command: kernels" mpiexec -n 2 "$BIN" bench
expect_line 2 "unknown command 'aaaa" "$BIN" "$HUGE"
expect_line 2 "--resume needs a value: 'auto'" "$BIN" train "${TINY[@]}" --resume ""
expect_line 2 "--resume needs a value" mpiexec -n 2 "$BIN" train "${TINY[@]}" --resume ""
echo "errors: all bad inputs refused"
