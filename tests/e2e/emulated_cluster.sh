#!/usr/bin/env bash
# Two emulated nodes x 2 ranks (scripts/emulated-cluster: network namespaces on one
# machine, MPI between them over TCP through a bridge): the inter-node paths that a
# single node never takes. The ranks of a namespace are a node (detected, not forced);
# the hierarchical all-to-all runs for real across them and gives the flat exchange's
# losses bit for bit, both within 1e-5 of one process; a checkpoint written across the
# two nodes resumes on one process (resharded from ep 4 to ep 1) and continues the
# uninterrupted run; comm.alltoall = auto makes a choice and trains flat's losses; kill
# -9 of a rank on the second node ends the job (no hang) with its newest checkpoint
# intact; and the PBS and Slurm job scripts, given a two-host node list, run 2 ranks
# on each host; each node's ranks run on that node's share of the CPUs. Exit 77
# (skipped) where namespaces cannot be made.
source "$(dirname "$0")/lib/common.sh"
EC="$(pwd)/scripts/emulated-cluster"
set +e
"$EC" check 2> "$SCRATCH/check.txt"
rc=$?
set -e
[ "$rc" -eq 77 ] && { cat "$SCRATCH/check.txt"; exit 77; }
[ "$rc" -eq 0 ] || fail "emulated-cluster check: $(cat "$SCRATCH/check.txt")"
# across LOG COMMAND...: COMMAND on 2 emulated nodes x 2 ranks, output in LOG. A run
# whose ranks reached MPI_Finalize with status 0 and then met the PMI barrier hang of
# docs/jobs.md ("A hang in MPI_Finalize": the first rank past its deadline leaves, the
# launcher kills the rest and returns 255) counts as passed when the watchdog said so
# and no rank reported anything else; the hang is noted.
across() {
  local log=$1; shift
  set +e
  timeout 300 "$EC" exec 2 --ppn 2 -genv FURNACE_FINALIZE_TIMEOUT_S 5 "$@" > "$log" 2>&1
  local rc=$?
  set -e
  [ "$rc" -eq 0 ] && return 0
  if grep -q "MPI_Finalize has not returned after .*leaving with exit 0$" "$log" &&
     ! grep "^furnace: " "$log" | grep -vq "MPI_Finalize has not returned after .*leaving with exit 0$"; then
    echo "note: $(basename "$log" .log): every rank finished; MPI_Finalize hung in the PMI barrier and was bounded (exit $rc)"
    return 0
  fi
  return "$rc"
}
COMMON=("${TINY[@]}" --set train.eval_every=0 --set moe.capacity_factor=0 --set moe.every=1 --set train.batch_size=8)

# run NAME WHERE EP STEPS [--set ...]: WHERE = "one" (1 process) or "2x2" (emulated).
run() {
  local name=$1 where=$2 ep=$3 steps=$4; shift 4
  local cmd=("$BIN" train "${COMMON[@]}" --set parallel.ep="$ep" --set train.steps="$steps"
             --set output.dir="\"$SCRATCH/$name\"" "$@")
  if [ "$where" = one ]; then
    timeout 300 "${cmd[@]}" > "$SCRATCH/$name.log" 2>&1 || { tail -20 "$SCRATCH/$name.log"; fail "run $name"; }
  else
    across "$SCRATCH/$name.log" "${cmd[@]}" || { tail -20 "$SCRATCH/$name.log"; fail "run $name"; }
  fi
  losses "$SCRATCH/$name/metrics.jsonl" > "$SCRATCH/$name.losses"
}

# 1. The layout as the trainer sees it: 2 nodes of 2 ranks, detected.
across "$SCRATCH/bench.log" "$BIN" bench alltoall --tokens 256 --d-model 64 --reps 2 \
  || fail "bench alltoall across 2 emulated nodes: $(cat "$SCRATCH/bench.log")"
out=$(cat "$SCRATCH/bench.log")
grep -q "ep 4 over 2 node(s)" <<< "$out" || fail "bench alltoall does not see 2 nodes: $out"
echo "ok: bench alltoall: ep 4 over 2 node(s)"

# 2. Layout equivalence across nodes.
run ref one 1 20
run flat 2x2 4 20
# Each emulated node has its own share of this machine's CPUs (scripts/emulated-cluster,
# "Cores"), so a rank's thread budget counts its node's CPUs, not the machine's.
share=$(( $(nproc) / 2 )); [ "$share" -ge 1 ] || share=1
grep -q "(CPU affinity: $share CPUs\?[ )]" "$SCRATCH/flat.log" ||
  fail "the ranks do not see their node's $share CPU(s): $(grep -o 'CPU affinity: [^)]*' "$SCRATCH/flat.log")"
echo "ok: each emulated node's ranks run on its $share of $(nproc) CPU(s)"
run hier 2x2 4 20 --set comm.alltoall='"hierarchical"'
run dp2ep2 2x2 2 20
run auto 2x2 4 20 --set comm.alltoall='"auto"'
grep -q "^comm.alltoall = auto: \(flat\|hierarchical\) (alpha-beta model" "$SCRATCH/auto.log" \
  || fail "comm.alltoall = auto across 2 nodes printed no model choice: $(head -5 "$SCRATCH/auto.log")"
cmp -s "$SCRATCH/flat.losses" "$SCRATCH/auto.losses" || fail "auto's losses differ from flat's across nodes"
echo "ok: $(grep -o "^comm.alltoall = auto: [a-z]*" "$SCRATCH/auto.log"), the same losses bit for bit"
grep -q "2 ranks/node" "$SCRATCH/hier.log" || fail "hierarchical run: not 2 ranks/node: $(head -3 "$SCRATCH/hier.log")"
grep -q "falling back to flat" "$SCRATCH/hier.log" && fail "hierarchical fell back to flat: $(cat "$SCRATCH/hier.log")"
cmp -s "$SCRATCH/flat.losses" "$SCRATCH/hier.losses" || fail "flat and hierarchical losses differ across nodes"
/usr/bin/python3 - "$SCRATCH" <<'PY' || fail "emulated layouts differ from one process"
import sys
d = sys.argv[1]
ref = [float(x) for x in open(f"{d}/ref.losses")]
for name in ["flat", "hier", "dp2ep2"]:
    got = [float(x) for x in open(f"{d}/{name}.losses")]
    worst = max(abs(a - b) / abs(b) for a, b in zip(got, ref))
    assert len(got) == 20 and worst <= 1e-5, (name, len(got), worst)
    print(f"ok: {name} on 2 emulated nodes x 2 ranks within {worst:.1e} of 1 process")
PY
echo "ok: flat and hierarchical bitwise equal across 2 emulated nodes"

# 3. A checkpoint across the nodes, resumed on one process (ep 4 -> ep 1).
run part 2x2 4 10 --set checkpoint.every=10
mkdir -p "$SCRATCH/resumed" && cp -r "$SCRATCH/part/ckpt" "$SCRATCH/resumed/"
timeout 300 "$BIN" train "${COMMON[@]}" --set parallel.ep=1 --set train.steps=20 \
  --set output.dir="\"$SCRATCH/resumed\"" --resume auto > "$SCRATCH/resumed.log" 2>&1 \
  || { tail -20 "$SCRATCH/resumed.log"; fail "resume on one process"; }
grep -q "^resumed from .*: step 10, " "$SCRATCH/resumed.log" || fail "no resume at step 10: $(head -5 "$SCRATCH/resumed.log")"
/usr/bin/python3 - "$SCRATCH" <<'PY' || fail "resumed run does not continue the uninterrupted one"
import json, sys
d = sys.argv[1]
ref = [float(x) for x in open(f"{d}/ref.losses")]
got = [json.loads(l) for l in open(f"{d}/resumed/metrics.jsonl")]
got = [g for g in got if g["step"] > 10]
assert [g["step"] for g in got] == list(range(11, 21)), [g["step"] for g in got]
worst = max(abs(g["loss"] - ref[g["step"] - 1]) / abs(ref[g["step"] - 1]) for g in got)
assert worst <= 1e-5, worst
print(f"ok: steps 11-20 resumed on 1 process from the 2-node checkpoint within {worst:.1e} of the uninterrupted run")
PY

# 4. kill -9 of a rank on the second node: the job ends, the checkpoint stays whole.
timeout 300 "$EC" exec 2 --ppn 2 "$BIN" train "${COMMON[@]}" --set parallel.ep=4 --set train.steps=100000 \
  --set checkpoint.every=5 --set output.dir="\"$SCRATCH/kill\"" > "$SCRATCH/kill.log" 2>&1 &
job=$!
for _ in $(seq 1 600); do
  ls "$SCRATCH/kill/ckpt"/step_00000010.h5 > /dev/null 2>&1 && break
  sleep 0.1
done
victim=""
for pid in $(ip netns pids "${FURNACE_EC_PREFIX:-fc}node2" 2> /dev/null); do
  tr '\0' ' ' < "/proc/$pid/cmdline" 2> /dev/null | grep -q "furnace train" && { victim=$pid; break; }
done
[ -n "$victim" ] || { kill -9 "$job"; fail "no furnace rank found on the second node"; }
kill -9 "$victim"
t0=$SECONDS
set +e
wait "$job"
rc=$?
set -e
[ "$rc" -ne 0 ] || fail "the job survived kill -9 of a rank"
[ $((SECONDS - t0)) -le 60 ] || fail "the job took $((SECONDS - t0)) s to end after kill -9"
ip netns list | grep -q "^${FURNACE_EC_PREFIX:-fc}node" && fail "the emulated cluster was not taken down"
"$BIN" ckpt inspect "$SCRATCH/kill/ckpt" --verify > "$SCRATCH/inspect.log" 2>&1 \
  || fail "newest checkpoint after kill -9: $(tail -3 "$SCRATCH/inspect.log")"
echo "ok: kill -9 of a rank on node 2 ended the job (exit $rc) in $((SECONDS - t0)) s; the newest checkpoint verifies"
# 5. The job scripts with a two-host node list (PBS_NODEFILE; Slurm's node list), as a
#    batch system hands them over: hydra reads the hosts, the launcher reaches them.
"$EC" up 2 2> "$SCRATCH/up.log" || fail "emulated-cluster up: $(cat "$SCRATCH/up.log")"
trap 'rc=$?; "$EC" down 2> /dev/null; pkill -9 -f -- "$SCRATCH" 2>/dev/null || true; rm -rf "$SCRATCH"; exit $rc' EXIT
hosts=$("$EC" hosts)
for h in $hosts; do printf '%s\n%s\n' "$h" "$h"; done > "$SCRATCH/nodefile"
launch="mpiexec $("$EC" mpiexec-args) -genv FURNACE_FINALIZE_TIMEOUT_S 5 -n 4"
job_args="--set data.train=\"$DATA/train.h5\" --set data.valid=\"$DATA/valid.h5\" --set parallel.ep=4 --set train.steps=6 --set train.eval_every=0"
clean() { env -u SLURM_JOB_ID -u SLURM_NTASKS -u SLURM_STEP_ID -u PBS_JOBID -u PBS_NODEFILE "$@"; }
# job NAME SCRIPT VAR=VALUE...: runs the job script; its log in $SCRATCH/NAME.log.
job() {
  local name=$1 script=$2; shift 2
  set +e
  clean "$@" LAUNCH="$launch" FURNACE="$BIN" CONFIG=configs/tiny.toml OUTDIR="$SCRATCH/$name" DATA_DIR="$DATA" \
    REQUEUE=0 EXTRA_ARGS="$job_args" timeout -k 5 200 bash "$script" > "$SCRATCH/$name.log" 2>&1
  local rc=$?
  set -e
  grep -q "2 ranks/node" "$SCRATCH/$name.log" || fail "$name: not 2 ranks per node: $(grep -m1 "^furnace " "$SCRATCH/$name.log")"
  [ "$(wc -l < "$SCRATCH/$name/metrics.jsonl")" -eq 6 ] || fail "$name: not 6 steps: $(tail -5 "$SCRATCH/$name.log")"
  if [ "$rc" -ne 0 ]; then
    grep -q "MPI_Finalize has not returned after .*leaving with exit 0$" "$SCRATCH/$name.log" \
      || fail "$name: exit $rc: $(tail -5 "$SCRATCH/$name.log")"
    echo "note: $name: MPI_Finalize hung in the PMI barrier and was bounded (the job script saw exit $rc)"
  fi
  echo "ok: $name on 2 emulated hosts ($(echo $hosts)): 2 ranks/node, 6 steps"
}
job pbs jobs/pbs/train.pbs PBS_JOBID=11.server PBS_O_WORKDIR="$PWD" PBS_NODEFILE="$SCRATCH/nodefile"
list=$(echo $hosts | tr ' ' ',')
job slurm jobs/slurm/train.sbatch SLURM_JOB_ID=12 SLURM_SUBMIT_DIR="$PWD" SLURM_JOB_NODELIST="$list" \
  SLURM_NODELIST="$list" SLURM_JOB_NUM_NODES=2 SLURM_NNODES=2 SLURM_TASKS_PER_NODE="2(x2)"
"$EC" down
echo "emulated_cluster: all checks passed"
