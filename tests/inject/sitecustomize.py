"""Test-only fault injection: a CUDA out-of-memory error inside a training step, on the CPU, and a
trial clock that does not depend on how fast the machine is.

tests/test_faults.py puts this folder on PYTHONPATH, so every `hpo` process of that test,
spawned workers included, imports it at start-up; production code knows nothing of it.

HPO_TEST_OOM_AT_RUN=K   the K-th training run in each process raises torch.OutOfMemoryError
                        at its second step, holding a 64 MB "activation" as the real one would
HPO_TEST_OOM_LOG=FILE   one JSON line per training run: the run, the pid, and whether the
                        failed run's 64 MB had been freed when this run began
HPO_TEST_CLOCK_STEP=S   each trial's clock (what budget.trial_seconds is measured on) reads 0 when
                        the trial starts and S seconds later at every look: a step, not a second
"""

import importlib.abc
import importlib.util
import json
import os
import sys
import weakref

AT_RUN = int(os.environ.get("HPO_TEST_OOM_AT_RUN", "0"))
LOG = os.environ.get("HPO_TEST_OOM_LOG")
CLOCK_STEP = float(os.environ.get("HPO_TEST_CLOCK_STEP", "0"))


def _patch_clock(objective_module) -> None:
    hooks = objective_module.TrialHooks
    init = hooks.__init__

    def with_stepping_clock(self, *args, **kwargs):
        ticks = iter(range(10**9))
        kwargs["clock"] = lambda: CLOCK_STEP * next(ticks)
        init(self, *args, **kwargs)

    hooks.__init__ = with_stepping_clock


def _patch(train_module) -> None:
    import torch

    import hpo.steps as steps_module  # the training step (imported by hpo.trainer) augments each batch

    state = {"run": 0, "steps": 0, "held": None}
    train, random_affine = train_module.train, steps_module.random_affine

    def counting_train(*args, **kwargs):
        state["run"] += 1
        state["steps"] = 0
        held = state["held"]
        if LOG:
            with open(LOG, "a") as log:
                log.write(json.dumps({"run": state["run"], "pid": os.getpid(),
                                      "oom_memory_freed": None if held is None else held() is None}) + "\n")
        return train(*args, **kwargs)

    def failing_affine(*args, **kwargs):
        state["steps"] += 1
        if state["run"] == AT_RUN and state["steps"] == 2:
            activation = torch.ones(16 * 2**20)  # 64 MB, referenced from this frame of the traceback
            state["held"] = weakref.ref(activation)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 MiB (injected by the test)")
        return random_affine(*args, **kwargs)

    train_module.train = counting_train
    steps_module.random_affine = failing_affine


class _AfterImport(importlib.abc.MetaPathFinder):
    """Patches a module of hpo right after it is executed, before anything imports names from it."""

    def __init__(self, name: str, patch):
        self.name, self.patch = name, patch

    def find_spec(self, name, path, target=None):
        if name != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            self.patch(module)

        spec.loader.exec_module = exec_module
        return spec


if AT_RUN:
    sys.meta_path.insert(0, _AfterImport("hpo.trainer", _patch))
if CLOCK_STEP:
    sys.meta_path.insert(0, _AfterImport("hpo.objective", _patch_clock))
