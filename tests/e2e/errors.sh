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
# Token files out of proportion, unwritten, corrupt or with a token outside the
# vocabulary near the end are refused when opened (exit 3, one line), at 1 and 2 ranks.
/usr/bin/python3 - "$SCRATCH" <<'PY'
import sys, h5py, numpy as np
d = sys.argv[1]
def tokens_file(name, **kw):
    f = h5py.File(f"{d}/{name}", "w")
    ds = f.create_dataset("tokens", **kw)
    ds.attrs["vocab_size"] = np.int32(100)
    return f, ds
text = np.random.default_rng(0).integers(0, 100, 200000).astype(np.uint8)
f, _ = tokens_file("badtok.h5", data=np.concatenate([text, [250]]).astype(np.uint8)); f.close()  # the last token
f, _ = tokens_file("bigchunk.h5", data=np.zeros(1 << 26, np.uint8), chunks=(1 << 26,), compression="gzip"); f.close()
f, _ = tokens_file("never.h5", shape=(1 << 40,), dtype=np.uint8, chunks=(1 << 16,)); f.close()
f, ds = tokens_file("corrupt.h5", data=text, chunks=(1 << 16,), compression="gzip")
info = ds.id.get_chunk_info(1); f.close()
with open(f"{d}/corrupt.h5", "r+b") as raw:
    raw.seek(info.byte_offset + info.size // 2); raw.write(bytes(range(64)))
PY
V100=(--set model.vocab_size=100)
for np in 1 2; do
  for f in badtok bigchunk never corrupt; do
    case $f in
      badtok) why="holds token 250 at offset 200000, >= its vocab_size 100" ;;
      bigchunk) why="chunks of 67108864 tokens (64.0 MiB uncompressed)" ;;
      never) why="only 0 of its 16777216 chunks written" ;;
      corrupt) why="cannot be read at tokens" ;;
    esac
    expect_line 3 "data file '$SCRATCH/$f.h5'.*$why" mpiexec -n $np "$BIN" train "${TINY[@]}" "${V100[@]}" \
      --set data.train="\"$SCRATCH/$f.h5\"" --set data.valid="\"$SCRATCH/badtok.h5\""
  done
done

# Issue 7: each bad input is one line on stderr with the documented exit code, also
# under mpiexec (once, from one rank), and nothing is read or echoed without bound.
HUGE=$(head -c 100000 /dev/zero | tr '\0' a)
expect_line 2 "config file '/dev/zero' is larger than 1 MiB" "$BIN" train --config /dev/zero
expect_line 2 "larger than 1 MiB" mpiexec -n 2 "$BIN" train --config /dev/zero
expect_line 2 "larger than 1 MiB" "$BIN" train --config <(yes '# an endless pipe')
expect_line 2 "train.eval_batches = 2000000000 is out of range" "$BIN" train "${TINY[@]}" --set train.eval_batches=2000000000
expect_line 2 "unknown key model.name" "$BIN" train "${TINY[@]}" --set model.name="$HUGE"
expect_line 2 "model.norm" mpiexec -n 2 "$BIN" train "${TINY[@]}" --set model.norm="$HUGE"
expect_line 2 "unknown command 'trian'" "$BIN" trian
expect_line 2 "'furnace bench' needs a command: kernels" mpiexec -n 2 "$BIN" bench
expect_line 2 "unknown command 'aaaa" "$BIN" "$HUGE"
expect_line 3 "aaaa" "$BIN" train "${TINY[@]}" --set output.dir="\"$SCRATCH/run\"" --resume "$SCRATCH/$HUGE"
expect_line 2 "--resume needs a value: 'auto'" "$BIN" train "${TINY[@]}" --resume ""
expect_line 2 "--resume needs a value" mpiexec -n 2 "$BIN" train "${TINY[@]}" --resume ""
# Run directories and model sizes are checked before anything is built or written.
touch "$SCRATCH/a-file"
expect_line 2 "output.dir = \"$SCRATCH/a-file\": '$SCRATCH/a-file' is an existing file" \
  "$BIN" train "${TINY[@]}" --set output.dir="\"$SCRATCH/a-file\""
expect_line 2 "checkpoint.dir = .*existing file" mpiexec -n 2 "$BIN" train "${TINY[@]}" \
  --set output.dir="\"$SCRATCH/run\"" --set checkpoint.dir="\"$SCRATCH/a-file/ckpt\""
expect_line 2 "output.dir = .* is 5005 bytes long" "$BIN" train "${TINY[@]}" --set output.dir="/tmp/${HUGE:0:5000}"
expect_line 2 "needs .*activations .*model.seq_len = 1000000.*lower train.batch_size or model.seq_len" "$BIN" train "${TINY[@]}" --set model.seq_len=1000000
expect_line 2 "model.d_model = 2000000000" mpiexec -n 2 "$BIN" train "${TINY[@]}" \
  --set model.d_model=2000000000 --set model.n_heads=1

# BLAS threads follow the user's variables, else the CPUs this process may run on
# (divided among the ranks sharing them); the banner says which.
banner() { "$@" "${TINY[@]}" --set train.steps=1 --set output.dir="\"$SCRATCH/run\"" | grep '^furnace .*BLAS'; }
banner env OPENBLAS_NUM_THREADS=1 "$BIN" train | grep -q "BLAS .*, 1 thread(s) (OPENBLAS_NUM_THREADS)" \
  || fail "OPENBLAS_NUM_THREADS=1 not followed: $(banner env OPENBLAS_NUM_THREADS=1 "$BIN" train)"
banner env -u OPENBLAS_NUM_THREADS OMP_NUM_THREADS=1 "$BIN" train | grep -q ", 1 thread(s) (OMP_NUM_THREADS)" \
  || fail "OMP_NUM_THREADS=1 not followed"
banner env -u OPENBLAS_NUM_THREADS -u OMP_NUM_THREADS taskset -c 0 "$BIN" train \
  | grep -q ", 1 thread(s) (CPU affinity: 1 CPU)" || fail "taskset -c 0 not followed: \
  $(banner env -u OPENBLAS_NUM_THREADS -u OMP_NUM_THREADS taskset -c 0 "$BIN" train)"
banner env -u OPENBLAS_NUM_THREADS -u OMP_NUM_THREADS taskset -c 0 mpiexec -n 2 "$BIN" train \
  | grep -q ", 1 thread(s) (CPU affinity: 1 CPU / 2 ranks)" || fail "two ranks on one CPU not seen"
echo "ok: BLAS threads from OPENBLAS_NUM_THREADS, OMP_NUM_THREADS and taskset"
expect_line 2 "OPENBLAS_NUM_THREADS is set but is not a positive integer" \
  env OPENBLAS_NUM_THREADS=many mpiexec -n 2 "$BIN" train "${TINY[@]}"
# Decided before Kokkos starts (its thread count is fixed then), for every command.
expect_line 2 "OMP_NUM_THREADS is set but is not a positive integer" \
  env -u OPENBLAS_NUM_THREADS OMP_NUM_THREADS=0 mpiexec -n 2 "$BIN" bench io --size-mb 1
echo "errors: all bad inputs refused"
