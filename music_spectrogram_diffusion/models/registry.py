"""The model kinds by name, and ``model.json``: a saved model's configuration without gin.

A training run (and ``msd-import-weights``) writes ``MODEL_DIR/model.json`` beside its
``config.gin``::

  {"format": "msd-model", "version": 1, "kind": "diffusion",
   "config": {"network_config": {...T5Config...}, "diffusion_config": {...}, "with_context": true},
   "vocabulary": {...VocabularyConfig: the note tokens it was trained on...}}

``config`` is ``dataclasses.asdict`` of the model object (frozen dataclasses all the way down),
so loading is one table look-up (``_KINDS``, as ``audio/vocoders/generators._KINDS``) and the
dataclasses' own validation; no gin is parsed on the inference path. Fields missing from an
older file take their dataclass defaults; unknown fields are refused (the file was written by a
newer version of the code, or edited by hand).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any

from music_spectrogram_diffusion import file_io
from music_spectrogram_diffusion.data.vocabularies import VocabularyConfig, num_embeddings
from music_spectrogram_diffusion.models.autoregressive_model import AutoregressiveModel
from music_spectrogram_diffusion.models.contract import SpectrogramModel
from music_spectrogram_diffusion.models.diffusion_model import DiffusionModel

MODEL_CONFIG_NAME = "model.json"
FORMAT = "msd-model"
VERSION = 1

# kind -> model class. A new model kind is one entry here (plus its gin files).
_KINDS: dict[str, type] = {
    "diffusion": DiffusionModel,
    "autoregressive": AutoregressiveModel,
}
MODEL_KINDS: tuple[str, ...] = tuple(_KINDS)


class ModelConfigError(ValueError):
    """A model.json (or model object) that cannot be read, written or rebuilt."""


def model_kind(model: SpectrogramModel) -> str:
    """The registered kind of a model object."""
    for kind, cls in _KINDS.items():
        if type(model) is cls:
            return kind
    raise ModelConfigError(
        f"{type(model).__name__} is not a registered model kind; valid kinds: "
        + ", ".join(f"{kind} ({cls.__name__})" for kind, cls in _KINDS.items()))


def is_registered(model: Any) -> bool:
    return any(type(model) is cls for cls in _KINDS.values())


def model_to_json(model: SpectrogramModel, vocabulary: VocabularyConfig | None = None
                  ) -> dict[str, Any]:
    """The JSON payload of ``model`` (see the module docstring), with the note-token
    ``vocabulary`` the model was trained on when given (absent: the default, 1 velocity bin)."""
    payload = {"format": FORMAT, "version": VERSION, "kind": model_kind(model),
               "config": dataclasses.asdict(model)}
    if vocabulary is not None:
        payload["vocabulary"] = dataclasses.asdict(vocabulary)
    return payload


def _from_dict(cls: type, values: Any, where: str) -> Any:
    """Rebuilds dataclass ``cls`` from its ``asdict`` form, nested dataclasses included."""
    if not isinstance(values, dict):
        raise ModelConfigError(f"{where}: expected an object for {cls.__name__}, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ModelConfigError(f"{where}: unknown {cls.__name__} fields {unknown}; valid fields: "
                               f"{sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            value = _from_dict(hint, value, f"{where}.{name}")
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ModelConfigError(f"{where}: {e}") from e


def model_from_json(payload: Any, *, source: str = MODEL_CONFIG_NAME) -> SpectrogramModel:
    """Rebuilds the model object of a ``model_to_json`` payload; ``source`` names it in errors."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ModelConfigError(f"{source}: not an {FORMAT} file (format={found!r})")
    if payload.get("version") != VERSION:
        raise ModelConfigError(f"{source}: version {payload.get('version')!r} is not supported "
                               f"(this code reads version {VERSION})")
    kind = payload.get("kind")
    if kind not in _KINDS:
        raise ModelConfigError(f"{source}: unknown model kind {kind!r}; valid kinds: "
                               f"{', '.join(MODEL_KINDS)}")
    return _from_dict(_KINDS[kind], payload.get("config", {}), f"{source}: config")


def vocabulary_from_json(payload: dict[str, Any], *, source: str = MODEL_CONFIG_NAME
                         ) -> VocabularyConfig:
    """The note-token vocabulary a ``model_to_json`` payload records (the default if none)."""
    return _from_dict(VocabularyConfig, payload.get("vocabulary", {}), f"{source}: vocabulary")


def model_config_path(model_dir: str) -> str:
    return os.path.join(model_dir, MODEL_CONFIG_NAME)


def write_model_config(model_dir: str, model: SpectrogramModel,
                       vocabulary: VocabularyConfig | None = None) -> str:
    """Writes MODEL_DIR/model.json atomically; returns its path.

    Raises:
      ModelConfigError: ``vocabulary``'s token ids do not fit the model's embedding table.
    """
    if vocabulary is not None:
        rows = num_embeddings(vocabulary)
        table = model.network_config.vocab_size
        if table < rows:
            raise ModelConfigError(
                f"the model's token embedding has {table} rows but its vocabulary "
                f"({vocabulary}) needs {rows}: set config.T5Config.vocab_size = "
                "@config.token_embedding_rows() (gin/models/t5_common.gin)")
    path = model_config_path(model_dir)
    file_io.write_json_atomic(path, model_to_json(model, vocabulary), sort_keys=True)
    return path


def read_vocabulary(model_dir: str) -> VocabularyConfig:
    """The note-token vocabulary saved in MODEL_DIR/model.json (the default if it records none).

    Raises:
      ModelConfigError: the file is missing, not JSON, or its vocabulary is invalid.
    """
    path = model_config_path(model_dir)
    payload = file_io.read_json_object(path, ModelConfigError, what="model config", missing="missing")
    return vocabulary_from_json(payload, source=path)


def read_model_config(model_dir: str) -> SpectrogramModel:
    """The model object saved in MODEL_DIR/model.json.

    Raises:
      ModelConfigError: the file is missing, not JSON, or does not describe a valid model.
    """
    path = model_config_path(model_dir)
    payload = file_io.read_json_object(path, ModelConfigError, what="model config", missing="missing")
    return model_from_json(payload, source=path)
