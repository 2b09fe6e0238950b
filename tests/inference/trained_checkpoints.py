"""Tiny checkpoints from the REAL trainer, shared by the inference, CLI and notebook tests.

``shared_checkpoint(tmp_path_factory, kind)`` builds, once per pytest session, a 3-piece
embedded dataset (music21 corpus -> MIDI -> tinysoundfont, 6 s pieces) and trains a tiny model
on it for two steps with ``msd-train`` (checkpoints at steps 1 and 2); later calls in the same
session reuse the directory. Not a test module (no ``test_`` prefix); test files in other
directories import it after putting this directory on sys.path.
"""

from __future__ import annotations

import os

from music_spectrogram_diffusion.testing import midi_fixtures

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# kind -> (model gin, task gin)
KINDS = {
    "diffusion_context": ("gin/models/diffusion_context/tiny.gin", "gin/tasks/context_embedded.gin"),
    "autoregressive": ("gin/models/autoregressive/tiny.gin", "gin/tasks/embedded.gin"),
    # 127 velocity bins: the task file sets the vocabulary for tasks and model alike.
    "diffusion_velocity127": ("gin/models/diffusion/tiny.gin",
                              "gin/tasks/embedded_velocity127.gin"),
}
TRAIN_STEPS = 2


def shared_dataset(tmp_path_factory) -> str:
    """A 3-piece embedded dataset (one per split), built once per session."""
    from music_spectrogram_diffusion.data import embedded_dataset

    data_dir = os.path.join(str(tmp_path_factory.getbasetemp()), "msd_shared", "dataset")
    if not os.path.isfile(os.path.join(data_dir, embedded_dataset.MANIFEST_NAME)):
        # Seed 6 starts with two chorales and a short Palestrina movement: quick to build.
        embedded_dataset.build_embedded_dataset(data_dir, num_pieces=3, seed=6, num_workers=1,
                                                progress=False, max_piece_seconds=6.0)
    return data_dir


def train_checkpoint(model_dir: str, data_dir: str, kind: str, steps: int = TRAIN_STEPS) -> str:
    """Runs msd-train (in-process) on the tiny model ``kind``; returns MODEL_DIR."""
    import gin

    from music_spectrogram_diffusion.cli import train

    model_gin, task_gin = KINDS[kind]
    argv = [
        f"--gin_file={os.path.join(REPO_ROOT, model_gin)}",
        f"--gin_file={os.path.join(REPO_ROOT, task_gin)}",
        f"--gin_file={os.path.join(REPO_ROOT, 'gin/train.gin')}",
        f"--gin.MODEL_DIR='{model_dir}'",
        f"--gin.DATA_DIR='{data_dir}'",
        f"--gin.TRAIN_STEPS={steps}",
        "--gin.BATCH_SIZE=1",
        "--gin.CHECKPOINT_PERIOD=1",
        # Train-eval would sample 1000-step DDPM images; not needed for a checkpoint.
        "--gin.trainer.train.eval_data=None",
    ]
    try:
        status = train.main(argv)
    finally:
        gin.clear_config()  # msd-train leaves its config in gin's global state
    if status != 0:
        raise RuntimeError(f"msd-train exited with {status} for {model_dir}")
    return model_dir


def shared_checkpoint(tmp_path_factory, kind: str) -> str:
    """MODEL_DIR of a tiny ``kind`` model trained for TRAIN_STEPS steps, once per session."""
    from music_spectrogram_diffusion.training import checkpoints

    model_dir = os.path.join(str(tmp_path_factory.getbasetemp()), "msd_shared", kind)
    if TRAIN_STEPS not in checkpoints.list_checkpoints(model_dir):
        train_checkpoint(model_dir, shared_dataset(tmp_path_factory), kind)
    return model_dir


def melody_midi_bytes(seconds: float = 6.0) -> bytes:
    """A real MIDI file with two segments of few tokens (``midi_fixtures.melody_midi_bytes``)."""
    return midi_fixtures.melody_midi_bytes(seconds)
