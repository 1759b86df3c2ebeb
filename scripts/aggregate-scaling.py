#!/usr/bin/env python3
"""Aggregate a scaling sweep (jobs/slurm/scaling.sh) into a CSV and two plots.

Reads ROOT/<mode>/nodes_<N>/metrics.jsonl for mode in {weak, strong}, with nodes and
ranks from the run.json that the batch script writes next to it (else nodes from the
directory name). Per run:

  tokens_per_s   median of tokens_per_s over the steps after the warm-up
  ms_per_step    median of ms_per_step over the same steps
  warm-up        the first 20% of the logged steps (at least 1, never all of them)
  weak           efficiency = (tokens_per_s / nodes) / (tokens_per_s / nodes at N0)
  strong         speedup = ms_per_step(N0) / ms_per_step(N); efficiency = speedup / (N / N0)

where N0 is the smallest node count of the sweep. Writes --out-csv and, in --out-dir,
scaling_throughput.png (tokens/s vs nodes, with the ideal linear line) and
scaling_efficiency.png. Errors (no runs, a malformed metrics file) are one line on
stderr and exit code 2.

  python3 scripts/aggregate-scaling.py --root runs/scaling \\
      --out-csv runs/scaling/scaling.csv --out-dir runs/scaling
"""
import argparse
import csv
import json
import math
import os
import re
import statistics
import sys

MODES = ("weak", "strong")
PROG = "aggregate-scaling"


class InputError(Exception):
    pass


def number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_metrics(path):
    """Steps of one metrics.jsonl, sorted by step; a re-logged step keeps its last line."""
    by_step = {}
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as e:
                    raise InputError(f"{path}:{lineno}: not valid JSON ({e.msg})")
                if not isinstance(obj, dict):
                    raise InputError(f"{path}:{lineno}: not a JSON object")
                for key in ("step", "tokens_per_s", "ms_per_step"):
                    if not number(obj.get(key)):
                        raise InputError(f"{path}:{lineno}: '{key}' is missing or not a finite number")
                by_step[obj["step"]] = obj
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})")
    if not by_step:
        raise InputError(f"{path}: no steps (empty metrics file)")
    return [by_step[s] for s in sorted(by_step)]


def read_run_json(run_dir):
    path = os.path.join(run_dir, "run.json")
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable JSON file ({e})")
    if not isinstance(obj, dict):
        raise InputError(f"{path}: not a JSON object")
    return obj


def summarize(mode, run_dir, dir_nodes, warmup_fraction):
    steps = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
    info = read_run_json(run_dir)
    nodes = info.get("nodes", dir_nodes)
    if not (isinstance(nodes, int) and nodes >= 1):
        raise InputError(f"{run_dir}/run.json: 'nodes' must be a positive integer")
    ranks = info.get("ranks")
    if ranks is not None and not (isinstance(ranks, int) and ranks >= 1):
        raise InputError(f"{run_dir}/run.json: 'ranks' must be a positive integer")
    warmup = min(max(1, int(len(steps) * warmup_fraction)), len(steps) - 1)
    kept = steps[warmup:]
    tps = statistics.median(s["tokens_per_s"] for s in kept)
    ms = statistics.median(s["ms_per_step"] for s in kept)
    return {
        "mode": mode, "nodes": nodes, "ranks": ranks, "steps": len(steps), "warmup_steps": warmup,
        "tokens_per_s": tps, "tokens_per_s_per_node": tps / nodes, "ms_per_step": ms,
        "dir": run_dir,
    }


def find_runs(root, warmup_fraction):
    runs = []
    for mode in MODES:
        mode_dir = os.path.join(root, mode)
        if not os.path.isdir(mode_dir):
            continue
        for name in sorted(os.listdir(mode_dir)):
            m = re.fullmatch(r"nodes_([1-9][0-9]*)", name)
            run_dir = os.path.join(mode_dir, name)
            if not m or not os.path.isdir(run_dir):
                continue
            if not os.path.exists(os.path.join(run_dir, "metrics.jsonl")):
                print(f"{PROG}: warning: {run_dir}: no metrics.jsonl (job failed or still running); skipped",
                      file=sys.stderr)
                continue
            runs.append(summarize(mode, run_dir, int(m.group(1)), warmup_fraction))
    return runs


def add_efficiency(runs):
    for mode in MODES:
        group = sorted((r for r in runs if r["mode"] == mode), key=lambda r: r["nodes"])
        if not group:
            continue
        base = group[0]
        for r in group:
            scale = r["nodes"] / base["nodes"]
            if mode == "weak":
                r["speedup"] = r["tokens_per_s"] / base["tokens_per_s"]
                r["efficiency"] = r["tokens_per_s_per_node"] / base["tokens_per_s_per_node"]
            else:
                r["speedup"] = base["ms_per_step"] / r["ms_per_step"]
                r["efficiency"] = r["speedup"] / scale
            r["ideal_tokens_per_s"] = base["tokens_per_s"] * scale
    runs.sort(key=lambda r: (MODES.index(r["mode"]), r["nodes"]))


COLUMNS = ["mode", "nodes", "ranks", "steps", "warmup_steps", "tokens_per_s", "tokens_per_s_per_node",
           "ideal_tokens_per_s", "ms_per_step", "speedup", "efficiency", "dir"]


def write_csv(runs, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for r in runs:
            row = []
            for c in COLUMNS:
                v = r.get(c)
                if v is None:
                    v = ""
                elif isinstance(v, float):
                    v = f"{v:.6g}"
                row.append(v)
            w.writerow(row)


def plot(runs, out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    colors = {"weak": "tab:blue", "strong": "tab:orange"}
    all_nodes = sorted({r["nodes"] for r in runs})
    paths = []
    for kind in ("throughput", "efficiency"):
        fig, ax = plt.subplots(figsize=(6, 4.2))
        for mode in MODES:
            group = [r for r in runs if r["mode"] == mode]
            if not group:
                continue
            x = [r["nodes"] for r in group]
            c = colors[mode]
            if kind == "throughput":
                ax.plot(x, [r["tokens_per_s"] for r in group], "o-", color=c, label=f"{mode} scaling")
                ax.plot(x, [r["ideal_tokens_per_s"] for r in group], "--", color=c, alpha=0.6,
                        label=f"{mode} ideal (linear)")
            else:
                ax.plot(x, [r["efficiency"] for r in group], "o-", color=c, label=f"{mode} scaling")
        if kind == "throughput":
            ax.set_yscale("log")
            ax.set_ylabel("tokens/s (median after warm-up)")
            ax.set_title("Furnace throughput vs nodes")
        else:
            ax.axhline(1.0, linestyle="--", color="gray", label="ideal")
            ax.set_ylim(0, max(1.1, 1.05 * max(r["efficiency"] for r in runs)))
            ax.set_ylabel("parallel efficiency")
            ax.set_title("Furnace scaling efficiency")
        if len(all_nodes) > 1:
            ax.set_xscale("log", base=2)
        ax.set_xticks(all_nodes)
        ax.set_xticklabels([str(n) for n in all_nodes])
        ax.set_xlabel("nodes")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = os.path.join(out_dir, f"scaling_{kind}.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="runs/scaling", help="sweep root (default runs/scaling)")
    p.add_argument("--out-csv", help="CSV to write (default ROOT/scaling.csv)")
    p.add_argument("--out-dir", help="directory of the PNG plots (default ROOT)")
    p.add_argument("--warmup-fraction", type=float, default=0.2,
                   help="leading fraction of steps left out (default 0.2; at least 1 step)")
    p.add_argument("--no-plots", action="store_true", help="write the CSV only")
    args = p.parse_args(argv)
    if not 0 <= args.warmup_fraction < 1:
        print(f"{PROG}: --warmup-fraction must be in [0, 1)", file=sys.stderr)
        return 2
    out_csv = args.out_csv or os.path.join(args.root, "scaling.csv")
    out_dir = args.out_dir or args.root
    try:
        runs = find_runs(args.root, args.warmup_fraction)
        if not runs:
            raise InputError(f"no runs found under {args.root} (expected {args.root}/weak|strong/nodes_N/metrics.jsonl)")
    except InputError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    add_efficiency(runs)
    write_csv(runs, out_csv)
    for r in runs:
        print(f"{r['mode']:6s} nodes={r['nodes']:<4d} ranks={r['ranks'] if r['ranks'] else '?':<5} "
              f"{r['tokens_per_s']:12.1f} tok/s {r['ms_per_step']:9.2f} ms/step "
              f"efficiency {r['efficiency']:.3f}")
    print(f"wrote {out_csv}")
    if not args.no_plots:
        for path in plot(runs, out_dir):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
