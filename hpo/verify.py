"""`hpo verify`: re-train one config with several seeds and report the final epoch as mean ± std.

One lucky run proves nothing: a config's number is its final-epoch test accuracy over seeds
(`cfg.seed`, `cfg.seed + 1`, ...), never the best epoch picked after the fact (shown beside it).
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import statistics
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional

from hpo import data as data_mod
from hpo.config import TrainConfig
from hpo.data import Splits
from hpo.trainer import pick_device, share_cpu, train


@dataclass(frozen=True)
class SeedRun:
    seed: int
    final: float        # test accuracy after the last epoch: the number that counts
    best: float         # the best epoch's, picked after the fact: shown, never reported as the result
    best_epoch: int
    seconds: float


@dataclass(frozen=True)
class Verification:
    n_params: int
    epochs: int
    runs: tuple[SeedRun, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(r.final for r in self.runs)

    @property
    def std(self) -> float:
        """Sample standard deviation of the final accuracies (0 for one seed)."""
        return statistics.stdev(r.final for r in self.runs) if len(self.runs) > 1 else 0.0

    def as_dict(self) -> dict:
        return {"n_params": self.n_params, "epochs": self.epochs, "mean": self.mean, "std": self.std,
                "runs": [asdict(r) for r in self.runs]}


def verify(cfg: TrainConfig, *, seeds: int, n_params: int, device: str = "auto", data_dir: Optional[Path] = None,
           workers: int = 1, on_seed: Optional[Callable[[SeedRun], None]] = None) -> Verification:
    """Train `cfg` once per seed (`cfg.seed`, `cfg.seed + 1`, ...) on the same data; `on_seed` is
    called as each one ends. `workers` > 1 trains that many seeds at once, each in a process of
    its own that loads the data itself; on the CPU the cores are split between them (two
    one-thread processes finish two seeds sooner than one two-thread process finishes them in
    turn: BENCHMARKS.md). The result lists the runs in seed order whichever ends first."""
    seed_list = range(cfg.seed, cfg.seed + seeds)
    runs = []
    if workers <= 1:
        data = data_mod.load(cfg.data, pick_device(device), data_dir)
        for seed in seed_list:
            runs.append(train_seed(cfg, seed, data))
            if on_seed:
                on_seed(runs[-1])
    else:
        pick_device(device)                 # a missing CUDA device is one line here, not one per process
        data_mod.ensure(cfg.data, data_dir)  # fetched and checked once, before the processes read it
        processes = min(workers, seeds)
        # Pool, not ProcessPoolExecutor: leaving the block terminates the processes, so a seed
        # that diverges (or Ctrl-C) ends the command at once instead of after the others finish
        with mp.get_context("spawn").Pool(processes, initializer=share_cpu, initargs=(processes,)) as pool:
            train_one = functools.partial(_train_seed_in_process, cfg, device=device, data_dir=data_dir)
            for run in pool.imap_unordered(train_one, seed_list):
                runs.append(run)
                if on_seed:
                    on_seed(run)
    return Verification(n_params, cfg.epochs, tuple(sorted(runs, key=lambda r: r.seed)))


def train_seed(cfg: TrainConfig, seed: int, data: Splits) -> SeedRun:
    history = train(replace(cfg, seed=seed), data)
    best = max(history, key=lambda r: r.test_accuracy)
    return SeedRun(seed, history[-1].test_accuracy, best.test_accuracy, best.epoch,
                   round(sum(r.seconds for r in history), 2))


def _train_seed_in_process(cfg: TrainConfig, seed: int, device: str, data_dir: Optional[Path]) -> SeedRun:
    # data.load keeps what it loaded for the process's next seed
    return train_seed(cfg, seed, data_mod.load(cfg.data, pick_device(device), data_dir))
