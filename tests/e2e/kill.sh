#!/usr/bin/env bash
# `kill -9` of one rank in the middle of training ends the whole job within 30 s
# with a message, instead of leaving the other ranks waiting in a collective.
source "$(dirname "$0")/lib/common.sh"
OUT="$SCRATCH/killrun"
mpiexec -n 2 "$BIN" train "${TINY[@]}" --set train.steps=1000000 --set train.eval_every=0 \
  --set parallel.ep=2 --set output.dir="\"$OUT\"" > "$SCRATCH/kill.log" 2>&1 &
job=$!
for _ in $(seq 120); do  # wait for training to be under way
  [ -s "$OUT/metrics.jsonl" ] && [ "$(wc -l < "$OUT/metrics.jsonl")" -ge 20 ] && break
  sleep 0.5
done
[ -s "$OUT/metrics.jsonl" ] || { kill -9 $job; cat "$SCRATCH/kill.log"; fail "training did not start"; }
victim=$(pgrep -f -- "output.dir=\"$OUT\"" | while read -r p; do
  [ "$(ps -o comm= -p "$p")" = furnace ] && echo "$p"; done | tail -n 1)
[ -n "$victim" ] || fail "no rank process found"
t0=$SECONDS
kill -9 "$victim"
for _ in $(seq 60); do kill -0 $job 2>/dev/null || break; sleep 0.5; done
if kill -0 $job 2>/dev/null; then
  pkill -9 -f -- "output.dir=\"$OUT\"" || true
  fail "job still running 30 s after kill -9 of rank pid $victim"
fi
set +e; wait $job; rc=$?; set -e
elapsed=$((SECONDS - t0))
[ "$rc" -ne 0 ] || fail "job exited 0 after a rank was killed"
grep -qiE "killed|terminat|signal" "$SCRATCH/kill.log" || { cat "$SCRATCH/kill.log"; fail "no message"; }
echo "kill -9 of rank pid $victim: job ended in ${elapsed} s with exit $rc:"
grep -iE "killed|terminat|signal" "$SCRATCH/kill.log" | head -3
