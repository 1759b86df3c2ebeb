#!/usr/bin/env bash
# Fault injection, one repetition of every case at 1, 2 and 4 ranks (scripts/fault-injection.sh
# runs ten): a rank that fails in a checkpoint write, close, fsync or read, in set-up
# or in a batch read, a file-size limit on one rank and a full file system (sync and
# background writes) each end the job within 30 s with the reason once and the
# documented exit code. Fails when any trial hangs, crashes or loses its reason.
set -euo pipefail
BIN=${1:-build/bin/furnace}
exec bash "$(dirname "$0")/../../scripts/fault-injection.sh" --bin "$BIN" --quick --np "1 2 4"
