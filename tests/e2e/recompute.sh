#!/usr/bin/env bash
# memory.recompute: dropping activations in the forward and recomputing them in the
# backward changes no bit of training. Losses and gradient norms of every step are
# compared exactly against `none`, in one process and with the experts split over two
# ranks (where `block` must reuse the MoE layer's exchanged rows, not exchange again).
source "$(dirname "$0")/lib/common.sh"
steps=20
# Four layers: two dense blocks, which share one recomputed FFN, and two MoE blocks.
COMMON=("${TINY[@]}" --set train.steps=$steps --set train.eval_every=0 --set model.n_layers=4)

run() {  # run NAME NP EP MODE
  local name=$1 np=$2 ep=$3 mode=$4
  timeout 300 mpiexec -n "$np" "$BIN" train "${COMMON[@]}" --set parallel.ep="$ep" \
    --set memory.recompute="\"$mode\"" --set output.dir="\"$SCRATCH/$name\"" > "$SCRATCH/$name.log" 2>&1 ||
    { cat "$SCRATCH/$name.log"; fail "run $name (np $np, ep $ep, recompute $mode)"; }
  losses "$SCRATCH/$name/metrics.jsonl" > "$SCRATCH/$name.losses"
  losses "$SCRATCH/$name/metrics.jsonl" grad_norm >> "$SCRATCH/$name.losses"
}

for layout in "1 1" "2 2"; do
  read -r np ep <<<"$layout"
  for mode in none attention block; do run "$mode-np$np" "$np" "$ep" "$mode"; done
  for mode in attention block; do
    [ "$(wc -l < "$SCRATCH/none-np$np.losses")" -eq $((2 * steps)) ] || fail "none-np$np: not $steps steps"
    cmp -s "$SCRATCH/none-np$np.losses" "$SCRATCH/$mode-np$np.losses" ||
      { diff "$SCRATCH/none-np$np.losses" "$SCRATCH/$mode-np$np.losses" | head || true; fail "$mode differs from none (np $np, ep $ep)"; }
    echo "ok: recompute $mode, np $np ep $ep: $steps losses and gradient norms bitwise those of none"
  done
done
