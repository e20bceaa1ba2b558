#!/usr/bin/env python
"""How many operations one training step dispatches, by part: what a CUDA graph replays.

On a GPU a small net's step costs its kernels, a few microseconds each, not their arithmetic
(BENCHMARKS.md, "The GPU check": 469 replays of about 0.66 ms for ~150 kernels). This runs the
static step (hpo.steps.StaticStep, the one a graph captures; here uncaptured, on the CPU) of a
study's base net and counts the aten operations each part of it dispatches, views and other
metadata-only operations left out. An operation is about one kernel on a GPU (a convolution or
BatchNorm may be a few, an elementwise one is one), so the counts compare two versions of the
step without a GPU. Counted on the CPU: its dropout is hpo's byte mask (5 operations a layer;
`nn.Dropout` on CUDA is 1 forward and 1 backward).

    python bench/step_ops.py                              # budget-8k's base net
    python bench/step_ops.py --study studies/cnn.yaml
"""

from __future__ import annotations

import argparse
import collections
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import yaml  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import hpo.trainer  # noqa: E402
from hpo import steps  # noqa: E402
from hpo import data as data_mod  # noqa: E402
from hpo.config import parse_config  # noqa: E402

# operations that move no data: no kernel on a GPU
METADATA = {"view", "_unsafe_view", "select", "slice", "unsqueeze", "squeeze", "expand", "permute", "transpose",
            "t", "detach", "as_strided", "alias", "unbind", "split", "split_with_sizes", "lift_fresh", "reshape",
            "_reshape_alias", "view_as", "resolve_conj", "resolve_neg", "empty", "empty_like", "new_empty",
            "new_empty_strided", "empty_strided"}


class Count(TorchDispatchMode):
    """Counts the data-moving aten operations dispatched inside it, under the part named last."""

    def __init__(self):
        super().__init__()
        self.part = "rest"
        self.ops: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in METADATA and not str(func).startswith("profiler."):
            self.ops[self.part][name] += 1
        return func(*args, **(kwargs or {}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=Path("studies/budget-8k.yaml"), help="whose base net")
    parser.add_argument("--top", type=int, default=8, help="operations listed per part (default 8)")
    args = parser.parse_args()
    base = yaml.safe_load(args.study.read_text())["base"]
    base.update(epochs=1, data={**base.get("data", {}), "train_subset": 4 * base.get("batch_size", 128),
                                "test_subset": 100})
    cfg = parse_config(base)
    counter = Count()

    def part(name, fn):
        def wrapped(*a, **k):
            before, counter.part = counter.part, name
            try:
                return fn(*a, **k)
            finally:
                counter.part = before
        return wrapped

    counted = []

    class Counted(steps.StaticStep):
        def _step(self):
            counter.ops.clear()
            counter.part = "forward, loss, backward, bookkeeping"
            with counter:
                super()._step()
            counted.append({k: collections.Counter(v) for k, v in counter.ops.items()})

    make_optimizer = hpo.trainer.make_optimizer

    def counted_optimizer(*a, **k):
        opt = make_optimizer(*a, **k)
        opt.step = types.MethodType(part("optimizer", type(opt).step), opt)  # a method: schedules wrap it
        return opt

    hpo.trainer.static_reason = lambda cfg, device: None  # the graph's step: fused optimizer, rate a tensor
    hpo.trainer.StaticStep = Counted
    hpo.trainer.make_optimizer = counted_optimizer
    steps.random_affine = part("augmentation", steps.random_affine)
    hpo.trainer.train(cfg, data_mod.load(cfg.data, "cpu"))
    last = counted[-1]  # a steady step: the optimizer's state exists
    total = sum(sum(c.values()) for c in last.values())
    print(f"\n## Operations per static step: {args.study} base net, batch {cfg.batch_size}, "
          f"torch {torch.__version__}, CPU (uncaptured)\n")
    print("| part | operations | most frequent |")
    print("| --- | ---: | --- |")
    for name, c in sorted(last.items(), key=lambda kv: -sum(kv[1].values())):
        common = ", ".join(f"{op} {n}" for op, n in c.most_common(args.top))
        print(f"| {name} | {sum(c.values())} | {common} |")
    print(f"| **all** | **{total}** | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
