#!/usr/bin/env python
"""What pruning saves: one study run twice from the same sampler seed, with its pruner and
without (`pruner: none`), side by side.

Both runs are `hpo run` processes started at once, one worker each, with the cores split between
them (OMP_NUM_THREADS), so that whatever else the machine does slows both alike. Each has its
own SQLite file in --out, which a later call with more --trials continues.

Columns: trials finished, complete and pruned, epochs trained (every reported epoch of every
trial), the epochs pruning saved against the run without, the best trial's validation accuracy
(what the study ranks on; `eval: val` studies) and its test accuracy, measured once at its end,
and the wall time. Pruning pays when it saves epochs at an equal best: the issue's bar is half
the epochs at a best within 0.05%.

On a CPU a shipped study takes hours; --train-subset N trains every trial on a fixed,
class-stratified N of the training images (a sixth of them held out for validation), which
keeps the comparison honest (both runs see the same images) and says so in the table.

    python bench/pruning.py --study lenet-tuning --trials 30 --train-subset 12000
    python bench/pruning.py --study budget-8k --trials 40                # a GPU's job
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_model  # noqa: E402

import optuna  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from hpo import records  # noqa: E402
from hpo.errors import UserError  # noqa: E402
from hpo.study import find_study_file, load_spec  # noqa: E402


def variant(raw: dict, name: str, pruned: bool, train_subset: int | None, changes: dict | None = None) -> dict:
    raw = copy.deepcopy(raw)
    raw["name"] = name
    for dotted, value in (changes or {}).items():  # --set: the same change in both runs
        *parents, last = dotted.split(".")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    if not pruned:
        raw["pruner"] = {"name": "none"}
    if train_subset:
        raw["base"].setdefault("data", {})["train_subset"] = train_subset
    return raw


def summarize(study: optuna.Study) -> dict:
    trials = study.trials
    counts = records.count(trials)
    best = records.best_trial(trials)
    return {
        "finished": counts.finished,
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "epochs": sum(len(t.intermediate_values) for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)),
        "best": best.values[0] if best else None,
        "best_test": best.user_attrs.get("test_accuracy") if best else None,
        "best_number": best.number if best else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="lenet-tuning", help="a study under studies/, or a study file")
    parser.add_argument("--trials", type=int, default=30, help="finished trials in each run (default 30)")
    parser.add_argument("--train-subset", type=int, help="train every trial on this many training images")
    parser.add_argument("--out", type=Path, default=Path("bench-pruning"), help="folder for the study files and databases")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change the study file in both runs, e.g. base.ema=0.99 or pruner.min_resource=2 "
                             "(VALUE is YAML)")
    args = parser.parse_args()
    changes = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"bench/pruning.py: --set {item!r}: expected KEY=VALUE, such as base.ema=0.99", file=sys.stderr)
            return 2
        changes[key] = yaml.safe_load(value)

    raw = yaml.safe_load(find_study_file(args.study).read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    checked = args.out / "study-as-run.yaml"
    checked.write_text(yaml.safe_dump(variant(raw, load_spec(args.study).name, True, args.train_subset, changes),
                                      sort_keys=False))
    spec = load_spec(str(checked))  # one clear line for a bad study or --set, before anything runs
    if spec.pruner.name == "none":
        print(f"bench/pruning.py: {args.study} has no pruner to compare against; pick a study with one", file=sys.stderr)
        return 2
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // 2))}
    runs = {}
    for pruned in (True, False):
        name = f"{spec.name}-{'pruned' if pruned else 'unpruned'}"
        path = args.out / f"{name}.yaml"
        path.write_text(yaml.safe_dump(variant(raw, name, pruned, args.train_subset, changes), sort_keys=False))
        storage = f"sqlite:///{(args.out / name).resolve()}.db"
        log = open(args.out / f"{name}.log", "w")
        cmd = [sys.executable, "-m", "hpo", "run", "--study", str(path), "--trials", str(args.trials), "--quiet",
               "--storage", storage, "--device", args.device, "--checkpoint-dir", str(args.out / "checkpoints")]
        runs[pruned] = (name, storage, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), time.time())
    walls = {}
    for pruned, (name, _, proc, started) in runs.items():
        if proc.wait() != 0:
            print(f"bench/pruning.py: {name} failed; see {args.out / name}.log", file=sys.stderr)
            return 1
        walls[pruned] = time.time() - started

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = {pruned: summarize(optuna.load_study(study_name=name, storage=storage))
            for pruned, (name, storage, _, _) in runs.items()}
    full = rows[False]["epochs"]
    print(f"\n## Pruning: {spec.name} ({spec.pruner.name} {dict(spec.pruner.options)}), {args.trials} trials each, "
          f"sampler {spec.sampler.name} seed {dict(spec.sampler.options).get('seed')}")
    print(f"{cpu_model()} ({cores} cores), {env['OMP_NUM_THREADS']} torch thread(s) "
          f"per run, device {args.device}, torch {torch.__version__}, optuna {optuna.__version__}, "
          f"{datetime.date.today()}; training images: {args.train_subset or 'all'}, eval: {spec.eval}"
          + "".join(f"; {key}: {value}" for key, value in changes.items()) + "\n")
    metric = "validation" if spec.eval == "val" else "test"
    print(f"| run | finished | complete | pruned | epochs trained | epochs saved | best {metric} (trial) | "
          "its test accuracy | wall |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for pruned in (False, True):
        r = rows[pruned]
        saved = f"{1 - r['epochs'] / full:.0%}" if pruned and full else "-"
        test = f"{r['best_test']:.2%}" if r["best_test"] is not None else "-"
        best = f"{r['best']:.2%} ({r['best_number']})" if r["best"] is not None else "-"
        print(f"| {'with ' + spec.pruner.name if pruned else 'no pruning'} | {r['finished']} | {r['complete']} | "
              f"{r['pruned']} | {r['epochs']} | {saved} | {best} | {test} | {walls[pruned]:.0f} s |")
    if rows[True]["best"] is not None and rows[False]["best"] is not None:
        gap = rows[True]["best"] - rows[False]["best"]
        print(f"\nbest with pruning minus best without: {gap:+.2%} ({metric}); "
              f"epochs saved: {1 - rows[True]['epochs'] / full:.0%}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as error:  # a bad study or --set: one line, no traceback
        print(f"bench/pruning.py: {error}", file=sys.stderr)
        sys.exit(2)
