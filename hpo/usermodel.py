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

import copy
import importlib
import importlib.util
import inspect
import os
import re
import sys
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.nn.parameter import UninitializedTensorMixin

from hpo.errors import ConfigError

TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
FROM_DATA = ("input_shape", "num_classes")  # what hpo passes from the dataset, when the factory takes them
PLAIN = (bool, int, float, str, type(None))
MEMO_SIZE = 64  # meta-device builds kept per process: a study's checks and a trial's budget shrink repeat them


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
    except (Exception, SystemExit) as error:  # not KeyboardInterrupt: Ctrl-C while it loads still stops hpo
        raise ConfigError(key, _import_failed(module_name, error)) from None
    factory = getattr(module, name, None)
    if factory is None:
        import difflib  # noqa: PLC0415

        own = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                     and getattr(v, "__module__", None) == module.__name__)
        near = difflib.get_close_matches(name, own, n=1)
        hint = [f"did you mean {near[0]!r}"] if near else []
        hint += [f"it defines {', '.join(own[:8])}{', ...' if len(own) > 8 else ''}"] if own else []
        hidden = _hides_yours(module_name)
        hint = [hidden] if hidden else hint
        raise ConfigError(key, "; ".join([f"module {module_name!r} has no {name!r}", *hint]))
    if not callable(factory):
        raise ConfigError(key, f"{target} is a {type(factory).__name__}, not a callable that returns a model")
    return factory


def code_digest(target: str) -> Optional[dict]:
    """{"file": the factory's module file, "digest": of its code}: what a study records, so that a
    later run finds its trials' model changed under it. Comments, docstrings and layout aside: an
    edit that changes no code changes no digest. Only the factory's own module: code it imports
    from elsewhere is not followed. None where the module has no Python source to read."""
    import ast  # noqa: PLC0415
    import hashlib  # noqa: PLC0415

    module = sys.modules.get(target.split(":")[0])
    try:
        path = inspect.getsourcefile(module) if module is not None else None
        source = open(path, "rb").read() if path else None
    except (TypeError, OSError):  # a built-in or compiled module, or a file gone since it was imported
        return None
    if source is None:
        return None
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):  # it imported, so not likely: then its bytes are its code
        return {"file": path, "digest": hashlib.sha256(source).hexdigest()[:16]}
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return {"file": path, "digest": hashlib.sha256(_canonical(tree).encode()).hexdigest()[:16]}


def _canonical(node) -> str:
    """A syntax tree as text that no Python version changes for the same code: each node's type and
    its fields that hold something. ast.dump's differs (3.12 adds `type_params=[]` to every function,
    3.13 leaves empty fields out), and a copy of the same module on a machine with another Python
    read as changed code."""
    import ast  # noqa: PLC0415

    if isinstance(node, ast.AST):
        fields = ((name, getattr(node, name, None)) for name in node._fields)
        return type(node).__name__ + "(" + ",".join(f"{name}={_canonical(value)}" for name, value in fields
                                                    if value is not None and value != []) + ")"
    if isinstance(node, list):
        return "[" + ",".join(_canonical(item) for item in node) + "]"
    return repr(node)


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


# Keyed by the factory's id, and holding the factory, so that a module imported anew (a test's) is a new key.
_built: OrderedDict = OrderedDict()    # (target, factory id, its arguments) -> (factory, a pristine meta-device build)
_checked: OrderedDict = OrderedDict()  # (target, factory id, arguments, shape, classes) -> factory, for models passed


def build(spec: ModuleModel, shape: tuple[int, int, int], classes: int, prefix: str = "model") -> nn.Module:
    """Call the factory; anything but an nn.Module with float32 parameters to train, or an error,
    is one ConfigError naming the factory.

    Under `torch.device("meta")` (the checks and the budget's parameter counts, which a study
    makes for many configs, again and again) a build is memoized per factory and arguments and
    handed out as a copy: a slow factory runs once per model, not once per count. A build for
    training (any other device) is always the factory's own, fresh."""
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
    key = (spec.target, id(factory), repr(kwargs)) if torch.get_default_device().type == "meta" else None
    if (built := _built.get(key)) is not None:
        return copy.deepcopy(built[1])
    try:
        model, failure = _call_factory(factory, kwargs), None
    except (Exception, SystemExit) as error:  # not KeyboardInterrupt
        model, failure = None, error
    if failure is not None and key is not None:
        # a factory that works a size out with real numbers (`.item()` on a probe's output) cannot
        # build on the meta device: built on the CPU, then moved there for the counts and checks
        try:
            with torch.device("cpu"):
                model, failure = _call_factory(factory, kwargs), None
            model = model.to(torch.device("meta")) if isinstance(model, nn.Module) else model
        except (Exception, SystemExit) as error:  # the CPU's own reason
            failure = error
    if failure is not None:
        refuse = "; a factory returns a model, or raises an error to refuse its arguments" if isinstance(
            failure, SystemExit) else ""
        raise ConfigError(prefix, f"{spec.target}({_call(kwargs)}) {_failed(failure)}{refuse}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(prefix, f"{spec.target} returned {type(model).__name__!r}, not a torch.nn.Module")
    _check_parameters(model, spec.target, prefix)
    if key is not None and all(t.is_meta for t in (*model.parameters(), *model.buffers())):  # a copy costs nothing
        try:
            _remember(_built, key, (factory, copy.deepcopy(model)))
        except Exception:  # a module that cannot be copied is built again next time
            pass
    return model


def _call_factory(factory: Callable, kwargs: dict):
    with warnings.catch_warnings():  # a layer of width 0: said in one line below, not in torch's two
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        return factory(**kwargs)


def _check_parameters(model: nn.Module, target: str, prefix: str) -> None:
    """What the budget and the optimizer need of the parameters: sizes to count, float32 (the
    training loop's inputs are), and at least one to train."""
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if isinstance(tensor, UninitializedTensorMixin):
            owner = model.get_submodule(name.rpartition(".")[0])
            raise ConfigError(prefix, f"{target} has uninitialized (lazy) parameters, such as {name} of a "
                                      f"{type(owner).__name__}; give their sizes (nn.Linear(in, out)) so hpo can "
                                      "count them against the budget")
    params = list(model.parameters())
    empty = next(((name, p) for name, p in model.named_parameters() if p.numel() == 0), None)
    if empty:
        raise ConfigError(prefix, f"{target} has a layer with no weights ({empty[0]} is {list(empty[1].shape)}): "
                                  "a width or size of 0 among its arguments? give every layer one unit or more")
    odd = sorted({str(p.dtype).removeprefix("torch.") for p in params
                  if (p.is_floating_point() or p.is_complex()) and p.dtype != torch.float32})
    if odd:
        undo = {"float64": "remove .double()", "float16": "remove .half()", "bfloat16": "remove .bfloat16()"}
        if torch.get_default_dtype() != torch.float32:  # the module changed it as it loaded
            undo = {odd[0]: f"remove torch.set_default_dtype({torch.get_default_dtype()})"}
        are = (f"'s parameters are {' and '.join(odd)}" if all(p.dtype != torch.float32 for p in params)
               else f" has {' and '.join(odd)} parameters")
        raise ConfigError(prefix, f"{target}{are}; hpo trains float32 (with bf16 autocast where it can): "
                                  f"{undo.get(odd[0], 'build it in float32')}")
    if not any(p.requires_grad for p in params):
        why = (f"(all {len(params)} of its parameter tensors have requires_grad=False); leave requires_grad on for "
               "those the optimizer should train" if params else
               "(it has none at all); give it layers with weights (nn.Linear, nn.Conv2d) for the optimizer to train")
        raise ConfigError(prefix, f"{target} has no trainable parameters {why}")


def check(spec: ModuleModel, shape: tuple[int, int, int], classes: int, prefix: str = "model") -> None:
    """Build the model and pass it a batch of 2 images: its forward must run on the dataset's
    [B, C, H, W] images and give [B, classes] floating-point logits that backpropagate to its
    parameters, in training mode and in eval mode (the test set is scored in it), without changing
    its input in place or making parameters of its own (they would not be counted, or trained).
    On the meta device first (no memory, no time); where that fails (a shape mismatch, or an op
    without a meta kernel), again on the CPU for real, so that a forward that cannot run is one
    line before any study or trial, not five failed trials. A model that passed is not checked
    again in this process (a study checks the same configs many times over)."""
    factory = factory_of(spec.target, f"{prefix}.module")
    key = (spec.target, id(factory), repr(spec.kwargs), tuple(shape), classes)
    if key in _checked:
        return
    with torch.device("meta"):
        model = build(spec, shape, classes, prefix)
        try:
            probe = _Probe(model, torch.empty(2, *shape))
        except (Exception, SystemExit):
            probe = None
    if probe is not None and probe.backward_error is not None:  # perhaps an op without a meta kernel: for real
        probe = None
    if probe is None:
        model = build(spec, shape, classes, prefix)
        try:  # a batch of 2: the graph costs nothing, and shows the logits train
            probe = _Probe(model, torch.zeros(2, *shape))
        except (Exception, SystemExit) as error:
            mode = "" if model.training else " in eval mode (hpo scores the test set in it)"  # where it failed
            raise ConfigError(prefix, f"{spec.target}'s forward fails{mode} on a batch of 2 "
                                      f"{'x'.join(map(str, shape))} images (a [2, {', '.join(map(str, shape))}] "
                                      f"tensor): {_failed(error, '')}; make it take the dataset's images") from None
    _check_probe(probe, spec.target, shape, classes, prefix)
    _remember(_checked, key, factory)


class _Probe:
    """What a model does with a batch `x`: its logits in training mode (with their graph) and in
    eval mode, whether its forward wrote into x, and its parameters before and after."""

    def __init__(self, model: nn.Module, x: torch.Tensor):
        self.params_before = sum(p.numel() for p in model.parameters())
        version = x._version
        with torch.enable_grad():
            self.out = model.train()(x)
        self.backward_error = None  # the step's backward pass: an in-place op on a tensor autograd needs fails it
        if isinstance(self.out, torch.Tensor) and self.out.requires_grad and self.out.is_floating_point():
            try:
                with torch.enable_grad():
                    self.out.float().sum().backward()
            except Exception as error:
                self.backward_error = error
        with torch.no_grad():
            self.evaluated = model.eval()(x)
        self.wrote_input = x._version != version  # in either mode
        self.params_after = sum(p.numel() for p in model.parameters())


def _check_probe(probe: _Probe, target: str, shape, classes: int, prefix: str) -> None:
    images = f"a batch of 2 {'x'.join(map(str, shape))} images"
    for out, mode in ((probe.out, ""), (probe.evaluated, " in eval mode (hpo scores the test set in it)")):
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, classes):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(prefix, f"{target} maps {images} to {got}{mode}; expected (2, {classes}) logits for "
                                      f"{classes} classes")
        if not out.is_floating_point():
            raise ConfigError(prefix, f"{target} returns {str(out.dtype).removeprefix('torch.')} logits{mode}; return "
                                      "floating-point logits (the loss is cross-entropy over them: leave argmax out "
                                      "of forward)")
    if not probe.out.requires_grad and not torch.is_inference_mode_enabled():
        raise ConfigError(prefix, f"{target}'s logits carry no gradient back to its parameters (a .detach(), "
                                  "torch.no_grad() or argmax in its forward?); hpo trains it through them")
    if probe.backward_error is not None:
        raise ConfigError(prefix, f"{target}'s backward pass fails on {images}: {_failed(probe.backward_error, '')}; "
                                  "an in-place op (relu_, +=) on a tensor autograd still needs? write y = y + 1")
    if probe.params_after != probe.params_before:
        raise ConfigError(prefix, f"{target} makes parameters in its forward ({probe.params_before:,} before its first "
                                  f"batch, {probe.params_after:,} after): hpo counts them against the budget and hands "
                                  "them to the optimizer before any step; make every layer in the factory")
    if probe.wrote_input:
        raise ConfigError(prefix, f"{target}'s forward changes its input in place (x *= ..., x -= ..., an in-place "
                                  "op on x): hpo's batches are views of the images it keeps for every epoch, which "
                                  "it would change under later epochs and trials; write x = x * ... instead")


def describe(spec: ModuleModel) -> str:
    return f"module {spec.target}" + "".join(f" {k}={v}" for k, v in spec.kwargs)


def _import_failed(module_name: str, error: BaseException) -> str:
    """Why `module_name` did not import, and what to do: put it where Python finds it, or (found,
    its own code failed as it loaded) fix it where it is."""
    parts = module_name.split(".")
    chain = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]  # the module and its packages, outermost first
    if isinstance(error, ModuleNotFoundError) and error.name in chain:
        hidden = _hides_yours(module_name)  # your ./email/nets.py, where Python's own email package wins
        if hidden:
            return f"cannot import {module_name!r}: {hidden}"
        return (f"cannot import {module_name!r} ({type(error).__name__}: {error}); install its package, put its "
                "folder on PYTHONPATH, or run hpo from its folder (on every machine that runs workers)")
    failed = next((name for name in chain if name not in sys.modules), module_name)  # what a failed import left out
    where = _origin(failed) or getattr(error, "filename", None)
    found = f" (it was found at {where})" if where else ""
    if isinstance(error, SystemExit):
        return (f"importing {failed!r} {_failed(error)} as it loaded; keep a script's own run under "
                f"`if __name__ == \"__main__\":`{found}")
    if isinstance(error, ModuleNotFoundError):
        return (f"importing {failed!r} failed: {_failed(error, '')}; install what it imports, on every machine "
                f"that runs workers{found}")
    return f"importing {failed!r} failed: {_failed(error, '')}; fix the module{found}"


def _hides_yours(module_name: str) -> str | None:
    """Where a module or package of the same name as yours, here, was imported instead (the working
    folder comes last on the import path: Python's own `code`, `test` or `email` wins): the line
    that says so; None where nothing hides it."""
    top = module_name.split(".")[0]
    imported = sys.modules.get(top)
    found = getattr(imported, "__file__", None) or next(iter(getattr(imported, "__path__", None) or []), None)
    if not found:
        return None
    for mine in (os.path.join(os.getcwd(), top + ".py"), os.path.join(os.getcwd(), top)):
        if not (os.path.isfile(mine) if mine.endswith(".py") else os.path.isdir(mine)):
            continue
        real, at = os.path.realpath(found), os.path.realpath(mine)
        if real != at and not real.startswith(at + os.sep):
            kind = "" if mine.endswith(".py") else " folder"
            return (f"the {top!r} imported is {found}, which hides your{kind} {os.path.relpath(mine)}: give yours "
                    "another name")
    return None


def _origin(module_name: str) -> str | None:
    """The file `module_name` loads from; its packages are imported already, so this runs nothing."""
    try:
        spec = importlib.util.find_spec(module_name)
    except (Exception, SystemExit):
        return None
    return spec.origin if spec is not None and spec.has_location else None


def _failed(error: BaseException, raised: str = "raised ") -> str:
    """'raised ValueError: its message' (its first line), or 'called sys.exit(3)'."""
    if isinstance(error, SystemExit):
        return f"called sys.exit({error.code!r})"
    first = (str(error).strip().splitlines() or [""])[0]
    return f"{raised}{type(error).__name__}: {first}"


def _remember(memo: OrderedDict, key: tuple, value: Any) -> None:
    memo[key] = value
    while len(memo) > MEMO_SIZE:  # the oldest out first: a worker's later trials search elsewhere
        memo.popitem(last=False)


def _call(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
