"""Dotted keys into a plain config dict: `optimizer.lr`, `model.layers.4` (a list index).

A convnet layer token is read and set as its width (`16k1` reads 16; setting 12 gives `12k1`),
so a width search keeps each layer's kind.
"""

from __future__ import annotations

from typing import Any, Sequence

from hpo import models

KEEP = object()  # what a value callback returns to leave the base's value (None is a value a choice may take)


def has_path(cfg: dict, key: str) -> bool:
    node: Any = cfg
    for part in key.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    return True


def get_path(cfg: dict, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node.get(part)
        else:
            return None
    return node


def base_value(cfg: dict, key: str, choices: Sequence = ()) -> Any:
    """The value at `key`, with a convnet token read as its width (16k1 -> 16), unless `choices`
    (a categorical search's) holds the token as written (t8 among [t4, t8]: that layer, whole)."""
    value = get_path(cfg, key)
    if isinstance(value, str) and key.startswith("model.layers.") and value not in choices:
        _, width, _, _ = models.parse_token(value, 3, key)
        return width
    return value


def set_path(cfg: dict, key: str, value: Any) -> None:
    """Set `key` in `cfg`; a convnet layer token keeps its kind and takes the new width."""
    *parents, last = key.split(".")
    node: Any = cfg
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        index = int(last)
        node[index] = models.with_width(node[index], value) if isinstance(node[index], str) else value
    else:
        node[last] = value
