"""Released weights <-> a MODEL_DIR (what msd-import-weights and msd-export-weights run).

``import_weights`` reads a t5x checkpoint or a diffusers folder, checks every tensor against the
model it describes, and writes an ordinary MODEL_DIR::

  OUT/model.json              DiffusionModel(T5Config of the source, defaults otherwise)
  OUT/checkpoint_<step>/      our CheckpointStore checkpoint: params, no optimizer state

which msd-synthesize, msd-evaluate, ``inference.loading.load_trained_model`` and msd-train's
``initial_checkpoint`` (gin/resume.gin) read like any trained run. ``OUT`` is filled as a
hidden sibling and renamed when complete (``file_io.atomic_directory``): an interrupted import
leaves no MODEL_DIR at all. ``export_weights`` writes a MODEL_DIR's checkpoint back as a
diffusers folder the same way.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from music_spectrogram_diffusion import file_io
from music_spectrogram_diffusion.models import registry
from music_spectrogram_diffusion.models.config import NAMED_SIZES, T5Config
from music_spectrogram_diffusion.models.diffusion_model import DiffusionModel
from music_spectrogram_diffusion.weights import diffusers_folder, t5x_checkpoint
from music_spectrogram_diffusion.weights.param_tree import (
    FlatTensors, WeightsError, check_tensors, flatten, unflatten)

FORMATS = ("t5x", "diffusers")
EXPORT_FORMATS = ("diffusers",)
# Top-level scopes of the original's two diffusion networks (spec §4.7) -> with_context.
_SCOPES = {("continuous_encoder", "decoder", "token_encoder"): True, ("decoder", "encoder"): False}


@dataclasses.dataclass(frozen=True)
class ImportResult:
    """What ``import_weights`` wrote."""

    model_dir: str
    checkpoint_dir: str
    step: int
    model: DiffusionModel
    num_tensors: int


def _check_out_free(out: str) -> None:
    if os.path.lexists(out) and not (os.path.isdir(out) and not os.listdir(out)):
        raise WeightsError(f"{os.path.abspath(out)}: already exists and is not empty; choose a "
                           "new --out (nothing is overwritten)")


def _expected_shapes(model: DiffusionModel) -> dict[str, tuple[int, ...]]:
    from music_spectrogram_diffusion.inference.loading import abstract_params

    return {name: tuple(leaf.shape) for name, leaf in flatten(abstract_params(model)).items()}


def _t5x_model(tensors: FlatTensors, size: str | None, source: str) -> DiffusionModel:
    scopes = tuple(sorted({name.split("/")[0] for name in tensors}))
    if scopes not in _SCOPES:
        raise WeightsError(
            f"{source}: parameter scopes {list(scopes)} are neither the context model's "
            "(token_encoder, continuous_encoder, decoder) nor the no-context model's "
            "(encoder, decoder)")
    if size is None:
        raise WeightsError(f"{source}: a t5x checkpoint does not record its size; pass --size "
                           f"({', '.join(NAMED_SIZES)})")
    try:
        config = T5Config.named(size)
    except ValueError as e:
        raise WeightsError(str(e)) from e
    return DiffusionModel(network_config=config, with_context=_SCOPES[scopes])


def read_source(format: str, source: str, *, size: str | None = None
                ) -> tuple[DiffusionModel, FlatTensors, int]:
    """(model, our flat float32 parameters, step) of a t5x checkpoint or diffusers folder.

    Every tensor is checked against the model: one WeightsError names the first missing,
    unexpected or misshapen one.
    """
    if format not in FORMATS:
        raise WeightsError(f"unknown weights format {format!r}; valid formats: {', '.join(FORMATS)}")
    if format == "t5x":
        checkpoint_file, step = t5x_checkpoint.find_checkpoint(source)
        tensors = t5x_checkpoint.read_target(checkpoint_file)
        model = _t5x_model(tensors, size, checkpoint_file)
        check_tensors(_expected_shapes(model), tensors, checkpoint_file)
        return model, tensors, step
    if size is not None:
        raise WeightsError(f"{source}: --size is for t5x checkpoints; a diffusers folder's "
                           "config files give its size")
    config, tensors = diffusers_folder.read_folder(source)
    model = DiffusionModel(network_config=config, with_context=True)
    check_tensors(_expected_shapes(model), tensors, os.path.abspath(source))
    return model, tensors, 0


def write_model_dir(out: str, model: DiffusionModel, params: FlatTensors, step: int,
                    metadata: dict) -> str:
    """Writes OUT/model.json and OUT/checkpoint_<step> (params only) atomically; returns OUT."""
    from music_spectrogram_diffusion.training import checkpoints as ckpt_lib
    from music_spectrogram_diffusion.training.train_state import TrainState

    state = TrainState(step=np.asarray(step, np.int32), params=unflatten(params), opt_state=None)
    with file_io.atomic_directory(out) as temp_dir:
        with ckpt_lib.CheckpointStore(temp_dir) as store:
            store.save(state, metadata)
        registry.write_model_config(temp_dir, model)
    return os.path.abspath(out)


def import_weights(*, format: str, source: str, out: str, size: str | None = None
                   ) -> ImportResult:
    """Imports released weights into a new MODEL_DIR ``out`` (see the module docstring).

    Args:
      format: 't5x' or 'diffusers'.
      source: t5x: a checkpoint_<step> directory, its ``checkpoint`` file, or a directory of
        checkpoint_<step> directories (the newest); diffusers: the pipeline folder.
      out: the MODEL_DIR to create; must not exist or be empty.
      size: t5x only: the named T5 size ('small', 'base', ...).

    Raises:
      WeightsError: one message naming the file and tensor or field at fault.
    """
    _check_out_free(out)
    model, tensors, step = read_source(format, source, size=size)
    from music_spectrogram_diffusion.training import checkpoints as ckpt_lib

    model_dir = write_model_dir(out, model, tensors, step, {
        "imported_from": os.path.abspath(source), "imported_format": format})
    return ImportResult(model_dir=model_dir, checkpoint_dir=ckpt_lib.checkpoint_path(model_dir, step),
                        step=step, model=model, num_tensors=len(tensors))


def export_weights(*, model_dir: str, out: str, format: str = "diffusers",
                   checkpoint: int | None = None) -> str:
    """Writes a MODEL_DIR's checkpoint (the newest, or step ``checkpoint``) as a diffusers
    folder ``out`` (which must not exist or be empty); returns its path.

    Raises:
      WeightsError: an unknown format, or a model the format cannot hold.
      inference.loading.CheckpointLoadError: the MODEL_DIR or checkpoint cannot be loaded.
    """
    from music_spectrogram_diffusion.inference import loading
    from music_spectrogram_diffusion.training import checkpoints as ckpt_lib

    if format not in EXPORT_FORMATS:
        raise WeightsError(f"unknown export format {format!r}; valid formats: "
                           f"{', '.join(EXPORT_FORMATS)}")
    _check_out_free(out)
    path = model_dir if checkpoint is None else ckpt_lib.checkpoint_path(model_dir, checkpoint)
    loaded = loading.load_trained_model(path)
    model = loaded.model
    if not (isinstance(model, DiffusionModel) and model.with_context):
        raise WeightsError(f"{loaded.model_dir}: a diffusers pipeline holds the diffusion model "
                           f"with context only, this is {type(model).__name__}"
                           + ("" if not isinstance(model, DiffusionModel) else " without context"))
    diffusion = model.diffusion_config
    if (diffusion.prediction, diffusion.schedule) != ("eps", "cosine"):
        raise WeightsError(
            f"{loaded.model_dir}: the diffusers pipeline samples an eps-predicting model with the "
            f"cosine schedule; this one predicts {diffusion.prediction!r} with "
            f"{diffusion.schedule!r}")
    params = {name: np.asarray(value, np.float32) for name, value in flatten(loaded.params).items()}
    with file_io.atomic_directory(out) as temp_dir:
        diffusers_folder.write_folder(temp_dir, model.network_config, params)
    return os.path.abspath(out)
