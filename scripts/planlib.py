"""Helpers shared by scripts/validate-plan and scripts/scaling-study: run the trainer on
this machine, read its metrics, and ask `furnace plan` for the same configuration."""
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BIN = os.path.join(ROOT, "build/bin/furnace")


EMULATED_CLUSTER = os.path.join(ROOT, "scripts/emulated-cluster")
FINALIZE_HANG = "MPI_Finalize has not returned after"


def bounded_finalize_hang(p):
    """A job whose ranks all finished with status 0 and then met the PMI barrier hang of
    docs/jobs.md ("A hang in MPI_Finalize"), bounded by the watchdog."""
    lines = [l for l in p.stderr.splitlines() if l.startswith("furnace: ")]
    return bool(lines) and all(FINALIZE_HANG in l and l.endswith("leaving with exit 0") for l in lines)


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0 and not bounded_finalize_hang(p):
        sys.exit(f"{os.path.basename(sys.argv[0])}: {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return p.stdout


def launcher(ranks, nodes=1):
    """mpiexec for `ranks` on this machine, or across `nodes` emulated nodes
    (scripts/emulated-cluster: needs root), ranks / nodes on each."""
    if nodes <= 1:
        return ["mpiexec", "-n", str(ranks)]
    return [EMULATED_CLUSTER, "exec", str(nodes), "--ppn", str(ranks // nodes),
            "-genv", "FURNACE_FINALIZE_TIMEOUT_S", "10"]


def prepare(binary, work):
    """Token files for the runs, in work/data."""
    run([binary, "data", "prepare", "--out", f"{work}/data"])


def calibrate(binary, work, nodes=1):
    """This machine's description (2 ranks: the MPI figures need two), or across 2
    emulated nodes of 1 rank (the inter-node tier measured)."""
    machine = f"{work}/machine-{nodes}.toml"
    run(launcher(2, nodes) + [binary, "bench", "calibrate", "--out", machine, "--dir", work, "--disk-mb", "256"])
    return machine


def step_lines(out):
    """The step lines of the run directory `out`'s metrics.jsonl, parsed."""
    return [json.loads(l) for l in open(f"{out}/metrics.jsonl") if l.strip() and "ms_per_step" in l]


def train(binary, work, name, ranks, sets, steps, warmup, config="configs/default.toml", nodes=1):
    """Trains `steps` steps; returns (the --set arguments used, median ms/step after
    `warmup`, rank 0's peak bytes summed over categories, the routing imbalance: the
    median over steps of the layers' expert load max/mean, capped at the capacity factor)."""
    out = f"{work}/{name}"
    common = [f"data.train=\"{work}/data/train.h5\"", f"data.valid=\"{work}/data/valid.h5\"",
              f"output.dir=\"{out}\"", f"train.steps={steps}", "train.eval_every=0", "train.eval_batches=1",
              "checkpoint.every=0", "train.time_limit_min=0", "comm.timing=\"barrier\""] + sets
    args = sum((["--set", s] for s in common), [])
    run(launcher(ranks, nodes) + [binary, "train", "--config", os.path.join(ROOT, config)] + args)
    steps_ = step_lines(out)
    ms = statistics.median(l["ms_per_step"] for l in steps_[warmup:])
    peak = sum(steps_[-1]["memory_peak_bytes"].values())
    cf = 2.0
    for s in sets:
        if s.startswith("moe.capacity_factor="):
            cf = float(s.split("=")[1])
    cap = cf if cf > 0 else float("inf")
    imb = statistics.median(statistics.mean(min(x, cap) for x in l["expert_load_max_over_mean"])
                            for l in steps_[warmup:]) if "expert_load_max_over_mean" in steps_[-1] else 1.0
    return args, ms, peak, imb


def exchange_imbalance(work, name, warmup):
    """The median over steps after `warmup` of the layers' mean busiest-ep-rank load over
    the mean (metrics.jsonl `rank_load_max_over_mean`), or 0 (none: 1 rank, ep 1)."""
    steps_ = step_lines(f"{work}/{name}")
    if "rank_load_max_over_mean" not in steps_[-1]:
        return 0.0
    return statistics.median(statistics.mean(l["rank_load_max_over_mean"]) for l in steps_[warmup:])


def comm_ms(work, name, warmup):
    """The median over steps after `warmup` of rank 0's milliseconds in the token
    exchanges and in the gradient reduction (metrics.jsonl `alltoall_ms`, `allreduce_ms`,
    measured after a barrier: comm.timing = "barrier"), or None at 1 rank."""
    steps_ = step_lines(f"{work}/{name}")
    if "alltoall_ms" not in steps_[-1]:
        return None
    return tuple(statistics.median(l[k] for l in steps_[warmup:]) for k in ("alltoall_ms", "allreduce_ms"))


def plan(binary, machine, args, nodes, ranks_per_node, imbalance=0.0, config="configs/default.toml",
         exchange_imbalance=0.0):
    """`furnace plan --json` for the same configuration."""
    return json.loads(run([binary, "plan", "--config", os.path.join(ROOT, config), "--machine", machine,
                           "--nodes", str(nodes), "--ranks-per-node", str(ranks_per_node),
                           "--imbalance", f"{imbalance:.4f}", "--exchange-imbalance", f"{exchange_imbalance:.4f}",
                           "--json"] + args))
