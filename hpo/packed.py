"""Several trials of one shape trained at once, as one stacked model (as HFTA fuses models).

The K members share the architecture, batch size, epochs and data; each keeps its own
optimizer and schedule (any of hpo's, with its own learning rate, momentum, weight decay),
seed (initial weights, batch order, augmentation draws), dropout rates, augmentation strength
and label smoothing. Each step stacks the members' weights, runs one `torch.func.vmap`ped
forward and backward over the K batches, and steps K ordinary optimizers: on a GPU, where a
small net's step is kernel launches rather than arithmetic, K trials cost about one.

What differs from the plain loop (hpo.trainer.train): dropout masks come from the global RNG
under vmap, so a member is not bit-for-bit the trial trained alone, only the same recipe; a
member whose report raises (pruned), or whose loss is no longer finite, leaves the group and
the others go on. Checkpoints are the plain loop's, one per member, so a member's retry
resumes alone in the plain loop.
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
from hpo.augment import random_affine
from hpo.backend import OneAtATime, Outcome
from hpo.config import TrainConfig
from hpo.data import Splits, batches
from hpo.optim import make_optimizer, make_schedule
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


def shape_names(spec) -> list[str]:
    """A study's searched parameters that pack_key depends on: model keys but dropout rates,
    batch size, epochs, data."""
    return [p.name for p in spec.space.params
            if (p.key.startswith("model.") and not p.key.endswith("dropout")) or p.key in ("batch_size", "epochs")
            or p.key.startswith("data.")]


class MemberDropout(nn.Module):
    """nn.Dropout (`channels`: nn.Dropout2d) whose rate is a buffer, so that each stacked member
    drops with its own rate. Not in the state dict: the checkpoint is the plain model's."""

    def __init__(self, p: float, channels: bool):
        super().__init__()
        self.channels = channels
        self.register_buffer("p", torch.tensor(float(p)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
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


def train_group(jobs: Sequence, data: Splits) -> list:
    """Train `jobs` (backend.TrainJob, all with one pack_key) as one stacked model; one
    backend.Outcome per job, in order."""
    cfgs = [job.config for job in jobs]
    first = cfgs[0]
    device = data.device
    bf16 = packed_bf16(device.type)
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
        optimizer = make_optimizer(cfg.optimizer, model.parameters())
        members.append(Member(i, cfg, job, model, optimizer,
                              make_schedule(cfg.schedule, optimizer, epochs=cfg.epochs, steps_per_epoch=steps),
                              torch.Generator(device=device).manual_seed(cfg.seed), []))
    outcomes: list = [None] * len(jobs)
    shape = copy.deepcopy(members[0].model).to("meta")  # the layers, for functional_call; no storage
    names = [name for name, _ in shape.named_parameters()]
    buffers = {name: torch.stack([dict(m.model.named_buffers())[name] for m in members])
               for name, _ in shape.named_buffers()}

    def forward(params, buffers, x):
        return functional_call(shape, (params, buffers), (x,))

    def leave(gone: dict) -> None:
        """Members that ended (pruned, diverged, failed) leave; the others go on."""
        nonlocal members, buffers
        keep = [k for k, m in enumerate(members) if m.index not in gone]
        for m in members:
            if m.index in gone:
                outcomes[m.index] = Outcome(error=gone[m.index])
        members = [members[k] for k in keep]
        index = torch.tensor(keep, device=device)
        buffers = {name: b.index_select(0, index) for name, b in buffers.items()}

    def run_epoch(epoch: int) -> None:
        started = time.perf_counter()
        shape.train()
        loss_sums = torch.zeros(len(members), device=device)
        smoothing = torch.tensor([m.cfg.label_smoothing for m in members], device=device)
        orders = [batches(n, first.batch_size, m.generator, device) for m in members]
        for step, idx in enumerate(zip(*orders), 1):
            xs = torch.stack([random_affine(data.train_x[i], m.cfg.augment, m.generator, fill)
                              for m, i in zip(members, idx)])
            params = {name: torch.stack([p for p in ps]) for name, ps in
                      zip(names, zip(*[[p for _, p in m.model.named_parameters()] for m in members]))}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = vmap(forward, randomness="different")(params, buffers, xs)
            losses = smoothed_cross_entropy(logits.float(), torch.stack([data.train_y[i] for i in idx]), smoothing)
            for m in members:
                m.optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()  # each member's weights get its own loss's gradient only
            lrs = []
            for m in members:
                m.optimizer.step()
                lrs.append(m.optimizer.param_groups[0]["lr"])
                m.schedule.step()
            loss_sums += losses.detach() * idx[0].numel()
            for m in members:
                if m.job.on_step:
                    m.job.on_step(step, steps)
        train_losses = (loss_sums / n).tolist()
        accuracies = evaluate_group(shape, names, members, buffers, data.test_x, data.test_y)
        seconds = (time.perf_counter() - started) / len(members)  # each member's share of the epoch
        gone = {}
        for k, m in enumerate(members):
            if not math.isfinite(train_losses[k]):
                gone[m.index] = Diverged(f"training loss is {train_losses[k]} in epoch {epoch}")
                continue
            m.history.append(EpochResult(epoch, train_losses[k], accuracies[k], seconds, lrs[k], packed=len(members)))
            try:
                if m.job.checkpoint:
                    sync_buffers(m, buffers, k)
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
    for k, m in enumerate(members):
        sync_buffers(m, buffers, k)
        try:
            if m.job.on_done:
                m.job.on_done(m.model)
        except Exception as error:
            outcomes[m.index] = Outcome(error=error)
            continue
        outcomes[m.index] = Outcome(history=m.history)
    return outcomes


def smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, smoothing: torch.Tensor) -> torch.Tensor:
    """F.cross_entropy(logits[k], labels[k], label_smoothing=smoothing[k]) for every member k at
    once ([K, B, C], [K, B], [K] -> [K]): (1 - e) x the negative log-likelihood + e x the mean
    over classes of the negative log-probabilities, each averaged over the batch."""
    log_p = F.log_softmax(logits, dim=-1)
    nll = -log_p.gather(-1, labels.unsqueeze(-1)).squeeze(-1).mean(-1)
    uniform = -log_p.mean(-1).mean(-1)
    return (1 - smoothing) * nll + smoothing * uniform


def sync_buffers(member: Member, buffers: dict, k: int) -> None:
    """Copy the member's slice of the stacked buffers (BatchNorm's running statistics) into its
    own model, which is then the plain model trained alone would be."""
    own = dict(member.model.named_buffers())
    with torch.no_grad():
        for name, stacked in buffers.items():
            own[name].copy_(stacked[k])


def packed_bf16(device_type: str) -> bool:
    """bf16 autocast for a stacked model: as hpo.trainer's, but fp32 on CUDA, where vmap's
    BatchNorm refuses bf16 activations beside fp32 running statistics ("Expected running_mean to
    have type BFloat16", H200, torch 2.11, 2026-12-04)."""
    return bf16_autocast(device_type) and device_type != "cuda"


@torch.no_grad()
def evaluate_group(shape: nn.Module, names: list, members: list, buffers: dict, x: torch.Tensor,
                   y: torch.Tensor) -> list[float]:
    """Every member's top-1 accuracy on (x, y), the batches shared: one stacked forward each."""
    shape.eval()
    params = {name: torch.stack([dict(m.model.named_parameters())[name] for m in members]) for name in names}
    correct = torch.zeros(len(members), dtype=torch.long, device=x.device)
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
    the plain loop."""

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
                groups.setdefault(key, []).append(i)
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
