"""Loading a trained spectrogram model for inference: MODEL_DIR/config.gin + one checkpoint.

A training run leaves (see ``training/checkpoints.py``)::

  MODEL_DIR/config.gin              the operative gin config; defines the MODEL macro
  MODEL_DIR/checkpoint_<step>/      orbax composite: state = TrainState(step, params, opt_state)

``load_trained_model`` parses ``config.gin`` with gin itself (no string patching of the saved
config; the original rewrote ``import __main__ as train_script``, spec §7), builds ``%MODEL``,
and restores only the parameters, in float32. The optimizer state is never read, so loading a
model trained with Adam costs one copy of the parameters, not three. The checkpoint's parameter
tree is checked against the model the config builds before anything is restored, so a config
and a checkpoint from different runs give one clear error instead of an orbax traceback.

gin's global configuration is saved before parsing and restored afterwards, so loading a model
from inside a gin-configured program (an evaluation job, a notebook) leaves its config intact.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
import re
from typing import Any, Iterator

import jax
import numpy as np

from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig
from music_spectrogram_diffusion.training import checkpoints as ckpt_lib

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.gin"
MODEL_MACRO = "MODEL"
_CHECKPOINT_DIR_RE = re.compile(r"^checkpoint_(\d+)$")
# Orbax item names of a training checkpoint (training/checkpoints.py).
_STATE_ITEM, _METADATA_ITEM = "state", "metadata"


class CheckpointLoadError(RuntimeError):
    """A checkpoint that cannot be loaded; the message names the path and the problem."""


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model object and its trained parameters.

    Attributes:
      model: what ``%MODEL`` in config.gin builds (DiffusionModel, AutoregressiveModel, ...).
      params: the model's parameter pytree (plain float32 arrays on the default device), ready
        for ``model.predict(params, batch, rng, ...)``.
      step: the training step of the checkpoint.
      model_dir: the training run's directory (holds config.gin).
      checkpoint_dir: the checkpoint_<step> directory the parameters came from.
    """

    model: Any
    params: Any
    step: int
    model_dir: str
    checkpoint_dir: str


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
    match = _CHECKPOINT_DIR_RE.match(os.path.basename(path))
    if match:
        model_dir, step = os.path.dirname(path), int(match.group(1))
        if step not in ckpt_lib.list_checkpoints(model_dir):
            raise CheckpointLoadError(
                f"{path}: incomplete checkpoint (the write never finished); complete ones in "
                f"{model_dir}: {_describe_steps(model_dir)}")
        return model_dir, path, step
    steps = ckpt_lib.list_checkpoints(path)
    if not steps:
        raise CheckpointLoadError(
            f"{path}: no checkpoint here (expected checkpoint_<step> directories written by "
            "msd-train)")
    return path, ckpt_lib.checkpoint_path(path, steps[-1]), steps[-1]


def _describe_steps(model_dir: str) -> str:
    steps = ckpt_lib.list_checkpoints(model_dir)
    return ", ".join(f"checkpoint_{s}" for s in steps) if steps else "none"


@contextlib.contextmanager
def _isolated_gin_config() -> Iterator[None]:
    """Runs the body on an empty gin config, then puts the caller's config back.

    gin keeps one process-wide config and has no public save/restore; these are the module
    attributes ``gin.clear_config`` resets (gin-config 0.5).
    """
    import gin
    from gin import config as gin_config

    saved_config = {key: dict(bindings) for key, bindings in gin_config._CONFIG.items()}
    saved = {name: copy.copy(getattr(gin_config, name))
             for name in ("_IMPORTS", "_OPERATIVE_CONFIG", "_SINGLETONS")}
    locked = gin_config._CONFIG_IS_LOCKED
    gin.clear_config()
    try:
        yield
    finally:
        gin.clear_config()  # clears in place, so the module's objects are refilled below
        gin_config._CONFIG.update(saved_config)
        for name, value in saved.items():
            getattr(gin_config, name).update(value)
        gin_config._set_config_is_locked(locked)


def build_model_from_config(config_path: str) -> Any:
    """Parses a saved gin config and returns what its ``MODEL`` macro builds.

    Raises:
      CheckpointLoadError: the file is missing, does not parse (e.g. it names a module or
        binding this version of the code does not have), or defines no MODEL.
    """
    import gin

    if not os.path.isfile(config_path):
        raise CheckpointLoadError(
            f"{config_path}: missing; a training run writes its gin config there, and it is "
            "needed to rebuild the model")
    with _isolated_gin_config():
        try:
            gin.parse_config_file(config_path)
        except Exception as e:  # gin raises ValueError, ImportError, KeyError, SyntaxError...
            raise CheckpointLoadError(
                f"{config_path}: cannot be parsed ({type(e).__name__}: {_first_line(e)})") from e
        try:
            reference = gin.query_parameter(f"%{MODEL_MACRO}")
        except ValueError as e:
            raise CheckpointLoadError(
                f"{config_path}: defines no {MODEL_MACRO} macro (include a gin/models/*.gin file "
                "when training)") from e
        try:
            return reference.scoped_configurable_fn()
        except Exception as e:  # a config's __post_init__ rejecting a value, a bad binding
            raise CheckpointLoadError(
                f"{config_path}: building {MODEL_MACRO} failed ({type(e).__name__}: "
                f"{_first_line(e)})") from e


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


def example_batch(model: Any, features: FeatureConfig = DEFAULT_FEATURES
                  ) -> dict[str, np.ndarray]:
    """An all-zero batch of one example with the shapes ``model`` was built for."""
    network = getattr(model, "network_config", None)
    tokens = getattr(network, "note_tokens_length", features.max_note_tokens)
    frames = getattr(network, "target_frames", features.segment_frames)
    context = getattr(network, "context_frames", features.context_frames)
    mels = getattr(network, "num_mels", features.num_mels)
    return {
        "note_tokens": np.zeros((1, tokens), np.int32),
        "target_frames": np.zeros((1, frames, mels), np.float32),
        "target_mask": np.zeros((1, frames), np.float32),
        "context_frames": np.zeros((1, context, mels), np.float32),
        "context_mask": np.zeros((1, context), np.float32),
    }


def abstract_params(model: Any, features: FeatureConfig = DEFAULT_FEATURES) -> Any:
    """float32 ShapeDtypeStructs of the model's (unboxed) parameters, computed without FLOPs."""
    import flax.linen as nn

    boxed = jax.eval_shape(model.init, jax.random.key(0), example_batch(model, features))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, np.float32), nn.unbox(boxed))


def _flat_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in flat}


def _check_tree_matches(expected: Any, stored: Any, checkpoint_dir: str, config_path: str
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
            f"{checkpoint_dir}: parameters do not match the model built from {config_path} "
            f"({shown})")


def _checkpointer():
    import orbax.checkpoint as ocp

    handlers = {_STATE_ITEM: ocp.PyTreeCheckpointHandler(),
                _METADATA_ITEM: ocp.JsonCheckpointHandler()}
    return ocp.Checkpointer(ocp.CompositeCheckpointHandler(**handlers))


def restore_params(checkpoint_dir: str, expected: Any) -> Any:
    """Reads only ``state.params`` of a training checkpoint as float32 numpy arrays.

    Args:
      checkpoint_dir: a finalised MODEL_DIR/checkpoint_<step>.
      expected: ShapeDtypeStructs of the parameters (``abstract_params``); the stored tree
        must have exactly these paths and shapes.

    Raises:
      CheckpointLoadError: unreadable files, no parameters, or a different parameter tree.
    """
    import orbax.checkpoint as ocp

    checkpointer = _checkpointer()
    try:
        metadata = checkpointer.metadata(checkpoint_dir).item_metadata[_STATE_ITEM]
        stored = metadata.tree["params"]
    except Exception as e:  # orbax/tensorstore raise many types for damaged or foreign dirs
        raise CheckpointLoadError(
            f"{checkpoint_dir}: unreadable checkpoint, or not one written by msd-train "
            f"({type(e).__name__}: {_first_line(e)}){_others_hint(checkpoint_dir)}") from e
    config_path = os.path.join(os.path.dirname(checkpoint_dir), CONFIG_NAME)
    _check_tree_matches(expected, stored, checkpoint_dir, config_path)
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), expected)
    try:
        restored = checkpointer.restore(checkpoint_dir, args=ocp.args.Composite(**{
            _STATE_ITEM: ocp.args.PyTreeRestore(
                item={"params": expected}, restore_args={"params": restore_args},
                partial_restore=True),
        }))
    except Exception as e:
        raise CheckpointLoadError(
            f"{checkpoint_dir}: unreadable checkpoint ({type(e).__name__}: {_first_line(e)})"
            f"{_others_hint(checkpoint_dir)}") from e
    params = restored[_STATE_ITEM]["params"]
    return jax.tree.map(lambda x: np.asarray(x, np.float32), params)


def load_trained_model(
    checkpoint: str | os.PathLike, *, features: FeatureConfig = DEFAULT_FEATURES
) -> LoadedModel:
    """Builds the model of a training run and restores its parameters (float32).

    Args:
      checkpoint: a training MODEL_DIR (its newest complete checkpoint is used) or one
        MODEL_DIR/checkpoint_<step> directory.
      features: the representation the model works in (shapes of the example batch).

    Raises:
      CheckpointLoadError: one message naming the path for a missing directory, a missing or
        unparsable config.gin, no (complete) checkpoint, an unreadable checkpoint, or
        parameters that do not fit the configured model.
    """
    model_dir, checkpoint_dir, step = resolve_checkpoint(checkpoint)
    model = build_model_from_config(os.path.join(model_dir, CONFIG_NAME))
    try:
        expected = abstract_params(model, features)
    except Exception as e:
        raise CheckpointLoadError(
            f"{os.path.join(model_dir, CONFIG_NAME)}: the model it builds cannot be initialised "
            f"({type(e).__name__}: {_first_line(e)})") from e
    params = jax.device_put(restore_params(checkpoint_dir, expected))
    logger.info("Loaded %s (step %d) from %s", type(model).__name__, step, checkpoint_dir)
    return LoadedModel(model=model, params=params, step=step, model_dir=model_dir,
                       checkpoint_dir=checkpoint_dir)
