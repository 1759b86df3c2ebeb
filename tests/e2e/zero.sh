#!/usr/bin/env bash
# ZeRO-1 (memory.zero = 1): the same losses as the unsharded optimizer over 100 steps
# at (dp, ep) = (2, 1), (2, 2), (4, 1); optimizer bytes per rank divided by the group
# (rank 0's report, and --dry-run's measure agrees); checkpoints in global shape: a
# ZeRO-1 checkpoint written at dp 2 (in the background) resumes at dp 1 and dp 4,
# zero 0 and 1, and a zero = 0 checkpoint resumes with zero = 1, each continuing with
# the losses of the uninterrupted run from the checkpoint's step.
source "$(dirname "$0")/lib/common.sh"
COMMON=("${TINY[@]}" --set train.eval_every=0 --set moe.capacity_factor=0 --set moe.every=1
        --set train.batch_size=4)
source "$(dirname "$0")/lib/resume.sh"

# rank 0's optimizer bytes in the report of a log ("memory after set-up" or --dry-run)
optimizer_bytes() {
  /usr/bin/python3 - "$SCRATCH/$1.log" <<'PY'
import re, sys
units = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
m = re.search(r"^  optimizer +([0-9.]+) (B|KiB|MiB|GiB) /", open(sys.argv[1]).read(), re.M)
print(int(float(m.group(1)) * units[m.group(2)]) if m else sys.exit("no optimizer line"))
PY
}

expect 2 "memory.zero = 2 is out of range" "$BIN" train "${COMMON[@]}" --set memory.zero=2 --dry-run

# 1. Losses and grad norms, zero 1 against zero 0, per layout.
for layout in "2 1" "2 2" "4 1"; do
  read -r dp ep <<<"$layout"
  for z in 0 1; do
    train "dp${dp}ep${ep}z$z" $((dp * ep)) --set train.steps=100 --set parallel.ep="$ep" --set memory.zero=$z
    [ "$rc" -eq 0 ] || { cat "$SCRATCH/dp${dp}ep${ep}z$z.log"; fail "run dp $dp ep $ep zero $z"; }
  done
done
/usr/bin/python3 - "$SCRATCH" <<'PY' || fail "zero 1 losses differ from zero 0"
import json, sys
d, bad = sys.argv[1], 0
# Grad norms too (an element counted twice or missed in the sharded norm would show):
# looser, as a gradient amplifies the rounding of a different summation order (4 ranks).
for name in ["dp2ep1", "dp2ep2", "dp4ep1"]:
    for key, tol in [("loss", 1e-6), ("grad_norm", 1e-4)]:
        a, b = ([json.loads(l)[key] for l in open(f"{d}/{name}z{z}/metrics.jsonl")] for z in (0, 1))
        worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
        ok = len(a) == len(b) == 100 and worst <= tol
        bad += not ok
        print(f"{name} {key:9s} zero 1 vs 0 over {len(b)} steps: max rel diff {worst:.2e}"
              f"{' (bitwise)' if a == b else ''} {'ok' if ok else 'FAIL'}")
sys.exit(bad)
PY

# 2. Optimizer bytes: the groups' share, within one checksum block (the ownership unit;
# here the embedding, 256 x 32 floats, times two moments) of an even split.
for name in dp2ep1 dp2ep2 dp4ep1; do
  full=$(optimizer_bytes "${name}z0") sharded=$(optimizer_bytes "${name}z1")
  np=$([ $name = dp2ep1 ] && echo 2 || echo 4)
  echo "$name: optimizer bytes on rank 0: zero 0 $full, zero 1 $sharded (world $np)"
  [ "$sharded" -le $((full / np + 2 * 4 * 256 * 32 + 1024)) ] || fail "$name: zero 1 keeps $sharded optimizer bytes"
done
[ "$(optimizer_bytes dp2ep1z1)" -le "$(( $(optimizer_bytes dp2ep1z0) / 2 + 1024 ))" ] || fail "dp 2: not halved"
train dry 2 --set memory.zero=1 --dry-run
[ "$rc" -eq 0 ] && [ "$(optimizer_bytes dry)" = "$(optimizer_bytes dp2ep1z1)" ] ||
  { cat "$SCRATCH/dry.log"; fail "--dry-run does not report the sharded optimizer bytes"; }

# 3. Checkpoints. ZeRO-1 at dp 2 (background writes) is the uninterrupted reference.
STEPS=20
train ref 2 --set train.steps=$STEPS --set checkpoint.every=10 --set memory.zero=1 --set checkpoint.async=true
[ "$rc" -eq 0 ] || { cat "$SCRATCH/ref.log"; fail "ZeRO-1 run with checkpoints"; }
ck="$SCRATCH/ref/ckpt/step_00000010.h5"
"$BIN" ckpt inspect --verify "$ck" > "$SCRATCH/inspect.log" 2>&1 || { cat "$SCRATCH/inspect.log"; fail "inspect --verify"; }
for target in "1 0" "1 1" "4 0" "4 1"; do
  read -r np z <<<"$target"
  name="from_zero1_np${np}_zero$z"
  train "$name" "$np" --set train.steps=$STEPS --set memory.zero=$z --resume "$ck"
  [ "$rc" -eq 0 ] || { cat "$SCRATCH/$name.log"; fail "$name"; }
  echo "$name:"
  check_resumed "$name" 10 "" $STEPS
  same_losses ref "$name" 11 $STEPS 1e-5 || fail "$name: losses differ from the uninterrupted run"
done
train plain 2 --set train.steps=$STEPS --set checkpoint.every=10
[ "$rc" -eq 0 ] || { cat "$SCRATCH/plain.log"; fail "zero 0 run with checkpoints"; }
train from_zero0 2 --set train.steps=$STEPS --set memory.zero=1 --resume "$SCRATCH/plain/ckpt/step_00000010.h5"
[ "$rc" -eq 0 ] || { cat "$SCRATCH/from_zero0.log"; fail "zero 0 checkpoint with zero 1"; }
echo "from_zero0 (np 2, zero 1):"
check_resumed from_zero0 10 "" $STEPS
same_losses plain from_zero0 11 $STEPS 1e-6 || fail "from_zero0: losses differ from the uninterrupted run"
echo "zero: ok"
