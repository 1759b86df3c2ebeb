#!/usr/bin/env bash
# Dropless MoE in a bounded buffer (memory.moe_buffer_mb, docs/memory.md): with the
# experts over two ranks and a budget of 40 expert-side rows (the worst case is 128),
# steps exchange in rounds and train to the same losses as the default budget, which
# holds every row in one round. Not bit for bit: a round gives each expert GEMM fewer
# rows and OpenBLAS rounds a row differently by its place in the call (see
# tests/unit/test_moe_rounds_mpi.cpp), so losses agree to 1e-5 relative. The dry run
# reports the smaller communication buffers; bad values are refused in one line.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/one_line.sh"
steps=20
# tiny: d_model 32, expert_hidden 32, one MoE layer: 1160 B a row, 704 B of arena rounding.
SMALL=0.045  # floor((0.045 MiB - 704) / 1160) = 40 rows
COMMON=("${TINY[@]}" --set train.steps=$steps --set train.eval_every=0 --set moe.capacity_factor=0 --set parallel.ep=2)

run() {  # run NAME [--set ...]
  local name=$1; shift
  timeout 300 mpiexec -n 2 "$BIN" train "${COMMON[@]}" --set output.dir="\"$SCRATCH/$name\"" "$@" \
    > "$SCRATCH/$name.log" 2>&1 || { cat "$SCRATCH/$name.log"; fail "run $name"; }
}
run large
run small --set memory.moe_buffer_mb=$SMALL
/usr/bin/python3 - "$SCRATCH/large/metrics.jsonl" "$SCRATCH/small/metrics.jsonl" $steps <<'PY' || fail "losses"
import json, sys
large, small = ([json.loads(l) for l in open(f)] for f in sys.argv[1:3])
steps = int(sys.argv[3])
assert len(large) == len(small) == steps, (len(large), len(small))
assert all(l["moe_rounds"] == 1 for l in large), [l["moe_rounds"] for l in large]
rounds = [s["moe_rounds"] for s in small]
assert min(rounds) >= 2, rounds
worst = max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in zip(large, small))
assert worst <= 1e-5, worst
comm = [l["memory_peak_bytes"]["communication"] for l in (large[0], small[0])]
assert comm[1] < comm[0], comm
print("ok: %d steps in %s rounds train to the losses of one round (largest relative difference %.2g); "
      "communication buffers %d B instead of %d B" % (steps, sorted(set(rounds)), worst, comm[1], comm[0]))
PY

# The dry run shows the bounded buffers: 40 rows of xe, ye, staging, dxe, dye (128 B a
# row each) and two index maps (4 B), each rounded up to 64 B.
out=$(mpiexec -n 2 "$BIN" train "${COMMON[@]}" --set output.dir="\"$SCRATCH/dry\"" --set memory.moe_buffer_mb=$SMALL --dry-run) \
  || fail "--dry-run exited $?"
grep -q "^  communication  *25.4 KiB" <<< "$out" || fail "no 25.4 KiB (5 * 5120 + 2 * 192 = 25984 B) of communication: $out"
echo "ok: --dry-run reports the bounded communication buffers"

expect_line 2 "memory.moe_buffer_mb = 8 bounds dropless MoE buffers only.*moe.capacity_factor" \
  "$BIN" train "${TINY[@]}" --set memory.moe_buffer_mb=8 --dry-run
expect_line 2 "memory.moe_buffer_mb" "$BIN" train "${COMMON[@]}" --set memory.moe_buffer_mb=0 --dry-run
expect_line 2 "memory.moe_buffer_mb = .* holds not one expert-side row" \
  mpiexec -n 2 "$BIN" train "${COMMON[@]}" --set output.dir="\"$SCRATCH/none\"" --set memory.moe_buffer_mb=0.0001 --dry-run
