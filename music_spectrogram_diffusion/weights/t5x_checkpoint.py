"""Reads the parameters of a t5x checkpoint directory, without t5x.

t5x (``t5x/checkpoints.py``, ``Checkpointer.save``) writes ``checkpoint_<step>/`` as:

  checkpoint                 msgpack of {'version': 3, 'optimizer': {'target': params,
                             'state': optimizer state}} (flax.serialization's encoding)
  target.<a>.<b>.kernel/     one zarr array per partitioned leaf, written by tensorstore

Each leaf in the msgpack is either the array itself (flax's ext type 1: msgpack of (shape,
dtype name, bytes); 3 for a numpy scalar; oversized arrays as a ``__msgpack_chunked_array__``
dict) or the JSON of the tensorstore spec it was written to, whose kvstore path is relative to
the checkpoint directory (written as ``gcs`` or ``file``; both are read from the local copy, as
t5x does). Version-0 files (plain flax) hold the state dict at the top level.

Only ``target`` is read: the optimizer state (``state``, two more copies of the model for Adam,
factored moments for Adafactor) is neither decoded nor opened. The step is the directory's.
"""

from __future__ import annotations

import os
from typing import Any

import msgpack
import numpy as np

from music_spectrogram_diffusion.training import checkpoints as ckpt_lib
from music_spectrogram_diffusion.weights.param_tree import FlatTensors, WeightsError

CHECKPOINT_FILE = "checkpoint"
# flax.serialization._MsgpackExtType
_EXT_NDARRAY, _EXT_NPSCALAR = 1, 3
_CHUNKED = "__msgpack_chunked_array__"


def find_checkpoint(source: str) -> tuple[str, int]:
    """(checkpoint msgpack file, step) for a ``checkpoint`` file, a ``checkpoint_<step>``
    directory, or a directory of them (the newest is taken, as t5x does).

    Raises:
      WeightsError: nothing that looks like a t5x checkpoint at ``source``.
    """
    path = os.path.abspath(source)
    if os.path.isfile(path):
        directory = os.path.dirname(path)
        return path, ckpt_lib.checkpoint_step(directory) or 0
    if not os.path.isdir(path):
        raise WeightsError(f"{path}: no such t5x checkpoint file or directory")
    if os.path.isfile(os.path.join(path, CHECKPOINT_FILE)):
        return os.path.join(path, CHECKPOINT_FILE), ckpt_lib.checkpoint_step(path) or 0
    steps = sorted(step for name in os.listdir(path)
                   if (step := ckpt_lib.checkpoint_step(name)) is not None
                   and os.path.isfile(os.path.join(path, name, CHECKPOINT_FILE)))
    if not steps:
        raise WeightsError(
            f"{path}: not a t5x checkpoint (no '{CHECKPOINT_FILE}' file here, and no "
            f"checkpoint_<step>/{CHECKPOINT_FILE} below it)")
    directory = ckpt_lib.checkpoint_path(path, steps[-1])
    return os.path.join(directory, CHECKPOINT_FILE), steps[-1]


def _decode_ext(ext: msgpack.ExtType, where: str) -> np.ndarray:
    if ext.code not in (_EXT_NDARRAY, _EXT_NPSCALAR):
        raise WeightsError(f"{where}: unsupported msgpack extension type {ext.code}")
    shape, dtype_name, buffer = msgpack.unpackb(ext.data, raw=True)
    name = dtype_name.decode()
    if name == "bfloat16":
        import ml_dtypes

        dtype = np.dtype(ml_dtypes.bfloat16)
    else:
        dtype = np.dtype(name)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def _is_tensorstore_spec(value: Any) -> bool:
    return isinstance(value, dict) and "driver" in value and "kvstore" in value


def _read_tensorstore(spec: dict, checkpoint_dir: str, where: str) -> np.ndarray:
    import tensorstore as ts

    kvstore = spec["kvstore"]
    relative = kvstore.get("path") or spec.get("path")
    if not relative:
        raise WeightsError(f"{where}: tensorstore spec without a path ({spec})")
    path = os.path.realpath(os.path.join(checkpoint_dir, relative))
    if os.path.commonpath([path, os.path.realpath(checkpoint_dir)]) != os.path.realpath(
            checkpoint_dir):
        raise WeightsError(f"{where}: tensorstore path {relative!r} leaves the checkpoint directory")
    if not os.path.isdir(path):
        raise WeightsError(f"{where}: its tensorstore array {path} is missing")
    try:
        store = ts.open({"driver": spec.get("driver", "zarr"),
                         "kvstore": {"driver": "file", "path": path}}, open=True).result()
        array = store.read().result()
    except Exception as e:  # tensorstore raises ValueError / its own types for bad arrays
        raise WeightsError(f"{where}: unreadable tensorstore array {path} ({e})") from e
    stated = spec.get("metadata", {}).get("shape")
    if stated is not None and tuple(stated) != tuple(array.shape):
        raise WeightsError(f"{where}: the spec says shape {tuple(stated)}, {path} holds "
                           f"{tuple(array.shape)}")
    return np.asarray(array)


def _leaf(value: Any, checkpoint_dir: str, where: str) -> np.ndarray:
    if isinstance(value, msgpack.ExtType):
        array = _decode_ext(value, where)
    elif _is_tensorstore_spec(value):
        array = _read_tensorstore(value, checkpoint_dir, where)
    elif isinstance(value, dict) and value.get(_CHUNKED):
        shape = tuple(value["shape"][str(i)] for i in range(len(value["shape"])))
        chunks = [_decode_ext(value["chunks"][str(i)], where) for i in range(len(value["chunks"]))]
        array = np.concatenate(chunks).reshape(shape)
    else:
        raise WeightsError(f"{where}: not an array ({type(value).__name__})")
    return np.asarray(array, np.float32)


def _walk(node: Any, prefix: str, checkpoint_dir: str, source: str, out: FlatTensors) -> None:
    if isinstance(node, dict) and not (_is_tensorstore_spec(node) or node.get(_CHUNKED)):
        for key, value in node.items():
            _walk(value, f"{prefix}{key}/", checkpoint_dir, source, out)
        return
    name = prefix.rstrip("/")
    out[name] = _leaf(node, checkpoint_dir, f"{source}: tensor {name!r}")


def read_target(checkpoint_file: str) -> FlatTensors:
    """The parameters (``target``) of a t5x checkpoint as flat float32 arrays.

    Raises:
      WeightsError: an unreadable file, no ``target``, or an array that cannot be read.
    """
    try:
        with open(checkpoint_file, "rb") as f:
            contents = msgpack.unpackb(f.read(), raw=False, strict_map_key=False)
    except (OSError, ValueError, msgpack.UnpackException) as e:
        raise WeightsError(f"{checkpoint_file}: not a readable t5x msgpack checkpoint ({e})") from e
    if not isinstance(contents, dict):
        raise WeightsError(f"{checkpoint_file}: not a t5x checkpoint (top level is "
                           f"{type(contents).__name__})")
    state = contents.get("optimizer", contents) if contents.get("version", 0) else contents
    target = state.get("target") if isinstance(state, dict) else None
    if not isinstance(target, dict) or not target:
        raise WeightsError(f"{checkpoint_file}: no parameters ('target') in the checkpoint")
    flat: FlatTensors = {}
    _walk(target, "", os.path.dirname(checkpoint_file), checkpoint_file, flat)
    return flat
