#!/usr/bin/env bash
# Checkpoints: bit-exact resume after SIGUSR1 at the same layout (synchronous and
# background writes), resharding 4 ranks ep 4 -> 2 ranks ep 2 -> 1 rank, and refusal
# of a truncated, a .tmp and a mismatched checkpoint.
source "$(dirname "$0")/lib/common.sh"
COMMON=("${TINY[@]}" --set train.eval_every=0 --set train.log_every=1000 --set moe.capacity_factor=0
        --set moe.every=1 --set train.batch_size=8)

train() {  # train NAME NP [args...]; sets rc
  local name=$1 np=$2; shift 2
  set +e
  timeout 300 mpiexec -n "$np" "$BIN" train "${COMMON[@]}" --set output.dir="\"$SCRATCH/$name\"" "$@" \
    >> "$SCRATCH/$name.log" 2>&1
  rc=$?
  echo "$rc" > "$SCRATCH/$name.rc"
  set -e
}
same_losses() {  # same_losses A B FIRST LAST TOL: loss of steps FIRST..LAST agree
  /usr/bin/python3 - "$SCRATCH/$1/metrics.jsonl" "$SCRATCH/$2/metrics.jsonl" "$3" "$4" "$5" <<'PY'
import json, sys
a, b, first, last, tol = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
def load(p):
    return {j["step"]: j["loss"] for j in map(json.loads, open(p))}
la, lb = load(a), load(b)
steps = range(first, last + 1)
missing = [s for s in steps if s not in la or s not in lb]
if missing: sys.exit(f"steps missing: {missing[:5]}")
worst = max(abs(la[s] - lb[s]) / abs(la[s]) for s in steps)
print(f"  steps {first}-{last}: max rel diff {worst:.2e} (tolerance {tol:g})")
sys.exit(0 if worst <= tol else 1)
PY
}

# 1. Bit-exact resume after SIGUSR1 (sent to one rank only), sync and async writes.
train full 2 --set train.steps=400 --set parallel.ep=2
[ "$rc" -eq 0 ] || { cat "$SCRATCH/full.log"; fail "uninterrupted run"; }
for mode in false true; do
  name=sig_$mode
  train "$name" 2 --set train.steps=400 --set parallel.ep=2 --set checkpoint.async=$mode &
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
  grep -q "signal 10 received" "$SCRATCH/$name.log" || { cat "$SCRATCH/$name.log"; fail "no checkpoint on SIGUSR1 ($mode)"; }
  [ "$(cat "$SCRATCH/$name.rc")" = 75 ] || fail "exit code $(cat "$SCRATCH/$name.rc") after SIGUSR1, expected 75"
  stopped=$(wc -l < "$SCRATCH/$name/metrics.jsonl")
  train "$name" 2 --set train.steps=400 --set parallel.ep=2 --set checkpoint.async=$mode --resume auto
  [ "$rc" -eq 0 ] || { cat "$SCRATCH/$name.log"; fail "resume ($mode)"; }
  echo "async=$mode: SIGUSR1 stopped the run after step $stopped (exit 75), resumed to 400:"
  same_losses full "$name" 1 400 0 || fail "resumed losses differ from the uninterrupted run (async=$mode)"
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
