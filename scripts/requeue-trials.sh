#!/usr/bin/env bash
# Requeue trials: TRIALS (default 10) real training jobs per signal through
# jobs/slurm/train.sbatch with LAUNCH="mpiexec -n 2" (faked Slurm, fake scontrol),
# each stopped by SIGTERM or SIGUSR1 sent to the launcher itself
# (tests/e2e/lib/requeue.sh), then a table: how often mpiexec passed exit code 75
# on, how often the job requeued (exit 75 and one `scontrol requeue`), whether the
# ranks' marker was there and its checkpoint intact. "by exit code only" is how
# often the job scripts would have requeued before the marker existed.
# Usage: scripts/requeue-trials.sh [path/to/furnace]   (after make; about 3 s a trial)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
BIN=$(realpath "${1:-build/bin/furnace}")
TRIALS=${TRIALS:-10}
WORK=$(mktemp -d /tmp/furnace-requeue.XXXXXX)
trap 'pkill -9 -f -- "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
DATA=$WORK/data
"$BIN" data prepare --out "$DATA" > /dev/null || { echo "requeue-trials: data prepare failed" >&2; exit 1; }
source tests/e2e/lib/requeue.sh

printf '%-8s %6s %18s %18s %10s %8s %12s %18s\n' signal trials "launcher exit 75" "launcher exit 0" "requeued" marker "ckpt intact" "by exit code only"
bad=0
for sig in TERM USR1; do
  n=0 l75=0 l0=0 requeued=0 markers=0 intact=0
  for _ in $(seq "$TRIALS"); do
    read -r _ launcher_rc script_rc requeues marker ckpt <<< "$(requeue_trial "$sig" "$WORK/trial")"
    n=$((n + 1))
    [ "$launcher_rc" = 75 ] && l75=$((l75 + 1))
    [ "$launcher_rc" = 0 ] && l0=$((l0 + 1))
    [ "$script_rc" = 75 ] && [ "$requeues" = 1 ] && requeued=$((requeued + 1))
    [ "$marker" = yes ] && markers=$((markers + 1))
    [ "$ckpt" = ok ] && intact=$((intact + 1))
  done
  printf '%-8s %6d %18d %18d %10s %8s %12s %18s\n' "SIG$sig" "$n" "$l75" "$l0" "$requeued/$n" "$markers/$n" \
    "$intact/$n" "$l75/$n"
  [ "$requeued" -eq "$n" ] && [ "$intact" -eq "$n" ] || bad=1
done
exit $bad
