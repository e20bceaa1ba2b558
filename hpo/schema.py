"""Plain dicts from YAML into frozen dataclasses, rejecting unknown keys and wrong types.

Each error names the dotted key and the reason. Range checks live in the dataclasses'
`__post_init__`, which raise `ConfigError` with the field name; `parse` prefixes it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from hpo.errors import ConfigError

T = TypeVar("T")


def join(prefix: str, key: str | int) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """`value` as the type `annotation` names, or a ConfigError at `key`."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own error, with its own (possibly deeper) key
            return coerce(value, options[0], key)
        errors = []
        for option in options:
            try:
                return coerce(value, option, key)
            except ConfigError as error:
                errors.append(error.reason)
        raise ConfigError(key, errors[0] if len(errors) == 1 else " or ".join(errors))
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(key, f"expected one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list, got {describe(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis and len(value) != len(args):
            raise ConfigError(key, f"expected a list of {len(args)} values, got {len(value)}")
        item_types = [args[0]] * len(value) if (origin is list or args[-1] is Ellipsis) else list(args)
        return tuple(coerce(v, t, join(key, i)) for i, (v, t) in enumerate(zip(value, item_types)))
    if annotation is Any:
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {describe(value)}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {describe(value)}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"expected a number, got {describe(value)}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {describe(value)}")
        return value
    if dataclasses.is_dataclass(annotation):
        return parse(annotation, value, key)
    raise TypeError(f"schema: unsupported annotation {annotation!r}")  # a bug in hpo, not user input


def parse(cls: type[T], data: Any, prefix: str = "") -> T:
    """Build dataclass `cls` from mapping `data`; missing keys take the field defaults."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(prefix, f"expected a mapping of keys to values, got {describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(join(prefix, unknown[0]), f"unknown key; expected one of: {', '.join(fields)}")
    values = {}
    for name, field in fields.items():
        if name in data:
            values[name] = coerce(data[name], hints[name], join(prefix, name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(join(prefix, name), "missing; this key is required")
    try:
        return cls(**values)
    except ConfigError as error:
        raise ConfigError(join(prefix, error.key), error.reason) from None


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain YAML-safe data (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def load_yaml(path: str | Path) -> Any:
    """`yaml.safe_load` of a file, with one-line errors for missing or malformed files."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError("", "file not found; check the path", source=str(path)) from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as error:
        raise ConfigError("", f"cannot read it ({error.__class__.__name__})", source=str(path)) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError("", f"malformed YAML{where}: {problem}", source=str(path)) from None


def require(condition: bool, key: str, reason: str) -> None:
    if not condition:
        raise ConfigError(key, reason)
