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
from hpo.errors import UserError
from hpo.limits import MAX_SEED
from hpo.processes import stop_fork_server, worker_context
from hpo.trainer import Diverged, pick_device, share_cpu, train


@dataclass(frozen=True)
class SeedRun:
    seed: int
    final: float        # test accuracy after the last epoch: the number that counts
    best: float         # the best epoch's, picked after the fact: shown, never reported as the result
    best_epoch: int
    seconds: float


@dataclass(frozen=True)
class DivergedSeed:
    seed: int
    reason: str         # "training loss is nan in epoch 2": the seed has no accuracy to count


@dataclass(frozen=True)
class Verification:
    n_params: int
    epochs: int
    runs: tuple[SeedRun, ...]                  # the seeds that trained to the end: what the mean is over
    diverged: tuple[DivergedSeed, ...] = ()    # the seeds whose loss blew up: a config fragile under seeds

    @property
    def mean(self) -> float:
        return statistics.fmean(r.final for r in self.runs)

    @property
    def std(self) -> Optional[float]:
        """Sample standard deviation of the final accuracies; None for one seed, which has no spread
        (0 would claim a config that gives the same accuracy under every seed)."""
        return statistics.stdev(r.final for r in self.runs) if len(self.runs) > 1 else None

    def as_dict(self) -> dict:
        return {"n_params": self.n_params, "epochs": self.epochs, "mean": self.mean if self.runs else None,
                "std": self.std if self.runs else None, "runs": [asdict(r) for r in self.runs],
                "diverged": [asdict(d) for d in self.diverged]}


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for aa in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                   -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function (Numerical Recipes' betai)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def t975(df: float) -> float:
    """Student's t at 97.5% (a two-sided 95% interval) for `df` degrees of freedom, fractional as
    Welch's are: where the upper tail, I_{df/(df+t^2)}(df/2, 1/2) / 2, is 0.025, by bisection.
    (Until 2026-12-07 df was rounded down to a table's whole number: 12.7 instead of 4.3 at df 1.99.)"""
    low, high = 0.0, 1e6
    for _ in range(100):
        mid = (low + high) / 2
        if 0.5 * betainc(df / 2, 0.5, df / (df + mid * mid)) > 0.025:
            low = mid
        else:
            high = mid
    return (low + high) / 2


@dataclass(frozen=True)
class Comparison:
    """This verification's final accuracies against an earlier one's: the difference of the means
    and its 95% interval by Welch's t (unequal spreads, few seeds). A difference whose interval
    holds 0 is within the seeds' noise, however it looks. Where no seed of either side differs
    from the others, the noise is unknown, not zero: there is no interval (None) and no verdict
    of "beyond"."""
    difference: float
    low: Optional[float]
    high: Optional[float]

    @property
    def verdict(self) -> str:
        if self.low is None or self.high is None:
            return ("not judged: every seed of each side gave the same accuracy, so the seeds' noise is unknown; "
                    "compare more seeds, or seeds scored on more test images")
        if self.low > 0:
            return "higher, beyond the seeds' noise"
        if self.high < 0:
            return "lower, beyond the seeds' noise"
        return "within the seeds' noise"

    def as_dict(self) -> dict:
        interval = None if self.low is None or self.high is None else [self.low, self.high]
        return {"difference": self.difference, "interval95": interval, "verdict": self.verdict}


def compare(ours: Sequence[float], theirs: Sequence[float]) -> Comparison:
    """Welch's 95% interval for mean(ours) - mean(theirs); each needs two runs or more."""
    if len(ours) < 2 or len(theirs) < 2:
        raise ValueError("a comparison needs two seeds or more on each side")
    diff = statistics.fmean(ours) - statistics.fmean(theirs)
    a, b = statistics.variance(ours) / len(ours), statistics.variance(theirs) / len(theirs)
    if a + b == 0:  # no spread on either side: Welch's t is undefined, and a few equal seeds are not proof of none
        return Comparison(diff, None, None)
    df = (a + b) ** 2 / (a * a / (len(ours) - 1) + b * b / (len(theirs) - 1))
    half = t975(df) * math.sqrt(a + b)
    return Comparison(diff, diff - half, diff + half)


def check_seeds(cfg: TrainConfig, seeds: int) -> None:
    """UserError where `seeds` seeds from the config's go past MAX_SEED: before any training."""
    if cfg.seed + seeds - 1 > MAX_SEED:
        raise UserError(f"seeds {cfg.seed}..{cfg.seed + seeds - 1} go past the largest seed, {MAX_SEED:,}; "
                        f"give the config a seed up to {MAX_SEED - seeds + 1:,}")


def verify(cfg: TrainConfig, *, seeds: int, n_params: int, device: str = "auto", data_dir: Optional[Path] = None,
           workers: int = 1, on_seed: Optional[Callable[[SeedRun | DivergedSeed], None]] = None) -> Verification:
    """Train `cfg` once per seed (`cfg.seed`, `cfg.seed + 1`, ...) on the same data; `on_seed` is
    called as each one ends. A seed whose loss diverges is one DivergedSeed, and the others go on. `workers` > 1 trains that many seeds at once, each in a process of
    its own that loads the data itself; on the CPU the cores are split between them (two
    one-thread processes finish two seeds sooner than one two-thread process finishes them in
    turn: BENCHMARKS.md). The result lists the runs in seed order whichever ends first."""
    check_seeds(cfg, seeds)
    seed_list = range(cfg.seed, cfg.seed + seeds)
    runs = []
    if workers <= 1:
        data = data_mod.load(cfg.data, pick_device(device), data_dir)
        for seed in seed_list:
            runs.append(attempt_seed(cfg, seed, data))
            if on_seed:
                on_seed(runs[-1])
    else:
        pick_device(device)                 # a missing CUDA device is one line here, not one per process
        data_mod.ensure(cfg.data, data_dir)  # fetched and checked once, before the processes read it
        processes = min(workers, seeds)
        # Pool, not ProcessPoolExecutor: leaving the block terminates the processes, so an error
        # (or Ctrl-C) ends the command at once instead of after the others finish
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
    runs.sort(key=lambda r: r.seed)
    return Verification(n_params, cfg.epochs, tuple(r for r in runs if isinstance(r, SeedRun)),
                        tuple(r for r in runs if isinstance(r, DivergedSeed)))


def train_seed(cfg: TrainConfig, seed: int, data: Splits) -> SeedRun:
    history = train(replace(cfg, seed=seed), data)
    best = max(history, key=lambda r: r.test_accuracy)
    return SeedRun(seed, history[-1].test_accuracy, best.test_accuracy, best.epoch,
                   round(sum(r.seconds for r in history), 2))


def attempt_seed(cfg: TrainConfig, seed: int, data: Splits) -> SeedRun | DivergedSeed:
    try:
        return train_seed(cfg, seed, data)
    except Diverged as error:
        return DivergedSeed(seed, str(error))


def _start_process(processes: int) -> None:
    """A seed's process: its share of the cores, and Ctrl-C left to `hpo verify`, which ends the
    pool (Ctrl-C at a terminal reaches every process of the group; each printed a traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    share_cpu(processes)


def _train_seed_in_process(cfg: TrainConfig, seed: int, device: str,
                           data_dir: Optional[Path]) -> SeedRun | DivergedSeed:
    # data.load keeps what it loaded for the process's next seed
    return attempt_seed(cfg, seed, data_mod.load(cfg.data, pick_device(device), data_dir))
