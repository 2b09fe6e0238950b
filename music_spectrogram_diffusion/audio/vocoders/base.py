"""The vocoder interface and ``load_vocoder``, the one way to get a vocoder from a string.

Every vocoder turns UNSCALED log-mel (the model's predictions, spec §2.2) into 16 kHz audio:
``vocode(log_mel [batch, frames, mels]) -> audio [batch, frames * hop]`` float32.

Specs accepted by ``load_vocoder``:
  * ``'griffin-lim'``: mel pseudo-inversion + fast Griffin-Lim (no training, lower quality);
  * a directory written by the vocoder trainer (vocoder_config.json + checkpoint_<step>/),
    or one of its checkpoint_<step> directories;
  * a directory holding the SoundStream mel decoder SavedModel (saved_model.pb);
  * the PyTorch port's ``melgan`` folder (model.onnx) or an .onnx file: the same decoder,
    run with onnxruntime.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, runtime_checkable

from music_spectrogram_diffusion.audio.vocoders import checkpoints
from music_spectrogram_diffusion.audio.vocoders import griffin_lim
from music_spectrogram_diffusion.audio.vocoders import melgan_onnx
from music_spectrogram_diffusion.audio.vocoders import soundstream
from music_spectrogram_diffusion.audio.vocoders.checkpoints import VocoderCheckpointError
from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig

GRIFFIN_LIM = "griffin-lim"


@runtime_checkable
class Vocoder(Protocol):
    """Spectrogram -> audio. ``features`` is the FeatureConfig the vocoder was built for."""

    @property
    def name(self) -> str: ...

    @property
    def features(self) -> FeatureConfig: ...

    def vocode(self, log_mel: Any) -> Any:
        """[batch, frames, mels] unscaled log-mel -> [batch, frames * hop] float32 audio."""
        ...


def load_vocoder(spec: str, *, features: FeatureConfig = DEFAULT_FEATURES) -> Vocoder:
    """Builds the vocoder named by ``spec`` (see the module docstring) for ``features``.

    Raises:
      VocoderCheckpointError: the path is missing, is not a vocoder directory, cannot be read,
        or holds a vocoder trained for features other than ``features``.
    """
    if spec == GRIFFIN_LIM:
        return griffin_lim.GriffinLimVocoder(features=features)
    if not os.path.exists(spec):
        raise VocoderCheckpointError(
            f"{spec}: no such vocoder directory (valid specs: '{GRIFFIN_LIM}', a trained vocoder "
            "MODEL_DIR, a SoundStream SavedModel directory, or a melgan folder with model.onnx)"
        )
    if melgan_onnx.onnx_model_path(spec) is not None:
        return melgan_onnx.MelGanOnnxVocoder(spec, features=features)
    if not os.path.isdir(spec):
        raise VocoderCheckpointError(
            f"{spec}: is a file; a vocoder spec is '{GRIFFIN_LIM}', a directory or an .onnx file")
    if soundstream.is_saved_model_dir(spec):
        return soundstream.SoundStreamVocoder(spec, features=features)
    model_dir, checkpoint_path = spec, None
    parent = os.path.dirname(os.path.abspath(spec))
    if not os.path.isfile(os.path.join(spec, checkpoints.CONFIG_FILENAME)) and os.path.isfile(
        os.path.join(parent, checkpoints.CONFIG_FILENAME)
    ):
        model_dir, checkpoint_path = parent, spec  # A checkpoint_<step> dir inside a MODEL_DIR.
    payload = checkpoints.read_vocoder_config(model_dir)
    trained_for = FeatureConfig(**payload["features"])
    if trained_for != features:
        changed = {
            name: (getattr(trained_for, name), getattr(features, name))
            for name in FeatureConfig.__dataclass_fields__
            if getattr(trained_for, name) != getattr(features, name)
        }
        raise VocoderCheckpointError(
            f"{model_dir}: vocoder was trained for other features; (trained, requested) = {changed}"
        )
    return checkpoints.TrainedVocoder.load(model_dir, checkpoint_path)
