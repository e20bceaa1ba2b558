#!/usr/bin/env python
"""How to spend a CPU's cores, or one GPU, on trials: one process, or several at once.

For each way, that many processes train one config (default: budget-8k's base net, seed 002's
MnistNet_2 with its augmentation) for --epochs epochs at once, each with an equal share of the
cores as torch threads (`hpo.trainer.share_cpu`, what `hpo run --workers K` does). The table
gives the seconds one epoch took inside each process and the throughput of the whole machine
in epochs per minute, measured over the training alone (process start and data loading are
shown apart). What wins is what `hpo run --workers auto` picks on a CPU.

With --device cuda the processes share one GPU (P4's "K worker processes on one GPU", without
MPS): each trains on it as an `hpo run` worker does, and the table says how many epochs per
minute the GPU gives with 1, 2, 4 ... trials at once.

    python bench/cpu_workers.py                          # 1 process x all cores, then one per core
    python bench/cpu_workers.py --ways 1 2 4 --train-subset 20000
    python bench/cpu_workers.py --device cuda --ways 1 4 8 16 --epochs 2 --json workers.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_model  # noqa: E402

CHILD = """
import json, sys, time, torch
import hpo
cfg = json.loads(sys.argv[1])
history = hpo.train(cfg, device=sys.argv[2])
print(json.dumps({"threads": torch.get_num_threads(), "epoch_s": [r.seconds for r in history], "end": time.time()}))
"""


def main() -> int:
    import yaml

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="studies/budget-8k.yaml", type=Path, help="whose base config to train")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-subset", type=int)
    parser.add_argument("--ways", type=int, nargs="+", help="processes at once (default: 1 and one per core)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    cores = len(os.sched_getaffinity(0))
    cfg = yaml.safe_load(args.study.read_text())["base"]
    cfg["epochs"] = args.epochs
    if args.train_subset:
        cfg.setdefault("data", {})["train_subset"] = args.train_subset
    rows = []
    for ways in args.ways or sorted({1, cores}):
        threads = max(1, cores // ways)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HPO_OFFLINE": "1"}
        started = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(cfg), args.device], stdout=subprocess.PIPE,
                                  env=env, text=True) for _ in range(ways)]
        outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        wall = time.perf_counter() - started
        if any(p.returncode for p in procs):
            print("bench/cpu_workers.py: a training process failed", file=sys.stderr)
            return 1
        epoch_s = [s for o in outs for s in o["epoch_s"]]
        # from the first process's first epoch to the last one's end: processes that start apart
        # (a GPU context takes a while) do not overlap fully, and a sum per process would hide it
        train_wall = max(o["end"] for o in outs) - min(o["end"] - sum(o["epoch_s"]) for o in outs)
        rows.append({"processes": ways, "threads": outs[0]["threads"], "epoch_s": statistics.fmean(epoch_s),
                     "epochs_per_min": 60 * len(epoch_s) / train_wall, "wall": wall, "start_s": wall - train_wall})
        print(f"{ways} processes: {rows[-1]['epochs_per_min']:.1f} epochs per minute, {wall:.1f} s in all",
              file=sys.stderr, flush=True)
        if args.json:  # after each way: a step cut short by its time limit keeps what it measured
            write_json(args, rows, cores)
    where = gpu_name() if args.device == "cuda" else cpu_model()
    print(f"\n## {'GPU' if args.device == 'cuda' else 'CPU'} workers: {where}, {cores} CPU cores, {args.study} base, "
          f"{args.epochs} epoch(s), "
          f"{args.train_subset or 'all'} training images, {datetime.datetime.now():%Y-%m-%d %H:%M}, "
          f"load average before {os.getloadavg()[0]:.1f}\n")
    print("| processes | torch threads each | s per epoch (each) | epochs per minute (machine) | vs 1 process | "
          "start + data load s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['processes']} | {r['threads']} | {r['epoch_s']:.1f} | {r['epochs_per_min']:.2f} | "
              f"{r['epochs_per_min'] / rows[0]['epochs_per_min']:.2f}x | {r['start_s']:.1f} |")
    return 0


def write_json(args, rows: list, cores: int) -> None:
    best = max(rows, key=lambda r: r["epochs_per_min"])
    mps = bool(os.environ.get("CUDA_MPS_PIPE_DIRECTORY")) and args.device == "cuda"  # bench/gpu-check.sh's MPS
    where = gpu_name() if args.device == "cuda" else cpu_model()
    args.json.write_text(json.dumps({"cpu": cpu_model(), "device": where, "mps": mps, "cores": cores,
                                     "epochs": args.epochs,
                                     "rows": rows, "best_processes": best["processes"],
                                     "best_ratio": best["epochs_per_min"] / rows[0]["epochs_per_min"]}, indent=2))


def gpu_name() -> str:
    import torch  # noqa: PLC0415  (only here: the parent of CPU runs stays light)

    return torch.cuda.get_device_name(0)


if __name__ == "__main__":
    sys.exit(main())
