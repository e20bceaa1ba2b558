#!/usr/bin/env python
"""hpo's CPU dropout (models.Dropout: a byte mask, the rate in steps of 1/256) against torch's
nn.Dropout: seconds per epoch and test accuracy, the same net and seeds, on the CPU.

    python bench/cpu_dropout.py --seeds 3 --epochs 3
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_model  # noqa: E402

import torch  # noqa: E402
import yaml  # noqa: E402

import hpo.trainer  # noqa: E402
from hpo import data as data_mod  # noqa: E402
from hpo import models  # noqa: E402
from hpo.config import parse_config  # noqa: E402
from train_speed import torch_dropout  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=Path("studies/budget-8k.yaml"), help="whose base net")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-subset", type=int)
    args = parser.parse_args()

    base = yaml.safe_load(args.study.read_text())["base"]
    data = data_mod.load("mnist", "cpu")
    build = models.build
    rows = {"hpo (byte mask)": [], "torch nn.Dropout": []}
    for seed in range(args.first_seed, args.first_seed + args.seeds):  # interleaved: background load hits both alike
        for name in rows:
            hpo.trainer.models.build = (lambda *a, **k: torch_dropout(build(*a, **k))) if "torch" in name else build
            cfg = parse_config({**base, "epochs": args.epochs, "seed": seed,
                                "data": {"train_subset": args.train_subset} if args.train_subset else {}})
            history = hpo.trainer.train(cfg, data)
            rows[name].append((history[-1].test_accuracy, statistics.fmean(r.seconds for r in history)))
            print(f"seed {seed} {name}: {100 * history[-1].test_accuracy:.2f}% {rows[name][-1][1]:.1f} s/epoch",
                  file=sys.stderr)
    hpo.trainer.models.build = build
    print(f"\n## CPU dropout: {cpu_model()}, {torch.get_num_threads()} threads, {args.study} base, {args.epochs} "
          f"epochs, seeds {args.first_seed}-{args.first_seed + args.seeds - 1}, torch {torch.__version__}, {datetime.datetime.now():%Y-%m-%d %H:%M}\n")
    print("| dropout | final test accuracy per seed | mean ± std | s per epoch (mean) |")
    print("| --- | --- | ---: | ---: |")
    for name, runs in rows.items():
        acc = [100 * a for a, _ in runs]
        spread = statistics.stdev(acc) if len(acc) > 1 else 0.0
        print(f"| {name} | {', '.join(f'{a:.2f}' for a in acc)} | {statistics.fmean(acc):.2f} ± {spread:.2f} | "
              f"{statistics.fmean(s for _, s in runs):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
