# Shared set-up for the end-to-end tests: a scratch directory and a prepared token
# corpus (the fortunes files; a few seconds), and small assertion helpers.
set -euo pipefail
BIN=${1:-build/bin/furnace}
BIN=$(realpath "$BIN")
SCRATCH=$(mktemp -d /tmp/furnace-e2e.XXXXXX)
# On any exit, also end whatever a test left running (a failed test must not leave ranks behind).
trap 'rc=$?; pkill -9 -f -- "$SCRATCH" 2>/dev/null || true; rm -rf "$SCRATCH"; exit $rc' EXIT
DATA="$SCRATCH/data"
"$BIN" data prepare --out "$DATA" > "$SCRATCH/prepare.log"
TINY=(--config configs/tiny.toml --set data.train="\"$DATA/train.h5\"" --set data.valid="\"$DATA/valid.h5\"")

fail() { echo "FAIL: $*" >&2; exit 1; }

# losses FILE [KEY]: one metric (default: loss) of every step of a metrics.jsonl, one per line.
losses() { /usr/bin/python3 -c 'import json,sys; [print(repr(json.loads(l)[sys.argv[2]])) for l in open(sys.argv[1])]' "$1" "${2:-loss}"; }

# expect CODE PATTERN COMMAND...: the command exits with CODE and prints PATTERN.
expect() {
  local code=$1 pattern=$2; shift 2
  set +e
  out=$(timeout -k 5 60 "$@" 2>&1); rc=$?
  set -e
  [ "$rc" -eq "$code" ] || fail "expected exit $code, got $rc from: $* ; output: $out"
  grep -q -- "$pattern" <<<"$out" || fail "expected '$pattern' in output of: $*; got: $out"
  echo "ok: exit $rc, '$pattern'"
}
