"""An exponential moving average of a model's weights: what the trainer evaluates and keeps in
place of the last step's weights when a config sets `ema` (the decay per optimizer step).

Written here rather than taken from torch.optim.swa_utils.AveragedModel, which asks the device
`n_averaged > 0` on every update: a host sync per step, which a CUDA graph step exists to avoid.
This one is a single fused lerp over every floating tensor (weights and BatchNorm statistics, so
the averaged net normalizes with statistics of its own era), its count kept on the host.
"""

from __future__ import annotations

import copy
import itertools

import torch


def floating(module: torch.nn.Module) -> list[torch.Tensor]:
    return [t for t in itertools.chain(module.parameters(), module.buffers()) if t.is_floating_point()]


class WeightAverage:
    """`model`'s weights averaged over its optimizer steps, step i's weights w_i weighted by
    decay ** (t - i): after step t the average is sum_i decay^(t-i) w_i / sum_i decay^(t-i), the
    bias correction Adam gives its moments. The untrained starting weights get no weight, and no
    warm-up setting is needed: early on it is the mean of the steps so far, later the last
    ~1 / (1 - decay) steps dominate. Each step moves the average toward the weights by
    (1 - decay) / (1 - decay^t)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.steps = 0
        self.model = copy.deepcopy(model).requires_grad_(False)  # what evaluate() and on_done() get
        self._source, self._target = floating(model), floating(self.model)

    @torch.no_grad()
    def update(self) -> None:
        self.steps += 1
        torch._foreach_lerp_(self._target, self._source, (1.0 - self.decay) / (1.0 - self.decay ** self.steps))

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.steps = int(state["steps"])
