#!/usr/bin/env bash
# Batch scripts and the scaling workflow, without a scheduler: jobs/slurm/train.sbatch
# and jobs/pbs/train.pbs with faked scheduler variables under `mpiexec -n 2`, the
# exit-code-75 requeue hook with fake scontrol/qrerun, jobs/slurm/scaling.sh with a
# fake sbatch, and scripts/aggregate-scaling.py on synthetic metrics.
# Usage: tests/e2e/jobs.sh [path/to/furnace]
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD
BIN=${1:-build/bin/furnace}
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
export OMPI_MCA_rmaps_base_oversubscribe=1

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }

steps=$(awk '/^\[train\]/ { t = 1; next } /^\[/ { t = 0 } t && /^steps *=/ { print $3; exit }' configs/tiny.toml)
[ -n "$steps" ] || { echo "FAIL: cannot read train.steps from configs/tiny.toml"; exit 1; }

# Every scheduler variable of the outer environment (if the suite itself runs in a
# job) is dropped, so the scripts only see the faked ones.
clean_env() { env -u SLURM_JOB_ID -u SLURM_NTASKS -u SLURM_STEP_ID -u PBS_JOBID -u PBS_NODEFILE "$@"; }

# --- 1. train.sbatch / train.pbs under mpiexec -n 2 -------------------------------
# A private corpus: the first job prepares it (DATA_DIR missing), the others reuse it.
D=$TMP/data
DATA_ARGS="--set data.train=\"$D/train.h5\" --set data.valid=\"$D/valid.h5\""
# Run from another directory: the scripts must cd to the submit directory.
(cd "$TMP" && clean_env LAUNCH="mpiexec -n 2" SLURM_JOB_ID=1 SLURM_SUBMIT_DIR="$ROOT" \
   SLURM_JOB_NUM_NODES=1 FURNACE="$BIN" CONFIG=configs/tiny.toml OUTDIR="$TMP/slurm" \
   DATA_DIR="$D" EXTRA_ARGS="$DATA_ARGS" \
   timeout -k 5 60 bash "$ROOT/jobs/slurm/train.sbatch") > "$TMP/slurm.log" 2>&1
rc=$?
if [ $rc -ne 0 ]; then fail "train.sbatch exited $rc"; tail -n 20 "$TMP/slurm.log"
else
  n=$(wc -l < "$TMP/slurm/metrics.jsonl" 2>/dev/null || echo 0)
  [ "$n" -eq "$steps" ] && ok "train.sbatch: $n metric lines" || fail "train.sbatch: $n metric lines, expected $steps"
  grep -q "preparing $D" "$TMP/slurm.log" && [ -f "$D/train.h5" ] && ok "train.sbatch prepares a missing corpus" \
    || fail "train.sbatch did not prepare $D"
  grep -q "launch: mpiexec -n 2 $BIN train --config configs/tiny.toml --set output.dir=$TMP/slurm --resume auto --set data.train=" "$TMP/slurm.log" \
    && ok "train.sbatch prints the launch line" || fail "train.sbatch: no resolved launch line"
  grep -q '"nodes": 1, "ranks": 2' "$TMP/slurm/run.json" && ok "train.sbatch run.json" || fail "train.sbatch run.json: $(cat "$TMP/slurm/run.json")"
  grep -q "^resume auto: no checkpoint in $TMP/slurm/ckpt; starting at step 0$" "$TMP/slurm.log" \
    && ok "train.sbatch: --resume auto says it starts afresh" || fail "train.sbatch: no 'starting at step 0' line"
fi

# MPICH's hydra reads PBS_NODEFILE itself, so it must name this machine.
h=$(hostname); printf '%s\n%s\n' "$h" "$h" > "$TMP/nodefile"
(cd "$TMP" && clean_env LAUNCH="mpiexec -n 2" PBS_JOBID=7.server PBS_O_WORKDIR="$ROOT" \
   PBS_NODEFILE="$TMP/nodefile" FURNACE="$BIN" CONFIG=configs/tiny.toml OUTDIR="$TMP/pbs" \
   DATA_DIR="$D" EXTRA_ARGS="$DATA_ARGS --set train.eval_every=5" timeout -k 5 60 bash "$ROOT/jobs/pbs/train.pbs") > "$TMP/pbs.log" 2>&1
rc=$?
if [ $rc -ne 0 ]; then fail "train.pbs exited $rc"; tail -n 20 "$TMP/pbs.log"
else
  n=$(wc -l < "$TMP/pbs/metrics.jsonl" 2>/dev/null || echo 0)
  [ "$n" -eq "$steps" ] && ok "train.pbs: $n metric lines" || fail "train.pbs: $n metric lines, expected $steps"
  nval=$(grep -c '"val_loss"' "$TMP/pbs/metrics.jsonl")
  [ "$nval" -eq $((steps / 5)) ] && ok "train.pbs passes EXTRA_ARGS" || fail "train.pbs: $nval val_loss lines with eval_every=5"
  grep -q '"nodes": 1, "ranks": 2' "$TMP/pbs/run.json" && ok "train.pbs run.json" || fail "train.pbs run.json: $(cat "$TMP/pbs/run.json")"
fi

# Default PBS launcher: NP from PBS_NODEFILE; a bad config propagates exit code 2.
(cd "$TMP" && clean_env PBS_JOBID=8.server PBS_O_WORKDIR="$ROOT" PBS_NODEFILE="$TMP/nodefile" \
   FURNACE="$BIN" CONFIG=configs/tiny.toml OUTDIR="$TMP/pbs-bad" DATA_DIR="$D" \
   EXTRA_ARGS="$DATA_ARGS --set train.no_such_key=1" \
   timeout -k 5 60 bash "$ROOT/jobs/pbs/train.pbs") > "$TMP/pbs-bad.log" 2>&1
rc=$?
[ $rc -eq 2 ] && ok "train.pbs propagates exit code 2" || fail "train.pbs with a bad key exited $rc, expected 2"
grep -q "launch: mpiexec -n 2 " "$TMP/pbs-bad.log" && ok "train.pbs default LAUNCH uses NP from PBS_NODEFILE" \
  || fail "train.pbs default launch line: $(grep launch: "$TMP/pbs-bad.log")"

# --- 2. requeue hook: only exit code 75 requeues ------------------------------------
mkdir -p "$TMP/fakebin"
cat > "$TMP/fakebin/fake-furnace" <<'EOF'
#!/usr/bin/env bash
# FAKE_MARKER=1: leave the ranks' requeue marker, as a checkpoint on SIGTERM does.
[ -n "${FAKE_MARKER:-}" ] && echo '{"checkpoint":"x","step":1,"signal":"SIGTERM"}' > "$OUTDIR/requeue"
exit "${FAKE_RC:-0}"
EOF
for t in scontrol qrerun; do
  printf '#!/usr/bin/env bash\necho "%s $*" >> "$REQUEUE_LOG"\n' "$t" > "$TMP/fakebin/$t"
done
chmod +x "$TMP/fakebin"/*
# "75" and "4" are exit codes; "0+marker": exit 0 with the requeue marker left (what
# mpiexec returns when it was signalled itself); "0+stale": exit 0 and a marker left
# by an earlier run before the job started.
for code in 75 4 0+marker 0+stale; do
  : > "$TMP/requeue.log"
  rm -f "$TMP/rq-slurm/requeue" "$TMP/rq-pbs/requeue"
  marker=""; [ "$code" = 0+marker ] && marker=1
  if [ "$code" = 0+stale ]; then mkdir -p "$TMP/rq-slurm" "$TMP/rq-pbs"; touch "$TMP/rq-slurm/requeue" "$TMP/rq-pbs/requeue"; fi
  clean_env PATH="$TMP/fakebin:$PATH" REQUEUE_LOG="$TMP/requeue.log" FAKE_RC=${code%%+*} FAKE_MARKER=$marker LAUNCH=env \
    FURNACE="$TMP/fakebin/fake-furnace" CONFIG=configs/tiny.toml DATA_DIR= OUTDIR="$TMP/rq-slurm" \
    SLURM_JOB_ID=41 SLURM_SUBMIT_DIR="$ROOT" bash jobs/slurm/train.sbatch > /dev/null 2>&1
  rc_s=$?
  clean_env PATH="$TMP/fakebin:$PATH" REQUEUE_LOG="$TMP/requeue.log" FAKE_RC=${code%%+*} FAKE_MARKER=$marker LAUNCH=env \
    FURNACE="$TMP/fakebin/fake-furnace" CONFIG=configs/tiny.toml DATA_DIR= OUTDIR="$TMP/rq-pbs" \
    PBS_JOBID=42.server PBS_O_WORKDIR="$ROOT" bash jobs/pbs/train.pbs > /dev/null 2>&1
  rc_p=$?
  want="" want_rc=${code%%+*}
  case $code in 75|0+marker) want=$'scontrol requeue 41\nqrerun 42.server' want_rc=75 ;; esac
  if [ $rc_s -eq $want_rc ] && [ $rc_p -eq $want_rc ] && [ "$(cat "$TMP/requeue.log")" = "$want" ]; then
    ok "$code: exit $want_rc, requeue calls: $(echo $want)"
  else
    fail "$code: slurm $rc_s, pbs $rc_p (expected $want_rc), requeue log: $(cat "$TMP/requeue.log")"
  fi
done

# The real thing: the launcher (mpiexec) itself is signalled, as the batch shell
# forwards a signal to it. The ranks checkpoint and exit 75, but mpiexec often
# returns 0 then; the job must requeue every time, by the ranks' marker.
# scripts/requeue-trials.sh runs this many times and prints a table.
source tests/e2e/lib/requeue.sh
DATA=$D
for sig in TERM USR1 TERM USR1; do
  r=$(requeue_trial "$sig" "$TMP/trial")
  read -r _ launcher_rc script_rc requeues marker ckpt <<< "$r"
  if [ "$script_rc" = 75 ] && [ "$requeues" = 1 ] && [ "$marker" = yes ] && [ "$ckpt" = ok ]; then
    ok "SIG$sig to mpiexec: launcher exit $launcher_rc, job exit 75, requeued once, checkpoint intact"
  else
    fail "SIG$sig to mpiexec: launcher exit $launcher_rc, job exit $script_rc, $requeues requeue(s), marker $marker, checkpoint $ckpt"
    tail -n 15 "$TMP/trial/job.log"
  fi
done
# The requeued job (same OUTDIR, --resume auto) continues from that checkpoint and
# leaves no marker when it completes.
stopped=$(sed -n 's/.*"step":\([0-9]*\).*/\1/p' "$TMP/trial/out/requeue")
(clean_env LAUNCH="mpiexec -n 2" SLURM_JOB_ID=77 SLURM_SUBMIT_DIR="$ROOT" FURNACE="$BIN" CONFIG=configs/tiny.toml \
   OUTDIR="$TMP/trial/out" DATA_DIR= EXTRA_ARGS="$DATA_ARGS --set parallel.ep=2 --set train.steps=$((stopped + 3))" \
   timeout -k 5 60 bash jobs/slurm/train.sbatch) > "$TMP/requeued.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "^resumed from .*step_$(printf %08d "$stopped").h5: step $stopped," "$TMP/requeued.log" \
   && [ ! -e "$TMP/trial/out/requeue" ]; then
  ok "the requeued job resumed at step $stopped and completed"
else
  fail "requeued job: exit $rc, $(grep -E '^resume|requeue' "$TMP/requeued.log" | head -3)"
fi

# --- 3. scaling.sh with a fake sbatch ------------------------------------------------
cat > "$TMP/fakebin/sbatch" <<'EOF'
#!/usr/bin/env bash
# Records its arguments (and the job environment) and answers like sbatch.
n=$(( $(wc -l < "$SBATCH_LOG" 2>/dev/null || echo 0) + 100 ))
echo "ARGS $* | OUTDIR=${OUTDIR:-} EXTRA_ARGS=${EXTRA_ARGS:-} MODE=${SCALING_MODE:-}" >> "$SBATCH_LOG"
echo "Submitted batch job $n"
EOF
chmod +x "$TMP/fakebin/sbatch"
SB=$TMP/sbatch.log
SBATCH_LOG=$SB SBATCH="$TMP/fakebin/sbatch" NODES="1 2 4" CONFIG=configs/tiny.toml \
  OUTROOT="$TMP/scaling-out" bash jobs/slurm/scaling.sh > "$TMP/scaling.log" 2>&1
rc=$?
[ $rc -eq 0 ] && ok "scaling.sh exit 0" || { fail "scaling.sh exited $rc"; cat "$TMP/scaling.log"; }
[ "$(grep -c . "$SB")" -eq 7 ] && ok "scaling.sh: 7 submissions" || fail "scaling.sh: $(grep -c . "$SB") submissions, expected 7"
check_line() {  # check_line LINE_NO PATTERN...
  local line; line=$(sed -n "${1}p" "$SB"); shift
  for p in "$@"; do
    [[ $line == *"$p"* ]] || { fail "sbatch call: '$p' not in: $line"; return; }
  done
}
before=$failures
for i in 1 2 3; do
  n=$((1 << (i - 1)))
  check_line $i "--parsable" "--nodes=$n " "jobs/slurm/train.sbatch" "OUTDIR=$TMP/scaling-out/weak/nodes_$n " \
    "train.batch_size=$((4 * n))" "MODE=weak"
  check_line $((i + 3)) "--nodes=$n " "OUTDIR=$TMP/scaling-out/strong/nodes_$n " "train.batch_size=16" "MODE=strong"
done
check_line 7 "--dependency=afterok:100:101:102:103:104:105 " "scripts/aggregate-scaling.py" "--out-csv $TMP/scaling-out/scaling.csv"
[ $failures -eq $before ] && ok "scaling.sh: node counts, batches, output dirs and the dependency line"

# --parsable output ("ID;cluster") and DRY_RUN
printf '#!/usr/bin/env bash\necho "$*" >> "$SBATCH_LOG"\necho "$(( 500 + $(wc -l < "$SBATCH_LOG") ));clusterA"\n' > "$TMP/fakebin/sbatch-parsable"
chmod +x "$TMP/fakebin/sbatch-parsable"
SBATCH_LOG=$TMP/parsable.log SBATCH="$TMP/fakebin/sbatch-parsable" NODES="2 8" MODES=strong \
  CONFIG=configs/tiny.toml OUTROOT="$TMP/scaling-p" bash jobs/slurm/scaling.sh > /dev/null 2>&1
grep -q -- "--dependency=afterok:501:502 " "$TMP/parsable.log" && ok "scaling.sh parses --parsable ids" \
  || fail "parsable: $(tail -n 1 "$TMP/parsable.log")"
out=$(DRY_RUN=1 SBATCH="$TMP/fakebin/sbatch" SBATCH_LOG="$TMP/dry.log" NODES="1 2" \
  OUTROOT="$TMP/scaling-dry" bash jobs/slurm/scaling.sh 2>&1)
if [ ! -e "$TMP/dry.log" ] && [ ! -e "$TMP/scaling-dry" ] && [ "$(grep -c 'sbatch --parsable' <<< "$out")" -eq 5 ]; then
  ok "DRY_RUN prints 5 commands and submits nothing"
else
  fail "DRY_RUN: $out"
fi

# --- 4. aggregate-scaling.py on synthetic metrics -----------------------------------
AGG=$TMP/agg
synth() {  # synth DIR NODES TOKENS_PER_S MS_PER_STEP: 10 steps, 2 slow warm-up steps
  mkdir -p "$1"
  for s in $(seq 1 10); do
    if [ "$s" -le 2 ]; then t=1; m=99999; else t=$3; m=$4; fi
    echo "{\"step\":$s,\"loss\":5.0,\"tokens_per_s\":$t,\"ms_per_step\":$m,\"elapsed_s\":$s}"
  done > "$1/metrics.jsonl"
  echo "{\"nodes\": $2, \"ranks\": $(($2 * 4))}" > "$1/run.json"
}
for n in 1 2 4 8; do
  synth "$AGG/weak/nodes_$n" $n $((1000 * n)) 100          # perfectly linear weak scaling
  synth "$AGG/strong/nodes_$n" $n $((2000 * n)) $((800 / n)) # perfectly linear strong scaling
done
rm "$AGG/strong/nodes_8/run.json"                              # nodes from the directory name
"$PY" scripts/aggregate-scaling.py --root "$AGG" --out-csv "$TMP/agg.csv" --out-dir "$TMP/plots" > "$TMP/agg.log" 2>&1
rc=$?
if [ $rc -ne 0 ]; then fail "aggregate-scaling.py exited $rc"; cat "$TMP/agg.log"
else
  "$PY" - "$TMP/agg.csv" <<'EOF' && ok "aggregate CSV values" || fail "aggregate CSV values: $(cat "$TMP/agg.csv")"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert [(r["mode"], int(r["nodes"])) for r in rows] == \
    [("weak", n) for n in (1, 2, 4, 8)] + [("strong", n) for n in (1, 2, 4, 8)], rows
for r in rows:
    n = int(r["nodes"])
    assert abs(float(r["efficiency"]) - 1.0) < 1e-9, r
    assert int(r["warmup_steps"]) == 2 and int(r["steps"]) == 10, r
    base = 1000 if r["mode"] == "weak" else 2000
    assert abs(float(r["tokens_per_s"]) - base * n) < 1e-6, r
    assert r["ranks"] == ("" if (r["mode"], n) == ("strong", 8) else str(4 * n)), r
    assert abs(float(r["speedup"]) - n) < 1e-9, r
EOF
  for f in scaling_throughput.png scaling_efficiency.png; do
    [ -s "$TMP/plots/$f" ] && head -c 4 "$TMP/plots/$f" | grep -q PNG && ok "$f" || fail "$f missing or not a PNG"
  done
fi

# Half-efficient weak scaling: tokens/s per node halves from 1 to 2 nodes.
synth "$TMP/agg2/weak/nodes_1" 1 1000 100
synth "$TMP/agg2/weak/nodes_2" 2 1000 200
"$PY" scripts/aggregate-scaling.py --root "$TMP/agg2" --out-csv "$TMP/agg2.csv" --no-plots > /dev/null 2>&1
grep -q '^weak,2,8,10,2,1000,500,2000,200,1,0.5,' "$TMP/agg2.csv" && ok "weak efficiency 0.5" || fail "agg2: $(cat "$TMP/agg2.csv")"

# Errors: one line, exit code 2.
expect_error() {  # expect_error NAME PATTERN ROOT
  local err rc
  err=$("$PY" scripts/aggregate-scaling.py --root "$3" --out-csv "$TMP/e.csv" --out-dir "$TMP/e" 2>&1 >/dev/null)
  rc=$?
  if [ $rc -eq 2 ] && [ "$(grep -c . <<< "$err")" -eq 1 ] && [[ $err == *"$2"* ]]; then ok "$1: $err"
  else fail "$1: exit $rc, stderr: $err"
  fi
}
expect_error "no runs" "no runs found" "$TMP/nothing-here"
synth "$TMP/bad/weak/nodes_1" 1 1000 100
echo '{"step": 11, "tokens_per_s": ' >> "$TMP/bad/weak/nodes_1/metrics.jsonl"
expect_error "malformed line" "metrics.jsonl:11: not valid JSON" "$TMP/bad"
synth "$TMP/bad2/strong/nodes_2" 2 1000 100
sed -i '3s/"tokens_per_s":[0-9]*,//' "$TMP/bad2/strong/nodes_2/metrics.jsonl"
expect_error "missing field" "metrics.jsonl:3: 'tokens_per_s' is missing" "$TMP/bad2"
mkdir -p "$TMP/bad3/weak/nodes_1" && : > "$TMP/bad3/weak/nodes_1/metrics.jsonl"
expect_error "empty metrics" "no steps" "$TMP/bad3"

echo
if [ $failures -ne 0 ]; then echo "jobs.sh: $failures failure(s)"; exit 1; fi
echo "jobs.sh: all passed"
