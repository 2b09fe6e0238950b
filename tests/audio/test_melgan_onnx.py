"""The port's MelGAN vocoder (model.onnx run by onnxruntime) behind the Vocoder interface."""

import dataclasses

import numpy as np
import pytest

from music_spectrogram_diffusion.audio.vocoders import base, melgan_onnx
from music_spectrogram_diffusion.audio.vocoders.checkpoints import VocoderCheckpointError
from music_spectrogram_diffusion.features import DEFAULT_FEATURES
from music_spectrogram_diffusion.testing import weight_fixtures


def test_melgan_folder_loads_and_vocodes_unscaled_log_mel_per_example(tmp_path):
    folder = tmp_path / "melgan"
    model_file = weight_fixtures.write_melgan_onnx(str(folder))
    vocoder = base.load_vocoder(str(folder))
    assert isinstance(vocoder, melgan_onnx.MelGanOnnxVocoder) and vocoder.name == "melgan-onnx"
    log_mel = np.full((2, 3, 128), -2.0, np.float32)
    log_mel[1, 1] = 1.0
    audio = vocoder.vocode(log_mel)
    assert audio.shape == (2, 960) and audio.dtype == np.float32
    np.testing.assert_allclose(audio[0], -0.02, rtol=1e-6)  # the graph saw UNSCALED log-mel
    np.testing.assert_allclose(audio[1, 320:640], 0.01, rtol=1e-6)
    np.testing.assert_allclose(audio[1, :320], -0.02, rtol=1e-6)
    # The .onnx file itself is a spec too.
    assert isinstance(base.load_vocoder(model_file), melgan_onnx.MelGanOnnxVocoder)


def test_melgan_errors_name_the_file(tmp_path):
    folder = tmp_path / "melgan"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"not an onnx graph")
    with pytest.raises(VocoderCheckpointError, match="model.onnx: cannot load the ONNX graph"):
        base.load_vocoder(str(folder))
    with pytest.raises(VocoderCheckpointError, match="no model.onnx"):
        melgan_onnx.MelGanOnnxVocoder(str(tmp_path))
    good = tmp_path / "good"
    weight_fixtures.write_melgan_onnx(str(good))
    with pytest.raises(VocoderCheckpointError, match="only works with the original features"):
        base.load_vocoder(str(good), features=dataclasses.replace(DEFAULT_FEATURES, num_mels=80))
    wrong_hop = tmp_path / "wrong_hop"
    weight_fixtures.write_melgan_onnx(str(wrong_hop), hop_length=256)
    with pytest.raises(ValueError, match="returned 768 samples for 3 frames, expected 960"):
        base.load_vocoder(str(wrong_hop)).vocode(np.zeros((1, 3, 128), np.float32))
