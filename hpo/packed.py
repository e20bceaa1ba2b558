"""Several trials of one shape trained at once, as one stacked model (as HFTA fuses models).

The K members share the architecture, batch size, epochs and data; each keeps its own
optimizer and schedule (any of hpo's, with its own learning rate, momentum, weight decay),
seed (initial weights, batch order, augmentation draws), dropout rates, augmentation strength
and label smoothing. Their weights are stacked once into [K, ...] tensors, each member's own
parameters becoming views of its slice; each step runs one `torch.func.vmap`ped forward and
backward over the K batches (one warp augments all K x B images) and steps the K optimizers.
On CUDA that whole step is captured once in a CUDA graph (PackedStep): on a GPU, where a small
net's step is kernel launches rather than arithmetic, K trials' step is then one launch.

What differs from the plain loop (hpo.trainer.train): dropout masks come from the global RNG
under vmap, so a member is not bit-for-bit the trial trained alone, only the same recipe (and
on CUDA, as for one trial's graph, augmentation draws come from the default generator too); a
member whose report raises (pruned), or whose loss is no longer finite, leaves the group and
the others go on, stacked anew. Checkpoints are the plain loop's, one per member, so a member's
retry resumes alone in the plain loop.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from hpo import models
from hpo.augment import uniforms, warp, widths
from hpo.backend import OneAtATime, Outcome
from hpo.config import TrainConfig
from hpo.data import Splits
from hpo.optim import make_optimizer, make_schedule
from hpo.steps import held, keep_held, lr_on_device, padded, replay_or_run, static_reason
from hpo.trainer import EVAL_BATCH, Diverged, EpochResult, RawPixels, background, bf16_autocast, check_data, save

DROPOUT_FIELDS = ("dropout", "conv_dropout", "flat_dropout")


def pack_key(cfg: TrainConfig) -> Optional[str]:
    """Configs with the same key train together: the same layers (dropout rates may differ, not
    whether a dropout layer is there), batch size, epochs and data. None: a user's own model
    (hpo.usermodel), which vmap is not known to handle, and a config that averages its weights
    (`ema`: hpo.average keeps one net's copy), train alone."""
    if hasattr(cfg.model, "as_config") or cfg.ema:
        return None
    model = cfg.to_dict()["model"]
    for key in DROPOUT_FIELDS:
        if key in model:
            model[key] = bool(model[key])
    return json.dumps([model, cfg.batch_size, cfg.epochs, cfg.to_dict().get("data")], sort_keys=True)


def never_packs(spec) -> Optional[str]:
    """What keeps every trial of `spec` out of a pack (pack_key is None for each), or None: where
    `--pack K` could only tie K trials to one shape and then train them one at a time."""
    searched = {p.key for p in spec.space.params}
    base = spec.space.base
    if "module" in base.get("model", {}) and not searched & {"model", "model.module", "model.preset", "model.family"}:
        return f"your own model ({base['model']['module']}) is not one of hpo's model families, which packing stacks"
    if always_averages(spec):
        return "every trial averages its weights (ema), which packing does not do"
    return None


def always_averages(spec) -> bool:
    """Whether every trial of `spec` has `ema`: the base's, or a searched one that is always drawn
    and never off (a range, or choices without a null or 0)."""
    ps = [p for p in spec.space.params if p.key == "ema"]
    if any(p.kind == "categorical" and any(not c for c in p.choices) for p in ps):
        return False
    return bool(spec.space.base.get("ema")) or any(not p.when for p in ps)


def shape_names(spec) -> list[str]:
    """A study's searched parameters that pack_key depends on: model keys but dropout rates,
    batch size, epochs, data."""
    return [p.name for p in spec.space.params
            if (p.key.startswith("model.") and not p.key.endswith("dropout")) or p.key in ("batch_size", "epochs")
            or p.key.startswith("data.")]


class MemberDropout(nn.Module):
    """nn.Dropout (`channels`: nn.Dropout2d) whose rate is a buffer, so that each stacked member
    drops with its own rate. Not in the state dict: the checkpoint is the plain model's. On a CPU
    an element-wise mask is hpo.models.Dropout's byte mask (each member's rate on the same 1/256
    grid as alone, and a fraction of the Bernoulli draw's time)."""

    def __init__(self, p: float, channels: bool):
        super().__init__()
        self.channels = channels
        self.register_buffer("p", torch.tensor(float(p)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        if x.device.type == "cpu" and not self.channels:
            n = x.numel()  # one member's, under vmap; each member draws its own bits
            bits = torch.randint(-2**63, 2**63 - 1, ((n + 7) // 8,), dtype=torch.int64, device=x.device)
            drop = torch.round(256 * self.p).clamp(max=255)  # as models.byte_dropout
            return x * ((bits.view(torch.uint8)[:n].view(x.shape) >= drop).to(x.dtype) * (256 / (256 - drop)))
        shape = (*x.shape[:2], *([1] * (x.dim() - 2))) if self.channels else x.shape
        keep = torch.rand(shape, device=x.device, dtype=x.dtype) >= self.p
        return x * keep / (1 - self.p)


def member_dropout(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, (nn.Dropout, nn.Dropout2d)):
            setattr(module, name, MemberDropout(child.p, isinstance(child, nn.Dropout2d)))
        else:
            member_dropout(child)
    return module


@dataclass
class Member:
    index: int                # the job's place in the list handed over
    cfg: TrainConfig
    job: object               # a backend.TrainJob
    model: nn.Module          # its weights are the leaves its optimizer steps
    optimizer: torch.optim.Optimizer
    schedule: object
    generator: torch.Generator
    history: list


class PackedStep:
    """One step of the members as one stacked model, on fixed buffers (as hpo.steps.StaticStep
    for one net): with `capture`, recorded once in a CUDA graph and replayed from then on, so K
    trials' step is one launch; without it (a CPU, the tests) the same code runs eagerly.

    The stacked weights and buffers [K, ...] are the leaves autograd sees; each member's own
    parameters and buffers are made views of its slice (`.data`), so its own optimizer (any of
    hpo's, fused or capturable where the graph needs it) steps the stacked weights in place, and
    its model, checkpoint and optimizer state are always the trial's own. A member's batch order
    and augmentation draws come from its own generator, as alone, where the step runs uncaptured;
    a graph draws augmentation from the default CUDA generator (as StaticStep does). The last
    partial batch is padded with repeated images whose loss weight is 0."""

    def __init__(self, members: list, shape: nn.Module, data: Splits, fill, bf16: bool, batch_size: int, *,
                 capture: bool):
        self.members, self.data, self.fill, self.bf16 = members, data, fill, bf16
        device = self.device = data.device
        k = len(members)
        self.params = {name: alias([dict(m.model.named_parameters())[name] for m in members]).requires_grad_()
                       for name, _ in shape.named_parameters()}
        self.buffers = {name: alias([dict(m.model.named_buffers())[name] for m in members])
                        for name, _ in shape.named_buffers()}
        self.own = [(dict(m.model.named_parameters())[name], name, i) for i, m in enumerate(members)
                    for name in self.params]
        n = self.n = data.train_y.numel()
        self.size, padded_n = batch_size, math.ceil(n / batch_size) * batch_size
        self.order = torch.zeros(k, padded_n, dtype=torch.long, device=device)
        self.weight = torch.zeros(padded_n, device=device)
        self.weight[:n] = 1.0
        self.offsets = torch.arange(batch_size, device=device)
        self.start = torch.zeros((), dtype=torch.long, device=device)
        self.loss_sum = torch.zeros(k, device=device)
        self.smoothing = torch.tensor([m.cfg.label_smoothing for m in members], device=device)
        augments = [m.cfg.augment for m in members]
        self.augmented = [a.enabled for a in augments]
        self.half_widths = torch.cat([widths(a) for a in augments], dim=1).repeat_interleave(batch_size, 1).to(device)
        self.capture, self.graph, self.warm = capture, None, 0
        if capture and device.index is not None:
            torch.cuda.set_device(device)
        self.side = torch.cuda.Stream(device) if capture else None
        self.kept = [held(m.optimizer) for m in members]
        self.forward = vmap(lambda params, buffers, x: functional_call(shape, (params, buffers), (x,)),
                            randomness="different")

    def begin_epoch(self) -> None:
        """Each member's permutation of the training images, from its own generator (as alone)."""
        for i, m in enumerate(self.members):
            self.order[i].copy_(padded(torch.randperm(self.n, generator=m.generator, device=self.device),
                                       self.order.shape[1]))
        self.start.zero_()
        self.loss_sum.zero_()
        self.taken = 0  # steps so far this epoch, on the host (uncaptured: each draw's size)

    def _draws(self) -> torch.Tensor:
        """[6, K x B] augmentation draws: uncaptured, each member's own from its generator (none
        for a member without augmentation, as alone); in a graph, one draw from the default one."""
        size = self.size
        if self.capture:
            return uniforms(len(self.members) * size, None, self.device)
        real = min(size, self.n - self.taken * size)  # a padded last batch draws for its real images only
        draws = torch.zeros(6, len(self.members) * size, device=self.device)  # zeros: no augmentation, padding
        for i, (m, on) in enumerate(zip(self.members, self.augmented)):
            if on:
                draws[:, i * size : i * size + real] = uniforms(real, m.generator, self.device)
        return draws

    def _step(self) -> None:
        k, size = len(self.members), self.size
        at = self.start + self.offsets
        idx = self.order.index_select(1, at)  # [K, B]
        weight = self.weight.index_select(0, at)
        flat = idx.flatten()
        x = self.data.train_x.index_select(0, flat)
        if any(self.augmented):
            x = warp(x, self._draws(), self.half_widths, self.fill)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=False):
            logits = self.forward(self.params, self.buffers, x.view(k, size, *x.shape[1:]))
        labels = self.data.train_y.index_select(0, flat).view(k, size)
        losses = smoothed_cross_entropy(logits.float(), labels, self.smoothing, weight)
        losses.sum().backward()  # each member's weights get its own loss's gradient only
        for param, name, i in self.own:
            param.grad = self.params[name].grad[i]
        for m in self.members:
            m.optimizer.step()
        self.loss_sum += losses.detach() * weight.sum()
        self.start += size
        self.taken += 1

    def _zero(self) -> None:
        for stacked in self.params.values():
            stacked.grad = None
        for m in self.members:
            m.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        for m, tensors in zip(self.members, self.kept):
            keep_held(m.optimizer, tensors)
        replay_or_run(self)


def alias(tensors: list) -> torch.Tensor:
    """The tensors stacked into one [K, ...]; each then a view of its slice (same values)."""
    stacked = torch.stack([t.detach() for t in tensors])
    for i, t in enumerate(tensors):
        t.data = stacked.data[i]
    return stacked


def train_group(jobs: Sequence, data: Splits) -> list:
    """Train `jobs` (backend.TrainJob, all with one pack_key) as one stacked model; one
    backend.Outcome per job, in order. On CUDA the step is one CUDA graph where every member's
    recipe allows it (hpo.steps.static_reason: SGD, Adam or AdamW, any schedule)."""
    cfgs = [job.config for job in jobs]
    first = cfgs[0]
    device = data.device
    bf16 = packed_bf16(device.type)
    capture = all(static_reason(cfg, device) is None for cfg in cfgs)
    for cfg in cfgs:
        check_data(cfg, data)
    if first.data.train_subset or first.data.test_subset:
        data = data.subset(first.data.train_subset, first.data.test_subset)
    fill = background(data.dataset, device)
    n = data.train_y.numel()
    steps = math.ceil(n / first.batch_size)

    members = []
    for i, (cfg, job) in enumerate(zip(cfgs, jobs)):
        torch.manual_seed(cfg.seed)  # the same initial weights as the trial trained alone
        model = models.build(cfg.model, shape=data.dataset.shape, classes=data.dataset.classes)
        if cfg.data.normalize is False:
            model = RawPixels(model, data.dataset)
        model = member_dropout(model).to(device)
        optimizer = make_optimizer(cfg.optimizer, model.parameters(), fused=capture,
                                   moving_momentum=cfg.schedule.name == "onecycle")
        schedule = make_schedule(cfg.schedule, optimizer, epochs=cfg.epochs, steps_per_epoch=steps)
        lr_on_device(optimizer, device if capture else None)
        members.append(Member(i, cfg, job, model, optimizer, schedule,
                              torch.Generator(device=device).manual_seed(cfg.seed), []))
    outcomes: list = [None] * len(jobs)
    shape = copy.deepcopy(members[0].model).to("meta")  # the layers, for functional_call; no storage

    def stepper() -> Optional[PackedStep]:
        return PackedStep(members, shape, data, fill, bf16, first.batch_size, capture=capture) if members else None

    step = stepper()

    def leave(gone: dict) -> None:
        """Members that ended (pruned, diverged, failed) leave; the others go on, stacked anew."""
        nonlocal members, step
        for m in members:
            if m.index in gone:
                outcomes[m.index] = Outcome(error=gone[m.index])
        members = [m for m in members if m.index not in gone]
        step = stepper()

    def run_epoch(epoch: int) -> None:
        started = time.perf_counter()
        shape.train()
        step.begin_epoch()
        for s in range(1, steps + 1):
            if s == steps:  # the rate each member's last step uses
                lrs = [m.optimizer.param_groups[0]["lr"] for m in members]
                lrs = [lr.clone() if isinstance(lr, torch.Tensor) else lr for lr in lrs]
            step.step()
            for m in members:
                m.schedule.step()
            for m in members:
                if m.job.on_step:
                    m.job.on_step(s, steps)
        train_losses = (step.loss_sum / n).tolist()
        accuracies = evaluate_group(shape, step.params, step.buffers, data.test_x, data.test_y)
        seconds = (time.perf_counter() - started) / len(members)  # each member's share of the epoch
        gone = {}
        for k, m in enumerate(members):
            if not math.isfinite(train_losses[k]):
                gone[m.index] = Diverged(f"training loss is {train_losses[k]} in epoch {epoch}")
                continue
            m.history.append(EpochResult(epoch, train_losses[k], accuracies[k], seconds, float(lrs[k]),
                                         packed=len(members)))
            try:
                if m.job.checkpoint:
                    save(m.job.checkpoint, m.cfg, m.model, m.optimizer, m.schedule, m.generator, m.history)
                if m.job.on_epoch:
                    m.job.on_epoch(m.history[-1])
                if m.job.report:
                    m.job.report(epoch, accuracies[k])
            except Exception as error:  # pruned, or its database outage: it alone leaves
                gone[m.index] = error
        if gone:
            leave(gone)
    try:
        for epoch in range(1, first.epochs + 1):
            if not members:
                break
            run_epoch(epoch)
    except Exception as error:  # out of memory, a time limit from on_step: the whole group ends
        leave({m.index: error for m in members})
    for m in members:
        try:
            if m.job.on_done:
                m.job.on_done(m.model)
        except Exception as error:
            outcomes[m.index] = Outcome(error=error)
            continue
        outcomes[m.index] = Outcome(history=m.history)
    return outcomes


def smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, smoothing: torch.Tensor,
                           weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """F.cross_entropy(logits[k], labels[k], label_smoothing=smoothing[k]) for every member k at
    once ([K, B, C], [K, B], [K] -> [K]): (1 - e) x the negative log-likelihood + e x the mean
    over classes of the negative log-probabilities, each averaged over the batch (with `weight`
    [B], its weighted mean: 0 for a padded image)."""
    log_p = F.log_softmax(logits, dim=-1)
    per_image = ((1 - smoothing.unsqueeze(-1)) * -log_p.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
                 + smoothing.unsqueeze(-1) * -log_p.mean(-1))
    if weight is None:
        return per_image.mean(-1)
    return (per_image * weight).sum(-1) / weight.sum()


def packed_bf16(device_type: str) -> bool:
    """bf16 autocast for a stacked model: as hpo.trainer's, but fp32 on CUDA, where vmap's
    BatchNorm refuses bf16 activations beside fp32 running statistics ("Expected running_mean to
    have type BFloat16", H200, torch 2.11, 2026-12-04)."""
    return bf16_autocast(device_type) and device_type != "cuda"


@torch.no_grad()
def evaluate_group(shape: nn.Module, params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Every member's top-1 accuracy on (x, y), the batches shared: one stacked forward each."""
    shape.eval()
    params = {name: p.detach() for name, p in params.items()}
    correct = torch.zeros(next(iter(params.values())).shape[0], dtype=torch.long, device=x.device)
    size = EVAL_BATCH.get(x.device.type, 256)
    for start in range(0, len(y), size):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=packed_bf16(x.device.type)):
            logits = vmap(lambda p, b, xb: functional_call(shape, (p, b), (xb,)), in_dims=(0, 0, None))(
                params, buffers, x[start : start + size])
        correct += (logits.argmax(-1) == y[start : start + size]).sum(-1)
    return (correct.double() / len(y)).tolist()


class Packed:
    """A worker's backend that trains up to `size` claimed trials at once: those with one
    pack_key as a stacked model, the rest (and any resumed from a checkpoint) one at a time by
    the plain loop. On CUDA the trials a graph can take (hpo.steps.static_reason) are grouped
    apart from the rest (NAdam, say), so that one such member does not keep its
    whole group out of the graph."""

    def __init__(self, size: int):
        self.group_size = size

    def run(self, jobs: Sequence, data: Splits) -> list:
        groups: dict = {}
        alone = []
        for i, job in enumerate(jobs):
            key = pack_key(job.config)
            if key is None or (job.checkpoint and job.checkpoint.exists()):
                alone.append(i)
            else:
                groups.setdefault((key, static_reason(job.config, data.device) is None), []).append(i)
        outcomes: list = [None] * len(jobs)
        for members in groups.values():
            if len(members) == 1:
                alone.extend(members)
                continue
            for i, outcome in zip(members, train_group([jobs[i] for i in members], data)):
                outcomes[i] = outcome
        for i, outcome in zip(sorted(alone), OneAtATime().run([jobs[i] for i in sorted(alone)], data)):
            outcomes[i] = outcome
        return outcomes
