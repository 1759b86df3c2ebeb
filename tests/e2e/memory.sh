#!/usr/bin/env bash
# The memory report (docs/memory.md): --dry-run builds everything, prints the report
# and trains nothing; a budget below the measured need is refused before allocating
# (exit 2, one line naming the key); every metrics line carries the peak bytes per
# category, the same at every step (nothing allocates during training); and the
# ledger agrees with what the process really holds: the resident growth over set-up
# and training (VmHWM) within 10% of the report's peak, at 1 rank on the default model.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/one_line.sh"
CATEGORIES="parameters gradients optimizer activations communication workspace"

# 1. --dry-run: the report, exit 0, no step, no metrics, no checkpoint.
out=$(mpiexec -n 2 "$BIN" train "${TINY[@]}" --set output.dir="\"$SCRATCH/dry\"" --dry-run) \
  || fail "--dry-run exited $?"
for c in $CATEGORIES total; do grep -q "^  $c " <<< "$out" || fail "no '$c' line in the report: $out"; done
grep -q "^dry run: everything is built" <<< "$out" || fail "no dry-run line: $out"
grep -q "^step " <<< "$out" && fail "--dry-run trained: $out"
[ -s "$SCRATCH/dry/metrics.jsonl" ] && fail "--dry-run wrote metrics"
ls "$SCRATCH/dry/ckpt"/step_* > /dev/null 2>&1 && fail "--dry-run wrote a checkpoint"
echo "ok: --dry-run prints the report and trains nothing"

# 2. Budgets: below the need, refused with the tier and the key; above it, accepted.
expect_line 2 "device tier needs .* over memory.device_budget_gb = .*parameters" \
  mpiexec -n 2 "$BIN" train "${TINY[@]}" --set output.dir="\"$SCRATCH/budget\"" --set memory.device_budget_gb=0.0001
mpiexec -n 2 "$BIN" train "${TINY[@]}" --set output.dir="\"$SCRATCH/budget\"" --set memory.device_budget_gb=1 \
  --dry-run > /dev/null || fail "a budget above the need was refused"
echo "ok: memory.device_budget_gb"

# 3. Metrics: memory_peak_bytes on every line, every category, the same at every step.
"$BIN" train "${TINY[@]}" --set output.dir="\"$SCRATCH/flat\"" --set train.steps=30 > /dev/null || fail "30-step run"
/usr/bin/python3 - "$SCRATCH/flat/metrics.jsonl" $CATEGORIES <<'PY' || fail "memory_peak_bytes in metrics"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert len(lines) == 30, len(lines)
peaks = [l["memory_peak_bytes"] for l in lines]
assert set(peaks[0]) == set(sys.argv[2:]), peaks[0]
assert all(p == peaks[0] for p in peaks), "peak changed during training"
assert all(peaks[0][c] > 0 for c in ("parameters", "gradients", "optimizer", "activations", "workspace")), peaks[0]
print("ok: memory_peak_bytes", peaks[0])
PY

# 4. The ledger against the process: default model, 1 rank, 2 steps.
out=$("$BIN" train --config configs/default.toml --set data.train="\"$DATA/train.h5\"" \
      --set data.valid="\"$DATA/valid.h5\"" --set output.dir="\"$SCRATCH/rss\"" --set train.steps=2 \
      --set train.eval_batches=1 --set parallel.ep=1) || fail "default-model run"
ratio=$(grep -A12 "^memory at the end" <<< "$out" | sed -n 's/.*(ratio \([0-9.]*\)).*/\1/p')
[ -n "$ratio" ] || fail "no resident line: $out"
/usr/bin/python3 -c "import sys; r = float(sys.argv[1]); sys.exit(0 if 0.9 <= r <= 1.1 else 1)" "$ratio" \
  || fail "resident growth / ledger peak = $ratio, outside [0.9, 1.1]"
echo "ok: resident growth / ledger peak = $ratio"
