"""Resumable, atomic checkpoints: ``MODEL_DIR/checkpoint_<step>`` through orbax's CheckpointManager.

Layout (t5x names, so t5x users find things where they expect them)::

  MODEL_DIR/config.gin              the operative gin config of the run
  MODEL_DIR/model.json              the model's configuration (models/registry.py)
  MODEL_DIR/checkpoint_<step>/      one orbax composite checkpoint:
      state/                        the TrainState (step, params, opt_state), sharded arrays
      metadata/                     JSON: step, examples seen, seed, batch size, and under
                                    'data' the input loader's position (data/loader.py)

``CheckpointStore`` wraps ``orbax.checkpoint.CheckpointManager`` (step prefix ``checkpoint``,
``max_to_keep``, async saving, multi-process barriers) and adds what a long run needs on top:
orbax writes each checkpoint into a temporary directory and renames it when complete, so a
``checkpoint_<step>`` directory never holds a half-written checkpoint after a crash; one that
is nevertheless unreadable (disk corruption, files truncated by hand) is skipped with a warning
and the previous checkpoint is used instead. Unlike the original (spec §6: every checkpoint
kept, no dataset state), the newest ``keep`` are kept and the data position is saved.

``checkpoint_path`` / ``checkpoint_step`` are the one place that spells the folder name.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from music_spectrogram_diffusion import file_io

STEP_PREFIX = "checkpoint"
_CHECKPOINT_RE = re.compile(rf"^{STEP_PREFIX}_(\d+)$")
# Orbax writes this file when it finalises a checkpoint directory.
_COMMIT_MARKER = "_CHECKPOINT_METADATA"
STATE_ITEM, METADATA_ITEM = "state", "metadata"

logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was required."""


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """When and how many checkpoints to keep.

    Attributes:
      period: save every ``period`` steps (and always at the last step and on SIGTERM).
      keep: keep the newest ``keep`` checkpoints; None keeps all (the original's behaviour).
      async_save: write checkpoints in a background thread while training continues (the
        arrays are copied to host memory first); the trainer waits for the last write before
        it returns.
    """

    period: int = 1000
    keep: int | None = 3
    async_save: bool = True

    def __post_init__(self):
        if self.period < 1:
            raise ValueError(f"CheckpointConfig.period must be >= 1, got {self.period}")
        if self.keep is not None and self.keep < 1:
            raise ValueError(f"CheckpointConfig.keep must be >= 1 or None, got {self.keep}")


def checkpoint_path(model_dir: str, step: int) -> str:
    """MODEL_DIR/checkpoint_<step>."""
    return os.path.join(model_dir, f"{STEP_PREFIX}_{step}")


def checkpoint_step(path: str) -> int | None:
    """The step of a ``checkpoint_<step>`` path (its last component), or None if it is not one."""
    match = _CHECKPOINT_RE.match(os.path.basename(os.path.normpath(path)))
    return int(match.group(1)) if match else None


def is_finalized(path: str) -> bool:
    return os.path.exists(os.path.join(path, _COMMIT_MARKER))


def list_checkpoints(model_dir: str) -> list[int]:
    """Steps of the finalised checkpoint directories in model_dir, ascending."""
    if not os.path.isdir(model_dir):
        return []
    steps = []
    for name in os.listdir(model_dir):
        step = checkpoint_step(name)
        if step is not None and is_finalized(os.path.join(model_dir, name)):
            steps.append(step)
    return sorted(steps)


class CheckpointStore:
    """The checkpoints of one MODEL_DIR: save, keep the newest ``keep``, restore with fallback.

    Args:
      model_dir: the run's directory.
      keep: newest checkpoints kept (None: all).
      async_save: see ``CheckpointConfig.async_save``.

    Items are written with orbax's composite handler; each item's handler is the one orbax
    registered for its save/restore args (``StandardSave``, ``JsonSave``, grain's iterator
    args, ...), so extra items need no set-up here.
    """

    def __init__(self, model_dir: str, *, keep: int | None = None, async_save: bool = False):
        self.model_dir = os.path.abspath(model_dir)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, step_prefix=STEP_PREFIX, create=True,
            enable_async_checkpointing=async_save)
        self._manager = ocp.CheckpointManager(self.model_dir, options=options)

    def save(self, state: Any, metadata: dict, *, extra: dict[str, Any] | None = None) -> str:
        """Writes checkpoint_<state.step> (asynchronously if configured); returns its path.

        ``extra`` maps extra item names to their orbax save args. An existing checkpoint of
        the same step is left as it is.
        """
        step = int(state.step)
        path = checkpoint_path(self.model_dir, step)
        if step in self._manager.all_steps() and is_finalized(path):
            logger.info("%s already exists; not overwriting", path)
            return path
        args = {STATE_ITEM: ocp.args.StandardSave(state),
                METADATA_ITEM: ocp.args.JsonSave(dict(metadata, step=step)), **(extra or {})}
        self._manager.save(step, args=ocp.args.Composite(**args), force=True)
        return path

    def restore_latest(self, abstract_state: Any, *, extra: dict[str, Any] | None = None
                       ) -> tuple[Any, dict, dict[str, Any]] | None:
        """(state, metadata, extra items) of the newest readable checkpoint; None if none.

        An unreadable newest checkpoint is reported with a warning naming it, and the next
        older one is tried, so a run whose last save was damaged resumes from the one before.
        """
        for step in reversed(list_checkpoints(self.model_dir)):
            path = checkpoint_path(self.model_dir, step)
            try:
                state, metadata, items = restore_checkpoint(path, abstract_state, extra=extra)
            except Exception as e:  # orbax/tensorstore raise many types for damaged files.
                logger.warning("%s is unreadable (%s: %s); trying the previous checkpoint",
                               path, type(e).__name__, str(e).splitlines()[0][:200])
                continue
            if int(state.step) != step:
                logger.warning("%s holds step %d; skipping it", path, int(state.step))
                continue
            return state, metadata, items
        return None

    def wait(self) -> None:
        """Blocks until an asynchronous save has finished."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def restore_checkpoint(path: str, abstract_state: Any, *, extra: dict[str, Any] | None = None
                       ) -> tuple[Any, dict, dict[str, Any]]:
    """Restores (state, metadata, extra items) from one checkpoint directory into the
    shardings of ``abstract_state``; ``extra`` maps item names to orbax restore args."""
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    args = {STATE_ITEM: ocp.args.StandardRestore(abstract_state),
            METADATA_ITEM: ocp.args.JsonRestore(), **(extra or {})}
    restored = checkpointer.restore(os.path.abspath(path), args=ocp.args.Composite(**args))
    items = {name: restored[name] for name in (extra or {})}
    return restored[STATE_ITEM], dict(restored[METADATA_ITEM]), items


def restore_params(path: str, abstract_params: Any) -> Any:
    """Restores only ``state.params`` of one checkpoint directory (never the optimizer state).

    ``abstract_params`` holds ShapeDtypeStructs: leaves with a sharding come back as jax arrays
    in it, the others as numpy arrays. Checkpoints without optimizer state (written by
    msd-import-weights) restore the same way.
    """
    def restore_args(leaf):
        if getattr(leaf, "sharding", None) is not None:
            return ocp.ArrayRestoreArgs(sharding=leaf.sharding, global_shape=leaf.shape,
                                        dtype=leaf.dtype)
        return ocp.RestoreArgs(restore_type=np.ndarray, dtype=leaf.dtype)

    handlers = {STATE_ITEM: ocp.PyTreeCheckpointHandler()}
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler(**handlers))
    args = ocp.args.PyTreeRestore(
        item={"params": abstract_params},
        restore_args={"params": jax.tree.map(restore_args, abstract_params)},
        partial_restore=True)
    restored = checkpointer.restore(os.path.abspath(path),
                                    args=ocp.args.Composite(**{STATE_ITEM: args}))
    return restored[STATE_ITEM]["params"]


def save_checkpoint(model_dir: str, state: Any, metadata: dict, *, keep: int | None) -> str:
    """Writes checkpoint_<state.step> synchronously, then keeps the newest ``keep``."""
    with CheckpointStore(model_dir, keep=keep) as store:
        return store.save(state, metadata)


def restore_latest(model_dir: str, abstract_state: Any) -> tuple[Any, dict] | None:
    """(state, metadata) of model_dir's newest readable checkpoint (``CheckpointStore``)."""
    if not list_checkpoints(model_dir):
        return None
    with CheckpointStore(model_dir) as store:
        restored = store.restore_latest(abstract_state)
    return None if restored is None else restored[:2]


def write_config(model_dir: str, config_text: str, name: str = "config.gin") -> str:
    """Writes the run's gin config beside the checkpoints (atomically)."""
    path = os.path.join(model_dir, name)
    file_io.write_file_atomic(path, lambda f: f.write(config_text), mode="w")
    return path
