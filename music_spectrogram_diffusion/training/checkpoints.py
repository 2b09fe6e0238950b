"""Resumable, atomic checkpoints: ``MODEL_DIR/checkpoint_<step>`` written with orbax.

Layout (t5x names, so t5x users find things where they expect them)::

  MODEL_DIR/config.gin              the operative gin config of the run
  MODEL_DIR/checkpoint_<step>/      one orbax composite checkpoint:
      state/                        the TrainState (step, params, opt_state), sharded arrays
      metadata/                     JSON: step, data position (examples seen, seed, batch size)

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a
``checkpoint_<step>`` directory never holds a half-written checkpoint after a crash. A directory
that is nevertheless unreadable (disk corruption, files truncated by hand) is skipped with a
warning and the previous checkpoint is used instead. Unlike the original (spec §6: every
checkpoint kept, no dataset state), the newest ``keep`` are kept and the data position is saved;
it is also re-derivable, because batch ``s`` is a pure function of (seed, s).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import tempfile
from typing import Any

import jax
import orbax.checkpoint as ocp

_CHECKPOINT_RE = re.compile(r"^checkpoint_(\d+)$")
# Orbax writes this file when it finalises a checkpoint directory.
_COMMIT_MARKER = "_CHECKPOINT_METADATA"

logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was required."""


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """When and how many checkpoints to keep.

    Attributes:
      period: save every ``period`` steps (and always at the last step and on SIGTERM).
      keep: keep the newest ``keep`` checkpoints; None keeps all (the original's behaviour).
    """

    period: int = 1000
    keep: int | None = 3

    def __post_init__(self):
        if self.period < 1:
            raise ValueError(f"CheckpointConfig.period must be >= 1, got {self.period}")
        if self.keep is not None and self.keep < 1:
            raise ValueError(f"CheckpointConfig.keep must be >= 1 or None, got {self.keep}")


def checkpoint_path(model_dir: str, step: int) -> str:
    return os.path.join(model_dir, f"checkpoint_{step}")


def list_checkpoints(model_dir: str) -> list[int]:
    """Steps of the finalised checkpoint directories in model_dir, ascending."""
    if not os.path.isdir(model_dir):
        return []
    steps = []
    for name in os.listdir(model_dir):
        match = _CHECKPOINT_RE.match(name)
        if match and os.path.exists(os.path.join(model_dir, name, _COMMIT_MARKER)):
            steps.append(int(match.group(1)))
    return sorted(steps)


def _checkpointer() -> ocp.Checkpointer:
    return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def save_checkpoint(model_dir: str, state: Any, metadata: dict, *, keep: int | None) -> str:
    """Writes checkpoint_<state.step> atomically, then deletes all but the newest ``keep``."""
    step = int(state.step)
    path = checkpoint_path(model_dir, step)
    if os.path.exists(path):
        logger.info("%s already exists; not overwriting", path)
        return path
    os.makedirs(model_dir, exist_ok=True)
    metadata = dict(metadata, step=step)
    _checkpointer().save(
        os.path.abspath(path),
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), metadata=ocp.args.JsonSave(metadata)
        ),
    )
    if keep is not None and jax.process_index() == 0:
        for old in list_checkpoints(model_dir)[:-keep]:
            shutil.rmtree(checkpoint_path(model_dir, old), ignore_errors=True)
    return path


def restore_checkpoint(path: str, abstract_state: Any) -> tuple[Any, dict]:
    """Restores (state, metadata) from one checkpoint into the shardings of abstract_state."""
    restored = _checkpointer().restore(
        os.path.abspath(path),
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), metadata=ocp.args.JsonRestore()
        ),
    )
    return restored["state"], dict(restored["metadata"])


def restore_latest(model_dir: str, abstract_state: Any) -> tuple[Any, dict] | None:
    """Restores the newest readable checkpoint; None when model_dir has none.

    An unreadable newest checkpoint is reported with a warning naming it, and the next older one
    is tried, so a run whose last save was damaged resumes from the one before.
    """
    for step in reversed(list_checkpoints(model_dir)):
        path = checkpoint_path(model_dir, step)
        try:
            state, metadata = restore_checkpoint(path, abstract_state)
        except Exception as e:  # orbax/tensorstore raise many types for damaged files.
            logger.warning("%s is unreadable (%s: %s); trying the previous checkpoint",
                           path, type(e).__name__, str(e).splitlines()[0][:200])
            continue
        if int(state.step) != step:
            logger.warning("%s holds step %d; skipping it", path, int(state.step))
            continue
        return state, metadata
    return None


def write_config(model_dir: str, config_text: str, name: str = "config.gin") -> str:
    """Writes the run's gin config beside the checkpoints (temp file + rename)."""
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, name)
    fd, tmp = tempfile.mkstemp(dir=model_dir, prefix=f".{name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(config_text)
    os.replace(tmp, path)
    return path
