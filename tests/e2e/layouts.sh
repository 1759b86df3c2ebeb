#!/usr/bin/env bash
# Layout equivalence: the same seed and global batch give the same losses on any
# (dp, ep) layout, and flat and hierarchical all-to-all give identical losses.
# Capacity is unlimited here: with a capacity cut, drops are decided per rank.
source "$(dirname "$0")/lib/common.sh"
COMMON=("${TINY[@]}" --set train.steps=20 --set train.eval_every=0 --set moe.capacity_factor=0
        --set moe.every=1 --set train.batch_size=8)

run() {  # run NAME NP EP [extra --set ...]
  local name=$1 np=$2 ep=$3; shift 3
  timeout 300 mpiexec -n "$np" "$BIN" train "${COMMON[@]}" --set parallel.ep="$ep" \
    --set output.dir="\"$SCRATCH/$name\"" "$@" > "$SCRATCH/$name.log" 2>&1 ||
    { cat "$SCRATCH/$name.log"; fail "run $name (np $np, ep $ep)"; }
  losses "$SCRATCH/$name/metrics.jsonl" > "$SCRATCH/$name.losses"
  losses "$SCRATCH/$name/metrics.jsonl" grad_norm > "$SCRATCH/$name.norms"
}

run ref 1 1
run dp2 2 1
run ep2 2 2
run dp2ep2 4 2
run ep4 4 4
run ep4hier 4 4 --set comm.alltoall='"hierarchical"' --set comm.ranks_per_node=2
# comm.timing = "barrier" defers the gradient reductions to the end of the backward
# and puts barriers before the exchanges: the same reductions of the same values.
run ep2barrier 2 2 --set comm.timing='"barrier"'
run dp2zbarrier 2 1 --set comm.timing='"barrier"' --set memory.zero=1
run dp2z 2 1 --set memory.zero=1
# comm.wait: "auto" (above) yields when 4 ranks share fewer than 4 CPUs; forced spin
# must give the same bits (comm/wait.hpp: the nonblocking forms of the same calls).
run ep4spin 4 4 --set comm.wait='"spin"'
run dp2ep2zyield 4 2 --set comm.wait='"yield"' --set memory.zero=1
run dp2ep2zspin 4 2 --set comm.wait='"spin"' --set memory.zero=1
cpus=$(nproc)
want4=$([ "$cpus" -lt 4 ] && echo yield || echo spin)
grep -q "^MPI waits: $want4 (comm.wait = auto" "$SCRATCH/ep4.log" ||
  fail "4 ranks on $cpus CPU(s) should print 'MPI waits: $want4 (comm.wait = auto...': $(grep 'MPI waits' "$SCRATCH/ep4.log")"
grep -q "^MPI waits: spin (comm.wait = auto: every rank has a CPU)" "$SCRATCH/ref.log" ||
  fail "1 rank should print 'MPI waits: spin': $(grep 'MPI waits' "$SCRATCH/ref.log")"
grep -q "^MPI waits: spin (comm.wait = spin)" "$SCRATCH/ep4spin.log" || fail "comm.wait = spin not in the banner"
/usr/bin/python3 - "$SCRATCH" <<'PY'
import sys
d = sys.argv[1]
bad = 0
# Gradient norms too: clipping is active (grad_clip 1), and an expert counted twice
# or missed would show here first.
for what in ["losses", "norms"]:
    ref = [float(x) for x in open(f"{d}/ref.{what}")]
    assert len(ref) == 20, len(ref)
    for name in ["dp2", "ep2", "dp2ep2", "ep4", "ep4hier"]:
        got = [float(x) for x in open(f"{d}/{name}.{what}")]
        worst = max(abs(a - b) / abs(b) for a, b in zip(got, ref))
        ok = len(got) == len(ref) and worst <= 1e-5
        bad += not ok
        print(f"{what:6s} {name:8s} max rel diff vs 1 process over {len(got)} steps: {worst:.2e} {'ok' if ok else 'FAIL'}")
same = open(f"{d}/ep4.losses").read() == open(f"{d}/ep4hier.losses").read()
print(f"flat vs hierarchical (ep 4, 2 ranks/node): {'bitwise identical' if same else 'DIFFERENT'}")
import json
for a, b in [("ep4", "ep4spin"), ("dp2ep2zyield", "dp2ep2zspin")]:
    ident = all(open(f"{d}/{a}.{w}").read() == open(f"{d}/{b}.{w}").read() for w in ["losses", "norms"])
    print(f"comm.wait {a} vs {b}: {'bitwise identical' if ident else 'DIFFERENT'}")
    same = same and ident
for a, b in [("ep2", "ep2barrier"), ("dp2z", "dp2zbarrier")]:
    ident = all(open(f"{d}/{a}.{w}").read() == open(f"{d}/{b}.{w}").read() for w in ["losses", "norms"])
    # The timers are there at 2 ranks and saw the traffic (ep 2: both; dp 2: no exchange).
    rows = [json.loads(l) for l in open(f"{d}/{b}/metrics.jsonl") if "ms_per_step" in l]
    timed = all(r["allreduce_ms"] > 0 and (r["alltoall_ms"] > 0) == (b == "ep2barrier") for r in rows)
    print(f"comm.timing barrier vs wall ({a}): {'bitwise identical' if ident else 'DIFFERENT'}, "
          f"alltoall_ms/allreduce_ms {'present' if timed else 'MISSING OR ZERO'}")
    same = same and ident and timed
sys.exit(1 if bad or not same else 0)
PY
