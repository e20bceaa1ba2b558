"""Plain dicts from YAML into frozen dataclasses, rejecting unknown keys and wrong types.

Each error names the dotted key and the reason. Range checks live in the dataclasses'
`__post_init__`, which raise `ConfigError` with the field name; `parse` prefixes it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Optional, TypeVar

import yaml

from hpo.errors import ConfigError

T = TypeVar("T")


def join(prefix: str, key: str | int) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def describe(value: Any, limit: int = 80) -> str:
    """A value as an error line shows it: its repr, cut at `limit` characters, and its type."""
    text = repr(value)
    if isinstance(value, bool):  # `off`, `no`, `on`, `yes` unquoted: YAML's booleans, not the words
        return (f"{text} (bool: YAML reads {'yes, on' if value else 'no, off'} and {str(value).lower()} unquoted as "
                f"{str(value).lower()}; quote a word meant as text: '{'on' if value else 'off'}')")
    return f"{text if len(text) <= limit else text[:limit - 3] + '...'} ({type(value).__name__})"


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
        try:
            number = float(value)
        except OverflowError:  # YAML integers have no bound; floats do
            raise ConfigError(key, "is too large for a number (the largest is about 1.8e308)") from None
        if not math.isfinite(number):  # .inf passes every "> 0" check; .nan fails them with a puzzling line
            raise ConfigError(key, f"must be a finite number, got {value}")
        return number
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {describe(value)}")
        return value
    if dataclasses.is_dataclass(annotation):
        return parse(annotation, value, key)
    raise TypeError(f"schema: unsupported annotation {annotation!r}")  # a bug in hpo, not user input


def unknown_key(prefix: str, key: Any, known) -> ConfigError:
    """'unknown key; did you mean 'model'? expected one of: ...': a typo is the likeliest cause."""
    close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.7)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ConfigError(join(prefix, key), f"unknown key; {hint}expected one of: {', '.join(known)}")


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
        raise unknown_key(prefix, unknown[0], fields)
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


MAX_YAML_VALUES = 100_000  # far above any study or export file; far below what an alias bomb expands to
MAX_YAML_BYTES = 16 << 20   # a study file or an export is kilobytes; PyYAML reads ~3 MB a second
MAX_YAML_DEPTH = 64         # nesting deeper than this is no config, and would reach Python's recursion limit
MERGE_TAG = "tag:yaml.org,2002:merge"


class StrictSafeLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` (only plain data, never objects) that also refuses what `safe_load` lets
    through silently: a key given twice in one mapping, where the last would quietly win, and
    aliases that expand without bound (a "billion laughs" hangs whoever walks the data).
    Both are checked on the composed document, before anything is constructed."""

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        self.check_document(node)
        return self.construct_document(node)

    def check_document(self, root: yaml.Node) -> None:
        """Walk the document as its aliases expand it, iteratively, stopping at the limits."""
        checked: set[int] = set()  # mappings whose keys were compared: an alias repeats, it adds no key
        stack = [(root, "", 0)]
        visited, nodes = 0, set()  # nodes met: one met again came through an alias
        while stack:
            node, key, depth = stack.pop()
            visited += 1
            nodes.add(id(node))
            if visited > MAX_YAML_VALUES:
                if len(nodes) < visited:
                    raise ConfigError("", f"expands to more than {MAX_YAML_VALUES:,} values through its aliases (a YAML "
                                          "alias bomb?); write the values out, or alias less")
                raise ConfigError("", f"holds more than {MAX_YAML_VALUES:,} values; a study file or config needs "
                                      "far fewer (a list of choices that long cannot be searched well either)")
            if depth > MAX_YAML_DEPTH:
                line = node.start_mark.line + 1
                raise ConfigError("", f"nested more than {MAX_YAML_DEPTH} levels deep at line {line} "
                                      "(lists within lists, or an alias used inside itself?)")
            if isinstance(node, yaml.SequenceNode):
                stack.extend((item, join(key, i), depth + 1) for i, item in enumerate(node.value))
            elif isinstance(node, yaml.MappingNode):
                if id(node) not in checked:
                    checked.add(id(node))
                    self.check_unique_keys(node, key)
                for key_node, value_node in node.value:
                    # a merge (<<: *defaults) puts its keys into this mapping, at this key
                    name = key if key_node.tag == MERGE_TAG else join(key, scalar_text(key_node))
                    stack += [(key_node, name, depth + 1), (value_node, name, depth + 1)]

    def check_unique_keys(self, node: yaml.MappingNode, key: str) -> None:
        first: dict = {}  # constructed key (1 and 0x1 are one key) -> where it first appears
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == MERGE_TAG:
                continue  # a merge may repeat keys on purpose; a list as a key, construction rejects
            name, mark = self.construct_object(key_node), key_node.start_mark
            if name in first:
                was = first[name]
                where = (f"line {was.line + 1}, columns {was.column + 1} and {mark.column + 1}" if was.line == mark.line
                         else f"lines {was.line + 1} and {mark.line + 1}")
                raise ConfigError(join(key, scalar_text(key_node)),
                                  f"given twice in one mapping ({where}); YAML would silently keep the last: keep one")
            first[name] = mark



# YAML 1.1, which PyYAML follows, reads a number with an exponent but no dot (1e-3, 5E4) or no
# sign in its exponent (1.0e5) as text; YAML 1.2 and every other parser a user knows read a
# number. A learning rate written 1e-3 is one, here too.
StrictSafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))

def scalar_text(node: yaml.Node) -> str:
    """A key as the file spells it, for error messages ('?' for a list or mapping used as a key)."""
    return node.value if isinstance(node, yaml.ScalarNode) else "?"


def not_utf8(data: bytes, error: UnicodeDecodeError) -> str:
    """Why bytes that are not UTF-8 are no YAML file: binary, UTF-16, or text in another encoding."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16 text; save it as UTF-8"
    if b"\x00" in data[:4096]:
        return "not a text file (a database or an archive?); give a YAML file"
    line = data.count(b"\n", 0, error.start) + 1
    column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
    return (f"not UTF-8: byte 0x{data[error.start]:02x} at line {line}, column {column} (Latin-1 or another "
            "encoding?); save the file as UTF-8")


def load_yaml(path: str | Path) -> Any:
    """The plain data of a YAML file, as `yaml.safe_load` reads it but stricter (see
    `StrictSafeLoader`), with one-line errors for missing, malformed or hostile files."""
    path = Path(path)
    try:
        data = read_small(path, MAX_YAML_BYTES)
        text = data.decode("utf-8")
    except NotRegular:
        raise ConfigError("", "not a regular file; give a YAML file", source=str(path)) from None
    except TooLarge:
        raise ConfigError("", f"over {MAX_YAML_BYTES >> 20} MB, not a study file or a config (those are "
                              "kilobytes); check the path", source=str(path)) from None
    except FileNotFoundError:
        raise ConfigError("", "file not found; check the path", source=str(path)) from None
    except UnicodeDecodeError as error:
        raise ConfigError("", not_utf8(data, error), source=str(path)) from None
    except IsADirectoryError:
        raise ConfigError("", "a folder, not a file; give a YAML file", source=str(path)) from None
    except PermissionError:
        raise ConfigError("", "cannot read it (permission denied)", source=str(path)) from None
    try:
        reader = StrictSafeLoader(text)  # its reader refuses control characters here, before any parsing
    except yaml.reader.ReaderError as error:
        line = text.count("\n", 0, error.position) + 1
        column = error.position - (text.rfind("\n", 0, error.position) + 1) + 1
        raise ConfigError("", f"malformed YAML at line {line}, column {column}: control character "
                          f"#x{error.character:04x}, which YAML does not allow; remove it (a binary file?)",
                          source=str(path)) from None
    try:
        return reader.get_single_data()
    except ConfigError as error:
        raise error.located(str(path)) from None
    except RecursionError:  # the composer recurses once per level of nesting, before any check can run
        raise ConfigError("", f"nested more than {MAX_YAML_DEPTH} levels deep", source=str(path)) from None
    except ValueError as error:  # a value YAML can spell but Python cannot hold: 2024-13-01, a 5,000-digit number
        raise ConfigError("", f"malformed YAML: {error}", source=str(path)) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        if "'\\t'" in problem:  # a tab where YAML wants indentation
            problem += "; indent with spaces, not tabs"
        raise ConfigError("", f"malformed YAML{where}: {problem}", source=str(path)) from None
    finally:
        reader.dispose()


class NotRegular(Exception):
    """A pipe or a device where a file was meant: reading would block, or never end."""


class TooLarge(Exception):
    """A file over the size it was meant to have (a log or a disk image given by mistake)."""


def read_small(path: Path, limit: int) -> bytes:
    """The bytes of a file meant to be small (a study file, a config, a result), read no further
    than `limit` bytes: NotRegular, TooLarge, or the OSError that opening it raises."""
    if path.exists() and not path.is_file() and not path.is_dir():
        raise NotRegular(path)
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(path)
    return data


def require_document(data: Any, path: str | Path) -> None:
    """ConfigError where a study file or a config read as None: empty, only comments, or `null`."""
    if data is None:
        raise ConfigError("", "holds nothing (empty, or only comments); check the path, or see studies/ and "
                              "configs/ for what a study file and a training config hold", source=str(path))


def plain(value: Any) -> str:
    """A scalar as a study file spells it: YAML's true, false and null, numbers and strings as they are."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value)


def did_you_mean(given: str, names: list[str]) -> str | None:
    """The name among `names` closest to `given` (a letter off, another case, .yml for .yaml), if any is."""
    import difflib  # noqa: PLC0415

    def plain(name: str) -> str:
        return name.lower().removesuffix(".yaml").removesuffix(".yml")

    by_plain = {plain(n): n for n in names}
    close = difflib.get_close_matches(plain(given), list(by_plain), n=1, cutoff=0.6)
    return by_plain[close[0]] if close else None


def plural(n: int, word: str) -> str:
    """`1 epoch`, `2 epochs`, `1,000 epochs`."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def is_number(value: Any) -> bool:
    """An int or a float, not a bool (YAML's true is no number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_whole(value: Any, low: Optional[int] = None, high: Optional[int] = None) -> bool:
    """An int, not a bool, within [low, high] where they are given."""
    return (isinstance(value, int) and not isinstance(value, bool) and (low is None or value >= low)
            and (high is None or value <= high))


def require(condition: bool, key: str, reason: str) -> None:
    if not condition:
        raise ConfigError(key, reason)
