#!/usr/bin/env bash
# Fault injection: makes one rank (or the file system) fail at a named place during
# training and checks that the job ends in time, with the documented exit code and its
# reason on stderr exactly once. Prints one row per trial and a summary; exits 1 when
# any trial missed its expectation.
#
#   scripts/fault-injection.sh [--bin build/bin/furnace] [--reps N] [--np "1 2 4"] [--quick]
#
# Sites are set with FURNACE_FAULT=site@rank (docs/testing.md lists them); the disk
# cases mount a 1 MiB tmpfs for checkpoint.dir (root only; skipped with the reason
# otherwise) or give one rank a file-size limit (ulimit -f). --quick: one repetition
# of every case (about a minute), as `make test` runs it (tests/e2e/faults.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=build/bin/furnace REPS=10 NPS="1 2 4"
while [ $# -gt 0 ]; do
  case $1 in
    --bin) BIN=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --np) NPS=$2; shift 2 ;;
    --quick) REPS=1; shift ;;
    *) echo "fault-injection: unknown option '$1' (see the header of $0)" >&2; exit 2 ;;
  esac
done
BIN=$(realpath "$BIN")
LIMIT_S=30                         # every trial must end within this
export FURNACE_AGREE_TIMEOUT_S=${FURNACE_AGREE_TIMEOUT_S:-5}   # a stranded failing rank gives up after this
SCRATCH=$(mktemp -d /tmp/furnace-faults.XXXXXX)
MNT=$SCRATCH/full
cleanup() {
  pkill -9 -f -- "$SCRATCH" 2>/dev/null
  mountpoint -q "$MNT" 2>/dev/null && umount -l "$MNT"
  rm -rf "$SCRATCH"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
"$BIN" data prepare --out "$SCRATCH/data" > "$SCRATCH/prepare.log" 2>&1 || { echo "fault-injection: data prepare failed" >&2; exit 1; }
TINY=(--config configs/tiny.toml --set data.train="\"$SCRATCH/data/train.h5\"" --set data.valid="\"$SCRATCH/data/valid.h5\""
      --set train.eval_every=0 --set train.log_every=1000 --set moe.every=1 --set train.batch_size=8)

can_mount=0
if [ "$(id -u)" -eq 0 ] && mkdir -p "$MNT" && mount -t tmpfs -o size=1m tmpfs "$MNT" 2>/dev/null; then
  umount "$MNT"; can_mount=1
fi

pass=0 fail=0 skip=0
printf '%-26s %3s %4s %7s %5s  %s\n' case np rep seconds exit message
# trial NAME NP CODE PATTERN -- COMMAND...: runs COMMAND, checks exit CODE within
# LIMIT_S and PATTERN on stderr exactly once.
trial() {
  local name=$1 np=$2 code=$3 pattern=$4 rep=$5; shift 6
  local out=$SCRATCH/$name.$np.$rep
  local t0 rc n msg verdict
  t0=$(date +%s.%N)
  timeout -k 5 $((LIMIT_S + 30)) "$@" > "$out.out" 2> "$out.err"
  rc=$?
  local dt; dt=$(echo "$(date +%s.%N) - $t0" | bc)
  n=$(grep -c -- "$pattern" "$out.err")
  msg=$(grep -m1 -- "$pattern" "$out.err" | cut -c1-110)
  [ -n "$msg" ] || msg="(no '$pattern' on stderr: $(tail -c 200 "$out.err" | tr '\n' ' '))"
  if [ "$rc" -eq "$code" ] && [ "$n" -eq 1 ] && [ "$(echo "$dt < $LIMIT_S" | bc)" -eq 1 ]; then
    verdict=ok; pass=$((pass + 1))
  else
    verdict="FAIL (want exit $code, message once, < $LIMIT_S s; got $n)"; fail=$((fail + 1))
  fi
  printf '%-26s %3s %4s %7.1f %5s  %s  %s\n' "$name" "$np" "$rep" "$dt" "$rc" "$verdict" "$msg"
}

train() {  # train NP NAME [args...]: sets CMD to the mpiexec command line
  local np=$1 name=$2; shift 2
  CMD=(mpiexec -n "$np" "$BIN" train "${TINY[@]}" --set parallel.ep="$np" --set output.dir="\"$SCRATCH/$name\"" "$@")
}

for np in $NPS; do
  last=$((np - 1))
  for rep in $(seq 1 "$REPS"); do
    run_dir=$SCRATCH/r$np.$rep
    ck=(--set checkpoint.dir="\"$run_dir\"" --set checkpoint.every=2 --set train.steps=4)
    # A data write fails on the last rank only (sync and background writes).
    train "$np" wd "${ck[@]}"
    trial ckpt.write.data "$np" 4 "ckpt.write.data" "$rep" -- env FURNACE_FAULT=ckpt.write.data@$last "${CMD[@]}"
    train "$np" wda "${ck[@]}" --set checkpoint.async=true
    trial ckpt.write.data-async "$np" 4 "ckpt.write.data" "$rep" -- env FURNACE_FAULT=ckpt.write.data@$last "${CMD[@]}"
    # The collective close fails on one rank: the others are stranded inside H5Fclose.
    train "$np" wc "${ck[@]}"
    trial ckpt.write.close "$np" 4 "ckpt.write.close" "$rep" -- env FURNACE_FAULT=ckpt.write.close@$last "${CMD[@]}"
    # A checksum failure in one rank's slab while resuming (the file itself is intact).
    rm -rf "$run_dir"
    train "$np" base "${ck[@]}"
    "${CMD[@]}" > /dev/null 2>&1
    train "$np" rd "${ck[@]}" --set train.steps=6 --resume "$run_dir/step_00000004.h5"
    trial ckpt.read.data "$np" 3 "fails its checksum" "$rep" -- env FURNACE_FAULT=ckpt.read.data@$last "${CMD[@]}"
    # Set-up fails on one rank while the others go on into the data files' collective open.
    train "$np" ts
    trial trainer.setup "$np" 3 "trainer.setup" "$rep" -- env FURNACE_FAULT=trainer.setup@$last "${CMD[@]}"
    train "$np" wf "${ck[@]}"
    trial ckpt.write.fsync "$np" 4 "ckpt.write.fsync" "$rep" -- env FURNACE_FAULT=ckpt.write.fsync@$last "${CMD[@]}"
    # A batch read fails on one rank during training.
    train "$np" dr
    trial data.read "$np" 4 "data.read" "$rep" -- env FURNACE_FAULT=data.read@$last "${CMD[@]}"
    # A file-size limit (8 MiB: MPI's shared-memory set-up needs less) on the last rank
    # only; a 12 MiB checkpoint makes its writes past 8 MiB fail with EFBIG.
    rm -rf "$run_dir"
    train "$np" fl "${ck[@]}" --set model.d_model=128 --set moe.expert_hidden=512
    limited=(-n 1 bash -c 'ulimit -f 8192; exec "$0" "$@"' "${CMD[@]:3}")
    if [ "$np" -eq 1 ]; then limit=(mpiexec "${limited[@]}"); else limit=("${CMD[@]:0:2}" "$last" "${CMD[@]:3}" : "${limited[@]}"); fi
    trial file-size-limit "$np" 4 "File too large" "$rep" -- "${limit[@]}"
    # A full file system: the third checkpoint does not fit in 1 MiB (sync, background).
    for mode in false true; do
      if [ "$can_mount" -eq 0 ]; then
        printf '%-26s %3s %4s %7s %5s  %s\n' "disk-full-async=$mode" "$np" "$rep" - - "skipped: needs root and tmpfs mounts"
        skip=$((skip + 1)); continue
      fi
      mount -t tmpfs -o size=1m tmpfs "$MNT"
      train "$np" df --set checkpoint.dir="\"$MNT\"" --set checkpoint.every=2 --set train.steps=12 \
        --set checkpoint.keep=3 --set checkpoint.async=$mode
      trial "disk-full-async=$mode" "$np" 4 "No space left on device" "$rep" -- "${CMD[@]}"
      umount -l "$MNT"
    done
  done
done
echo
echo "fault-injection: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
