"""The trial backend: how a worker trains the trials it claimed. A seam with one implementation.

A worker asks its backend how many trials it trains at once (`group_size`), claims that many,
and hands them over as `TrainJob`s: a config plus the hooks that report each epoch to Optuna
(which may prune: the hook raises `optuna.TrialPruned`). The backend returns one `Outcome` per
job: the epoch history, or the exception that ended it. `OneAtATime` trains one trial per
process; a backend that trains a group of same-shaped trials at once as one stacked model (as
HFTA fuses models) fits the same protocol: a member whose hook raises leaves the group, the
others go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence

from hpo.config import TrainConfig
from hpo.data import Splits
from hpo.trainer import EpochResult, train


@dataclass(frozen=True)
class TrainJob:
    config: TrainConfig
    report: Callable[[int, float], None]           # after each epoch; raises to stop the trial
    on_epoch: Callable[[EpochResult], None]
    on_step: Optional[Callable[[int, int], None]] = None
    checkpoint: Optional[Path] = None              # resume from it, and save every epoch to it
    on_done: Optional[Callable] = None             # the trained model, once: a last evaluation


@dataclass(frozen=True)
class Outcome:
    history: Optional[list[EpochResult]] = None
    error: Optional[BaseException] = None           # what ended the trial early, if anything


class TrialBackend(Protocol):
    group_size: int

    def run(self, jobs: Sequence[TrainJob], data: Splits) -> list[Outcome]: ...


class OneAtATime:
    """Each job in turn, by the plain training loop."""

    group_size = 1

    def run(self, jobs: Sequence[TrainJob], data: Splits) -> list[Outcome]:
        outcomes = []
        for job in jobs:
            try:
                history = train(job.config, data, report=job.report, on_epoch=job.on_epoch, on_step=job.on_step,
                                checkpoint=job.checkpoint, on_done=job.on_done)
            except Exception as error:  # a pruning signal, a diverged loss, out of memory, a database outage
                outcomes.append(Outcome(error=error))
            else:
                outcomes.append(Outcome(history=history))
        return outcomes
