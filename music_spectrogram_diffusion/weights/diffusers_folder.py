"""The PyTorch port's folder (diffusers' ``SpectrogramDiffusionPipeline.save_pretrained``).

Layout (diffusers 0.42)::

  model_index.json                  the pipeline's components
  notes_encoder/                    SpectrogramNotesEncoder: config.json + weights
  continuous_encoder/               SpectrogramContEncoder: config.json + weights
  decoder/                          T5FilmDecoder: config.json + weights
  scheduler/scheduler_config.json   DDPMScheduler (cosine betas, fixed_large variance)
  melgan/model.onnx                 (hub copy only) the vocoder, see audio/vocoders/melgan_onnx.py

The weights are ``diffusion_pytorch_model.safetensors`` (read with safetensors' numpy API) or
``diffusion_pytorch_model.bin`` (a torch pickle: needs torch, loaded with weights_only=True).

The name mapping is the port's conversion script's (scripts/convert_music_spectrogram_to_
diffusers.py), one table below: our kernels are [in, out], torch's Linear weights [out, in], so
every ``kernel`` is transposed; embeddings and norm scales are copied. The network sizes come
from the config files. Only the with-context model has a diffusers pipeline.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from music_spectrogram_diffusion import file_io
from music_spectrogram_diffusion.models.config import T5Config
from music_spectrogram_diffusion.weights.param_tree import FlatTensors, WeightsError, check_tensors

DIFFUSERS_VERSION = "0.42.1"  # written into the exported config files
MODEL_INDEX = "model_index.json"
CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "diffusion_pytorch_model.safetensors"
BIN_FILE = "diffusion_pytorch_model.bin"
SCHEDULER_FILE = os.path.join("scheduler", "scheduler_config.json")

# component folder -> (diffusers class, our parameter scope)
COMPONENTS: dict[str, tuple[str, str]] = {
    "notes_encoder": ("SpectrogramNotesEncoder", "token_encoder"),
    "continuous_encoder": ("SpectrogramContEncoder", "continuous_encoder"),
    "decoder": ("T5FilmDecoder", "decoder"),
}
PIPELINE_CLASS = "SpectrogramDiffusionPipeline"

# DDPMScheduler(beta_schedule="squaredcos_cap_v2", variance_type="fixed_large") as the port's
# conversion script builds it, every field as diffusers 0.42 saves it.
SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "DDPMScheduler", "beta_end": 0.02, "beta_schedule": "squaredcos_cap_v2",
    "beta_start": 0.0001, "clip_sample": True, "clip_sample_range": 1.0,
    "dynamic_thresholding_ratio": 0.995, "num_train_timesteps": 1000,
    "prediction_type": "epsilon", "rescale_betas_zero_snr": False, "sample_max_value": 1.0,
    "steps_offset": 0, "thresholding": False, "timestep_spacing": "leading",
    "trained_betas": None, "variance_type": "fixed_large",
}

# ---------------------------------------------------------------------- the name mapping

# ours (below <scope>/layers_<i>/) -> diffusers (below encoders.<i>.)
_ENCODER_LAYER = (
    ("pre_attention_layer_norm/scale", "layer.0.layer_norm.weight"),
    ("attention/query/kernel", "layer.0.SelfAttention.q.weight"),
    ("attention/key/kernel", "layer.0.SelfAttention.k.weight"),
    ("attention/value/kernel", "layer.0.SelfAttention.v.weight"),
    ("attention/out/kernel", "layer.0.SelfAttention.o.weight"),
    ("pre_mlp_layer_norm/scale", "layer.1.layer_norm.weight"),
    ("mlp/wi_0/kernel", "layer.1.DenseReluDense.wi_0.weight"),
    ("mlp/wi_1/kernel", "layer.1.DenseReluDense.wi_1.weight"),
    ("mlp/wo/kernel", "layer.1.DenseReluDense.wo.weight"),
)
# ours (below decoder/layers_<i>/) -> diffusers (below decoders.<i>.)
_DECODER_LAYER = (
    ("pre_self_attention_layer_norm/scale", "layer.0.layer_norm.weight"),
    ("FiLMLayer_0/DenseGeneral_0/kernel", "layer.0.FiLMLayer.scale_bias.weight"),
    ("self_attention/query/kernel", "layer.0.attention.to_q.weight"),
    ("self_attention/key/kernel", "layer.0.attention.to_k.weight"),
    ("self_attention/value/kernel", "layer.0.attention.to_v.weight"),
    ("self_attention/out/kernel", "layer.0.attention.to_out.0.weight"),
    ("pre_cross_attention_layer_norm/scale", "layer.1.layer_norm.weight"),
    ("MultiHeadDotProductAttention_0/query/kernel", "layer.1.attention.to_q.weight"),
    ("MultiHeadDotProductAttention_0/key/kernel", "layer.1.attention.to_k.weight"),
    ("MultiHeadDotProductAttention_0/value/kernel", "layer.1.attention.to_v.weight"),
    ("MultiHeadDotProductAttention_0/out/kernel", "layer.1.attention.to_out.0.weight"),
    ("pre_mlp_layer_norm/scale", "layer.2.layer_norm.weight"),
    ("FiLMLayer_1/DenseGeneral_0/kernel", "layer.2.film.scale_bias.weight"),
    ("mlp/wi_0/kernel", "layer.2.DenseReluDense.wi_0.weight"),
    ("mlp/wi_1/kernel", "layer.2.DenseReluDense.wi_1.weight"),
    ("mlp/wo/kernel", "layer.2.DenseReluDense.wo.weight"),
)
# Per component: (ours below the scope, diffusers) outside the layers.
_OUTER = {
    "notes_encoder": (("token_embedder/embedding", "token_embedder.weight"),
                      ("Embed_0/embedding", "position_encoding.weight"),
                      ("encoder_norm/scale", "layer_norm.weight")),
    "continuous_encoder": (("input_proj/kernel", "input_proj.weight"),
                           ("Embed_0/embedding", "position_encoding.weight"),
                           ("encoder_norm/scale", "layer_norm.weight")),
    "decoder": (("time_emb_dense0/kernel", "conditioning_emb.0.weight"),
                ("time_emb_dense1/kernel", "conditioning_emb.2.weight"),
                ("Embed_0/embedding", "position_encoding.weight"),
                ("continuous_inputs_projection/kernel", "continuous_inputs_projection.weight"),
                ("decoder_norm/scale", "decoder_norm.weight"),
                ("spec_out_dense/kernel", "spec_out.weight")),
}


def name_table(config: T5Config, component: str) -> dict[str, str]:
    """diffusers key -> our parameter name, for one component of a model of ``config``."""
    scope = COMPONENTS[component][1]
    table = {theirs: f"{scope}/{ours}" for ours, theirs in _OUTER[component]}
    if component == "decoder":
        layers, prefix, template = config.num_decoder_layers, "decoders", _DECODER_LAYER
    else:
        layers, prefix, template = config.num_encoder_layers, "encoders", _ENCODER_LAYER
    for i in range(layers):
        for ours, theirs in template:
            table[f"{prefix}.{i}.{theirs}"] = f"{scope}/layers_{i}/{ours}"
    return table


def _convert(name: str, array: np.ndarray) -> np.ndarray:
    """Our ``name``'s array <-> torch's layout, either way: kernels are transposed."""
    return np.ascontiguousarray(array.T if name.endswith("/kernel") else array, np.float32)


# ------------------------------------------------------------------------------- configs


def component_configs(config: T5Config) -> dict[str, dict[str, Any]]:
    """The three components' config.json contents for a model of ``config``."""
    shared = {"d_model": config.emb_dim, "num_heads": config.num_heads, "d_kv": config.head_dim,
              "d_ff": config.mlp_dim, "dropout_rate": config.dropout_rate}
    encoder = dict(shared, num_layers=config.num_encoder_layers,
                   feed_forward_proj="gated-gelu", is_decoder=False)
    return {
        "notes_encoder": dict(encoder, max_length=config.note_tokens_length,
                              vocab_size=config.vocab_size),
        "continuous_encoder": dict(encoder, input_dims=config.num_mels,
                                   targets_context_length=config.context_frames),
        "decoder": dict(shared, num_layers=config.num_decoder_layers,
                        input_dims=config.num_mels, targets_length=config.target_frames,
                        max_decoder_noise_time=config.max_decoder_noise_time),
    }


def _read_json(path: str) -> dict[str, Any]:
    return file_io.read_json_object(path, WeightsError, what="diffusers config",
                                    missing="missing (not a diffusers pipeline folder?)")


def read_config(folder: str) -> T5Config:
    """The network sizes a diffusers folder's config files describe.

    Raises:
      WeightsError: a missing or foreign config file, a missing field, components that
        disagree, or a setting our networks do not have (naming the file and field).
    """
    configs = {}
    for component, (class_name, _) in COMPONENTS.items():
        path = os.path.join(folder, component, CONFIG_FILE)
        payload = _read_json(path)
        if payload.get("_class_name") != class_name:
            raise WeightsError(f"{path}: _class_name is {payload.get('_class_name')!r}, "
                               f"expected {class_name!r}")
        configs[component] = (path, payload)

    def field(component: str, name: str) -> Any:
        path, payload = configs[component]
        if name not in payload:
            raise WeightsError(f"{path}: field {name!r} is missing")
        return payload[name]

    for component in ("notes_encoder", "continuous_encoder"):
        path = configs[component][0]
        if field(component, "feed_forward_proj") != "gated-gelu":
            raise WeightsError(f"{path}: feed_forward_proj is "
                               f"{field(component, 'feed_forward_proj')!r}; only 'gated-gelu' "
                               "(the original's MLP) is supported")
        if field(component, "is_decoder"):
            raise WeightsError(f"{path}: is_decoder is true; the encoders are bidirectional")
    for name in ("d_model", "num_heads", "d_kv", "d_ff", "dropout_rate"):
        values = {c: field(c, name) for c in COMPONENTS}
        if len(set(values.values())) > 1:
            raise WeightsError(f"{folder}: the components disagree on {name} ({values})")
    if field("notes_encoder", "num_layers") != field("continuous_encoder", "num_layers"):
        raise WeightsError(
            f"{folder}: notes_encoder has {field('notes_encoder', 'num_layers')} layers, "
            f"continuous_encoder {field('continuous_encoder', 'num_layers')}; our model has one "
            "encoder depth")
    if field("continuous_encoder", "input_dims") != field("decoder", "input_dims"):
        raise WeightsError(f"{folder}: continuous_encoder and decoder disagree on input_dims")
    try:
        return T5Config(
            vocab_size=field("notes_encoder", "vocab_size"),
            emb_dim=field("decoder", "d_model"),
            num_heads=field("decoder", "num_heads"),
            head_dim=field("decoder", "d_kv"),
            num_encoder_layers=field("notes_encoder", "num_layers"),
            num_decoder_layers=field("decoder", "num_layers"),
            mlp_dim=field("decoder", "d_ff"),
            dropout_rate=float(field("decoder", "dropout_rate")),
            max_decoder_noise_time=float(field("decoder", "max_decoder_noise_time")),
            note_tokens_length=field("notes_encoder", "max_length"),
            target_frames=field("decoder", "targets_length"),
            context_frames=field("continuous_encoder", "targets_context_length"),
            num_mels=field("decoder", "input_dims"),
        )
    except ValueError as e:
        raise WeightsError(f"{folder}: {e}") from e


# ------------------------------------------------------------------------------- tensors


def _load_bin(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise WeightsError(
            f"{path}: .bin weights are torch pickles and need PyTorch (pip install torch), or "
            f"save them as {SAFETENSORS_FILE} instead") from None
    try:
        # weights_only: tensors and plain containers only; never arbitrary pickled objects.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError / RuntimeError for bad files
        raise WeightsError(f"{path}: unreadable torch weights ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, got {type(state).__name__}")
    return {key: value.detach().to(torch.float32).numpy() for key, value in state.items()}


def _load_component(folder: str, component: str) -> tuple[str, dict[str, np.ndarray]]:
    directory = os.path.join(folder, component)
    path = os.path.join(directory, SAFETENSORS_FILE)
    if os.path.isfile(path):
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            return path, load_file(path)
        except (SafetensorError, OSError, ValueError) as e:
            raise WeightsError(f"{path}: unreadable safetensors file ({e})") from e
    path = os.path.join(directory, BIN_FILE)
    if os.path.isfile(path):
        return path, _load_bin(path)
    raise WeightsError(f"{directory}: no weights ({SAFETENSORS_FILE} or {BIN_FILE})")


def read_folder(folder: str) -> tuple[T5Config, FlatTensors]:
    """(network sizes, our flat float32 parameters) of a diffusers folder.

    Raises:
      WeightsError: see ``read_config``; a missing weights file; a missing, unexpected or
        misshapen tensor (named by its diffusers key and file).
    """
    folder = os.path.abspath(folder)
    if not os.path.isdir(folder):
        raise WeightsError(f"{folder}: no such diffusers folder")
    index = _read_json(os.path.join(folder, MODEL_INDEX))
    if index.get("_class_name") != PIPELINE_CLASS:
        raise WeightsError(f"{os.path.join(folder, MODEL_INDEX)}: _class_name is "
                           f"{index.get('_class_name')!r}, expected {PIPELINE_CLASS!r}")
    config = read_config(folder)
    expected_shapes = _their_shapes(config)
    params: FlatTensors = {}
    for component in COMPONENTS:
        path, tensors = _load_component(folder, component)
        check_tensors(expected_shapes[component], tensors, path)
        for theirs, ours in name_table(config, component).items():
            params[ours] = _convert(ours, tensors[theirs])
    return config, params


def _their_shapes(config: T5Config) -> dict[str, dict[str, tuple[int, ...]]]:
    """Per component, diffusers key -> shape, from our parameter shapes."""
    from music_spectrogram_diffusion.inference.loading import abstract_params
    from music_spectrogram_diffusion.models.diffusion_model import DiffusionModel
    from music_spectrogram_diffusion.weights.param_tree import flatten

    ours = flatten(abstract_params(DiffusionModel(config)))
    shapes = {}
    for component in COMPONENTS:
        shapes[component] = {
            theirs: tuple(reversed(ours[name].shape)) if name.endswith("/kernel")
            else tuple(ours[name].shape)
            for theirs, name in name_table(config, component).items()}
    return shapes


def write_folder(folder: str, config: T5Config, params: FlatTensors) -> None:
    """Writes the diffusers layout for a with-context model into the existing ``folder``.

    ``params`` are our flat parameters (checked against ``config`` by the caller).
    """
    from safetensors.numpy import save_file

    for component, (class_name, _) in COMPONENTS.items():
        directory = os.path.join(folder, component)
        os.makedirs(directory, exist_ok=True)
        tensors = {theirs: _convert(ours, params[ours])
                   for theirs, ours in name_table(config, component).items()}
        save_file(tensors, os.path.join(directory, SAFETENSORS_FILE), metadata={"format": "pt"})
        payload = {"_class_name": class_name, "_diffusers_version": DIFFUSERS_VERSION,
                   **component_configs(config)[component]}
        file_io.write_json_atomic(os.path.join(directory, CONFIG_FILE), payload, sort_keys=True)
    file_io.write_json_atomic(os.path.join(folder, SCHEDULER_FILE),
                              {**SCHEDULER_CONFIG, "_diffusers_version": DIFFUSERS_VERSION},
                              sort_keys=True)
    index = {"_class_name": PIPELINE_CLASS, "_diffusers_version": DIFFUSERS_VERSION,
             "melgan": [None, None], "scheduler": ["diffusers", "DDPMScheduler"],
             **{component: ["diffusers", class_name]
                for component, (class_name, _) in COMPONENTS.items()}}
    file_io.write_json_atomic(os.path.join(folder, MODEL_INDEX), index, sort_keys=True)
