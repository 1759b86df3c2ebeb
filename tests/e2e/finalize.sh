#!/usr/bin/env bash
# The MPI_Finalize deadline (docs/jobs.md, "A hang in MPI_Finalize"): with the hang
# injected (FURNACE_FAULT=finalize.hang) a finished run leaves after
# FURNACE_FINALIZE_TIMEOUT_S with one line per stuck rank and its work complete, at 1
# rank with the run's own exit status. Fails when the watchdog is gone (the job then
# waits until the timeout here) or when it fires without a hang.
source "$(dirname "$0")/lib/common.sh"
ARGS=("${TINY[@]}" --set train.steps=3 --set train.eval_every=0)
LINE="MPI_Finalize has not returned after 2 s (stuck in the launcher's PMI barrier; docs/jobs.md); the run's work is complete and saved; leaving with exit 0"

# 1 rank: exit 0 (the run's status), the line once, all 3 steps in the metrics.
t0=$SECONDS
set +e
FURNACE_FAULT=finalize.hang FURNACE_FINALIZE_TIMEOUT_S=2 timeout -k 5 60 "$BIN" train "${ARGS[@]}" \
  --set output.dir="\"$SCRATCH/one\"" > "$SCRATCH/one.log" 2>&1
rc=$?
set -e
[ "$rc" -eq 0 ] || fail "1 rank: exit $rc after the injected hang, expected the run's 0: $(tail -3 "$SCRATCH/one.log")"
[ "$(grep -c "^furnace: $LINE$" "$SCRATCH/one.log")" -eq 1 ] || fail "1 rank: the watchdog line is not there once: $(tail -3 "$SCRATCH/one.log")"
[ "$(wc -l < "$SCRATCH/one/metrics.jsonl")" -eq 3 ] || fail "1 rank: the metrics are not complete"
echo "ok: 1 rank: MPI_Finalize hung, the watchdog ended the run after $((SECONDS - t0)) s with exit 0"

# 2 ranks, rank 1 hangs: the job ends (rank 0 then waits in the PMI barrier for rank 1
# and leaves by its own deadline), rank 1's line is there, the checkpoint verifies.
t0=$SECONDS
set +e
FURNACE_FAULT=finalize.hang@1 FURNACE_FINALIZE_TIMEOUT_S=2 timeout -k 5 60 mpiexec -n 2 "$BIN" train "${ARGS[@]}" \
  --set checkpoint.every=3 --set output.dir="\"$SCRATCH/two\"" > "$SCRATCH/two.log" 2>&1
rc=$?
set -e
[ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] || fail "2 ranks: the job hung until the test's timeout"
grep -q "^furnace: rank 1: $LINE$" "$SCRATCH/two.log" || fail "2 ranks: no watchdog line from rank 1: $(tail -5 "$SCRATCH/two.log")"
"$BIN" ckpt inspect "$SCRATCH/two/ckpt" --verify > /dev/null || fail "2 ranks: the checkpoint does not verify"
echo "ok: 2 ranks, rank 1 stuck in MPI_Finalize: the job ended after $((SECONDS - t0)) s (exit $rc), checkpoint intact"

# Without a hang the watchdog stays silent.
"$BIN" train "${ARGS[@]}" --set output.dir="\"$SCRATCH/plain\"" > "$SCRATCH/plain.log" 2>&1 || fail "plain run failed"
grep -q "MPI_Finalize has not returned" "$SCRATCH/plain.log" && fail "the watchdog fired without a hang"
echo "finalize: all checks passed"
