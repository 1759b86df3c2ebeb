#!/usr/bin/env bash
# memory.optimizer (docs/memory.md, "Tiers"): the AdamW moments on the host tier train
# exactly as on the device tier (50 steps, 2 ranks, ep 2: every loss bitwise the same),
# the memory report shows the optimizer bytes in the host column and none in the
# device column, and memory.optimizer = nvme is refused in one line (exit 2) until the
# optimizer streams its moments through the nvme store.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/one_line.sh"

train() {  # train TIER: 50 steps with the moments on TIER; the report goes to $SCRATCH/TIER.out
  mpiexec -n 2 "$BIN" train "${TINY[@]}" --set output.dir="\"$SCRATCH/$1\"" --set train.steps=50 \
    --set train.eval_every=0 --set parallel.ep=2 --set memory.optimizer=$1 > "$SCRATCH/$1.out" \
    || fail "memory.optimizer=$1 exited $?: $(tail -5 "$SCRATCH/$1.out")"
}
train device
train host
losses "$SCRATCH/device/metrics.jsonl" > "$SCRATCH/device.losses"
losses "$SCRATCH/host/metrics.jsonl" > "$SCRATCH/host.losses"
[ "$(wc -l < "$SCRATCH/host.losses")" -eq 50 ] || fail "expected 50 metric lines, got $(wc -l < "$SCRATCH/host.losses")"
cmp -s "$SCRATCH/device.losses" "$SCRATCH/host.losses" \
  || fail "losses differ: $(diff "$SCRATCH/device.losses" "$SCRATCH/host.losses" | head -4)"
echo "ok: 50 losses bitwise identical with the optimizer on the device and on the host tier"

# The report after set-up: a host column, the optimizer's bytes in it and not on the device.
report=$(sed -n '/^memory after set-up/,/^  total/p' "$SCRATCH/host.out")
grep -q "device (current / peak) *host (current / peak)" <<< "$report" || fail "no host column: $report"
grep -Eq "^  optimizer +0 B / +0 B +[1-9][0-9.]* [KMG]iB / +[1-9][0-9.]* [KMG]iB$" <<< "$report" \
  || fail "optimizer bytes not in the host column: $report"
grep -Eq "^  optimizer +[1-9][0-9.]* [KMG]iB / " "$SCRATCH/device.out" || fail "device run: no optimizer bytes on the device"
opt_peak() { /usr/bin/python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["memory_peak_bytes"]["optimizer"])' "$1"; }
[ "$(opt_peak "$SCRATCH/device/metrics.jsonl")" = "$(opt_peak "$SCRATCH/host/metrics.jsonl")" ] \
  || fail "optimizer bytes differ between the tiers"
echo "ok: the memory report shows the optimizer in the host column"

expect_line 2 "memory.optimizer = nvme is not implemented yet" \
  mpiexec -n 2 "$BIN" train "${TINY[@]}" --set output.dir="\"$SCRATCH/nvme\"" --set memory.optimizer=nvme
