#!/usr/bin/env bash
# Checkpoints: bit-exact resume after SIGUSR1 at the same layout (synchronous and
# background writes), resharding 4 ranks ep 4 -> 2 ranks ep 2 -> 1 rank, refusal
# of a truncated, a .tmp and a mismatched checkpoint, `--resume auto` choosing the
# newest checkpoint that loads, and a failed background write ending the run.
# Training is deterministic and layout-invariant, so a resume that silently started
# afresh would reproduce the same losses: every resume is also checked to have
# started at the checkpoint's step and trained only the steps after it.
source "$(dirname "$0")/lib/common.sh"
COMMON=("${TINY[@]}" --set train.eval_every=0 --set train.log_every=1000 --set moe.capacity_factor=0
        --set moe.every=1 --set train.batch_size=8)

source "$(dirname "$0")/lib/resume.sh"

# 1. Bit-exact resume after SIGUSR1 (sent to one rank only), sync and async writes.
# 3000 steps (about 2 s on a quiet machine): 400 took 0.3 s, and the run could end
# before the signal was sent.
STEPS=3000
train full 2 --set train.steps=$STEPS --set parallel.ep=2
[ "$rc" -eq 0 ] || { cat "$SCRATCH/full.log"; fail "uninterrupted run"; }
for mode in false true; do
  name=sig_$mode
  train "$name" 2 --set train.steps=$STEPS --set parallel.ep=2 --set checkpoint.async=$mode &
  pid=$!
  for _ in $(seq 200); do
    [ -s "$SCRATCH/$name/metrics.jsonl" ] && [ "$(wc -l < "$SCRATCH/$name/metrics.jsonl")" -ge 40 ] && break
    sleep 0.1
  done
  victim=$(pgrep -f -- "output.dir=\"$SCRATCH/$name\"" | while read -r p; do
    [ "$(ps -o comm= -p "$p")" = furnace ] && echo "$p"; done | awk 'NR == 1')
  [ -n "$victim" ] || fail "no rank to signal"
  kill -USR1 "$victim"
  wait $pid || true
  stopped=$(sed -n 's/^SIGUSR1 received: checkpointing after step \([0-9]*\)$/\1/p' "$SCRATCH/$name.log")
  [ -n "$stopped" ] || { cat "$SCRATCH/$name.log"; fail "no checkpoint on SIGUSR1 ($mode)"; }
  grep -q "^checkpoint written: .*/step_$(printf %08d "$stopped").h5 " "$SCRATCH/$name.log" || fail "checkpoint of step $stopped not announced"
  [ "$(cat "$SCRATCH/$name.rc")" = 75 ] || fail "exit code $(cat "$SCRATCH/$name.rc") after SIGUSR1, expected 75"
  [ "$(wc -l < "$SCRATCH/$name/metrics.jsonl")" -eq "$stopped" ] || fail "metrics do not end at step $stopped"
  cp "$SCRATCH/$name/metrics.jsonl" "$SCRATCH/$name.before"
  train "$name" 2 --set train.steps=$STEPS --set parallel.ep=2 --set checkpoint.async=$mode --resume auto
  [ "$rc" -eq 0 ] || { cat "$SCRATCH/$name.log"; fail "resume ($mode)"; }
  echo "async=$mode: SIGUSR1 stopped the run after step $stopped (exit 75), resumed to $STEPS:"
  check_resumed "$name" "$stopped" "$SCRATCH/$name.before" $STEPS
  same_losses full "$name" 1 $STEPS 0 || fail "resumed losses differ from the uninterrupted run (async=$mode)"
done

# 2. Resharding: 4 ranks ep 4 -> 2 ranks ep 2 -> 1 rank.
train ep4 4 --set train.steps=30 --set parallel.ep=4 --set checkpoint.every=10
[ "$rc" -eq 0 ] || { cat "$SCRATCH/ep4.log"; fail "ep4 run"; }
train ep2 2 --set train.steps=30 --set parallel.ep=2 --set checkpoint.every=10 \
  --resume "$SCRATCH/ep4/ckpt/step_00000010.h5"
[ "$rc" -eq 0 ] || { cat "$SCRATCH/ep2.log"; fail "resume 4 -> 2 ranks"; }
train ep1 1 --set train.steps=30 --resume "$SCRATCH/ep2/ckpt/step_00000020.h5"
[ "$rc" -eq 0 ] || { cat "$SCRATCH/ep1.log"; fail "resume 2 -> 1 rank"; }
echo "resharding 4 ranks ep 4 -> 2 ranks ep 2 (from step 10) -> 1 rank (from step 20):"
check_resumed ep2 10 "" 30
check_resumed ep1 20 "" 30
same_losses ep4 ep2 11 20 1e-5 || fail "4 -> 2 ranks"
same_losses ep4 ep1 21 30 1e-5 || fail "2 -> 1 rank"

# 3. Refusals: one line naming the file, exit 3, nothing trained.
ck="$SCRATCH/ep4/ckpt/step_00000020.h5"
head -c 30000 "$ck" > "$SCRATCH/trunc.h5"
cp "$ck" "$SCRATCH/step_00000020.h5.tmp"
for bad in "$SCRATCH/trunc.h5" "$SCRATCH/step_00000020.h5.tmp"; do
  train refuse 1 --set train.steps=30 --resume "$bad"
  [ "$rc" -eq 3 ] || { cat "$SCRATCH/refuse.log"; fail "checkpoint $bad accepted (exit $rc)"; }
  grep -q "$(basename "$bad")" "$SCRATCH/refuse.log" || fail "message does not name $bad"
  echo "refused $(basename "$bad"): $(grep furnace: "$SCRATCH/refuse.log" | tail -n 1)"
done
train refuse 1 --set train.steps=30 --set moe.experts=8 --resume "$ck"
[ "$rc" -eq 3 ] || fail "checkpoint with 4 experts loaded into an 8-expert model"
echo "refused mismatch: $(grep furnace: "$SCRATCH/refuse.log" | tail -n 1)"

# 4. --resume auto takes the newest checkpoint that loads, says why it skipped the
# newer ones, and never starts afresh (truncating the metrics) beside checkpoints.
# ep4's directory holds step 10, 20, 30 and latest -> step 30.
cp -r "$SCRATCH/ep4" "$SCRATCH/auto_damaged"
head -c 30000 "$SCRATCH/ep4/ckpt/step_00000030.h5" > "$SCRATCH/auto_damaged/ckpt/step_00000030.h5"
train auto_damaged 1 --set train.steps=30 --resume auto
[ "$rc" -eq 0 ] || { cat "$SCRATCH/auto_damaged.log"; fail "resume auto beside a damaged newest checkpoint (exit $rc)"; }
grep -q "^resume auto: skipping a checkpoint that does not load: .*step_00000030.h5" "$SCRATCH/auto_damaged.log" ||
  { cat "$SCRATCH/auto_damaged.log"; fail "resume auto did not say why it skipped step_00000030.h5"; }
echo "resume auto, newest checkpoint damaged: $(grep '^resume auto' "$SCRATCH/auto_damaged.log" | cut -c1-120)"
check_resumed auto_damaged 20 "$SCRATCH/ep4/metrics.jsonl" 30
same_losses ep4 auto_damaged 21 30 1e-5 || fail "resumed from step 20 of ep4"
grep -q "^resume: parallel.ep: 4 in checkpoint, 1 now$" "$SCRATCH/auto_damaged.log" || fail "changed parallel.ep not reported"

# `latest` gone: the step files are still found; a changed seed and batch are reported.
cp -r "$SCRATCH/ep4" "$SCRATCH/auto_nolatest"
rm "$SCRATCH/auto_nolatest/ckpt/latest"
seed=$(/usr/bin/python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["train"]["seed"])' "$SCRATCH/ep4/config.json")
train auto_nolatest 1 --set train.steps=35 --set train.seed=$((seed + 1)) --set train.batch_size=4 --resume auto
[ "$rc" -eq 0 ] || { cat "$SCRATCH/auto_nolatest.log"; fail "resume auto without latest (exit $rc)"; }
check_resumed auto_nolatest 30 "$SCRATCH/ep4/metrics.jsonl" 35
for change in "train.seed: $seed in checkpoint, $((seed + 1)) now" "train.batch_size: 8 in checkpoint, 4 now" \
              "train.steps: 30 in checkpoint, 35 now"; do
  grep -qxF "resume: $change" "$SCRATCH/auto_nolatest.log" || { cat "$SCRATCH/auto_nolatest.log"; fail "not reported: $change"; }
done
echo "resume auto without latest: $(grep '^resume' "$SCRATCH/auto_nolatest.log" | head -n 4 | tr '\n' ';' | cut -c1-200)"

# None loads: exit 3 naming the reason, and the metrics are left alone.
cp -r "$SCRATCH/ep4" "$SCRATCH/auto_none"
for f in "$SCRATCH"/auto_none/ckpt/step_*.h5; do head -c 30000 "$f" > "$f.cut" && mv "$f.cut" "$f"; done
train auto_none 1 --set train.steps=30 --resume auto
[ "$rc" -eq 3 ] || { cat "$SCRATCH/auto_none.log"; fail "resume auto with no loadable checkpoint exited $rc, expected 3"; }
grep -q "none of the 3 checkpoint(s) in .* loads" "$SCRATCH/auto_none.log" || fail "no reason for refusing to start"
cmp -s "$SCRATCH/ep4/metrics.jsonl" "$SCRATCH/auto_none/metrics.jsonl" || fail "metrics.jsonl changed by a refused resume"
echo "resume auto, nothing loads: $(grep furnace: "$SCRATCH/auto_none.log" | tail -n 1 | cut -c1-160)"

# 5. A background write that fails ends the run at the next step boundary once the
# writers are done, with exit 4 and the reason; "checkpoint written" is never said.
# Rank 1's data writes fail (FURNACE_FAULT, docs/testing.md), as on a full disk.
export FURNACE_FAULT=ckpt.write.data@1
train bgfail 2 --set train.steps=1000 --set parallel.ep=2 --set checkpoint.async=true \
  --set checkpoint.every=10 --set checkpoint.dir="\"$SCRATCH/bgfail/ckpt\""
unset FURNACE_FAULT
[ "$rc" -eq 4 ] || { cat "$SCRATCH/bgfail.log"; fail "failed background write: exit $rc, expected 4"; }
grep -q "^furnace: background checkpoint failed: .*bgfail/ckpt/step_00000010.h5' could not be written" "$SCRATCH/bgfail.log" || { cat "$SCRATCH/bgfail.log"; fail "no reason given"; }
grep -q "^checkpoint .*step_00000010.h5: background write started" "$SCRATCH/bgfail.log" || fail "no background write started"
! grep -q "^checkpoint written" "$SCRATCH/bgfail.log" || fail "a checkpoint that was never written was announced"
n=$(wc -l < "$SCRATCH/bgfail/metrics.jsonl")
# The writers end within milliseconds (step 13 here); the old behaviour (reported at
# the next save, step 20) is what this bound tells apart, with room for a slow machine.
[ "$n" -ge 10 ] && [ "$n" -lt 20 ] || fail "the run went on to step $n after the write of step 10 failed"
echo "failed background write of step 10: run ended after step $n, exit 4: $(grep '^furnace:' "$SCRATCH/bgfail.log" | cut -c1-140)"
