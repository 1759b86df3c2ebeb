#!/usr/bin/env bash
# Submit a weak- and a strong-scaling sweep of jobs/slurm/train.sbatch, one job per
# node count, then one aggregation job that runs when all of them succeeded
# (--dependency=afterok:...) and writes runs/scaling/scaling.csv and the plots.
# Run it from anywhere; jobs run in the repository root. See docs/jobs.md.
#
#   jobs/slurm/scaling.sh                      # NODES="1 2 4 8", configs/default.toml
#   NODES="1 2" RANKS_PER_NODE=4 STEPS=50 jobs/slurm/scaling.sh
#   DRY_RUN=1 jobs/slurm/scaling.sh            # print the sbatch commands only
#
# Variables:
#   NODES           node counts                        (default "1 2 4 8")
#   MODES           sweeps to submit                   (default "weak strong")
#   RANKS_PER_NODE  --ntasks-per-node of every job     (default: train.sbatch's directive)
#   CONFIG          config file                        (default configs/default.toml)
#   BASE_BATCH      weak: global batch = BASE_BATCH * nodes
#                                                      (default: train.batch_size of CONFIG, else 16)
#   STRONG_BATCH    strong: fixed global batch         (default BASE_BATCH * largest node count)
#   STEPS           --set train.steps=STEPS for every job (default: the config's)
#   EXTRA_ARGS      more `furnace train` arguments, before the batch override
#   OUTROOT         results root                       (default runs/scaling)
#   SBATCH          sbatch command                     (default sbatch)
#   SBATCH_ARGS     more sbatch options for every job  (e.g. "--account=X --partition=Y")
#   TIME            --time of each training job        (default: train.sbatch's directive)
#   PYTHON          python of the aggregation job      (default python3)
#   DRY_RUN=1       print the commands, submit nothing
#
# Each training job gets CONFIG, OUTDIR=$OUTROOT/<mode>/nodes_<N>, EXTRA_ARGS and
# SCALING_MODE through its environment (sbatch exports the environment by default).
set -euo pipefail
cd "$(dirname "$0")/../.."

NODES=${NODES:-1 2 4 8}
MODES=${MODES:-weak strong}
RANKS_PER_NODE=${RANKS_PER_NODE:-}
CONFIG=${CONFIG:-configs/default.toml}
STEPS=${STEPS:-}
EXTRA_ARGS=${EXTRA_ARGS:-}
OUTROOT=${OUTROOT:-runs/scaling}
SBATCH=${SBATCH:-sbatch}
SBATCH_ARGS=${SBATCH_ARGS:-}
TIME=${TIME:-}
PYTHON=${PYTHON:-python3}
DRY_RUN=${DRY_RUN:-0}

die() { echo "scaling.sh: $*" >&2; exit 2; }
is_count() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }

[ -f "$CONFIG" ] || die "config $CONFIG not found (set CONFIG)"
read -r -a node_list <<< "$NODES"
[ ${#node_list[@]} -gt 0 ] || die "NODES is empty"
max_nodes=0
for n in "${node_list[@]}"; do
  is_count "$n" || die "NODES: '$n' is not a positive integer"
  [ "$n" -gt "$max_nodes" ] && max_nodes=$n
done
for m in $MODES; do
  case $m in weak|strong) ;; *) die "MODES: '$m' is not weak or strong" ;; esac
done

if [ -z "${BASE_BATCH:-}" ]; then
  # train.batch_size from the config's [train] table, else furnace's default 16.
  BASE_BATCH=$(awk '/^[[:space:]]*\[/ { t = $0; gsub(/[][[:space:]]/, "", t) }
                    t == "train" && /^[[:space:]]*batch_size[[:space:]]*=/ {
                      sub(/^[^=]*=[[:space:]]*/, ""); sub(/[^0-9].*$/, ""); print; exit }' "$CONFIG")
  BASE_BATCH=${BASE_BATCH:-16}
fi
is_count "$BASE_BATCH" || die "BASE_BATCH: '$BASE_BATCH' is not a positive integer"
STRONG_BATCH=${STRONG_BATCH:-$((BASE_BATCH * max_nodes))}
is_count "$STRONG_BATCH" || die "STRONG_BATCH: '$STRONG_BATCH' is not a positive integer"

read -r -a sbatch_cmd <<< "$SBATCH"
read -r -a sbatch_extra <<< "$SBATCH_ARGS"

# submit ENV_ASSIGNMENTS... -- SBATCH_OPTIONS...: prints the job id.
submit() {
  local envs=() opts=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift; opts=("$@")
  if [ "$DRY_RUN" = 1 ]; then
    local q=() w
    for w in "${envs[@]}" "${sbatch_cmd[@]}" --parsable "${sbatch_extra[@]}" "${opts[@]}"; do
      q+=("$(printf '%q' "$w")")
    done
    echo "${q[*]}" >&3
    echo "DRYRUN$dry_id"
    return
  fi
  local out
  out=$(env "${envs[@]}" "${sbatch_cmd[@]}" --parsable "${sbatch_extra[@]}" "${opts[@]}") ||
    die "sbatch failed: ${sbatch_cmd[*]} ${opts[*]}"
  # --parsable prints "ID" or "ID;CLUSTER"; accept "Submitted batch job ID" too.
  local id
  id=$(printf '%s\n' "$out" | tail -n 1)
  id=${id%%;*}
  [[ $id =~ ^[0-9]+$ ]] || id=$(printf '%s\n' "$out" | grep -oE '[0-9]+' | tail -n 1 || true)
  [[ $id =~ ^[0-9]+$ ]] || die "cannot read a job id from sbatch's output: $out"
  echo "$id"
}

exec 3>&1   # DRY_RUN prints the commands here (submit runs inside $(...))
dry_id=0
ids=()
for mode in $MODES; do
  for n in "${node_list[@]}"; do
    if [ "$mode" = weak ]; then batch=$((BASE_BATCH * n)); else batch=$STRONG_BATCH; fi
    outdir=$OUTROOT/$mode/nodes_$n
    args="$EXTRA_ARGS${EXTRA_ARGS:+ }--set train.batch_size=$batch"
    [ -n "$STEPS" ] && args="$args --set train.steps=$STEPS"
    opts=(--nodes="$n" --job-name="furnace-$mode-$n" --output="$outdir/slurm-%j.out")
    [ -n "$RANKS_PER_NODE" ] && opts+=(--ntasks-per-node="$RANKS_PER_NODE")
    [ -n "$TIME" ] && opts+=(--time="$TIME")
    [ "$DRY_RUN" = 1 ] || mkdir -p "$outdir"
    dry_id=$((dry_id + 1))
    id=$(submit CONFIG="$CONFIG" OUTDIR="$outdir" EXTRA_ARGS="$args" SCALING_MODE="$mode" -- \
           "${opts[@]}" jobs/slurm/train.sbatch)
    echo "submitted $mode nodes=$n batch=$batch: job $id -> $outdir"
    ids+=("$id")
  done
done

dep=$(IFS=:; echo "afterok:${ids[*]}")
agg="$PYTHON scripts/aggregate-scaling.py --root $OUTROOT --out-csv $OUTROOT/scaling.csv --out-dir $OUTROOT"
[ "$DRY_RUN" = 1 ] || mkdir -p "$OUTROOT"
dry_id=$((dry_id + 1))
agg_id=$(submit -- --dependency="$dep" --nodes=1 --ntasks=1 --time=00:10:00 \
           --job-name=furnace-scaling-aggregate --output="$OUTROOT/aggregate-%j.out" --wrap="$agg")
echo "submitted aggregation: job $agg_id (--dependency=$dep) -> $OUTROOT/scaling.csv"
