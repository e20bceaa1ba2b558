#!/usr/bin/env python
"""What a moving average of the weights (`ema` in a config) buys a config, on held-out images.

Trains CONFIG once per seed on 50,000 training images, 10,000 held out (the split `eval: val`
uses: the test set is never read), and keeps several averages of the same run's weights at once,
one per decay, beside the last step's weights. The averaging draws no random numbers, so every
column of a row shares one training run: the differences are paired, the seed's noise cancels.
It prints each seed's held-out accuracy per decay at a few epochs, then per decay the mean and
its difference from the plain weights with a 95% interval over the seeds.

    OMP_NUM_THREADS=1 python bench/ema.py studies/best/budget-14k-sgd.yaml --seeds 6 --workers 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import platform
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # hpo is not installed, only checked out

import torch

import hpo.trainer
from hpo import data as hpo_data
from hpo.average import WeightAverage
from hpo.config import load_config
from hpo.trainer import evaluate
from hpo.verification import t975

DECAYS = (0.99, 0.998, 0.999, 0.9995, 0.9998)


class Averages(WeightAverage):
    """The trainer's average for the first decay, and the others kept beside it in the same run."""

    decays: tuple = DECAYS
    latest: "Averages | None" = None  # the one the trainer built last: the bench scores its nets

    def __init__(self, model: torch.nn.Module, decay: float):
        super().__init__(model, decay)
        self.raw = model
        self.others = [WeightAverage(model, d) for d in self.decays[1:]]
        Averages.latest = self

    def update(self) -> None:
        super().update()
        for other in self.others:
            other.update()

    def nets(self) -> dict[str, torch.nn.Module]:
        return {"plain": self.raw, **{str(d): m.model for d, m in zip(self.decays, [self] + self.others)}}


def run_seed(path: str, seed: int, decays: tuple, every: int, data_dir: str | None) -> dict:
    torch.set_num_threads(1)  # --workers seeds at once, one thread each
    Averages.decays = decays
    hpo.trainer.WeightAverage = Averages  # the trainer builds the average it is told to: ours
    cfg = load_config(path).with_overrides(seed=seed, ema=decays[0])
    splits = hpo_data.load(cfg.data, "cpu", Path(data_dir) if data_dir else None).validation(seed=0)
    rows = {}

    def on_epoch(result):
        print(f"seed {seed} epoch {result.epoch}: {result.seconds:.1f}s, held out {100 * result.test_accuracy:.2f}% "
              f"(ema {decays[0]})", file=sys.stderr, flush=True)
        if result.epoch % every == 0 or result.epoch == cfg.epochs:
            rows[result.epoch] = {name: evaluate(net, splits.test_x, splits.test_y)
                                  for name, net in Averages.latest.nets().items()}

    history = hpo.trainer.train(cfg, splits, on_epoch=on_epoch)
    return {"seed": seed, "epochs": rows, "seconds": sum(r.seconds for r in history),
            "train": min(cfg.data.train_subset or splits.train_y.numel(), splits.train_y.numel()),
            "held_out": min(cfg.data.test_subset or splits.test_y.numel(), splits.test_y.numel())}


def _run_seed(job: tuple) -> dict:
    return run_seed(*job)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="a training config or an export file (its first trial)")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1, help="seeds trained at once (one thread each)")
    parser.add_argument("--decays", type=float, nargs="+", default=list(DECAYS))
    parser.add_argument("--every", type=int, default=5, help="evaluate every N epochs (and the last)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    cfg = load_config(args.config)
    jobs = [(args.config, s, tuple(args.decays), args.every, args.data_dir) for s in range(args.seeds)]
    with mp.get_context("spawn").Pool(args.workers) as pool:
        runs = []
        for run in pool.imap_unordered(_run_seed, jobs):  # each seed saved as it ends: a long bench can stop early
            runs.append(run)
            if args.json:
                Path(args.json).write_text(json.dumps({"config": args.config, "runs": runs}, indent=2))
    runs.sort(key=lambda run: run["seed"])
    names = ["plain"] + [str(d) for d in args.decays]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"# {args.config}: {cfg.epochs} epochs, batch {cfg.batch_size}, {runs[0]['train']:,} train / "
          f"{runs[0]['held_out']:,} held out; "
          f"{cpu}, torch {torch.__version__}, {datetime.date.today()}")
    print("| seed | epoch | " + " | ".join(names) + " |")
    print("|" + " --- |" * (len(names) + 2))
    for run in runs:
        for epoch, row in sorted(run["epochs"].items(), key=lambda kv: int(kv[0])):
            print(f"| {run['seed']} | {epoch} | " + " | ".join(f"{100 * row[n]:.2f}" for n in names) + " |")
    print()
    print("| weights | final held-out accuracy, mean ± std | minus plain, mean [95% interval] |")
    print("| --- | --- | --- |")
    last = [run["epochs"][max(run["epochs"], key=int)] for run in runs]
    for name in names:
        values = [100 * row[name] for row in last]
        diffs = [100 * (row[name] - row["plain"]) for row in last]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        line = f"| {'last step' if name == 'plain' else 'ema ' + name} | {statistics.mean(values):.3f} ± {spread:.3f} |"
        if name == "plain" or len(diffs) < 2:
            print(line + " - |")
        else:
            half = t975(len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
            mean = statistics.mean(diffs)
            print(line + f" {mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}] |")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": args.config, "cpu": cpu, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
