"""The PyTorch port's vocoder: the SoundStream mel decoder exported to ONNX, run by onnxruntime.

The diffusers pipeline (google/music-spectrogram-diffusion on the Hugging Face hub) ships it as
``melgan/model.onnx`` and calls it as ``melgan(input_features=log_mel)`` on the UNSCALED log-mel
[1, frames, 128] of a whole song, getting 16 kHz audio back. It is the same network as the
original's TF-Hub SavedModel (``soundstream.py``), so it too only fits DEFAULT_FEATURES. Pass the
``melgan`` folder (or the .onnx file) as ``--vocoder``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from music_spectrogram_diffusion.audio.vocoders.checkpoints import VocoderCheckpointError
from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig

MODEL_FILE = "model.onnx"


def onnx_model_path(path: str) -> str | None:
    """The ONNX file of a melgan folder (``model.onnx``) or an .onnx file; None otherwise."""
    if os.path.isfile(path) and path.endswith(".onnx"):
        return path
    candidate = os.path.join(path, MODEL_FILE)
    return candidate if os.path.isfile(candidate) else None


@dataclasses.dataclass(frozen=True, eq=False)
class MelGanOnnxVocoder:
    """Runs the ONNX graph on each example's log-mel; see the module docstring."""

    path: str
    features: FeatureConfig = DEFAULT_FEATURES
    name: str = "melgan-onnx"

    def __post_init__(self):
        model_path = onnx_model_path(self.path)
        if model_path is None:
            raise VocoderCheckpointError(f"{self.path}: no {MODEL_FILE} (pass the port's melgan "
                                         "folder or its .onnx file)")
        if self.features != DEFAULT_FEATURES:
            raise VocoderCheckpointError(
                f"{self.path}: the port's MelGAN (SoundStream mel decoder) only works with the "
                f"original features (DEFAULT_FEATURES), got {self.features}")
        try:
            import onnxruntime
        except ImportError:
            raise VocoderCheckpointError(
                f"{self.path}: running {MODEL_FILE} needs onnxruntime (pip install onnxruntime)"
            ) from None
        try:
            session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for corrupt or foreign graphs
            raise VocoderCheckpointError(f"{model_path}: cannot load the ONNX graph ({e})") from e
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise VocoderCheckpointError(
                f"{model_path}: expected one input (log-mel), the graph has "
                f"{[i.name for i in inputs]}")
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "_input_name", inputs[0].name)
        object.__setattr__(self, "_model_path", model_path)

    def vocode(self, log_mel: Any) -> np.ndarray:
        """[batch, frames, 128] unscaled log-mel -> [batch, frames * 320] float32 audio."""
        log_mel = np.asarray(log_mel, np.float32)
        if log_mel.ndim != 3 or log_mel.shape[-1] != self.features.num_mels:
            raise ValueError(f"expected log-mel [batch, frames, {self.features.num_mels}], "
                             f"got {log_mel.shape}")
        expected = log_mel.shape[1] * self.features.hop_length
        audio = []
        for example in log_mel:  # the exported graph is traced with batch 1
            out = self._session.run(None, {self._input_name: example[None]})[0]
            out = np.asarray(out, np.float32).reshape(-1)
            if out.shape[0] != expected:
                raise ValueError(f"{self._model_path}: returned {out.shape[0]} samples for "
                                 f"{log_mel.shape[1]} frames, expected {expected}")
            audio.append(out)
        return np.stack(audio)
