"""The training loop: plain PyTorch over on-device tensors. It knows nothing of Optuna."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from hpo import models
from hpo.average import WeightAverage
from hpo.config import TrainConfig
from hpo.data import Splits, batch_sizes, check_subsets
from hpo.datasets import Dataset
from hpo.errors import CannotWrite, UserError
from hpo.optim import make_optimizer, make_schedule
from hpo.steps import EagerStep, StaticStep, lr_on_device, static_reason

EVAL_BATCH = {"cuda": 2000, "cpu": 256}  # large batches starve a CPU's caches; the GPU wants them


@functools.cache
def bf16_autocast(device_type: str) -> bool:
    """bf16 autocast where the hardware does bf16 natively: CUDA GPUs from Ampere on (A100, H100;
    not a T4 or V100, where torch would emulate it), and CPUs with AMX or AVX-512 BF16 (about
    1.3x faster steps on the 2-core dev machine, BENCHMARKS.md). Elsewhere fp32 stays: fp16 with
    a loss scaler is not worth its failure modes for nets this small. HPO_BF16=0 turns it off."""
    if os.environ.get("HPO_BF16") == "0":
        return False
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return device_type == "cpu" and (" amx_bf16" in flags or " avx512_bf16" in flags)


class Diverged(ArithmeticError):
    """The training loss became NaN or infinite."""


def out_of_memory(error: BaseException) -> bool:
    """A device out of memory: CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(error))


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    train_loss: float
    test_accuracy: float  # fraction in [0, 1]
    seconds: float
    lr: float             # learning rate of the epoch's last step
    restored: bool = False  # read back from a checkpoint, not trained in this call
    packed: int = 1         # trials trained at once in this epoch (hpo.packed); `seconds` is this one's share


def background(dataset: Dataset, device: torch.device | str = "cpu") -> float | torch.Tensor:
    """A black pixel after normalization: what augmentation fills the uncovered corners with.
    One number for one channel; a [1, C, 1, 1] tensor on `device` for colour."""
    values = [-mean / std for mean, std in zip(dataset.mean, dataset.std)]
    return values[0] if len(values) == 1 else torch.tensor(values, device=device).view(1, -1, 1, 1)


class RawPixels(torch.nn.Module):
    """`model` fed [0, 1] pixels (`data.normalize: false`): the splits stay standardized on the
    device, and this maps each batch back before the model sees it, so every caller that
    evaluates the trained model on the standardized splits gets what the model trained on."""

    def __init__(self, model: torch.nn.Module, dataset: Dataset):
        super().__init__()
        self.model = model
        shape = (1, len(dataset.mean), 1, 1)
        self.register_buffer("mean", torch.tensor(dataset.mean).view(shape), persistent=False)
        self.register_buffer("std", torch.tensor(dataset.std).view(shape), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x * self.std + self.mean)


def check_data(cfg: TrainConfig, data: Splits) -> None:
    """The config asks for the dataset that is loaded, and subsets no larger than its splits."""
    if cfg.data.dataset != data.dataset.name:
        raise UserError(f"the config trains on dataset {cfg.data.dataset!r} but {data.dataset.name!r} is loaded; "
                        f"load {cfg.data.dataset!r} (data.load) or set data.dataset: {data.dataset.name}")
    if cfg.data.path is not None and Path(cfg.data.path).expanduser().resolve() != Path(data.dataset.path or ""):
        raise UserError(f"the config trains on {cfg.data.dataset} data at {cfg.data.path} but {data.dataset.path} "
                        f"is loaded; load the config's data (data.load(cfg.data)) or set data.path: {data.dataset.path}")
    check_subsets(cfg.data, {"train": data.train_y.numel(), "test": data.test_y.numel()},
                  data.dataset.path or data.dataset.name)


def train(cfg: TrainConfig, data: Splits, *, report: Optional[Callable[[int, float], None]] = None,
          on_step: Optional[Callable[[int, int], None]] = None,
          on_epoch: Optional[Callable[[EpochResult], None]] = None,
          checkpoint: Optional[Path] = None,
          on_done: Optional[Callable[[torch.nn.Module], None]] = None) -> list[EpochResult]:
    """Train `cfg` on `data` (on its device); call `report(epoch, accuracy)` after each epoch,
    and `on_done(model)` once training ends (a last evaluation elsewhere, say).

    `on_step(step, steps)` follows each optimizer step and `on_epoch(result)` each epoch,
    for progress displays. Whatever `report` raises (a pruning signal, say) ends training
    and propagates unchanged. With `checkpoint`, every finished epoch is saved there, and a
    run that finds one resumes after its last epoch, first replaying `on_epoch` and
    `report` for the restored epochs (marked `restored`). With `cfg.ema`, the moving average of
    the weights (hpo.average) is what each epoch evaluates and what `on_done` gets.
    """
    device = data.device
    cuda = device.type == "cuda"
    bf16 = bf16_autocast(device.type)
    torch.manual_seed(cfg.seed)
    check_data(cfg, data)
    if cfg.data.train_subset or cfg.data.test_subset:
        data = data.subset(cfg.data.train_subset, cfg.data.test_subset)
    fill = background(data.dataset, device)
    model = models.build(cfg.model, shape=data.dataset.shape, classes=data.dataset.classes)
    if cfg.data.normalize is False:
        model = RawPixels(model, data.dataset)
    model = model.to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    n = data.train_y.numel()
    static = static_reason(cfg, device) is None  # hpo.steps: one CUDA graph a step
    # the static step pads its last batch; the eager one lets a last image join the batch before
    steps = math.ceil(n / cfg.batch_size) if static else len(batch_sizes(n, cfg.batch_size))
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), fused=static,
                               moving_momentum=cfg.schedule.name == "onecycle")
    schedule = make_schedule(cfg.schedule, optimizer, epochs=cfg.epochs, steps_per_epoch=steps)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    average = WeightAverage(model, cfg.ema) if cfg.ema else None
    kept = average.model if average else model  # what is evaluated, and handed to on_done
    history = restore(checkpoint, cfg, model, optimizer, schedule, generator, average) if checkpoint else []
    lr_on_device(optimizer, device if static else None)
    stepper = (StaticStep(model, optimizer, data, cfg, fill, bf16, capture=cuda) if static
               else EagerStep(model, optimizer, data, cfg, fill, bf16))
    for result in history:
        if on_epoch:
            on_epoch(result)
        if report:
            report(result.epoch, result.test_accuracy)

    for epoch in range(len(history) + 1, cfg.epochs + 1):
        started = time.perf_counter()
        # --- one pass over a fresh permutation; the loss stays on the device until the end
        model.train()
        stepper.begin_epoch(generator)
        for step in range(1, steps + 1):
            lr = stepper.lr() if step == steps else None  # the rate the epoch's last step uses
            stepper.step()
            if average:
                average.update()
            schedule.step()
            if on_step:
                on_step(step, steps)
        # --- one host sync per epoch: the mean loss, then the test accuracy
        train_loss = (stepper.loss_sum / n).item()
        if not math.isfinite(train_loss):
            raise Diverged(f"training loss is {train_loss} in epoch {epoch}")
        accuracy = evaluate(kept, data.test_x, data.test_y)
        if cuda:
            torch.cuda.synchronize(device)
        history.append(EpochResult(epoch, train_loss, accuracy, time.perf_counter() - started, float(lr)))
        if checkpoint:
            save(checkpoint, cfg, model, optimizer, schedule, generator, history, average)
        if on_epoch:
            on_epoch(history[-1])
        if report:
            report(epoch, accuracy)
    if on_done:
        on_done(kept)
    return history


def save(path: Path, cfg, model, optimizer, schedule, generator, history: list[EpochResult],
         average: Optional[WeightAverage] = None) -> None:
    """Everything a resumed run needs to continue exactly, written atomically."""
    state = {
        "config": cfg.to_dict(),
        # copies: a packed member's weights are views into its group's stacked tensors (hpo.packed),
        # and torch.save writes a view's whole storage
        "model": {name: tensor.clone() for name, tensor in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "history": [dataclasses.asdict(r) for r in history],
    }
    if average:
        state["average"] = average.state_dict()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        for last in (False, True):  # a run that ends beside this one removes the folder once it is empty
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                handle = open(tmp, "wb")
            except FileNotFoundError:
                if last:
                    raise
                continue
            with handle:
                torch.save(state, handle)
            break
        os.replace(tmp, path)
    except Exception as error:  # a full disk, a folder made read-only: its half-written file must not stay
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise CannotWrite(f"the checkpoint {path}", error, folder=path.parent) from None


EXECUTION = ("fused", "capturable", "foreach", "differentiable")  # how an optimizer runs, not what it computes


def load_optimizer(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """The checkpoint's hyperparameters and state, run the way this run built its optimizer:
    torch's load_state_dict takes the saved groups whole, so a trial checkpointed by a GPU's
    graphed step (capturable Adam, fused SGD) and retried on a CPU worker would run capturable
    Adam on a CPU (which torch refuses), and one from a CPU worker would keep a GPU's step out of
    its graph. Each group keeps its own execution flags; Adam's step counts go where those want
    them (on the parameter's device, in float32, for capturable or fused), as torch places them."""
    built = [{key: group[key] for key in EXECUTION if key in group} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, flags in zip(optimizer.param_groups, built):
        group.update(flags)
        if group.get("capturable") or group.get("fused"):
            for p in group["params"]:
                step = optimizer.state.get(p, {}).get("step")
                if isinstance(step, torch.Tensor):
                    optimizer.state[p]["step"] = step.to(device=p.device, dtype=torch.float32)


def restore(path: Path, cfg, model, optimizer, schedule, generator,
            average: Optional[WeightAverage] = None) -> list[EpochResult]:
    """Load `path` into the run's objects; the restored history, or [] when there is none."""
    if not path.exists():
        return []
    try:
        state = torch.load(path, map_location=generator.device, weights_only=True)
        ours = state["config"] == cfg.to_dict()
        # the same config, on data that changed since (another class count): a net of other shapes,
        # which load_state_dict would half load before it raised
        fits = {k: v.shape for k, v in state["model"].items()} == {k: v.shape for k, v in model.state_dict().items()}
    except Exception:  # damaged (a torn copy, a full disk, a stranger's file): the retry starts afresh
        path.unlink(missing_ok=True)
        return []
    if not ours or not fits:  # a checkpoint of some other run: start afresh
        return []
    model.load_state_dict(state["model"])
    load_optimizer(optimizer, state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    if average:
        average.load_state_dict(state["average"])
    generator.set_state(state["generator"].cpu())
    torch.set_rng_state(state["torch_rng"].cpu())
    if state["cuda_rng"]:
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
    return [EpochResult(**{**r, "restored": True}) for r in state["history"]]


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of `model` on (x, y), as a fraction."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    start = 0
    for size in batch_sizes(len(y), EVAL_BATCH.get(x.device.type, 256)):  # never one image alone: a squeeze()
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16_autocast(x.device.type)):
            logits = model(x[start : start + size])
        correct += (logits.argmax(1) == y[start : start + size]).sum()
        start += size
    return correct.item() / len(y)


def share_cpu(processes: int) -> None:
    """In one of `processes` processes that train on this machine's CPU at once, take an equal
    share of the cores (at least one thread), unless OMP_NUM_THREADS says otherwise (several runs
    on one machine): two processes of two threads each on two cores thrash."""
    if processes > 1 and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(cpu_share(processes))


def cpu_share(processes: int) -> int:
    """The torch threads each of `processes` processes training on the CPU at once has (share_cpu)."""
    if processes > 1 and not os.environ.get("OMP_NUM_THREADS"):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, cores // processes)
    return torch.get_num_threads()


WORKER_MEMORY = 1 << 30  # what one worker process may take: torch, the dataset on the device's host side, a model
# worker processes per GPU for `--workers auto`, from BENCHMARKS.md ("The GPU check", H200,
# 2026-12-04: budget-8k's base net, epochs per minute of the machine against one process): without
# CUDA MPS the processes take turns on the GPU (8: 1.81x, 16: 1.89x); under MPS they run side by
# side (8: 2.34x, 16: 4.21x)
GPU_WORKERS, GPU_WORKERS_MPS = 8, 16


def auto_workers(device: torch.device) -> int:
    """`--workers auto`: on a CPU, one single-thread worker per core (two one-thread trials at
    once finish more epochs per minute than one two-thread trial: BENCHMARKS.md, "CPU workers");
    on CUDA, GPU_WORKERS per GPU, or GPU_WORKERS_MPS where CUDA MPS runs; never more than the
    CPU cores (each worker's launches need one) or the free memory hold."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    wanted = cores
    if device.type == "cuda":
        wanted = (GPU_WORKERS_MPS if mps_running() else GPU_WORKERS) * max(1, torch.cuda.device_count())
    return max(1, min(wanted, cores, free_memory() // WORKER_MEMORY))


def mps_running() -> bool:
    """Whether a CUDA MPS control daemon listens where this process's CUDA clients would look."""
    pipe = os.environ.get("CUDA_MPS_PIPE_DIRECTORY") or "/tmp/nvidia-mps"
    return Path(pipe, "control").exists()


def mps_hint(device: torch.device) -> str | None:
    """For `--workers auto` on CUDA without an MPS daemon: what starting one would buy, in one line."""
    if device.type != "cuda" or mps_running():
        return None
    return (f"--workers auto: CUDA MPS is not running, so the workers take turns on each GPU ({GPU_WORKERS} a GPU); "
            f"start its daemon (nvidia-cuda-mps-control -d) and --workers auto runs {GPU_WORKERS_MPS} a GPU side by side "
            "(on an H200: 4.2x one worker's epochs per minute, against 1.8x without MPS; BENCHMARKS.md)")


def free_memory() -> int:
    """Bytes of memory free for new processes (MemAvailable); plenty where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 1 << 62


def pick_device(name: str = "auto") -> torch.device:
    """`auto` takes CUDA where there is one and the CPU otherwise; `cuda` insists."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name}: no CUDA device is visible here; use cpu or auto")  # the flag's or hpo.train's
    return torch.device(name)
