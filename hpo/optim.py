"""Optimizers and learning-rate schedules from a config; nothing else."""

from __future__ import annotations

import math

import torch

from hpo.config import Optimizer, Schedule


def make_optimizer(cfg: Optimizer, params, *, fused: bool = False) -> torch.optim.Optimizer:
    """`fused`: a step with no host sync that takes its learning rate as a device tensor, for
    hpo.steps.StaticStep (SGD and Adam/AdamW only): fused SGD; Adam capturable on a GPU, fused on
    a CPU. The arithmetic is the same as the default's."""
    params = list(params)
    betas = (0.9 if cfg.beta1 is None else cfg.beta1, 0.999 if cfg.beta2 is None else cfg.beta2)
    common = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if fused:
        on_gpu = bool(params) and params[0].device.type == "cuda"
        common.update({"capturable": True} if on_gpu and cfg.name != "sgd" else {"fused": True})
    if cfg.name == "sgd":
        momentum = 0.9 if cfg.momentum is None else cfg.momentum
        return torch.optim.SGD(params, momentum=momentum, nesterov=bool(cfg.nesterov), **common)
    if cfg.name == "adam":
        return torch.optim.Adam(params, betas=betas, **common)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, betas=betas, **common)
    if cfg.name == "nadam":
        return torch.optim.NAdam(params, betas=betas, **common)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, momentum=cfg.momentum or 0.0, **common)
    if cfg.name == "adabelief":
        from pytorch_optimizer import AdaBelief  # noqa: PLC0415 - a maintained AdaBelief (seed 001's winner)

        return AdaBelief(params, betas=betas, weight_decouple=True, **common)
    raise ValueError(f"unknown optimizer {cfg.name!r}")  # config validation makes this unreachable


def make_schedule(cfg: Schedule, optimizer: torch.optim.Optimizer, *, epochs: int, steps_per_epoch: int):
    """A scheduler stepped once per optimizer step, so every schedule is smooth in steps."""
    total = epochs * steps_per_epoch
    if cfg.name == "onecycle":
        max_lr = [group["lr"] for group in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total, pct_start=cfg.pct_start)
    if cfg.name == "step":
        every = cfg.step_size * steps_per_epoch
        factor = lambda step: cfg.gamma ** (step // every)  # noqa: E731
    elif cfg.name == "cosine":
        warmup = int(cfg.warmup_epochs * steps_per_epoch)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    else:
        factor = lambda step: 1.0  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
