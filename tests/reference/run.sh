#!/usr/bin/env bash
# The whole Furnace model against PyTorch (tests/reference/model.py).
#
# usage: tests/reference/run.sh [FURNACE_BINARY]     (default: build/bin/furnace)
#
# Builds nothing. Runs `furnace reference-dump` on configs/tiny.toml and on a variant
# (rmsnorm, swiglu, MoE in every block), checks each dump with check.py, then checks
# that check.py FAILS when one expert gradient is perturbed. One line per check;
# exits non-zero if anything is wrong. STEPS=N sets the number of training steps
# compared (default 5). Needs Debian's /usr/bin/python3 with python3-torch and
# python3-h5py.
set -u -o pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
if [[ $# -ge 1 ]]; then
  furnace=$(realpath -m -- "$1")
else
  furnace="$root/build/bin/furnace"
fi
py=/usr/bin/python3
check="$here/check.py"
config="$root/configs/tiny.toml"
steps=${STEPS:-5}

die() { echo "run.sh: $*" >&2; exit 2; }
[[ -x "$furnace" ]] || die "$furnace is not an executable; build it first (make)"
[[ -f "$config" ]] || die "$config not found"
"$py" -c 'import torch, h5py, numpy' 2>/dev/null ||
  die "$py cannot import torch, h5py and numpy; install python3-torch python3-h5py"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
# The batches come from the bundled corpus, prepared here (a fresh clone has none).
"$furnace" data prepare --out "$tmp/data" > "$tmp/prepare.log" 2>&1 ||
  die "furnace data prepare failed: $(tail -n 1 "$tmp/prepare.log")"
data=(--set "data.train=\"$tmp/data/train.h5\"" --set "data.valid=\"$tmp/data/valid.h5\"")

# dump NAME [--set k=v ...]: write $tmp/NAME.h5
dump() {
  local name=$1; shift
  if ! "$furnace" reference-dump --config "$config" --out "$tmp/$name.h5" --steps "$steps" "${data[@]}" "$@" \
      >"$tmp/$name.dump.log" 2>&1; then
    echo "FAIL  $name: furnace reference-dump exited non-zero:"
    sed 's/^/      /' "$tmp/$name.dump.log"
    failures=$((failures + 1))
    return 1
  fi
}

# expect RC NAME LABEL [check.py args...]: run check.py on $tmp/NAME.h5, want exit RC
expect() {
  local want=$1 name=$2 label=$3; shift 3
  local log="$tmp/$name.$want.check.log" rc=0
  "$py" "$check" "$tmp/$name.h5" "$@" >"$log" 2>&1 || rc=$?
  local summary
  summary=$(grep '^check.py:' "$log" | tail -1)
  if [[ $rc -eq $want ]]; then
    echo "PASS  $label: ${summary:-check.py exited $rc}"
  else
    echo "FAIL  $label: check.py exited $rc, expected $want"
    sed 's/^/      /' "$log"
    failures=$((failures + 1))
  fi
}

variant=(--set model.norm=rmsnorm --set model.activation=swiglu --set moe.every=1)

if dump tiny; then
  expect 0 tiny "reference tiny.toml"
  expert=$("$py" -c '
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    names = sorted(f["step0/grads"].keys()) if "step0/grads" in f else []
print(next((n for n in names if n.endswith(".moe.w1")), ""))' "$tmp/tiny.h5")
  if [[ -n "$expert" ]]; then
    expect 1 tiny "perturbed $expert is caught" --perturb "$expert"
  else
    echo "FAIL  perturbation: the tiny.toml dump has no expert gradient (*.moe.w1)"
    failures=$((failures + 1))
  fi
fi
if dump variant "${variant[@]}"; then
  expect 0 variant "reference tiny.toml + rmsnorm, swiglu, moe.every=1"
fi

if [[ $failures -ne 0 ]]; then
  echo "run.sh: $failures reference check(s) FAILED"
  exit 1
fi
echo "run.sh: all reference checks passed"
