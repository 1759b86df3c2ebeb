#!/usr/bin/env bash
# memory.experts = nvme (docs/memory.md, "Experts on the nvme tier"): each MoE layer's
# experts live in files and come into memory for their own forward, backward and
# update only, and training is bitwise the same as with everything in memory:
#   - 50 steps at 2 ranks as dp 1 x ep 2 and as dp 2 x ep 1 (expert gradients reduced
#     over dp before they leave memory), with evaluations and checkpoints: every loss
#     and validation loss identical to the all-in-memory run;
#   - the nvme files exist while the run trains and are gone after it; the memory
#     report has an nvme column;
#   - a checkpoint written at step 25 with the experts on nvme resumes, on nvme and in
#     memory, to the same losses 26..50 (so the offloaded groups are written and read
#     back, not left at their initial values);
#   - a failed write to the tier on one rank ends the job with the file's name, once
#     (exit 4), at 2 ranks;
#   - the settings it cannot combine with are refused in one line (exit 2).
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/one_line.sh"
# moe.every = 1: two MoE layers, so each brings the other out of memory.
COMMON=("${TINY[@]}" --set moe.every=1 --set train.steps=50 --set train.eval_every=25 --set checkpoint.every=25)
source "$(dirname "$0")/lib/resume.sh"

for ep in 2 1; do
  train "device-ep$ep" 2 --set parallel.ep=$ep
  train "nvme-ep$ep" 2 --set parallel.ep=$ep --set memory.experts=nvme
  for run in "device-ep$ep" "nvme-ep$ep"; do
    [ "$(cat "$SCRATCH/$run.rc")" -eq 0 ] || fail "$run exited $(cat "$SCRATCH/$run.rc"): $(tail -5 "$SCRATCH/$run.log")"
  done
  # Every step's value of KEY (None where a line has none: val_loss after evaluations only).
  values() { /usr/bin/python3 -c 'import json,sys; [print(repr(json.loads(l).get(sys.argv[2]))) for l in open(sys.argv[1])]' "$1" "$2"; }
  for key in loss val_loss grad_norm; do
    values "$SCRATCH/device-ep$ep/metrics.jsonl" "$key" > "$SCRATCH/device.$key"
    values "$SCRATCH/nvme-ep$ep/metrics.jsonl" "$key" > "$SCRATCH/nvme.$key"
    cmp -s "$SCRATCH/device.$key" "$SCRATCH/nvme.$key" \
      || fail "ep $ep: $key differs with the experts on nvme: $(diff "$SCRATCH/device.$key" "$SCRATCH/nvme.$key" | head -4)"
  done
  [ "$(wc -l < "$SCRATCH/nvme.loss")" -eq 50 ] || fail "ep $ep: expected 50 metric lines"
  [ "$(grep -vc None "$SCRATCH/nvme.val_loss")" -eq 2 ] || fail "ep $ep: expected 2 evaluations, got $(grep -vc None "$SCRATCH/nvme.val_loss")"
  echo "ok: dp $((2 / ep)) x ep $ep: 50 losses and gradient norms bitwise identical with the experts on nvme"
done

# The report: an nvme column with parameter, gradient and optimizer bytes, and the
# tier's traffic line.
report=$(sed -n '/^memory at the end/,/^  nvme tier/p' "$SCRATCH/nvme-ep2.log")
grep -q "nvme (current / peak)" <<< "$report" || fail "no nvme column: $report"
for cat in parameters gradients optimizer; do
  grep -Eq "^  $cat .* [1-9][0-9.]* [KMG]iB / +[1-9][0-9.]* [KMG]iB$" <<< "$report" || fail "no $cat bytes on the nvme tier: $report"
done
grep -Eq "^  nvme tier \(rank 0\): [1-9].* read at [0-9.]+ GB/s, [1-9].* written at [0-9.]+ GB/s" <<< "$report" || fail "no nvme traffic line: $report"
[ -z "$(ls -A "$SCRATCH/nvme-ep2/nvme" 2>/dev/null)" ] || fail "the nvme files were left behind: $(ls -R "$SCRATCH/nvme-ep2/nvme")"
echo "ok: the report shows the nvme tier; its files are removed at the end"
# Flat: the window is reached in the first step (its update brings a whole group in)
# and never grows after it.
/usr/bin/python3 - "$SCRATCH/nvme-ep2/metrics.jsonl" <<'PY' || fail "memory_peak_bytes grew after step 1 with the experts on nvme"
import json, sys
peaks = [json.loads(l)["memory_peak_bytes"] for l in open(sys.argv[1])]
assert all(p == peaks[1] for p in peaks[1:]), [p for p in peaks if p != peaks[1]][:2]
print("ok: memory_peak_bytes the same at steps 2-50:", peaks[1])
PY

# While training: one file per family and rank in memory.nvme_dir.
mkdir -p "$SCRATCH/tier"
timeout 120 mpiexec -n 2 "$BIN" train "${COMMON[@]}" --set output.dir="\"$SCRATCH/live\"" --set train.steps=100000 \
  --set train.eval_every=0 --set checkpoint.every=0 --set memory.experts=nvme --set memory.nvme_dir="\"$SCRATCH/tier\"" \
  > "$SCRATCH/live.log" 2>&1 &
live=$!
for _ in $(seq 100); do grep -q "^step" "$SCRATCH/live.log" && break; sleep 0.2; done
files=$(cd "$SCRATCH/tier" && ls rank*/*.bin 2>/dev/null | sort | tr '\n' ' ')
kill -TERM "$live" 2>/dev/null; wait "$live" || true
[ "$files" = "rank0/exp_avg.bin rank0/exp_avg_sq.bin rank0/grad.bin rank0/param.bin rank1/exp_avg.bin rank1/exp_avg_sq.bin rank1/grad.bin rank1/param.bin " ] \
  || fail "expected one file per family and rank in memory.nvme_dir, found: '$files' ($(tail -3 "$SCRATCH/live.log"))"
echo "ok: while training, memory.nvme_dir holds one file per family and rank"

# Resume from the nvme run's step-25 checkpoint, on nvme and in memory.
ckpt="$SCRATCH/nvme-ep2/ckpt/step_00000025.h5"
[ -f "$ckpt" ] || fail "no step-25 checkpoint in $SCRATCH/nvme-ep2/ckpt"
for tier in nvme device; do
  train "resume-$tier" 2 --set parallel.ep=2 --set memory.experts=$tier --resume "$ckpt"
  [ "$(cat "$SCRATCH/resume-$tier.rc")" -eq 0 ] || fail "resume-$tier exited $(cat "$SCRATCH/resume-$tier.rc"): $(tail -5 "$SCRATCH/resume-$tier.log")"
  check_resumed "resume-$tier" 25 "" 50
  same_losses nvme-ep2 "resume-$tier" 26 50 0 || fail "resume-$tier: losses 26..50 differ from the uninterrupted run"
done
echo "ok: the step-25 checkpoint of the nvme run resumes bitwise, with the experts on nvme and in memory"

# (MPI_Abort adds MPICH's own line; the reason itself must come exactly once.)
set +e
FURNACE_FAULT=nvme.write@1 timeout -k 5 60 mpiexec -n 2 "$BIN" train "${COMMON[@]}" --set output.dir="\"$SCRATCH/fault\"" \
  --set memory.experts=nvme --set parallel.ep=2 > /dev/null 2> "$SCRATCH/fault.err"
rc=$?
set -e
pattern="nvme tier: writing region .* to '.*/rank1/grad.bin' failed: injected fault at nvme.write"
[ "$rc" -eq 4 ] || fail "a failed nvme write: expected exit 4, got $rc: $(head -c 600 "$SCRATCH/fault.err")"
[ "$(grep -c -- "$pattern" "$SCRATCH/fault.err")" -eq 1 ] || fail "a failed nvme write: the reason not once: $(head -c 600 "$SCRATCH/fault.err")"
echo "ok: a failed nvme write on rank 1 ends the job, exit 4, naming the file once"
expect_line 2 "memory.experts = nvme with memory.zero = 1 is not implemented yet" \
  "$BIN" train "${TINY[@]}" --set output.dir="\"$SCRATCH/z\"" --set memory.experts=nvme --set memory.zero=1 --set parallel.ep=1
expect_line 2 "memory.experts = nvme with checkpoint.async = true" \
  "$BIN" train "${TINY[@]}" --set output.dir="\"$SCRATCH/a\"" --set memory.experts=nvme --set checkpoint.async=true --set parallel.ep=1
expect_line 2 "memory.nvme_dir" \
  "$BIN" train "${TINY[@]}" --set output.dir="\"$SCRATCH/m\"" --set memory.experts=nvme --set memory.nvme_dir="\"$SCRATCH/missing\"" --set parallel.ep=1
