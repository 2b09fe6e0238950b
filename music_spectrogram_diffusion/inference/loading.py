"""Loading a trained spectrogram model for inference: MODEL_DIR/model.json + one checkpoint.

A training run (or ``msd-import-weights``) leaves (see ``training/checkpoints.py``)::

  MODEL_DIR/model.json              the model's configuration (``models/registry.py``)
  MODEL_DIR/config.gin              the operative gin config (for people; not read here)
  MODEL_DIR/checkpoint_<step>/      orbax composite: state = TrainState(step, params, opt_state)

``load_trained_model`` rebuilds the model from ``model.json`` through the kind table, with no
gin on this path, and restores only the parameters, in float32. The optimizer state is never
read, so loading a model trained with Adam costs one copy of the parameters, not three. The
checkpoint's parameter tree is checked against the model before anything is restored, so a
configuration and a checkpoint from different runs give one clear error instead of an orbax
traceback. A run written before model.json existed (config.gin only) is converted once
(``gin_config.legacy_model_json``, in a separate process) and its model.json written.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import jax
import numpy as np

from music_spectrogram_diffusion import gin_config
from music_spectrogram_diffusion.data.vocabularies import DEFAULT_VOCABULARY, VocabularyConfig
from music_spectrogram_diffusion.models import registry
from music_spectrogram_diffusion.models.contract import Params, SpectrogramModel, example_batch
from music_spectrogram_diffusion.training import checkpoints as ckpt_lib

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.gin"
VOCODER_CONFIG_NAME = "vocoder_config.json"  # audio/vocoders/checkpoints.py


class CheckpointLoadError(RuntimeError):
    """A checkpoint that cannot be loaded; the message names the path and the problem."""


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model object and its trained parameters.

    Attributes:
      model: the model model.json describes (DiffusionModel, AutoregressiveModel).
      params: the model's parameter pytree (plain float32 arrays on the default device), ready
        for ``model.predict(params, batch, rng, ...)``.
      step: the training step of the checkpoint.
      model_dir: the training run's directory (holds model.json).
      checkpoint_dir: the checkpoint_<step> directory the parameters came from.
      vocab: the note-token vocabulary the model was trained on (model.json; the default,
        1 velocity bin, for runs and imports that record none): tokenize MIDI with it.
    """

    model: SpectrogramModel
    params: Params
    step: int
    model_dir: str
    checkpoint_dir: str
    vocab: VocabularyConfig = DEFAULT_VOCABULARY


def resolve_checkpoint(checkpoint: str | os.PathLike) -> tuple[str, str, int]:
    """(model_dir, checkpoint_dir, step) for a MODEL_DIR or a MODEL_DIR/checkpoint_<step>.

    A MODEL_DIR resolves to its newest finalised checkpoint (orbax marks a checkpoint
    finalised when the write completed).

    Raises:
      CheckpointLoadError: the path is missing or not a directory, or holds no finalised
        checkpoint.
    """
    path = os.path.abspath(os.fspath(checkpoint))
    if not os.path.exists(path):
        raise CheckpointLoadError(f"{path}: no such checkpoint directory")
    if not os.path.isdir(path):
        raise CheckpointLoadError(
            f"{path}: is a file; pass a training MODEL_DIR or one of its checkpoint_<step> "
            "directories")
    step = ckpt_lib.checkpoint_step(path)
    if step is not None:
        model_dir = os.path.dirname(path)
        if step not in ckpt_lib.list_checkpoints(model_dir):
            raise CheckpointLoadError(
                f"{path}: incomplete checkpoint (the write never finished); complete ones in "
                f"{model_dir}: {_describe_steps(model_dir)}")
        return model_dir, path, step
    steps = ckpt_lib.list_checkpoints(path)
    if not steps:
        if os.path.isfile(os.path.join(path, VOCODER_CONFIG_NAME)):
            raise CheckpointLoadError(
                f"{path}: is a trained vocoder, not a spectrogram model; pass it as the vocoder "
                "(msd-synthesize --vocoder)")
        raise CheckpointLoadError(
            f"{path}: no checkpoint here (expected checkpoint_<step> directories written by "
            "msd-train or msd-import-weights)")
    return path, ckpt_lib.checkpoint_path(path, steps[-1]), steps[-1]


def _describe_steps(model_dir: str) -> str:
    steps = ckpt_lib.list_checkpoints(model_dir)
    return ", ".join(f"checkpoint_{s}" for s in steps) if steps else "none"


def load_model_config(model_dir: str) -> SpectrogramModel:
    """The model object of a run: model.json, or (older runs) its converted config.gin.

    Raises:
      CheckpointLoadError: neither file, or one that does not describe a valid model.
    """
    json_path = registry.model_config_path(model_dir)
    if os.path.isfile(json_path):
        try:
            return registry.read_model_config(model_dir)
        except registry.ModelConfigError as e:
            raise CheckpointLoadError(str(e)) from e
    if os.path.isfile(os.path.join(model_dir, VOCODER_CONFIG_NAME)):
        raise CheckpointLoadError(
            f"{model_dir}: is a trained vocoder, not a spectrogram model; pass it as the vocoder "
            "(msd-synthesize --vocoder)")
    config_path = os.path.join(model_dir, CONFIG_NAME)
    if not os.path.isfile(config_path):
        raise CheckpointLoadError(
            f"{json_path}: missing (and no {CONFIG_NAME} to convert); msd-train and "
            "msd-import-weights write it, and it is needed to rebuild the model")
    logger.info("%s: no %s; converting %s (a run from before model.json)", model_dir,
                registry.MODEL_CONFIG_NAME, CONFIG_NAME)
    try:
        payload = gin_config.legacy_model_json(config_path)
        model = registry.model_from_json(payload, source=config_path)
    except (gin_config.GinConfigError, registry.ModelConfigError) as e:
        raise CheckpointLoadError(str(e)) from e
    try:
        registry.write_model_config(model_dir, model)
    except OSError as e:  # a read-only run directory still loads, converted each time
        logger.warning("%s: could not write %s (%s)", model_dir, registry.MODEL_CONFIG_NAME, e)
    return model


def load_vocabulary(checkpoint: str | os.PathLike) -> VocabularyConfig:
    """The note-token vocabulary of a run (MODEL_DIR or a checkpoint_<step> in it): cheap, no
    parameters are read. The default vocabulary for runs whose model.json records none.

    Raises:
      CheckpointLoadError: the path is not a run, or its model.json is invalid.
    """
    return _run_vocabulary(resolve_checkpoint(checkpoint)[0])


def _run_vocabulary(model_dir: str) -> VocabularyConfig:
    if not os.path.isfile(registry.model_config_path(model_dir)):
        return DEFAULT_VOCABULARY  # a run from before model.json: 1 velocity bin
    try:
        return registry.read_vocabulary(model_dir)
    except registry.ModelConfigError as e:
        raise CheckpointLoadError(str(e)) from e


def _others_hint(checkpoint_dir: str) -> str:
    model_dir = os.path.dirname(checkpoint_dir)
    others = [s for s in ckpt_lib.list_checkpoints(model_dir)
              if ckpt_lib.checkpoint_path(model_dir, s) != checkpoint_dir]
    if not others:
        return ""
    return f"; other checkpoints to try: {', '.join(f'checkpoint_{s}' for s in others)}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def abstract_params(model: SpectrogramModel) -> Params:
    """float32 ShapeDtypeStructs of the model's (unboxed) parameters, computed without FLOPs."""
    import flax.linen as nn

    boxed = jax.eval_shape(model.init, jax.random.key(0), example_batch(model.network_config))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, np.float32), nn.unbox(boxed))


def _flat_shapes(tree: Params) -> dict[str, tuple[int, ...]]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in flat}


def _check_tree_matches(expected: Params, stored: Params, checkpoint_dir: str, config_path: str
                        ) -> None:
    want, have = _flat_shapes(expected), _flat_shapes(stored)
    problems = [f"{k}: missing from the checkpoint" for k in sorted(set(want) - set(have))]
    problems += [f"{k}: in the checkpoint but not in the model"
                 for k in sorted(set(have) - set(want))]
    problems += [f"{k}: shape {have[k]} in the checkpoint, {want[k]} in the model"
                 for k in sorted(set(want) & set(have)) if want[k] != have[k]]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems)} in all)"
                                            if len(problems) > 5 else "")
        raise CheckpointLoadError(
            f"{checkpoint_dir}: parameters do not match the model described by {config_path} "
            f"({shown})")


def _checkpointer():
    import orbax.checkpoint as ocp

    handlers = {ckpt_lib.STATE_ITEM: ocp.PyTreeCheckpointHandler(),
                ckpt_lib.METADATA_ITEM: ocp.JsonCheckpointHandler()}
    return ocp.Checkpointer(ocp.CompositeCheckpointHandler(**handlers))


def restore_params(checkpoint_dir: str, expected: Params) -> Params:
    """Reads only ``state.params`` of a training checkpoint as float32 numpy arrays.

    Args:
      checkpoint_dir: a finalised MODEL_DIR/checkpoint_<step>.
      expected: ShapeDtypeStructs of the parameters (``abstract_params``); the stored tree
        must have exactly these paths and shapes.

    Raises:
      CheckpointLoadError: unreadable files, no parameters, or a different parameter tree.
    """
    checkpointer = _checkpointer()
    try:
        metadata = checkpointer.metadata(checkpoint_dir).item_metadata[ckpt_lib.STATE_ITEM]
        stored = metadata.tree["params"]
    except Exception as e:  # orbax/tensorstore raise many types for damaged or foreign dirs
        raise CheckpointLoadError(
            f"{checkpoint_dir}: unreadable checkpoint, or not one written by msd-train "
            f"({type(e).__name__}: {_first_line(e)}){_others_hint(checkpoint_dir)}") from e
    config_path = registry.model_config_path(os.path.dirname(checkpoint_dir))
    _check_tree_matches(expected, stored, checkpoint_dir, config_path)
    try:
        params = ckpt_lib.restore_params(checkpoint_dir, expected)
    except Exception as e:
        raise CheckpointLoadError(
            f"{checkpoint_dir}: unreadable checkpoint ({type(e).__name__}: {_first_line(e)})"
            f"{_others_hint(checkpoint_dir)}") from e
    return jax.tree.map(lambda x: np.asarray(x, np.float32), params)


def load_trained_model(checkpoint: str | os.PathLike) -> LoadedModel:
    """Builds the model of a training run and restores its parameters (float32).

    Args:
      checkpoint: a training MODEL_DIR (its newest complete checkpoint is used) or one
        MODEL_DIR/checkpoint_<step> directory.

    Raises:
      CheckpointLoadError: one message naming the path for a missing directory, a missing or
        invalid model.json, no (complete) checkpoint, an unreadable checkpoint, or
        parameters that do not fit the configured model.
    """
    model_dir, checkpoint_dir, step = resolve_checkpoint(checkpoint)
    model = load_model_config(model_dir)
    try:
        expected = abstract_params(model)
    except Exception as e:
        raise CheckpointLoadError(
            f"{registry.model_config_path(model_dir)}: the model it describes cannot be "
            f"initialised ({type(e).__name__}: {_first_line(e)})") from e
    params = jax.device_put(restore_params(checkpoint_dir, expected))
    logger.info("Loaded %s (step %d) from %s", type(model).__name__, step, checkpoint_dir)
    return LoadedModel(model=model, params=params, step=step, model_dir=model_dir,
                       checkpoint_dir=checkpoint_dir, vocab=_run_vocabulary(model_dir))
