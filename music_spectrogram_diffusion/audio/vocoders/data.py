"""The audio of one dataset split, for vocoder training and evaluation.

Vocoders need only audio, so any dataset directory works whose manifest.json lists pieces with
an "id", a "split" ('train' | 'validation' | 'test') and an "audio_path" relative to the
directory: the embedded dataset (data/embedded_dataset.py) and hand-made ones alike. Only those
three fields are read, so the vocoder does not depend on how a dataset was built.
"""

from __future__ import annotations

import json
import os

import numpy as np

from music_spectrogram_diffusion.audio import audio_io
from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig

SPLITS = ("train", "validation", "test")
MANIFEST_NAME = "manifest.json"


def load_split_audio(
    data_dir: str,
    split: str,
    features: FeatureConfig = DEFAULT_FEATURES,
    *,
    max_pieces: int | None = None,
) -> dict[str, np.ndarray]:  # piece id -> [num_samples] float32 mono at features.sample_rate
    """Loads every piece of ``split`` (in manifest order, at most ``max_pieces``).

    Raises:
      FileNotFoundError: DATA_DIR has no manifest.json.
      ValueError: unknown split, unreadable manifest, or no piece in the split.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    path = os.path.join(data_dir, MANIFEST_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no {MANIFEST_NAME}; DATA_DIR must be a dataset directory")
    try:
        with open(path, encoding="utf-8") as f:
            entries = [p for p in json.load(f)["pieces"] if p["split"] == split]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: unreadable manifest ({type(e).__name__}: {e})") from e
    if not entries:
        raise ValueError(f"{path}: no pieces in split {split!r}")
    return {
        str(entry["id"]): audio_io.load_audio(
            os.path.join(data_dir, entry["audio_path"]), sample_rate=features.sample_rate
        )
        for entry in entries[:max_pieces]
    }
