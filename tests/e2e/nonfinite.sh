#!/usr/bin/env bash
# A step whose loss or gradient norm is not finite: train.on_nonfinite = stop (the
# default) ends the run with exit 4 and one line naming the step and the first
# non-finite tensor; skip skips the update, counts it in the metrics and the
# progress line, and stops (exit 4) after 10 such steps in a row. Faults: a learning
# rate of 1e30 (the first update makes the weights ~1e28, the next forward
# overflows), and FURNACE_TEST_NAN_GRAD, a NaN written into one tensor's gradient
# on rank 0 alone (so the ranks must agree to stop or skip).
source "$(dirname "$0")/lib/common.sh"
COMMON=("${TINY[@]}" --set train.eval_every=0)

run() {  # run NAME NP [args...]: sets rc; output in $SCRATCH/NAME.log
  local name=$1 np=$2; shift 2
  set +e
  timeout 120 mpiexec -n "$np" "$BIN" train "${COMMON[@]}" --set output.dir="\"$SCRATCH/$name\"" "$@" \
    > "$SCRATCH/$name.log" 2>&1
  rc=$?
  set -e
}
lines() { if [ -f "$SCRATCH/$1/metrics.jsonl" ]; then wc -l < "$SCRATCH/$1/metrics.jsonl"; else echo 0; fi; }
# tensor names of the tiny model, from a checkpoint's listing
"$BIN" train "${COMMON[@]}" --set train.steps=1 --set output.dir="\"$SCRATCH/names\"" > /dev/null 2>&1 || fail "1-step run"
names=$("$BIN" ckpt inspect "$SCRATCH/names/ckpt" | awk '$2 ~ /^\[/ { print $1 }')
grep -qx "wte" <<< "$names" && grep -qx "blocks.1.moe.w1" <<< "$names" || fail "tensor names: $names"

# 1. lr = 1e30 (stop): exit 4 at the first step that overflows, named with a real tensor.
run overflow 1 --set train.lr=1e30
[ "$rc" -eq 4 ] || { cat "$SCRATCH/overflow.log"; fail "non-finite run exited $rc, expected 4"; }
msg=$(grep "^furnace: step " "$SCRATCH/overflow.log") || { cat "$SCRATCH/overflow.log"; fail "no message naming the step"; }
[ "$(grep -c . <<< "$msg")" -eq 1 ] || fail "more than one message: $msg"
step=$(sed -n 's/^furnace: step \([0-9]*\): the loss or gradient norm is not finite.*/\1/p' <<< "$msg")
tensor=$(sed -n 's/.*first non-finite tensor: \(gradient\|value\) of \([^ ;]*\).*/\2/p' <<< "$msg")
[ -n "$step" ] && [ "$step" -eq $(( $(lines overflow) + 1 )) ] || fail "message names step '$step' after $(lines overflow) metric lines: $msg"
grep -qxF "$tensor" <<< "$names" || fail "message names no tensor of the model: $msg"
echo "lr 1e30: exit 4: $msg"

# 2. A NaN gradient on rank 0 only at step 3 (stop): both ranks stop, exit 4, and the
# message names that tensor and rank.
FURNACE_TEST_NAN_GRAD="blocks.1.moe.w1@3" run poisoned 2 --set parallel.ep=2
[ "$rc" -eq 4 ] || { cat "$SCRATCH/poisoned.log"; fail "NaN gradient on rank 0: exit $rc, expected 4"; }
grep -q "^furnace: step 3: the loss or gradient norm is not finite .*; first non-finite tensor: gradient of blocks.1.moe.w1 (rank 0) (train.on_nonfinite = stop)$" \
  "$SCRATCH/poisoned.log" || { cat "$SCRATCH/poisoned.log"; fail "message does not name step 3 and blocks.1.moe.w1"; }
[ "$(lines poisoned)" -eq 2 ] || fail "$(lines poisoned) metric lines, expected 2"
echo "NaN gradient of blocks.1.moe.w1 on rank 0 at step 3: both ranks stopped, exit 4"

# 3. The same at steps 3 and 4 with skip: the run completes, those two updates are
# skipped (the checkpoint's optimizer step is 2 short), and both are counted.
FURNACE_TEST_NAN_GRAD="wte@3,4" run skip 2 --set train.steps=8 --set train.on_nonfinite=skip
[ "$rc" -eq 0 ] || { cat "$SCRATCH/skip.log"; fail "skip: exit $rc, expected 0"; }
/usr/bin/python3 - "$SCRATCH/skip/metrics.jsonl" <<'PY' || fail "skip: metrics"
import json, sys
m = [json.loads(l) for l in open(sys.argv[1])]
assert [j["step"] for j in m] == list(range(1, 9)), [j["step"] for j in m]
assert [j["step"] for j in m if j.get("skipped")] == [3, 4], m
assert [j.get("skipped_steps", 0) for j in m] == [0, 0, 1, 2, 2, 2, 2, 2], m
PY
grep -q "^step      8/8 .* | skipped 2$" "$SCRATCH/skip.log" || { cat "$SCRATCH/skip.log"; fail "progress line without the skipped count"; }
[ "$(grep -c "update skipped (train.on_nonfinite = skip)$" "$SCRATCH/skip.log")" -eq 2 ] || fail "skipped steps not reported"
info=$("$BIN" ckpt inspect "$SCRATCH/skip/ckpt/step_00000008.h5")
grep -q "^  optimizer step  6$" <<< "$info" || fail "skipped updates were applied: $(grep optimizer <<< "$info")"
echo "skip: steps 3 and 4 skipped, run completed with 6 optimizer steps in 8"

# 4. lr = 1e30 with skip: every step after the first is non-finite; the run stops
# after the announced number in a row, each of them skipped and counted.
run skip_broken 1 --set train.lr=1e30 --set train.on_nonfinite=skip
[ "$rc" -eq 4 ] || { cat "$SCRATCH/skip_broken.log"; fail "skip of a broken model: exit $rc, expected 4"; }
in_a_row=$(sed -n 's/^furnace: step .*; \([0-9]*\) steps in a row were non-finite .*/\1/p' "$SCRATCH/skip_broken.log")
[ -n "$in_a_row" ] || { cat "$SCRATCH/skip_broken.log"; fail "no 'steps in a row' message"; }
[ "$(grep -c '"skipped":true' "$SCRATCH/skip_broken/metrics.jsonl")" -eq $((in_a_row - 1)) ] || fail "skipped lines"
echo "skip, broken model: stopped after $in_a_row non-finite steps in a row, exit 4"
