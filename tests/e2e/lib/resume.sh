# Helpers of the tests that train, checkpoint and resume (checkpoint.sh, zero.sh):
# the caller sources common.sh and sets COMMON (the train arguments every run shares).

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

# check_resumed NAME STEP OLD TOTAL: run NAME said it resumed at STEP, kept the lines
# of steps <= STEP of OLD (its metrics.jsonl before the resume; "" for none) and
# then wrote exactly the steps STEP+1 .. TOTAL.
check_resumed() {
  grep -q "^resumed from .*: step $2, " "$SCRATCH/$1.log" || { cat "$SCRATCH/$1.log"; fail "$1: no 'resumed from ...: step $2' line"; }
  /usr/bin/python3 - "$SCRATCH/$1/metrics.jsonl" "$2" "$3" "$4" <<'PY' || fail "$1: metrics after resuming at step $2"
import json, sys
path, step, old, total = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
new = open(path).read().splitlines()
kept = [l for l in (open(old).read().splitlines() if old else []) if json.loads(l)["step"] <= step]
if new[:len(kept)] != kept: sys.exit(f"the {len(kept)} lines of steps <= {step} were not kept")
added = [json.loads(l)["step"] for l in new[len(kept):]]
if added != list(range(step + 1, total + 1)):
    sys.exit(f"steps written after the resume: {added[:3]} ... {added[-3:]}, expected {step + 1} .. {total}")
print(f"  resumed at step {step}: kept {len(kept)} lines, wrote steps {step + 1}-{total}")
PY
}
