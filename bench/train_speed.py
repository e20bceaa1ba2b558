#!/usr/bin/env python
"""Seconds per MNIST epoch: hpo's on-device trainer against the loop the seeds wrote.

Both loops train the same network (hpo.models.build), optimizer, batch size and augmentation
on the same device, in one process, with their repeats interleaved so that a busy machine
slows both alike. The seed loop is what seeds 000, 002 and 003 ran: a Dataset that converts
and augments one image at a time, a shuffling DataLoader, `.to(device)` per batch, and a test
pass through a DataLoader of 1000 images.

    python bench/train_speed.py --device cpu
    python bench/train_speed.py --device cuda --json artifacts/train_speed.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # hpo is not installed, only checked out

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from hpo import datasets, models
from hpo.data import ensure, load, stratified_indices
from hpo.config import parse_config
from hpo.idx import read_split
from hpo.optim import make_optimizer
from hpo.trainer import bf16_autocast, evaluate, train as hpo_train

try:  # seed 002's exact transforms, where torchvision works (it is optional, and often broken on CPU torch)
    from PIL import Image
    from torchvision import transforms as T
except Exception:
    T = None

MNIST = datasets.get("mnist")
MEAN, STD = MNIST.mean[0], MNIST.std[0]
ROTATE, AFFINE_DEGREES = 7.0, 15.0  # seed 002: RandomRotation((-7, 7)), RandomAffine(degrees=15)
TEST_BATCH = 1000                   # the seeds' --test-batch-size


def rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """One random rotation of one image [1, 1, 28, 28]: what torchvision does for a tensor image."""
    angle = math.radians(torch.empty(1).uniform_(-degrees, degrees).item())
    cos, sin = math.cos(angle), math.sin(angle)
    grid = F.affine_grid(torch.tensor([[[cos, -sin, 0.0], [sin, cos, 0.0]]]), [1, 1, 28, 28], align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", align_corners=False)  # torchvision's default interpolation


class SeedMNIST(Dataset):
    """One image at a time from uint8 tensors, converted and augmented per sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: bool):
        self.images, self.labels, self.augment = images, labels, augment
        if T is not None:
            warps = [T.RandomRotation((-ROTATE, ROTATE), fill=(1,)), T.RandomAffine(degrees=AFFINE_DEGREES)]
            self.transform = T.Compose((warps if augment else []) + [T.ToTensor(), T.Normalize((MEAN,), (STD,))])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image, label = self.images[i], int(self.labels[i])
        if T is not None:  # torchvision's MNIST hands each transform a PIL image
            return self.transform(Image.fromarray(image.numpy())), label
        x = image.float().div(255).view(1, 1, 28, 28)
        if self.augment:  # two warps, as the two transforms do
            x = rotate(rotate(x, ROTATE), AFFINE_DEGREES)
        return x.sub(MEAN).div(STD)[0], label


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seed_epoch(model, optimizer, train_loader, test_loader, device, max_steps=None) -> tuple[float, float]:
    """(train seconds, test seconds) of one epoch of the seeds' loop; `max_steps` cuts it short."""
    started = time.perf_counter()
    model.train()
    for step, (x, y) in enumerate(train_loader):
        if max_steps is not None and step >= max_steps:
            break
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        loss.item()  # the seeds' progress bars read the loss every step (a host sync on CUDA)
    sync(device)
    trained = time.perf_counter()
    model.eval()
    correct = 0
    with torch.no_grad():
        for step, (x, y) in enumerate(test_loader):
            if max_steps is not None and step >= max_steps:
                break
            x, y = x.to(device), y.to(device)
            correct += (model(x).argmax(1) == y).sum().item()
    sync(device)
    return trained - started, time.perf_counter() - trained


def hpo_epochs(cfg, data, device, graph: bool = True) -> list[tuple[float, float]]:
    """(train seconds, test seconds) per epoch of hpo.trainer.train.

    EpochResult.seconds covers the train pass and the test evaluation. The evaluation part is
    timed apart: hpo.trainer.evaluate on a model built as the trainer builds it (cost does not
    depend on the weights), so only the trainer's public signature is relied on.
    """
    os.environ["HPO_CUDA_GRAPH"] = "1" if graph else "0"  # hpo.steps: the whole step as one CUDA graph, or eager
    try:
        history = hpo_train(cfg, data)
    finally:
        os.environ.pop("HPO_CUDA_GRAPH")
    model = models.build(cfg.model).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    sync(device)
    started = time.perf_counter()
    evaluate(model, data.test_x, data.test_y)  # ends with a host sync (.item())
    test_s = time.perf_counter() - started
    return [(r.seconds - test_s, test_s) for r in history]


# the graphed step's settings a GPU check compares (--variants): bf16 autocast (hpo's default
# where the GPU does bf16) or fp32 (convolutions then TF32, torch's default), and cuDNN's choice
# of convolution algorithm by heuristics (torch's default) or by timing each once (benchmark);
# on a small net's step of ~130 kernels neither is known to pay: measured, not assumed
VARIANTS = {"fp32": ("fp32", False, False), "cudnn_benchmark": ("cudnn.benchmark", True, True),
            "fp32_cudnn_benchmark": ("fp32 + cudnn.benchmark", False, True)}


@contextlib.contextmanager
def settings(bf16: bool, cudnn_benchmark: bool):
    """hpo's bf16 choice (HPO_BF16) and torch.backends.cudnn.benchmark for one run, then back."""
    before = os.environ.get("HPO_BF16"), torch.backends.cudnn.benchmark
    if not bf16:
        os.environ["HPO_BF16"] = "0"
    torch.backends.cudnn.benchmark = cudnn_benchmark
    bf16_autocast.cache_clear()
    try:
        yield
    finally:
        if before[0] is None:
            os.environ.pop("HPO_BF16", None)
        else:
            os.environ["HPO_BF16"] = before[0]
        torch.backends.cudnn.benchmark = before[1]
        bf16_autocast.cache_clear()


def torch_dropout(module: torch.nn.Module) -> torch.nn.Module:
    """The seeds' nets used torch's own nn.Dropout: hpo's cheaper CPU mask (models.Dropout) goes."""
    for name, child in module.named_children():
        if isinstance(child, models.Dropout):
            setattr(module, name, torch.nn.Dropout(child.p))
        else:
            torch_dropout(child)
    return module


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor()
    try:
        model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model or 'CPU'}, {torch.get_num_threads()} torch threads"


def stats(runs: list[tuple[float, float]], images: int) -> dict:
    epoch = [tr + te for tr, te in runs]
    train = [tr for tr, _ in runs]
    return {"epoch_s": epoch, "train_s": train, "mean": statistics.mean(epoch),
            "std": statistics.stdev(epoch) if len(epoch) > 1 else 0.0, "min": min(epoch), "max": max(epoch),
            "train_mean": statistics.mean(train), "test_mean": statistics.mean(epoch) - statistics.mean(train),
            "images_per_s": images / statistics.mean(train)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--preset", default="mnistnet2", choices=list(models.PRESETS))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", default="sgd", help="hpo optimizer name (sgd: momentum 0.9)")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--epochs", type=int, default=1, help="timed epochs per repeat, after a warm-up")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed-repeats", type=int, metavar="N",
                   help="run the seeds' loop in the first N repeats only (default: every one); on a GPU it "
                        "takes 50x hpo's time, and the GPU check keeps to its minutes")
    p.add_argument("--train-subset", type=int, help="train on this many images (a quick check); default all 60,000")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="seed 002's rotation 7 + affine 15 degrees (default on)")
    p.add_argument("--data-dir", type=Path, metavar="ROOT", help="data root; MNIST is in ROOT/mnist (default: hpo's cache)")
    p.add_argument("--workers", type=int, help="seed DataLoader workers (default: the seeds' 1 on cuda, 0 on cpu)")
    p.add_argument("--variants", action="store_true",
                   help="also time hpo's step in fp32 and with cudnn.benchmark, each and both (the graphed "
                        "step on CUDA; on a CPU only fp32 applies); interleaved with the other loops")
    p.add_argument("--json", type=Path, help="write the raw numbers here")
    args = p.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    workers = args.workers if args.workers is not None else (1 if cuda else 0)

    cfg = parse_config({
        "model": {"preset": args.preset}, "optimizer": {"name": args.optimizer, "lr": args.lr},
        "batch_size": args.batch_size, "epochs": args.epochs,
        "augment": {"rotate": ROTATE, "affine_degrees": AFFINE_DEGREES} if args.augment else {},
        "data": {"train_subset": args.train_subset},
    })
    folder = ensure(MNIST, args.data_dir)
    data = load(MNIST, device, args.data_dir)
    (train_x, train_y), (test_x, test_y) = (read_split(MNIST, folder, split) for split in ("train", "test"))
    train_x, test_x = train_x[:, 0], test_x[:, 0]  # [N, 28, 28]: what the seeds' Dataset hands to PIL
    keep = stratified_indices(train_y.long(), args.train_subset, 0, classes=MNIST.classes)  # the subset hpo trains on
    # the seeds' loader options: shuffle everywhere, and on CUDA pin_memory next to the workers
    loader = dict(num_workers=workers, pin_memory=cuda, persistent_workers=workers > 0)
    train_loader = DataLoader(SeedMNIST(train_x[keep], train_y[keep], args.augment),
                              batch_size=args.batch_size, shuffle=True, **loader)
    test_loader = DataLoader(SeedMNIST(test_x, test_y, False),
                             batch_size=TEST_BATCH, **loader)
    images = len(keep)

    def seed_run(max_steps=None) -> list[tuple[float, float]]:
        torch.manual_seed(cfg.seed)
        model = torch_dropout(models.build(cfg.model)).to(device)
        optimizer = make_optimizer(cfg.optimizer, model.parameters())
        return [seed_epoch(model, optimizer, train_loader, test_loader, device, max_steps) for _ in range(args.epochs)]

    # warm-up: kernels, allocator, autotuning and loader workers, a few steps each
    warm = parse_config({**cfg.to_dict(), "epochs": 1,
                         "data": {"train_subset": min(60_000, 8 * args.batch_size), "test_subset": 2 * TEST_BATCH}})
    hpo_epochs(warm, data, device)
    if cuda:
        hpo_epochs(warm, data, device, graph=False)
    seed_run(max_steps=8)

    load_before = os.getloadavg()[0]  # other processes on a small machine swamp the numbers: record them
    runs: dict[str, list[tuple[float, float]]] = {"hpo": [], "seed": []}
    loops = [("hpo", lambda: hpo_epochs(cfg, data, device)), ("seed", seed_run)]
    if cuda:  # the graphed step is hpo's default there; its eager step beside it says what the graph gives
        runs["hpo_eager"] = []
        loops.append(("hpo_eager", lambda: hpo_epochs(cfg, data, device, graph=False)))
    variants = {name: v for name, v in VARIANTS.items() if cuda or not v[2]} if args.variants else {}
    default_bf16 = bf16_autocast(device.type)
    for name, (_, bf16, benchmark) in variants.items():
        if bf16 and not default_bf16:
            continue  # the device does not do bf16: hpo never autocasts there
        try:
            with settings(bf16, benchmark):  # its warm-up: cuDNN's timing of each convolution, once a process
                hpo_epochs(warm, data, device)
        except Exception as error:  # a variant the device refuses costs its row, not P1 and P2
            print(f"variant {VARIANTS[name][0]} failed in its warm-up, left out: {error!r}", file=sys.stderr)
            continue
        runs[f"hpo_{name}"] = []

        def variant(bf16=bf16, benchmark=benchmark):
            with settings(bf16, benchmark):
                return hpo_epochs(cfg, data, device)

        loops.append((f"hpo_{name}", variant))
    seed_repeats = args.repeats if args.seed_repeats is None else max(1, min(args.seed_repeats, args.repeats))
    for r in range(args.repeats):  # interleaved, so background load hits every loop
        for name, run in loops:
            if name == "seed" and r >= seed_repeats:
                continue
            epochs = run()
            runs[name].append((statistics.mean(e[0] for e in epochs), statistics.mean(e[1] for e in epochs)))
            print(f"repeat {r + 1}/{args.repeats} {name}: {sum(runs[name][-1]):.2f} s/epoch", file=sys.stderr)

    result = {name: stats(v, images) for name, v in runs.items()}
    ratio = result["seed"]["mean"] / result["hpo"]["mean"]
    best_ratio = result["seed"]["min"] / result["hpo"]["min"]  # fastest repeats: the least disturbed by other load
    aug = (f"rotate {ROTATE:g} + affine {AFFINE_DEGREES:g} deg" if args.augment else "none")
    aug_impl = "torchvision on PIL" if T is not None else "torch ops per image (no torchvision)"
    meta = {
        "device": device_name(device), "torch": torch.__version__, "preset": args.preset,
        "params": models.count_params(models.build(cfg.model)), "batch_size": args.batch_size,
        "optimizer": f"{args.optimizer} lr {args.lr:g}", "augment": aug, "seed_augment_impl": aug_impl,
        "workers": workers, "train_images": images, "test_images": len(test_y),
        "epochs": args.epochs, "repeats": args.repeats, "default_bf16": default_bf16, "seed_repeats": seed_repeats, "date": datetime.date.today().isoformat(),
        "load_average": [load_before, os.getloadavg()[0]],
    }

    rows = [("hpo.train (on-device batches" + (", CUDA graph)" if cuda else ")"), result["hpo"]),
            (f"seed loop (DataLoader, {workers} workers)", result["seed"])]
    if cuda:
        rows.append(("hpo.train, eager step", result["hpo_eager"]))
    measured = [name for name in VARIANTS if f"hpo_{name}" in runs]
    rows += [(f"hpo.train, {VARIANTS[name][0]}", result[f"hpo_{name}"]) for name in measured]
    print(f"\n{'loop':<36} {'s/epoch':>8} {'± std':>6} {'min–max':>14} {'train s':>8} {'test s':>7} {'train img/s':>12}")
    for label, s in rows:
        print(f"{label:<36} {s['mean']:>8.2f} {s['std']:>6.2f} {s['min']:>7.2f}–{s['max']:<6.2f} "
              f"{s['train_mean']:>8.2f} {s['test_mean']:>7.2f} {s['images_per_s']:>12,.0f}")
    print(f"\nratio seed / hpo, s/epoch: {ratio:.2f}x on the means, {best_ratio:.2f}x on the fastest repeats")
    if cuda:
        print(f"ratio hpo eager / hpo CUDA graph: {result['hpo_eager']['mean'] / result['hpo']['mean']:.2f}x on the means")
    if measured:
        default = ("bf16" if default_bf16 else "fp32") + (", cudnn heuristics" if cuda else "")
        print(f"hpo's default ({default}) s/epoch / the variant's: " + ", ".join(
            f"{VARIANTS[name][0]} {result['hpo']['mean'] / result[f'hpo_{name}']['mean']:.2f}x" for name in measured)
              + " (over 1: the variant is faster)")
    print("s/epoch = train pass + test pass (10,000 images), means over repeats; img/s = train images / train s")
    print(f"{meta['device']} | torch {meta['torch']} | {args.preset} ({meta['params']:,} params) | batch {args.batch_size} | "
          f"{meta['optimizer']} | augment {aug} (seed: {aug_impl}) | {images:,} train images | "
          f"{args.repeats} x {args.epochs} epoch" + (f" (the seeds' loop {seed_repeats})" if seed_repeats < args.repeats
                                                     else "") + f" | {meta['date']}")
    if any(s["max"] > 1.2 * s["min"] for s in result.values()):
        print(f"noisy: repeats differ by over 20% (1-min load average {load_before:.1f} before, "
              f"{meta['load_average'][1]:.1f} after); re-run on a quiet machine")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**meta, "ratio": ratio, "best_ratio": best_ratio, "results": result}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
