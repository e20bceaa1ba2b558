"""`hpo verify`: re-train one config with several seeds and report the final epoch as mean ± std.

One lucky run proves nothing: a config's number is its final-epoch test accuracy over seeds
(`cfg.seed`, `cfg.seed + 1`, ...), never the best epoch picked after the fact (shown beside it).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, replace
from typing import Callable, Optional

from hpo.config import TrainConfig
from hpo.data import Splits
from hpo.trainer import train


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


def verify(cfg: TrainConfig, data: Splits, *, seeds: int, n_params: int,
           on_seed: Optional[Callable[[SeedRun], None]] = None) -> Verification:
    """Train `cfg` once per seed, one after another, on the same data."""
    runs = []
    for seed in range(cfg.seed, cfg.seed + seeds):
        history = train(replace(cfg, seed=seed), data)
        best = max(history, key=lambda r: r.test_accuracy)
        run = SeedRun(seed, history[-1].test_accuracy, best.test_accuracy, best.epoch,
                      round(sum(r.seconds for r in history), 2))
        runs.append(run)
        if on_seed:
            on_seed(run)
    return Verification(n_params, cfg.epochs, tuple(runs))
