# Shared set-up for the end-to-end tests: a scratch directory and a prepared token
# corpus (the fortunes files; a few seconds), and small assertion helpers.
set -euo pipefail
BIN=${1:-build/bin/furnace}
BIN=$(realpath "$BIN")
SCRATCH=$(mktemp -d /tmp/furnace-e2e.XXXXXX)
trap 'rm -rf "$SCRATCH"' EXIT
DATA="$SCRATCH/data"
"$BIN" data prepare --out "$DATA" > "$SCRATCH/prepare.log"
TINY=(--config configs/tiny.toml --set data.train="\"$DATA/train.h5\"" --set data.valid="\"$DATA/valid.h5\"")

fail() { echo "FAIL: $*" >&2; exit 1; }

# losses FILE [KEY]: one metric (default: loss) of every step of a metrics.jsonl, one per line.
losses() { /usr/bin/python3 -c 'import json,sys; [print(repr(json.loads(l)[sys.argv[2]])) for l in open(sys.argv[1])]' "$1" "${2:-loss}"; }
