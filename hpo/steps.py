"""One training step, two ways: eager PyTorch, or a static step that a CUDA graph captures once
and replays (hpo.trainer picks; the loop calls either the same way).

A small net's step on a GPU is kernel launches, not arithmetic: eager PyTorch launches about 150
kernels a step for the budget-8k net (augmentation, forward, backward, optimizer), each from
Python. The static step does the same work on buffers that never move, with no host sync, so one
`CUDAGraph.replay()` launches all of it: the batch's indices come from a device-side counter into
the epoch's permutation, the learning rate is a device tensor the schedule fills in place, and
every batch has the same shape, the last one padded with repeated images whose loss weight is 0
(its gradient is the mean over its real images, as the eager step's is; BatchNorm's batch
statistics do see the repeats). Augmentation and dropout draw from the default CUDA generator,
which graphs replay safely, so a graphed run's random stream differs from an eager one's.
"""

from __future__ import annotations

import math
import os
import sys

import torch
import torch.nn.functional as F

from hpo.augment import random_affine, widths
from hpo.data import batches

WARMUP = 3  # eager steps on a side stream before the capture (cuDNN and cuBLAS set up their workspaces)
GRAPH_OPTIMIZERS = ("sgd", "adam", "adamw")


def static_reason(cfg, device: torch.device) -> str | None:
    """Why `cfg` trains eagerly on `device`; None where the static step captured in a CUDA graph
    applies. HPO_CUDA_GRAPH=0 turns it off."""
    if device.type != "cuda":
        return "not on CUDA"
    if os.environ.get("HPO_CUDA_GRAPH") == "0":
        return "HPO_CUDA_GRAPH=0"
    return recipe_reason(cfg.optimizer.name)


def recipe_reason(optimizer: str) -> str | None:
    """Why a recipe with this optimizer trains eagerly on CUDA; None: the graph takes it, with any
    schedule (one-cycle moves SGD's momentum or Adam's beta1 every step, which hpo.optim's
    GraphSGD and GraphAdam(W) read from device tensors, as they read the rate)."""
    if optimizer not in GRAPH_OPTIMIZERS:
        return f"optimizer {optimizer} (the graph takes {', '.join(GRAPH_OPTIMIZERS)})"
    return None


def eager_choices(space) -> list[str]:
    """What a study (hpo.space.SearchSpace) can give a trial that trains without the CUDA graph,
    as `optimizer NAME`: its base's optimizer and the searched choices."""
    names = {space.base["optimizer"]["name"]}
    for param in space.params:
        if param.key == "optimizer.name" and param.kind == "categorical":
            names.update(param.choices)
    return [f"optimizer {name}" for name in sorted(names) if recipe_reason(name)]


def lr_on_device(optimizer: torch.optim.Optimizer, device: torch.device | None) -> None:
    """Each group's learning rate, and GraphSGD's momentum or GraphAdam(W)'s beta1, as a device
    tensor (device) or a float (None), whatever a checkpoint left there (any other momentum or
    beta a float). Called after the schedule is built, so its base values stay floats and stepping
    it fills the tensors in place (no host sync)."""
    moving = {"lr", *getattr(optimizer, "moving", ())}  # hpo.optim's graph optimizers name theirs

    def placed(key: str, value):
        value = float(value)  # a loaded tensor: one sync, once
        return torch.tensor(value, device=device) if device is not None and key in moving else value

    for group in optimizer.param_groups:
        for key in ("lr", "momentum"):
            if key in group:
                group[key] = placed(key, group[key])
        if "betas" in group:
            group["betas"] = (placed("beta1", group["betas"][0]), float(group["betas"][1]))


def held(optimizer: torch.optim.Optimizer) -> list[dict]:
    """Each group's values held as tensors (lr_on_device): what a graph reads, for keep_held:
    `lr`, and GraphSGD's `momentum` or GraphAdam(W)'s `beta1` (the first of its `betas`)."""
    out = []
    for group in optimizer.param_groups:
        values = {key: group.get(key) for key in ("lr", "momentum")}
        values["beta1"] = group["betas"][0] if "betas" in group else None
        out.append({key: value for key, value in values.items() if isinstance(value, torch.Tensor)})
    return out


def padded(order: torch.Tensor, length: int) -> torch.Tensor:
    """`order` to `length`: its first images repeated after it (as often as a batch larger than
    the training set needs) for a static step's padded last batch."""
    return order.repeat(-(-length // order.numel()))[:length]


def keep_held(optimizer: torch.optim.Optimizer, tensors: list[dict]) -> None:
    """A schedule that assigns a float where the device tensor was (one-cycle's momentum or beta1;
    the rate in torch before 2.7 or so) would leave a graph on its first value: the tensor takes
    the value, and its place back. `tensors`: `held(optimizer)` once the values are on the device."""
    for group, kept in zip(optimizer.param_groups, tensors):
        for key, tensor in kept.items():
            if key == "beta1":  # one-cycle sets `betas` to (a float, beta2)
                if group["betas"][0] is not tensor:
                    tensor.fill_(float(group["betas"][0]))
                    group["betas"] = (tensor, *group["betas"][1:])
            elif group[key] is not tensor:
                tensor.fill_(float(group[key]))
                group[key] = tensor


class EagerStep:
    """The plain step: a batch of indices from the epoch's permutation, augmented, trained on."""

    def __init__(self, model, optimizer, data, cfg, fill, bf16: bool):
        self.model, self.optimizer, self.data, self.cfg, self.fill, self.bf16 = model, optimizer, data, cfg, fill, bf16
        self.device = data.device
        self.loss_sum = torch.zeros((), device=self.device)
        # on the device once: a step that made it would copy it from the host each time
        self.half_widths = widths(cfg.augment).to(self.device)

    def begin_epoch(self, generator: torch.Generator) -> None:
        self.batches = iter(batches(self.data.train_y.numel(), self.cfg.batch_size, generator, self.device))
        self.loss_sum = torch.zeros((), device=self.device)
        self.generator = generator

    def step(self) -> None:
        idx = next(self.batches)
        x = random_affine(self.data.train_x[idx], self.cfg.augment, self.generator, self.fill, self.half_widths)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = F.cross_entropy(self.model(x), self.data.train_y[idx], label_smoothing=self.cfg.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.loss_sum += loss.detach() * idx.numel()

    def lr(self) -> float | torch.Tensor:
        """The rate the next step uses (read before the schedule moves it)."""
        return self.optimizer.param_groups[0]["lr"]


class StaticStep(EagerStep):
    """The step on fixed buffers; with `capture`, recorded in a CUDA graph at the step after
    WARMUP and replayed from then on. Without it (a CPU, the tests) the same code runs eagerly."""

    def __init__(self, model, optimizer, data, cfg, fill, bf16: bool, *, capture: bool):
        super().__init__(model, optimizer, data, cfg, fill, bf16)
        n, size = data.train_y.numel(), cfg.batch_size
        self.n, self.size, self.steps = n, size, math.ceil(n / size)
        self.order = torch.zeros(self.steps * size, dtype=torch.long, device=self.device)
        self.weight = torch.zeros(self.steps * size, device=self.device)
        self.weight[:n] = 1.0  # the padding's loss counts for nothing
        self.offsets = torch.arange(size, device=self.device)
        self.start = torch.zeros((), dtype=torch.long, device=self.device)  # the next batch's first position
        self.capture, self.graph, self.warm = capture, None, 0
        if capture and self.device.index is not None:
            torch.cuda.set_device(self.device)  # capture and replay use the current device's streams: cuda:1's, say
        self.side = torch.cuda.Stream(self.device) if capture else None
        self.kept = held(optimizer)  # the tensors a graph reads: the rate, one-cycle's momentum or beta1

    def begin_epoch(self, generator: torch.Generator) -> None:
        order = torch.randperm(self.n, generator=generator, device=self.device)  # what the eager step draws
        self.order.copy_(padded(order, self.order.numel()))
        self.start.zero_()
        self.loss_sum.zero_()  # in place: the graph adds into this tensor

    def _step(self) -> None:
        at = self.start + self.offsets
        idx, weight = self.order.index_select(0, at), self.weight.index_select(0, at)
        # the default generator (a graph replays its draws); half-widths on the device since __init__
        x = random_affine(self.data.train_x.index_select(0, idx), self.cfg.augment, None, self.fill, self.half_widths)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=False):
            losses = F.cross_entropy(self.model(x), self.data.train_y.index_select(0, idx),
                                     label_smoothing=self.cfg.label_smoothing, reduction="none")
        count = weight.sum()
        loss = (losses.float() * weight).sum() / count
        loss.backward()
        self.optimizer.step()
        self.loss_sum += loss.detach() * count
        self.start += self.size

    def _zero(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        keep_held(self.optimizer, self.kept)
        replay_or_run(self)

    def lr(self) -> float | torch.Tensor:
        lr = self.optimizer.param_groups[0]["lr"]
        return lr.clone() if isinstance(lr, torch.Tensor) else lr


def replay_or_run(stepper) -> None:
    """One step of a static stepper (StaticStep, hpo.packed.PackedStep): the graph's replay once
    captured; before that `stepper._step()` uncaptured (no `capture`), WARMUP times on a side
    stream, then once inside the capture. A capture that fails is said on stderr, and the
    stepper goes on uncaptured."""
    if stepper.graph is not None:
        stepper.graph.replay()
        return
    stepper._zero()
    if not stepper.capture:
        stepper._step()
    elif stepper.warm < WARMUP:
        current = torch.cuda.current_stream(stepper.device)
        stepper.side.wait_stream(current)
        with torch.cuda.stream(stepper.side):
            stepper._step()
        current.wait_stream(stepper.side)
        stepper.warm += 1
    else:
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                stepper._step()
        except RuntimeError as error:  # said, not hidden: the trial goes on with the same step, uncaptured
            print(f"hpo: CUDA graph capture failed ({str(error).splitlines()[0]}); this trial trains without "
                  f"it", file=sys.stderr, flush=True)
            stepper.capture = False
            stepper._zero()
            stepper._step()
            return
        stepper.graph = graph
        graph.replay()
