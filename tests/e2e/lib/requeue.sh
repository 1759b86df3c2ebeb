# requeue_trial SIGNAL WORK: one real training job through jobs/slurm/train.sbatch
# with LAUNCH="mpiexec -n 2", faked Slurm variables and a fake scontrol; once it
# trains, SIGNAL goes to the launcher itself (mpiexec's pid), as the batch shell
# forwards it. Prints one line:
#   SIGNAL LAUNCHER_RC SCRIPT_RC REQUEUES MARKER CHECKPOINT
# LAUNCHER_RC is mpiexec's exit code, SCRIPT_RC the job's, REQUEUES the number of
# `scontrol requeue` calls, MARKER yes/no (the ranks' $OUTDIR/requeue), CHECKPOINT
# "ok" when the checkpoint it names passes `furnace ckpt inspect --verify`, else "-".
# Needs ROOT (the repository), BIN (furnace) and DATA (a prepared corpus). WORK is
# emptied first. Extra arguments go to `furnace train` (e.g. a shorter run).
requeue_trial() {
  local sig=$1 work=$2
  shift 2
  rm -rf "$work" && mkdir -p "$work/bin"
  printf '#!/usr/bin/env bash\necho "scontrol $*" >> "%s/scontrol.log"\n' "$work" > "$work/bin/scontrol"
  chmod +x "$work/bin/scontrol"
  : > "$work/scontrol.log"
  env -u SLURM_NTASKS -u SLURM_STEP_ID -u PBS_JOBID -u PBS_NODEFILE PATH="$work/bin:$PATH" \
    LAUNCH="mpiexec -n 2" SLURM_JOB_ID=77 SLURM_SUBMIT_DIR="$ROOT" FURNACE="$BIN" CONFIG=configs/tiny.toml \
    OUTDIR="$work/out" DATA_DIR= \
    EXTRA_ARGS="--set data.train=\"$DATA/train.h5\" --set data.valid=\"$DATA/valid.h5\" --set train.steps=1000000 --set train.eval_every=0 --set train.log_every=100000 --set parallel.ep=2 $*" \
    bash "$ROOT/jobs/slurm/train.sbatch" > "$work/job.log" 2>&1 &
  local job=$! launcher="" i
  for i in $(seq 300); do  # training under way: 10 steps in the metrics
    [ -s "$work/out/metrics.jsonl" ] && [ "$(wc -l < "$work/out/metrics.jsonl")" -ge 10 ] && break
    sleep 0.1
  done
  launcher=$(pgrep -P "$job" -x mpiexec)
  [ -n "$launcher" ] && kill -"$sig" "$launcher"
  for i in $(seq 600); do kill -0 "$job" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$job" 2>/dev/null; then  # a hung job: end it and everything it started
    pkill -9 -f -- "$work/out" 2>/dev/null
    kill -9 "$job" 2>/dev/null
  fi
  wait "$job"
  local script_rc=$? launcher_rc marker=no ckpt=-
  launcher_rc=$(sed -n 's/^furnace job: furnace exited with code \([0-9]*\)$/\1/p' "$work/job.log")
  if [ -f "$work/out/requeue" ]; then
    marker=yes
    local named
    named=$(sed -n 's/.*"checkpoint":"\([^"]*\)".*/\1/p' "$work/out/requeue")
    [ -n "$named" ] && "$BIN" ckpt inspect --verify "$named" > /dev/null 2>&1 && ckpt=ok
  fi
  echo "$sig ${launcher_rc:-none} $script_rc $(grep -c "^scontrol requeue 77$" "$work/scontrol.log") $marker $ckpt"
}
