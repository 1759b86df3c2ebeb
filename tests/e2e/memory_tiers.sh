#!/usr/bin/env bash
# memory.optimizer (docs/memory.md, "Tiers"): the AdamW moments on the host tier and on
# the nvme tier train exactly as on the device tier (50 steps, 2 ranks, ep 2, a
# checkpoint at step 25: every loss bitwise the same; nvme with groups of 10 KiB, so
# the update streams many groups through the tier), the memory report shows the
# optimizer bytes in the host or nvme column, the step-25 checkpoint of the nvme run
# resumes (on nvme and on the device) to the same losses, and the settings nvme cannot
# be combined with are refused in one line (exit 2).
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/one_line.sh"

train() {  # train TIER [args]: 50 steps with the moments on TIER; the report goes to $SCRATCH/TIER.out
  local tier=$1; shift
  mpiexec -n 2 "$BIN" train "${TINY[@]}" --set output.dir="\"$SCRATCH/$tier\"" --set train.steps=50 \
    --set train.eval_every=0 --set checkpoint.every=25 --set parallel.ep=2 --set memory.optimizer=$tier "$@" \
    > "$SCRATCH/$tier.out" || fail "memory.optimizer=$tier exited $?: $(tail -5 "$SCRATCH/$tier.out")"
}
train device
train host
train nvme --set memory.nvme_group_mb=0.01
losses "$SCRATCH/device/metrics.jsonl" > "$SCRATCH/device.losses"
for tier in host nvme; do
  losses "$SCRATCH/$tier/metrics.jsonl" > "$SCRATCH/$tier.losses"
  [ "$(wc -l < "$SCRATCH/$tier.losses")" -eq 50 ] || fail "expected 50 metric lines, got $(wc -l < "$SCRATCH/$tier.losses")"
  cmp -s "$SCRATCH/device.losses" "$SCRATCH/$tier.losses" \
    || fail "$tier: losses differ: $(diff "$SCRATCH/device.losses" "$SCRATCH/$tier.losses" | head -4)"
  echo "ok: 50 losses bitwise identical with the optimizer on the device and on the $tier tier"
done
# memory.experts = host: the experts' share of every family in the host column, the
# same training.
mpiexec -n 2 "$BIN" train "${TINY[@]}" --set output.dir="\"$SCRATCH/experts-host\"" --set train.steps=50 \
  --set train.eval_every=0 --set checkpoint.every=25 --set parallel.ep=2 --set memory.experts=host \
  > "$SCRATCH/experts-host.out" || fail "memory.experts=host exited $?: $(tail -5 "$SCRATCH/experts-host.out")"
losses "$SCRATCH/experts-host/metrics.jsonl" | cmp -s "$SCRATCH/device.losses" - || fail "memory.experts=host: losses differ"
report=$(sed -n '/^memory after set-up/,/^  total/p' "$SCRATCH/experts-host.out")
for cat in parameters gradients optimizer; do
  grep -Eq "^  $cat +[1-9][0-9.]* [KMG]iB / +[1-9][0-9.]* [KMG]iB +[1-9][0-9.]* [KMG]iB / " <<< "$report" \
    || fail "memory.experts=host: no $cat bytes in both columns: $report"
done
echo "ok: memory.experts = host: 50 losses bitwise identical, the experts' bytes in the host column"
groups=$(sed -n 's/^nvme tier: the AdamW moments in \([0-9]*\) group.*/\1/p' "$SCRATCH/nvme.out")
[ "${groups:-0}" -ge 4 ] || fail "expected the moments in several groups, got '${groups}': $(grep 'nvme tier' "$SCRATCH/nvme.out")"
echo "ok: the nvme run streamed the moments in $groups groups"

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

# The nvme tier's report: the moments' bytes in the nvme column, none on the device
# but the window of one group.
grep -Eq "^  optimizer .* [1-9][0-9.]* [KMG]iB / +[1-9][0-9.]* [KMG]iB$" <<< "$(sed -n '/^memory after set-up/,/^  total/p' "$SCRATCH/nvme.out")" \
  || fail "no optimizer bytes on the nvme tier: $(sed -n '/^memory after set-up/,/^  total/p' "$SCRATCH/nvme.out")"
echo "ok: the memory report shows the optimizer in the nvme column"

# The step-25 checkpoint of the nvme run, resumed on nvme and on the device.
for tier in nvme device; do
  mpiexec -n 2 "$BIN" train "${TINY[@]}" --set output.dir="\"$SCRATCH/resume-$tier\"" --set train.steps=50 \
    --set train.eval_every=0 --set parallel.ep=2 --set memory.optimizer=$tier --set memory.nvme_group_mb=0.01 \
    --resume "$SCRATCH/nvme/ckpt/step_00000025.h5" > "$SCRATCH/resume-$tier.out" \
    || fail "resume-$tier exited $?: $(tail -5 "$SCRATCH/resume-$tier.out")"
  grep -q "^resumed from .*: step 25, " "$SCRATCH/resume-$tier.out" || fail "resume-$tier: did not resume at step 25"
  losses "$SCRATCH/resume-$tier/metrics.jsonl" > "$SCRATCH/resume-$tier.losses"
  tail -n 25 "$SCRATCH/nvme.losses" | cmp -s - "$SCRATCH/resume-$tier.losses" \
    || fail "resume-$tier: losses 26..50 differ: $(tail -n 25 "$SCRATCH/nvme.losses" | diff - "$SCRATCH/resume-$tier.losses" | head -4)"
done
echo "ok: the step-25 checkpoint of the nvme run resumes bitwise, on nvme and on the device"

expect_line 2 "memory.optimizer = nvme with memory.zero = 1 is not implemented yet" \
  mpiexec -n 2 "$BIN" train "${TINY[@]}" --set output.dir="\"$SCRATCH/z\"" --set memory.optimizer=nvme --set memory.zero=1
expect_line 2 "memory.optimizer = nvme with checkpoint.async = true" \
  mpiexec -n 2 "$BIN" train "${TINY[@]}" --set output.dir="\"$SCRATCH/a\"" --set memory.optimizer=nvme --set checkpoint.async=true
