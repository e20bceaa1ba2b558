"""Optimizers and learning-rate schedules from a config; nothing else."""

from __future__ import annotations

import math

import torch

from hpo.config import Optimizer, Schedule


def with_grads(optimizer: torch.optim.Optimizer):
    """Each parameter group with those of its parameters that have a gradient: what a step moves."""
    for group in optimizer.param_groups:
        params = [p for p in group["params"] if p.grad is not None]
        if params:
            yield group, params


class GraphSGD(torch.optim.SGD):
    """torch's SGD (momentum, Nesterov, L2 weight decay; no dampening) whose momentum, like its
    rate, may be a device tensor: one-cycle moves both every step, and a CUDA graph sees a moving
    value only through a tensor it reads (torch's fused SGD takes momentum as a number, fixed at
    capture). Its state is torch's `momentum_buffer`, so a checkpoint crosses to torch.optim.SGD
    and back. A handful of whole-list (foreach) operations a step instead of the fused kernel's one."""

    moving = ("momentum",)  # besides the rate: what hpo.steps.lr_on_device puts on the device

    @torch.no_grad()
    def step(self, closure=None):
        for group, params in with_grads(self):
            lr, momentum = group["lr"], group["momentum"]
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            bufs = [self.state[p].get("momentum_buffer") for p in params]
            if all(b is not None for b in bufs):
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, grads)
            else:  # a first step: each new buffer is the gradient, as torch's is
                for i, (p, g) in enumerate(zip(params, grads)):
                    if bufs[i] is None:
                        bufs[i] = self.state[p]["momentum_buffer"] = g.detach().clone()
                    else:
                        bufs[i].mul_(momentum).add_(g)
            if group["nesterov"]:
                updates = torch._foreach_add(grads, torch._foreach_mul(bufs, momentum))
            else:
                updates = bufs
            torch._foreach_sub_(params, torch._foreach_mul(updates, lr))
        return None


class _MovingBeta1:
    """torch's Adam (L2 weight decay) or AdamW (decoupled) arithmetic and state (`step`,
    `exp_avg`, `exp_avg_sq`; no amsgrad) whose rate and beta1 may be device tensors: one-cycle
    moves beta1 every step, and a CUDA graph sees a moving value only through a tensor it reads.
    Built capturable, so its step counts live on the device (float32) and a checkpoint is torch's.
    The bias corrections use the group's first step count (its parameters step together)."""

    decoupled = False
    moving = ("beta1",)  # besides the rate: the first of `betas`, on the device (hpo.steps.lr_on_device)

    @torch.no_grad()
    def step(self, closure=None):
        for group, params in with_grads(self):
            lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in params:
                state = self.state[p]
                if not state:  # a first step: as torch's capturable Adam starts
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            grads = [p.grad for p in params]
            steps = [self.state[p]["step"] for p in params]
            exp_avgs = [self.state[p]["exp_avg"] for p in params]
            exp_avg_sqs = [self.state[p]["exp_avg_sq"] for p in params]
            torch._foreach_add_(steps, 1)
            if decay and self.decoupled:
                torch._foreach_mul_(params, 1 - lr * decay)
            elif decay:
                grads = torch._foreach_add(grads, params, alpha=decay)
            torch._foreach_mul_(exp_avgs, beta1)
            torch._foreach_add_(exp_avgs, torch._foreach_mul(grads, 1 - beta1))
            torch._foreach_mul_(exp_avg_sqs, beta2)
            torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
            # the bias corrections in float64, as torch's eager Adam has them (Python floats): in
            # float32, 1 - 0.999 ** 1 is off by 1.3e-5 of itself, and Adam's updates carry that on
            # (then float32, the lists' dtype: a foreach kernel's fast path wants one)
            t = steps[0].double()
            step_size = (lr / (1 - (beta1.double() if isinstance(beta1, torch.Tensor) else beta1) ** t)).float()
            denom = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_div_(denom, (1 - beta2 ** t).sqrt().float())
            torch._foreach_add_(denom, eps)
            updates = torch._foreach_div(exp_avgs, denom)
            torch._foreach_mul_(updates, step_size)
            torch._foreach_sub_(params, updates)
        return None


class GraphAdam(_MovingBeta1, torch.optim.Adam):
    pass


class GraphAdamW(_MovingBeta1, torch.optim.AdamW):
    decoupled = True


def make_optimizer(cfg: Optimizer, params, *, fused: bool = False, moving_momentum: bool = False) -> torch.optim.Optimizer:
    """`fused`: a step with no host sync that takes its learning rate as a device tensor, for
    hpo.steps.StaticStep (SGD and Adam/AdamW only): fused SGD; Adam capturable on a GPU, fused on
    a CPU. With `moving_momentum` too (one-cycle), SGD is GraphSGD and Adam/AdamW GraphAdam(W),
    whose momentum or beta1 may be a device tensor as well. The arithmetic is the same as the
    default's."""
    params = list(params)
    betas = (0.9 if cfg.beta1 is None else cfg.beta1, 0.999 if cfg.beta2 is None else cfg.beta2)
    common = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if fused and moving_momentum and cfg.name == "sgd":
        return GraphSGD(params, momentum=0.9 if cfg.momentum is None else cfg.momentum, nesterov=bool(cfg.nesterov),
                        **common)
    if fused and moving_momentum and cfg.name in ("adam", "adamw"):
        return (GraphAdamW if cfg.name == "adamw" else GraphAdam)(params, betas=betas, capturable=True, **common)
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
        # torch divides by each phase's length in steps, less one: under about 1.5 steps of warm-up (a
        # run of 4 steps at pct_start 0.25) that is zero, a ZeroDivisionError. So short a run warms up
        # for 1.5 steps, and anneals for at least half a step
        pct = min(max(cfg.pct_start, 1.5 / total), 1 - 0.5 / total) if total > 1 else cfg.pct_start
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total, pct_start=pct)
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
