#!/usr/bin/env python
"""P4: trials per hour, K trials of one shape trained at once (hpo.packed) against one at a time.

K recipes of the study's base net (default: budget-8k's MnistNet_2) that differ as a search's
trials do (learning rate, momentum, weight decay, dropout rate, label smoothing, seed) are
trained for --epochs, first one after another by the plain loop (hpo.trainer.train), then as one
stacked model (hpo.packed.train_group), in one process on one device. A trial here is --epochs
epochs; trials per hour = K / wall seconds x 3600. The plain loop's rate is measured once, on
the first --plain recipes, and is the same for every K.

    python bench/packing.py --device cuda --k 4 8 16 32 --uncaptured 4   # the GPU check's P4

On CUDA a group's step is one CUDA graph (hpo.packed.PackedStep); `--uncaptured K` also times
a group of K with HPO_CUDA_GRAPH=0, the same step launched op by op, for the graph's share.
    python bench/packing.py --device cpu --k 2 4 --train-subset 6000
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_model  # noqa: E402

import torch  # noqa: E402
import yaml  # noqa: E402

from hpo import data as data_mod  # noqa: E402
from hpo.backend import TrainJob  # noqa: E402
from hpo.config import parse_config  # noqa: E402
from hpo.packed import pack_key, packed_bf16, train_group  # noqa: E402
from hpo.trainer import bf16_autocast, pick_device, train  # noqa: E402


def recipes(base: dict, k: int, epochs: int, subset) -> list:
    rng = random.Random(0)
    out = []
    for i in range(k):
        cfg = json.loads(json.dumps(base))
        cfg["epochs"] = epochs
        cfg["seed"] = i
        cfg["optimizer"] = {"name": "sgd", "lr": 0.075 * rng.uniform(0.5, 2.0), "momentum": rng.uniform(0.8, 0.95),
                            "weight_decay": rng.uniform(0, 1e-3)}
        cfg["model"] = {**cfg["model"], "dropout": rng.uniform(0.01, 0.1)}
        cfg["label_smoothing"] = rng.uniform(0, 0.1)
        if subset:
            cfg.setdefault("data", {})["train_subset"] = subset
        out.append(parse_config(cfg))
    assert len({pack_key(c) for c in out}) == 1
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()}, {torch.get_num_threads()} threads"


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=Path("studies/budget-8k.yaml"), help="whose base net to train")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--k", type=int, nargs="+", default=[2, 4, 8], help="group sizes to time")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per trial (default 1)")
    parser.add_argument("--plain", type=int, default=2, help="recipes the plain loop trains, for its rate (default 2)")
    parser.add_argument("--train-subset", type=int)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--uncaptured", type=int, nargs="*", default=[], metavar="K",
                        help="also time these group sizes with HPO_CUDA_GRAPH=0 (CUDA: the graph's share)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    device = pick_device(args.device)
    base = yaml.safe_load(args.study.read_text())["base"]
    every = recipes(base, max(*args.k, args.plain, *args.uncaptured), args.epochs, args.train_subset)
    data = data_mod.load(every[0].data, device, args.data_dir)
    # warm-up: the first kernels, allocator and vmap's tracing are not what a trial costs
    train_group([TrainJob(c.with_overrides(epochs=1), None, None) for c in
                 recipes(base, 2, 1, min(args.train_subset or 2000, 2000))], data)
    plain_s = timed(lambda: [train(c, data) for c in every[: args.plain]], device) / args.plain
    rows = [{"way": "one at a time (plain loop)", "k": 1, "wall_s": plain_s, "trials_per_hour": 3600 / plain_s}]
    graph = device.type == "cuda" and os.environ.get("HPO_CUDA_GRAPH") != "0"
    failed = []  # groups a member of which failed (a capture the GPU refused, say): said, and the rest go on
    for k, captured in [(k, graph) for k in args.k] + [(k, False) for k in args.uncaptured if graph]:
        outcomes = []
        if not captured:
            os.environ["HPO_CUDA_GRAPH"] = "0"
        try:
            wall = timed(lambda: outcomes.extend(train_group([TrainJob(c, None, None) for c in every[:k]], data)),
                         device)
        finally:
            if graph:
                os.environ.pop("HPO_CUDA_GRAPH", None)
        way = f"packed, {k} at once" + (", one CUDA graph a step" if captured else ", uncaptured" if graph else "")
        errors = [o.error for o in outcomes if o.error is not None]
        if errors:
            print(f"bench/packing.py: a member of the group of {k} ({way}) failed: {errors[0]!r}", file=sys.stderr,
                  flush=True)
            failed.append({"way": way, "k": k, "graph": captured, "error": repr(errors[0])})
        else:
            rows.append({"way": way, "k": k, "graph": captured, "wall_s": wall, "trials_per_hour": 3600 * k / wall})
            print(f"{way}: {wall:.1f} s, {rows[-1]['trials_per_hour'] / rows[0]['trials_per_hour']:.2f}x one at a time",
                  file=sys.stderr, flush=True)
        if args.json:  # after each group: a step cut short by its time limit keeps what it measured
            write_json(args.json, device, args.epochs, rows, failed)
    best = max(rows[1:], key=lambda r: r["trials_per_hour"]) if len(rows) > 1 else rows[0]
    images = every[0].data.train_subset or len(data.train_y)
    print(f"\n## P4 packing: {device_name(device)}, {args.study} base net, {args.epochs} epoch(s) per trial, "
          f"{images:,} training images, one at a time {'bf16 autocast' if bf16_autocast(device.type) else 'fp32'}, "
          f"packed {'bf16 autocast' if packed_bf16(device.type) else 'fp32'}, "
          f"torch {torch.__version__}, {datetime.datetime.now():%Y-%m-%d %H:%M}\n")
    print("| way | trials at once | wall s | trials per hour | vs one at a time |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['way']} | {r['k']} | {r['wall_s']:.1f} | {r['trials_per_hour']:.0f} | "
              f"{r['trials_per_hour'] / rows[0]['trials_per_hour']:.2f}x |")
    for f in failed:
        print(f"| {f['way']} | {f['k']} | failed: {f['error'][:80]} | | |")
    print(f"\nbest packing: {best['way']}, {best['trials_per_hour'] / rows[0]['trials_per_hour']:.2f}x one at a time")
    if args.json:
        write_json(args.json, device, args.epochs, rows, failed)
    return 1 if failed else 0


def write_json(path: Path, device, epochs: int, rows: list, failed: list) -> None:
    """Every group timed so far; best_ratio over the packed ones (1.0 before any)."""
    best = max(rows[1:], key=lambda r: r["trials_per_hour"]) if len(rows) > 1 else rows[0]
    path.write_text(json.dumps({"device": device_name(device), "epochs": epochs, "rows": rows, "failed": failed,
                                "best_ratio": best["trials_per_hour"] / rows[0]["trials_per_hour"]}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
