"""Mel L1/L2 and the shared multi-resolution STFT distance."""

import math

import numpy as np
import pytest

from music_spectrogram_diffusion.audio import stft_distance
from music_spectrogram_diffusion.evaluation import spectral_metrics


def test_mel_distances_closed_form_truncation_and_mask():
    rng = np.random.default_rng(0)
    target = rng.uniform(-8.0, 2.0, size=(10, 128))
    predicted = np.concatenate([target + 0.5, np.zeros((3, 128))])  # 3 extra tail frames
    scores = spectral_metrics.mel_distances(predicted, target)
    assert scores["mel_l1"] == pytest.approx(0.5)
    assert scores["mel_l2"] == pytest.approx(0.25)
    # Masked-out frames do not count, however wrong they are.
    predicted[:5] += 10.0
    mask = np.r_[np.zeros(5), np.ones(5)]
    assert spectral_metrics.mel_distances(predicted, target, mask=mask)["mel_l1"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no valid frames"):
        spectral_metrics.mel_distances(predicted, target, mask=np.zeros(10))


def test_mel_distances_clip_to_the_model_range():
    floor = math.log(1e-5)
    target = np.full((4, 128), 6.0)  # louder than the model's 4.0 ceiling
    target[:, :64] = -20.0  # below the log floor
    predicted = np.full((4, 128), 4.0)
    predicted[:, :64] = floor
    scores = spectral_metrics.mel_distances(predicted, target)
    assert scores == {"mel_l1": 0.0, "mel_l2": 0.0}
    with pytest.raises(ValueError, match="mels"):
        spectral_metrics.mel_distances(np.zeros((4, 128)), np.zeros((4, 80)))


def test_multi_resolution_stft_is_the_shared_vocoder_distance():
    rng = np.random.default_rng(1)
    target = rng.normal(size=8000).astype(np.float32) * 0.1
    predicted = target + rng.normal(size=8000).astype(np.float32) * 0.01
    assert spectral_metrics.multi_resolution_stft(target, target) == 0.0
    got = spectral_metrics.multi_resolution_stft(np.r_[predicted, np.ones(500, np.float32)], target)
    expected = float(stft_distance.multi_resolution_stft_distance(predicted, target))
    assert got == pytest.approx(expected, rel=1e-6) and got > 0.0
    louder = spectral_metrics.multi_resolution_stft(target * 3.0, target)
    assert louder > got
    single = spectral_metrics.multi_resolution_stft(predicted, target, resolutions=[(256, 64, 256)])
    expected_single = float(stft_distance.multi_resolution_stft_distance(predicted, target, [(256, 64, 256)]))
    assert single == pytest.approx(expected_single, rel=1e-6)
