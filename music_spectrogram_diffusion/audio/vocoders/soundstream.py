"""The original's vocoder: the SoundStream mel decoder, run from a LOCAL TensorFlow SavedModel.

The original decoded with the TF-Hub model ``google/soundstream/mel/decoder/music/1`` called on
the UNSCALED log-mel [batch, frames, 128] (spec §2.2 ``decode``), returning [batch, frames * 320]
16 kHz audio. TF-Hub cannot be reached from here, so this adapter takes a directory holding that
SavedModel (for example the extracted TF-Hub tarball) and puts it behind our Vocoder interface.
The SavedModel carries no feature description; it was trained for exactly the original codec's
features, i.e. DEFAULT_FEATURES, and base.load_vocoder refuses other features.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from music_spectrogram_diffusion.audio.vocoders.checkpoints import VocoderCheckpointError
from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig


def is_saved_model_dir(path: str) -> bool:
    """True if ``path`` holds a TensorFlow SavedModel (saved_model.pb or .pbtxt)."""
    return any(os.path.isfile(os.path.join(path, name)) for name in ("saved_model.pb", "saved_model.pbtxt"))


@dataclasses.dataclass(frozen=True, eq=False)
class SoundStreamVocoder:
    """Runs ``model(log_mel)`` of a SavedModel; see the module docstring."""

    saved_model_dir: str
    features: FeatureConfig = DEFAULT_FEATURES
    name: str = "soundstream"

    def __post_init__(self):
        if not os.path.isdir(self.saved_model_dir):
            raise VocoderCheckpointError(f"{self.saved_model_dir}: SoundStream SavedModel directory not found")
        if not is_saved_model_dir(self.saved_model_dir):
            raise VocoderCheckpointError(
                f"{self.saved_model_dir}: not a TensorFlow SavedModel (no saved_model.pb); pass the "
                "extracted soundstream/mel/decoder/music SavedModel directory"
            )
        if self.features != DEFAULT_FEATURES:
            raise VocoderCheckpointError(
                f"{self.saved_model_dir}: the SoundStream mel decoder only works with the original "
                f"features (DEFAULT_FEATURES), got {self.features}"
            )
        import tensorflow as tf

        try:
            model = tf.saved_model.load(self.saved_model_dir)
        except Exception as e:  # TF raises many types for corrupt SavedModels.
            raise VocoderCheckpointError(f"{self.saved_model_dir}: cannot load the SavedModel ({e})") from e
        if not callable(model):
            raise VocoderCheckpointError(f"{self.saved_model_dir}: the SavedModel is not callable as model(log_mel)")
        object.__setattr__(self, "_model", model)

    def vocode(self, log_mel: Any) -> np.ndarray:
        """[batch, frames, 128] unscaled log-mel -> [batch, frames * 320] float32 audio."""
        import tensorflow as tf

        log_mel = np.asarray(log_mel, np.float32)
        if log_mel.ndim != 3 or log_mel.shape[-1] != self.features.num_mels:
            raise ValueError(f"expected log-mel [batch, frames, {self.features.num_mels}], got {log_mel.shape}")
        audio = np.asarray(self._model(tf.constant(log_mel)), np.float32)
        expected = (log_mel.shape[0], log_mel.shape[1] * self.features.hop_length)
        if audio.shape != expected:
            raise ValueError(f"{self.saved_model_dir}: SavedModel returned {audio.shape}, expected {expected}")
        return audio
