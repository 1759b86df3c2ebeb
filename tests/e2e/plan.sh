#!/usr/bin/env bash
# `furnace plan` (docs/plan.md): its bytes per rank are the allocator's, category by
# category, for layouts at 1, 2 and 4 ranks (ep, dp, ZeRO-1, the bf16 gradient wire,
# 16-bit exchange, recomputation, the nvme tier; within 5 % where the hierarchical
# exchange's staging follows the routing); a calibrated machine file is written and
# read back; the trillion-parameter plans fit where the docs say and name the binding
# resource where they do not; and bad inputs get one line and exit 2. No time is
# asserted here (scripts/validate-plan compares the predicted step times).
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/one_line.sh"

# A machine file for the small runs: 4 nodes of 2 cores, plenty of memory.
MACHINE="$SCRATCH/machine.toml"
cat > "$MACHINE" <<'EOF'
[machine]
name = "test machine"
cores_per_node = 2
ranks_per_node = 2
max_nodes = 4
[memory]
host_gib = 16
nvme_gib = 100
bandwidth_gbs = 20
[compute]
peak_tflops_fp32 = 0.1
peak_tflops_16bit = 0.2
gemm_efficiency = 0.5
[network.intra]
latency_us = 1
bandwidth_gbs = 5
[network.inter]
latency_us = 10
bandwidth_gbs = 1
[io]
nvme_read_gbs = 1
nvme_write_gbs = 1
checkpoint_write_gbs = 1
EOF

# compare NAME RANKS NODES TOLERANCE SETS...: trains 3 steps of the tiny model and
# compares rank 0's peak bytes per category (metrics.jsonl) with the plan's: equal,
# or with TOLERANCE > 0 (the hierarchical exchange, whose staging pool keeps a block
# per size class the routing asked for) the communication category within TOLERANCE
# of the total and the others equal.
compare() {
  local name=$1 ranks=$2 nodes=$3 tol=$4; shift 4
  local sets=(--set output.dir="\"$SCRATCH/$name\"" --set train.steps=3 --set train.eval_every=0 --set train.eval_batches=1)
  for s in "$@"; do sets+=(--set "$s"); done
  mpiexec -n "$ranks" "$BIN" train "${TINY[@]}" "${sets[@]}" > "$SCRATCH/$name.log" 2>&1 || fail "$name: training failed: $(tail -3 "$SCRATCH/$name.log")"
  "$BIN" plan "${TINY[@]}" "${sets[@]}" --machine "$MACHINE" --nodes "$nodes" --ranks-per-node $((ranks / nodes)) --json \
    > "$SCRATCH/$name.json" || fail "$name: plan failed"
  /usr/bin/python3 - "$SCRATCH/$name/metrics.jsonl" "$SCRATCH/$name.json" "$tol" "$name" <<'PY' || fail "$name: plan bytes differ"
import json, sys
measured = json.loads(open(sys.argv[1]).readlines()[-1])["memory_peak_bytes"]
planned = json.load(open(sys.argv[2]))["peak_bytes"]
tol, name = float(sys.argv[3]), sys.argv[4]
assert set(measured) == set(planned), (measured, planned)
tm, tp = sum(measured.values()), sum(planned.values())
for c in measured:
    m, p = measured[c], planned[c]
    slack = tol * tm if c == "communication" else 0
    assert abs(p - m) <= slack, f"{name}: {c} planned {p} measured {m}"
print(f"ok: {name}: planned {tp} bytes, allocated {tm} ({100 * (tp / tm - 1):+.2f} %)")
PY
}
compare ep1 1 1 0 parallel.ep=1
compare ep2 2 1 0 parallel.ep=2
compare dp2-zero 2 1 0 parallel.ep=1 memory.zero=1
compare bf16-wire 2 1 0 parallel.ep=1 train.precision=\"bf16\" comm.grad_dtype=\"bf16\"
compare bf16-ep2-recompute 2 1 0 parallel.ep=2 train.precision=\"bf16\" memory.recompute=\"block\"
compare nvme 2 1 0 parallel.ep=2 memory.optimizer=\"nvme\"
compare async-ckpt 2 1 0 parallel.ep=2 checkpoint.async=true checkpoint.every=2
compare dp2-ep2-zero 4 1 0 parallel.ep=2 memory.zero=1 train.batch_size=8
compare hierarchical-2x2 4 2 0.05 parallel.ep=4 train.batch_size=8 comm.alltoall=\"hierarchical\" comm.ranks_per_node=2

# The moments on nvme (plan_model.cpp): in one group (the default group size here)
# only the write is left, overlapping the next forward and backward; in many groups
# every step reads and writes them all.
for g in one:64 many:0.0001; do
  "$BIN" plan "${TINY[@]}" --set parallel.ep=2 --set memory.optimizer=\"nvme\" --set memory.nvme_group_mb=${g#*:} \
    --machine "$MACHINE" --nodes 1 --ranks-per-node 2 --json > "$SCRATCH/nvme-${g%%:*}.json" || fail "plan nvme ${g%%:*}"
done
/usr/bin/python3 - "$SCRATCH/nvme-one.json" "$SCRATCH/nvme-many.json" <<'PY' || fail "nvme offload time"
import json, sys
one, many = (json.load(open(f))["time_s"] for f in sys.argv[1:])
# many: 2 ranks x (read + write) of the moments at 1 GB/s each; one: the write, less
# the forward and backward it overlaps.
write = many["offload"] / 2
fwd_bwd = one["gemm"] + one["elementwise"] + one["alltoall"] + one["allreduce"]
want = max(0.0, write - fwd_bwd)
assert many["offload"] > 0 and abs(one["offload"] - want) <= 1e-9 * write, (one, many, want)
print(f"ok: nvme moments: one group {one['offload'] * 1e6:.1f} us visible of a {write * 1e6:.1f} us write; many groups {many['offload'] * 1e6:.1f} us")
PY

# A calibrated description of this machine, written and read back.
mpiexec -n 2 "$BIN" bench calibrate --out "$SCRATCH/here.toml" --dir "$SCRATCH" --disk-mb 16 --seconds 0.01 \
  > "$SCRATCH/calibrate.log" 2>&1 || fail "bench calibrate: $(tail -3 "$SCRATCH/calibrate.log")"
for key in gemm_fp32 gemm_16bit bandwidth_gbs kernel_bandwidth_gbs latency_us nvme_write_gbs; do
  grep -q "^$key = " "$SCRATCH/here.toml" || fail "calibrated file has no $key"
done
out=$("$BIN" plan "${TINY[@]}" --set parallel.ep=2 --machine "$SCRATCH/here.toml" 2>&1)
grep -q "^fit: fits" <<< "$out" \
  || fail "the tiny model does not fit the calibrated machine: $out
calibrated: $(cat "$SCRATCH/here.toml")"
echo "ok: bench calibrate writes a machine file that plan reads"

# comm.alltoall = auto: the plan's exchange is the faster of the explicit two, and its
# all-to-all time is that one's (ep 8 over 2 nodes of 4 GPUs: latency-bound rows).
for a in flat hierarchical auto; do
  "$BIN" plan -c configs/default.toml -m configs/machines/dgx-h100-ib.toml --nodes 2 --ranks-per-node 4 \
    --set parallel.ep=8 --set comm.alltoall="\"$a\"" --json > "$SCRATCH/a2a-$a.json" || fail "plan with alltoall $a"
done
/usr/bin/python3 - "$SCRATCH" <<'PY' || fail "comm.alltoall = auto is not the faster exchange"
import json, sys
t = {a: json.load(open(f"{sys.argv[1]}/a2a-{a}.json")) for a in ["flat", "hierarchical", "auto"]}
best = min(["flat", "hierarchical"], key=lambda a: t[a]["time_s"]["alltoall"])
assert t["auto"]["alltoall"] == best, (t["auto"]["alltoall"], best)
assert t["auto"]["time_s"]["alltoall"] == t[best]["time_s"]["alltoall"]
assert t["flat"]["time_s"]["alltoall"] != t["hierarchical"]["time_s"]["alltoall"]
print(f"ok: alltoall auto picks {best} ({t['auto']['time_s']['alltoall'] * 1e6:.1f} us per step)")
PY

# The large plans of docs/plan.md: deterministic arithmetic, no run.
out=$("$BIN" plan -c configs/models/moe-1t.toml -m configs/machines/dgx-h100-ib.toml --nodes 128 --search) \
  || fail "1T search at 128 nodes: $out"
grep -q "the fastest that fits" <<< "$out" || fail "1T at 128 H100 nodes: no layout fits: $out"
grep -q "^at 64 node(s) no layout fits: device memory (per rank) is the binding resource" <<< "$out" \
  || fail "1T at 64 nodes: binding resource not named: $out"
echo "ok: 1T on 128 H100 nodes fits; at 64 the device memory rules it out"
out=$("$BIN" plan -c configs/models/bagualu-14.5t.toml -m configs/machines/sunway-oceanlight.toml --nodes 96000)
grep -q "^model: 1.45e+13 parameters" <<< "$out" || fail "14.5T model size: $out"
grep -q "^fit: fits" <<< "$out" || fail "14.5T on 96,000 Sunway nodes does not fit: $out"
"$BIN" plan -c configs/models/bagualu-14.5t.toml -m configs/machines/sunway-oceanlight.toml \
  --sweep-nodes 6000,96000 --weak --set train.batch_size=6000 --csv "$SCRATCH/sweep.csv" > /dev/null || fail "sweep"
[ "$(grep -c '^weak,' "$SCRATCH/sweep.csv")" -eq 2 ] || fail "sweep CSV: $(cat "$SCRATCH/sweep.csv")"
echo "ok: the 14.5T model fits 96,000 Sunway nodes; the sweep writes its CSV"

# Bad inputs: one line, exit 2.
expect_line 2 "machine file '.*nope.toml' not found" "$BIN" plan "${TINY[@]}" --machine "$SCRATCH/nope.toml"
grep -v '^bandwidth_gbs' "$MACHINE" > "$SCRATCH/nobw.toml"
expect_line 2 "memory.bandwidth_gbs is missing" "$BIN" plan "${TINY[@]}" --machine "$SCRATCH/nobw.toml"
sed 's/^latency_us = 1$/latency_us = -1/' "$MACHINE" > "$SCRATCH/neg.toml"
expect_line 2 "network.intra.latency_us must be a number in" "$BIN" plan "${TINY[@]}" --machine "$SCRATCH/neg.toml"
expect_line 2 "machine file '/dev/zero' is larger than" "$BIN" plan "${TINY[@]}" --machine /dev/zero
expect_line 2 "exceeds the 4 nodes of test machine" "$BIN" plan "${TINY[@]}" --machine "$MACHINE" --nodes 5
expect_line 2 "train.batch_size = 4 does not divide over 6 ranks" "$BIN" plan "${TINY[@]}" --set parallel.ep=1 \
  --machine "$MACHINE" --nodes 3
expect_line 2 "sweep-nodes 'x,2': expected node counts" "$BIN" plan "${TINY[@]}" --machine "$MACHINE" --sweep-nodes x,2
expect_line 2 "memory.zero = 1 is not implemented yet" "$BIN" plan "${TINY[@]}" --machine "$MACHINE" \
  --set memory.zero=1 --set memory.experts=\"nvme\"
echo "plan: all checks passed"
