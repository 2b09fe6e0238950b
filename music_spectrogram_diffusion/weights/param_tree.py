"""Parameter trees as flat ``'/'``-joined names, and the one check of tensors against a model.

Every weight format here is read into, and written from, a flat ``{name: float32 array}`` dict;
our names are the flax paths (``decoder/layers_0/mlp/wo/kernel``), which are the original t5x
names (spec §4.7). ``check_tensors`` compares what a source holds with what the model needs and
raises one ``WeightsError`` naming the first bad tensor.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import numpy as np

FlatTensors = dict[str, np.ndarray]


class WeightsError(ValueError):
    """Weights that cannot be imported or exported; the message names the file and the tensor."""


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': x}} -> {'a/b': x}; leaves are anything that is not a mapping."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}/"))
        else:
            flat[name] = value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of ``flatten``."""
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return tree


def check_tensors(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, Any],
                  source: str) -> None:
    """Raises WeightsError unless ``found`` has exactly the names and shapes of ``expected``.

    Args:
      expected: name -> shape the model needs.
      found: name -> array (anything with ``.shape``) the source holds.
      source: the file or folder, first in the message.
    """
    missing = sorted(set(expected) - set(found))

    def unexpected(name: str) -> str:
        # A renamed tensor is both unexpected and missing: name the likely original.
        close = difflib.get_close_matches(name, missing, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unexpected tensor {name!r} (not a parameter of the model{hint})"

    # Shapes first: a source of another size also misses (or adds) whole layers.
    problems = [
        f"tensor {name!r} has shape {tuple(found[name].shape)}, the model needs "
        f"{tuple(expected[name])}"
        for name in sorted(set(found) & set(expected))
        if tuple(found[name].shape) != tuple(expected[name])
    ]
    problems += [unexpected(name) for name in sorted(set(found) - set(expected))]
    problems += [f"tensor {name!r} is missing" for name in missing]
    if problems:
        count = len(problems) - 1
        more = f" (and {count} more problem{'s' if count > 1 else ''})" if count else ""
        raise WeightsError(f"{source}: {problems[0]}{more}")
