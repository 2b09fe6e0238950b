"""Released-weight fixtures on disk, written without our readers' code.

* ``write_t5x_checkpoint``: a ``checkpoint_<step>`` directory in t5x's format (``t5x/
  checkpoints.py``: ``Checkpointer.save``): the msgpack ``checkpoint`` file encoded as
  flax.serialization encodes it ({'version': 3, 'optimizer': {'target', 'state'}}), arrays
  with more than one dimension written by tensorstore as gzip zarr arrays in ``target.<path>``
  folders (their spec's JSON in the msgpack, path relative), the rest inline.
* ``write_diffusers_folder``: what diffusers 0.42's ``SpectrogramDiffusionPipeline.
  save_pretrained`` writes for random weights of the given sizes; the key names and config
  fields are spelled out here from a real save_pretrained listing, not from our name table.
"""

from __future__ import annotations

import json
import os
from typing import Any

import msgpack
import numpy as np

# --------------------------------------------------------------------------------- t5x


def _pack_ndarray(array: np.ndarray) -> msgpack.ExtType:
    # flax.serialization._ndarray_to_bytes, ext type 1.
    data = msgpack.packb((array.shape, array.dtype.name, array.tobytes("C")), use_bin_type=True)
    return msgpack.ExtType(1, data)


def _write_zarr(checkpoint_dir: str, name: str, array: np.ndarray, gcs: bool) -> dict[str, Any]:
    import tensorstore as ts

    relative = name.replace("/", ".")
    spec = {"driver": "zarr", "dtype": array.dtype.name,
            "kvstore": {"driver": "file", "path": relative},
            "metadata": {"compressor": {"id": "gzip"}, "shape": list(array.shape),
                         "chunks": list(array.shape)}}
    if gcs:  # t5x's spec for a gs:// checkpoint directory (the released checkpoints')
        spec["kvstore"] = {"driver": "gcs", "bucket": "t5x-dummy-bucket"}
        spec["path"] = relative
    saved = ts.Spec(spec).to_json()  # what t5x stores: the spec with its relative path
    spec.pop("path", None)
    spec["kvstore"] = {"driver": "file", "path": os.path.join(checkpoint_dir, relative)}
    store = ts.open(spec, create=True, open=True).result()
    store.write(array).result()
    return saved


def _encode_tree(tree: Any, checkpoint_dir: str, prefix: str, gcs: bool) -> Any:
    if isinstance(tree, dict):
        return {k: _encode_tree(v, checkpoint_dir, f"{prefix}/{k}", gcs) for k, v in tree.items()}
    array = np.asarray(tree)
    if array.ndim >= 2:  # partitioned in t5x: tensorstore; 1-D scales inline
        return _write_zarr(checkpoint_dir, prefix.lstrip("/"), array, gcs)
    return _pack_ndarray(array)


def write_t5x_checkpoint(directory: str, target: dict, *, step: int,
                         optimizer_state: dict | None = None, gcs: bool = False) -> str:
    """Writes DIRECTORY/checkpoint_<step>/ for the nested parameter dict ``target``.

    ``optimizer_state`` (nested dict of arrays) is stored under ``state/param_states`` like
    Adafactor's; ``remove_optimizer_arrays`` then proves a reader never opens it. ``gcs``
    writes the tensorstore specs as t5x does for a gs:// directory.
    """
    checkpoint_dir = os.path.join(directory, f"checkpoint_{step}")
    os.makedirs(checkpoint_dir)
    state: dict[str, Any] = {"step": _pack_ndarray(np.asarray(step, np.int32))}
    if optimizer_state is not None:
        state["param_states"] = optimizer_state
    contents = {"version": 3, "optimizer": {
        "target": _encode_tree(target, checkpoint_dir, "/target", gcs),
        "state": {k: v if isinstance(v, msgpack.ExtType) else
                  _encode_tree(v, checkpoint_dir, f"/state/{k}", gcs) for k, v in state.items()},
    }}
    with open(os.path.join(checkpoint_dir, "checkpoint"), "wb") as f:
        f.write(msgpack.packb(contents, use_bin_type=True, strict_types=True))
    return checkpoint_dir


def remove_optimizer_arrays(checkpoint_dir: str) -> None:
    """Deletes the tensorstore folders of the optimizer state (``state.*``) of a checkpoint."""
    import shutil

    for name in os.listdir(checkpoint_dir):
        if name.startswith("state."):
            shutil.rmtree(os.path.join(checkpoint_dir, name))


# ---------------------------------------------------------------------------- diffusers


def _encoder_keys(d: int, heads: int, d_kv: int, d_ff: int, layers: int) -> dict[str, tuple]:
    inner = heads * d_kv
    keys = {}
    for i in range(layers):
        p = f"encoders.{i}.layer."
        keys.update({
            p + "0.SelfAttention.q.weight": (inner, d), p + "0.SelfAttention.k.weight": (inner, d),
            p + "0.SelfAttention.v.weight": (inner, d), p + "0.SelfAttention.o.weight": (d, inner),
            p + "0.layer_norm.weight": (d,),
            p + "1.DenseReluDense.wi_0.weight": (d_ff, d),
            p + "1.DenseReluDense.wi_1.weight": (d_ff, d),
            p + "1.DenseReluDense.wo.weight": (d, d_ff), p + "1.layer_norm.weight": (d,),
        })
    keys["layer_norm.weight"] = (d,)
    return keys


def _decoder_keys(d: int, heads: int, d_kv: int, d_ff: int, layers: int, mels: int,
                  frames: int) -> dict[str, tuple]:
    inner = heads * d_kv
    keys = {"conditioning_emb.0.weight": (4 * d, d), "conditioning_emb.2.weight": (4 * d, 4 * d),
            "position_encoding.weight": (frames, d),
            "continuous_inputs_projection.weight": (d, mels)}
    for i in range(layers):
        p = f"decoders.{i}.layer."
        for j in (0, 1):
            keys.update({f"{p}{j}.attention.to_q.weight": (inner, d),
                         f"{p}{j}.attention.to_k.weight": (inner, d),
                         f"{p}{j}.attention.to_v.weight": (inner, d),
                         f"{p}{j}.attention.to_out.0.weight": (d, inner),
                         f"{p}{j}.layer_norm.weight": (d,)})
        keys.update({p + "0.FiLMLayer.scale_bias.weight": (2 * d, 4 * d),
                     p + "2.film.scale_bias.weight": (2 * d, 4 * d),
                     p + "2.DenseReluDense.wi_0.weight": (d_ff, d),
                     p + "2.DenseReluDense.wi_1.weight": (d_ff, d),
                     p + "2.DenseReluDense.wo.weight": (d, d_ff),
                     p + "2.layer_norm.weight": (d,)})
    keys.update({"decoder_norm.weight": (d,), "spec_out.weight": (mels, d)})
    return keys


def write_diffusers_folder(folder: str, *, seed: int, d_model: int = 32, num_heads: int = 2,
                           d_kv: int = 16, d_ff: int = 64, num_layers: int = 2,
                           num_decoder_layers: int | None = None, vocab_size: int = 1536, max_length: int = 2048, frames: int = 256,
                           mels: int = 128, dropout_rate: float = 0.0,
                           weights_file: str = "diffusion_pytorch_model.safetensors") -> str:
    """Writes a diffusers 0.42 SpectrogramDiffusionPipeline folder with random weights.

    ``num_layers`` is the encoders' depth; the decoder's is ``num_decoder_layers`` (default the
    same). ``weights_file`` ending in .bin writes torch pickles (needs torch).
    """
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    version = {"_diffusers_version": "0.42.1"}
    decoder_layers = num_layers if num_decoder_layers is None else num_decoder_layers
    sizes = dict(d_model=d_model, num_heads=num_heads, d_kv=d_kv, d_ff=d_ff,
                 num_layers=num_layers, dropout_rate=dropout_rate)
    encoder_keys = _encoder_keys(d_model, num_heads, d_kv, d_ff, num_layers)
    components = {
        "notes_encoder": (
            {"_class_name": "SpectrogramNotesEncoder", **version, **sizes,
             "feed_forward_proj": "gated-gelu", "is_decoder": False, "max_length": max_length,
             "vocab_size": vocab_size},
            {"token_embedder.weight": (vocab_size, d_model),
             "position_encoding.weight": (max_length, d_model), **encoder_keys}),
        "continuous_encoder": (
            {"_class_name": "SpectrogramContEncoder", **version, **sizes,
             "feed_forward_proj": "gated-gelu", "is_decoder": False, "input_dims": mels,
             "targets_context_length": frames},
            {"input_proj.weight": (d_model, mels), "position_encoding.weight": (frames, d_model),
             **encoder_keys}),
        "decoder": (
            {"_class_name": "T5FilmDecoder", **version, **sizes, "num_layers": decoder_layers,
             "input_dims": mels, "max_decoder_noise_time": 20000.0, "targets_length": frames},
            _decoder_keys(d_model, num_heads, d_kv, d_ff, decoder_layers, mels, frames)),
    }
    for component, (config, shapes) in components.items():
        directory = os.path.join(folder, component)
        os.makedirs(directory)
        tensors = {}
        for key, shape in shapes.items():
            scale = 1.0 if key.endswith("layer_norm.weight") else 1.0 / np.sqrt(shape[-1])
            offset = 1.0 if "norm" in key else 0.0
            tensors[key] = (offset + scale * rng.standard_normal(shape)).astype(np.float32)
        path = os.path.join(directory, weights_file)
        if weights_file.endswith(".bin"):
            import torch

            torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, path)
        else:
            save_file(tensors, path, metadata={"format": "pt"})
        _write_json(os.path.join(directory, "config.json"), config)
    _write_json(os.path.join(folder, "scheduler", "scheduler_config.json"), {
        "_class_name": "DDPMScheduler", **version, "beta_end": 0.02,
        "beta_schedule": "squaredcos_cap_v2", "beta_start": 0.0001, "clip_sample": True,
        "clip_sample_range": 1.0, "dynamic_thresholding_ratio": 0.995,
        "num_train_timesteps": 1000, "prediction_type": "epsilon",
        "rescale_betas_zero_snr": False, "sample_max_value": 1.0, "steps_offset": 0,
        "thresholding": False, "timestep_spacing": "leading", "trained_betas": None,
        "variance_type": "fixed_large"})
    _write_json(os.path.join(folder, "model_index.json"), {
        "_class_name": "SpectrogramDiffusionPipeline", **version,
        "continuous_encoder": ["diffusers", "SpectrogramContEncoder"],
        "decoder": ["diffusers", "T5FilmDecoder"], "melgan": [None, None],
        "notes_encoder": ["diffusers", "SpectrogramNotesEncoder"],
        "scheduler": ["diffusers", "DDPMScheduler"]})
    return folder


def _write_json(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")


# ------------------------------------------------------------------------------ melgan


def write_melgan_onnx(folder: str, *, hop_length: int = 320) -> str:
    """FOLDER/model.onnx with the port's MelGAN interface: ``input_features`` [1, T, 128]
    log-mel -> [1, T * hop] audio; sample t of frame f is 0.01 * mean(log_mel[f])."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("ReduceMean", ["input_features"], ["level"], axes=[-1], keepdims=1),
        helper.make_node("Tile", ["level", "repeats"], ["tiled"]),
        helper.make_node("Reshape", ["tiled", "flat_shape"], ["flat"]),
        helper.make_node("Mul", ["flat", "gain"], ["audio"]),
    ]
    initializers = [
        helper.make_tensor("repeats", TensorProto.INT64, [3], [1, 1, hop_length]),
        helper.make_tensor("flat_shape", TensorProto.INT64, [2], [1, -1]),
        helper.make_tensor("gain", TensorProto.FLOAT, [], [0.01]),
    ]
    graph = helper.make_graph(
        nodes, "fake_melgan",
        [helper.make_tensor_value_info("input_features", TensorProto.FLOAT, [1, "frames", 128])],
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, "samples"])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "model.onnx")
    onnx.save(model, path)
    return path
