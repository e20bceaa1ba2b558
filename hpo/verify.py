"""`hpo verify`: re-train one config with several seeds and report the final epoch as mean ± std.

One lucky run proves nothing: a config's number is its final-epoch test accuracy over seeds
(`cfg.seed`, `cfg.seed + 1`, ...), never the best epoch picked after the fact (shown beside it).
"""

from __future__ import annotations

import functools
import math
import signal
import statistics
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

from hpo import data as data_mod
from hpo.config import TrainConfig
from hpo.data import Splits
from hpo.processes import stop_fork_server, worker_context
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


# the 97.5% quantile of Student's t for 1..30 degrees of freedom (a two-sided 95% interval)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: float) -> float:
    """Student's t at 97.5% for `df` degrees of freedom, rounded down (the wider interval); past
    30, 1.96 + 2.4 / df (within 0.002 of the exact value)."""
    whole = max(1, int(df))
    return _T975[whole - 1] if whole <= 30 else 1.96 + 2.4 / whole


@dataclass(frozen=True)
class Comparison:
    """This verification's final accuracies against an earlier one's: the difference of the means
    and its 95% interval by Welch's t (unequal spreads, few seeds). A difference whose interval
    holds 0 is within the seeds' noise, however it looks."""
    difference: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        if self.low > 0:
            return "higher, beyond the seeds' noise"
        if self.high < 0:
            return "lower, beyond the seeds' noise"
        return "within the seeds' noise"

    def as_dict(self) -> dict:
        return {"difference": self.difference, "interval95": [self.low, self.high], "verdict": self.verdict}


def compare(ours: Sequence[float], theirs: Sequence[float]) -> Comparison:
    """Welch's 95% interval for mean(ours) - mean(theirs); each needs two runs or more."""
    if len(ours) < 2 or len(theirs) < 2:
        raise ValueError("a comparison needs two seeds or more on each side")
    diff = statistics.fmean(ours) - statistics.fmean(theirs)
    a, b = statistics.variance(ours) / len(ours), statistics.variance(theirs) / len(theirs)
    if a + b == 0:  # no spread on either side: the difference is all there is
        return Comparison(diff, diff, diff)
    df = (a + b) ** 2 / (a * a / (len(ours) - 1) + b * b / (len(theirs) - 1))
    half = t975(df) * math.sqrt(a + b)
    return Comparison(diff, diff - half, diff + half)


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
        # forked from hpo run's fork server: torch imported once, not once per process (and not
        # while a Ctrl-C finds them importing); `hpo verify` ends the server with the pool
        ctx = worker_context()
        try:
            with ctx.Pool(processes, initializer=_start_process, initargs=(processes,)) as pool:
                train_one = functools.partial(_train_seed_in_process, cfg, device=device, data_dir=data_dir)
                for run in pool.imap_unordered(train_one, seed_list):
                    runs.append(run)
                    if on_seed:
                        on_seed(run)
        finally:
            stop_fork_server()
    return Verification(n_params, cfg.epochs, tuple(sorted(runs, key=lambda r: r.seed)))


def train_seed(cfg: TrainConfig, seed: int, data: Splits) -> SeedRun:
    history = train(replace(cfg, seed=seed), data)
    best = max(history, key=lambda r: r.test_accuracy)
    return SeedRun(seed, history[-1].test_accuracy, best.test_accuracy, best.epoch,
                   round(sum(r.seconds for r in history), 2))


def _start_process(processes: int) -> None:
    """A seed's process: its share of the cores, and Ctrl-C left to `hpo verify`, which ends the
    pool (Ctrl-C at a terminal reaches every process of the group; each printed a traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    share_cpu(processes)


def _train_seed_in_process(cfg: TrainConfig, seed: int, device: str, data_dir: Optional[Path]) -> SeedRun:
    # data.load keeps what it loaded for the process's next seed
    return train_seed(cfg, seed, data_mod.load(cfg.data, pick_device(device), data_dir))
