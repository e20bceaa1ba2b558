"""Your own model: `model: {module: "package.module:factory", <keyword arguments>}`.

The factory is any callable returning a `torch.nn.Module` that takes [B, C, H, W] images to
[B, classes] logits. It is imported by name (an installed package, a folder on PYTHONPATH, or
the working folder: every worker on every machine imports it the same way), called with the
config's keyword arguments, and, where its signature has them, `input_shape=(C, H, W)` and
`num_classes=K` from the dataset. Its keyword defaults that are plain values fill the config, so a study can search
them (`model.width: {int: [8, 32]}`) and an export writes them out.

A study file that names a module runs that module's code: treat it as code. Commands that only
read a study (`hpo studies`, `export`, `report`, `dashboard`) never import it.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from hpo.errors import ConfigError

TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
FROM_DATA = ("input_shape", "num_classes")  # what hpo passes from the dataset, when the factory takes them
PLAIN = (bool, int, float, str, type(None))


@dataclass(frozen=True)
class ModuleModel:
    target: str                               # "package.module:factory"
    kwargs: tuple[tuple[str, Any], ...] = ()  # the factory's keyword arguments, plain defaults filled in

    def as_config(self) -> dict:
        return {"module": self.target, **dict(self.kwargs)}


def importable_here() -> None:
    """The working folder on the import path, as `python -m hpo` has it and the `hpo` command
    (a console script, whose path starts at its own folder) would not: a model module beside the
    study file imports either way. Last on the path, so an installed package of the same name wins."""
    here = os.getcwd()
    if "" not in sys.path and here not in sys.path:
        sys.path.append(here)


def factory_of(target: str, key: str) -> Callable:
    if not isinstance(target, str) or not TARGET.match(target):
        raise ConfigError(key, f"expected 'package.module:factory', got {target!r}")
    module_name, name = target.split(":")
    importable_here()
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # ImportError, or the module's own code failing as it loads
        raise ConfigError(key, f"cannot import {module_name!r} ({type(error).__name__}: {error}); install its "
                               "package, put its folder on PYTHONPATH, or run hpo from its folder (on every "
                               "machine that runs workers)") from None
    factory = getattr(module, name, None)
    if factory is None:
        raise ConfigError(key, f"module {module_name!r} has no {name!r}")
    if not callable(factory):
        raise ConfigError(key, f"{target} is a {type(factory).__name__}, not a callable that returns a model")
    return factory


def parse(data: dict, prefix: str = "model") -> ModuleModel:
    """A ModuleModel from the config's `model` mapping; the factory is imported to read its signature."""
    data = dict(data)
    target = data.pop("module")
    factory = factory_of(target, f"{prefix}.module")
    for key in data:
        if key in FROM_DATA:
            raise ConfigError(f"{prefix}.{key}", "hpo passes it from the dataset; leave it out of the config")
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin without a signature: take the arguments as given
        params = {}
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    defaults = {}
    for name, p in params.items():
        if name in FROM_DATA or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            continue
        if name not in data and p.default is p.empty:
            raise ConfigError(f"{prefix}.{name}", f"missing; {target} needs it")
        if p.default is not p.empty and isinstance(p.default, PLAIN):
            defaults[name] = p.default
    for key in data:
        if params and not takes_any and key not in params:
            takes = [n for n in params if n not in FROM_DATA]
            raise ConfigError(f"{prefix}.{key}", f"{target} takes no argument {key!r}; it takes: "
                                                 f"{', '.join(takes) or 'nothing'}")
    return ModuleModel(target, tuple({**defaults, **data}.items()))


def build(spec: ModuleModel, shape: tuple[int, int, int], classes: int, prefix: str = "model") -> nn.Module:
    """Call the factory; anything but an nn.Module, or an error, is one ConfigError naming the factory."""
    factory = factory_of(spec.target, f"{prefix}.module")
    kwargs = dict(spec.kwargs)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    if "input_shape" in params:
        kwargs["input_shape"] = tuple(shape)
    if "num_classes" in params:
        kwargs["num_classes"] = classes
    try:
        model = factory(**kwargs)
    except Exception as error:
        raise ConfigError(prefix, f"{spec.target}({_call(kwargs)}) raised {type(error).__name__}: {error}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(prefix, f"{spec.target} returned {type(model).__name__!r}, not a torch.nn.Module")
    return model


def check(spec: ModuleModel, shape: tuple[int, int, int], classes: int, prefix: str = "model") -> None:
    """Build the model and pass it a batch of 2 images: its forward must run on the dataset's
    [B, C, H, W] images and give [B, classes] logits. On the meta device first (no memory, no
    time); where that fails (a shape mismatch, or an op without a meta kernel), again on the CPU
    for real, so that a forward that cannot run is one line before any study or trial, not five
    failed trials."""
    with torch.device("meta"):
        model = build(spec, shape, classes, prefix)
        try:
            out = model(torch.empty(2, *shape))
        except Exception:
            out = None
    if out is None:
        model = build(spec, shape, classes, prefix).eval()
        try:
            with torch.no_grad():
                out = model(torch.zeros(2, *shape))
        except Exception as error:
            first = (str(error).strip().splitlines() or [""])[0]
            raise ConfigError(prefix, f"{spec.target}'s forward fails on a batch of 2 {'x'.join(map(str, shape))} "
                                      f"images (a [2, {', '.join(map(str, shape))}] tensor): {type(error).__name__}: "
                                      f"{first}; make it take the dataset's images") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(prefix, f"{spec.target} maps a batch of 2 {'x'.join(map(str, shape))} images to {got}; "
                                  f"expected (2, {classes}) logits for {classes} classes")


def describe(spec: ModuleModel) -> str:
    return f"module {spec.target}" + "".join(f" {k}={v}" for k, v in spec.kwargs)


def _call(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
