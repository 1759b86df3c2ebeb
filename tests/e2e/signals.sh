#!/usr/bin/env bash
# Stop requests by signal outside the training steps: during start-up (while the
# config is being read, and one already pending when the process starts), during a
# long evaluation, and SIGINT (exit 130: checkpointed, not requeued; a second one
# ends the process at once). SIGUSR1 between steps: tests/e2e/checkpoint.sh; the
# job scripts' requeue when the launcher is signalled: tests/e2e/jobs.sh.
source "$(dirname "$0")/lib/common.sh"
COMMON=("${TINY[@]}" --set train.log_every=1000 --set train.eval_every=0)

# pids_of NAME: the furnace processes of the run writing to $SCRATCH/NAME.
pids_of() {
  pgrep -f -- "output.dir=\"$SCRATCH/$1\"" | while read -r p; do
    [ "$(ps -o comm= -p "$p")" = furnace ] && echo "$p"; done
}
# wait_lines NAME N: until NAME's metrics.jsonl has N lines (at most 30 s).
wait_lines() {
  for _ in $(seq 300); do
    [ -s "$SCRATCH/$1/metrics.jsonl" ] && [ "$(wc -l < "$SCRATCH/$1/metrics.jsonl")" -ge "$2" ] && return
    sleep 0.1
  done
  fail "$1: fewer than $2 metric lines after 30 s"
}
# delivered PID SIGNUM: until the signal is no longer pending for PID (its handler
# has run or is running), so that a second one is not merged into it.
delivered() {
  local bit=$((1 << ($2 - 1)))
  for _ in $(seq 100); do
    local pending=0
    while read -r key mask; do
      case $key in SigPnd:|ShdPnd:) pending=$((pending | 0x$mask)) ;; esac
    done < "/proc/$1/status"
    [ $((pending & bit)) -eq 0 ] && return
    sleep 0.05
  done
  fail "signal $2 still pending for pid $1 after 5 s"
}
# finished NAME PID: waits for PID (at most 60 s) and sets rc.
finished() {
  for _ in $(seq 600); do kill -0 "$2" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$2" 2>/dev/null && { kill -9 "$2"; cat "$SCRATCH/$1.log"; fail "$1 still running 60 s after the signal"; }
  set +e; wait "$2"; rc=$?; set -e
}

# A checkpoint at step 5 to resume from.
"$BIN" train "${COMMON[@]}" --set train.steps=5 --set output.dir="\"$SCRATCH/base\"" > "$SCRATCH/base.log" 2>&1 ||
  { cat "$SCRATCH/base.log"; fail "base run"; }
CK=$SCRATCH/base/ckpt/step_00000005.h5

# 1. SIGTERM while the config is being read: a FIFO as the config file holds the
# process in its config load (after MPI_Init, before the Trainer and the resume)
# until the test writes it. The request is honoured right after the load: the
# resumed state is checkpointed into this run's own directory, nothing is trained,
# exit 75 and a requeue marker naming the checkpoint.
mkfifo "$SCRATCH/config.fifo"
"$BIN" train --config "$SCRATCH/config.fifo" "${COMMON[@]:2}" --set train.steps=20 \
  --set output.dir="\"$SCRATCH/startup\"" --resume "$CK" > "$SCRATCH/startup.log" 2>&1 &
pid=$!
exec 3> "$SCRATCH/config.fifo"  # returns once furnace has opened it for reading
kill -TERM "$pid"
cat configs/tiny.toml >&3
exec 3>&-
finished startup "$pid"
[ "$rc" -eq 75 ] || { cat "$SCRATCH/startup.log"; fail "SIGTERM during the config load: exit $rc, expected 75"; }
grep -q "^SIGTERM received during start-up: checkpointing the resumed state (step 5)$" "$SCRATCH/startup.log" ||
  { cat "$SCRATCH/startup.log"; fail "no start-up checkpoint of the resumed state"; }
[ -f "$SCRATCH/startup/ckpt/step_00000005.h5" ] || fail "no checkpoint in the run's own directory"
[ ! -s "$SCRATCH/startup/metrics.jsonl" ] || fail "steps were trained after a start-up SIGTERM"
grep -q "\"checkpoint\":\"$SCRATCH/startup/ckpt/step_00000005.h5\",\"step\":5,\"signal\":\"SIGTERM\"" \
  "$SCRATCH/startup/requeue" || fail "requeue marker: $(cat "$SCRATCH/startup/requeue" 2>&1)"
echo "SIGTERM during the config load: exit 75, $(grep 'during start-up' "$SCRATCH/startup.log")"

# 2. A SIGTERM pending before the process even starts (the launcher blocked it and
# sent it): delivered when the handlers are installed; a fresh run has nothing to
# save, exits 75 at once, and its marker names no checkpoint.
set +e
/usr/bin/python3 - "$BIN" train "${COMMON[@]}" --set train.steps=20 --set output.dir="\"$SCRATCH/pending\"" \
  > "$SCRATCH/pending.log" 2>&1 <<'PY'
import os, signal, subprocess, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # inherited by the child
child = subprocess.Popen(sys.argv[1:])
os.kill(child.pid, signal.SIGTERM)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
sys.exit(child.wait() if child.wait() >= 0 else 128 - child.wait())
PY
rc=$?
set -e
[ "$rc" -eq 75 ] || { cat "$SCRATCH/pending.log"; fail "pending SIGTERM: exit $rc, expected 75"; }
grep -q "^SIGTERM received during start-up: nothing trained yet, no checkpoint$" "$SCRATCH/pending.log" ||
  { cat "$SCRATCH/pending.log"; fail "pending SIGTERM not honoured at start-up"; }
[ ! -s "$SCRATCH/pending/metrics.jsonl" ] || fail "steps were trained after a pending SIGTERM"
grep -q '"checkpoint":"","step":0,"signal":"SIGTERM"' "$SCRATCH/pending/requeue" || fail "marker: $(cat "$SCRATCH/pending/requeue" 2>&1)"
echo "SIGTERM pending at exec: exit 75, nothing trained"

# 3. SIGTERM to one rank during an evaluation of 10^4 batches (the most eval_batches
# allows; about 12 ms each at this batch size here, two minutes in all): abandoned
# within a batch or two, checkpoint of the step before it, exit 75.
batches=10000
mpiexec -n 2 "$BIN" train "${COMMON[@]}" --set train.steps=1000 --set parallel.ep=2 --set train.eval_every=2 \
  --set train.batch_size=32 --set model.seq_len=128 --set train.eval_batches=$batches --set output.dir="\"$SCRATCH/eval\"" > "$SCRATCH/eval.log" 2>&1 &
job=$!
wait_lines eval 1
sleep 1  # step 2 takes milliseconds: its evaluation is under way
kill -TERM "$(pids_of eval | tail -n 1)"
finished eval "$job"
[ "$rc" -eq 75 ] || { cat "$SCRATCH/eval.log"; fail "SIGTERM during evaluation: exit $rc, expected 75"; }
done_batches=$(sed -n "s/^SIGTERM received: evaluation after step 2 abandoned after \([0-9]*\) of $batches batches$/\1/p" "$SCRATCH/eval.log")
[ -n "$done_batches" ] || { cat "$SCRATCH/eval.log"; fail "evaluation not abandoned"; }
# The bound is in batches: the signal came about a second into a two-minute evaluation.
[ $((done_batches * 10)) -lt "$batches" ] || fail "evaluation ran $done_batches of $batches batches"
grep -q "^checkpoint written: .*/step_00000002.h5 " "$SCRATCH/eval.log" || fail "no checkpoint of step 2"
[ "$(wc -l < "$SCRATCH/eval/metrics.jsonl")" -eq 2 ] || fail "training went on after the abandoned evaluation"
echo "SIGTERM during evaluation: abandoned after $done_batches of $batches batches, exit 75"

# 4. SIGINT to every rank (what srun does on Ctrl-C; mpiexec does the same, but then
# returns 0 or 130 at random, being signalled itself): checkpoint, exit 130, no
# requeue marker.
mpiexec -n 2 "$BIN" train "${COMMON[@]}" --set train.steps=1000000 --set parallel.ep=2 \
  --set output.dir="\"$SCRATCH/int\"" > "$SCRATCH/int.log" 2>&1 &
job=$!
wait_lines int 10
for p in $(pids_of int); do kill -INT "$p"; done
finished int "$job"
[ "$rc" -eq 130 ] || { cat "$SCRATCH/int.log"; fail "SIGINT: exit $rc, expected 130"; }
step=$(sed -n 's/^SIGINT received: checkpointing after step \([0-9]*\)$/\1/p' "$SCRATCH/int.log")
[ -n "$step" ] && [ -f "$SCRATCH/int/ckpt/$(printf 'step_%08d.h5' "$step")" ] || { cat "$SCRATCH/int.log"; fail "no checkpoint on SIGINT"; }
[ ! -e "$SCRATCH/int/requeue" ] || fail "SIGINT left a requeue marker"
echo "SIGINT to the ranks: checkpoint after step $step, exit 130"

# 5. A second SIGINT ends the process at once, without waiting for anything: both
# arrive while it is held in its config load. (A background job of a script starts
# with SIGINT ignored, which furnace leaves so; a terminal's foreground job does not.)
env --default-signal=INT "$BIN" train --config "$SCRATCH/config.fifo" "${COMMON[@]:2}" --set output.dir="\"$SCRATCH/int2\"" \
  > "$SCRATCH/int2.log" 2>&1 &
pid=$!
exec 3> "$SCRATCH/config.fifo"
kill -INT "$pid"
delivered "$pid" 2
kill -INT "$pid"
finished int2 "$pid"
exec 3>&-
[ "$rc" -eq 130 ] || { cat "$SCRATCH/int2.log"; fail "second SIGINT: exit $rc, expected 130"; }
grep -q "^furnace: second SIGINT: exiting now" "$SCRATCH/int2.log" || { cat "$SCRATCH/int2.log"; fail "second SIGINT: no message"; }
echo "second SIGINT: exit 130 at once"
