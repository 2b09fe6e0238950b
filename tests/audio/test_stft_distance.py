"""Tests of audio/stft_distance.py: framing, closed forms, differentiability, mel consistency."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from music_spectrogram_diffusion.audio import spectrograms
from music_spectrogram_diffusion.audio import stft_distance


def _noise(shape, seed=0):
    return np.random.default_rng(seed).normal(0.0, 0.1, shape).astype(np.float32)


def test_stft_matches_numpy_reference_framing():
    x = _noise(1000)
    spectrum = np.asarray(stft_distance.stft(jnp.asarray(x), fft_length=256, hop_length=100, window_length=200))
    assert spectrum.shape == (10, 129)  # ceil(1000 / 100) frames, not centred
    padded = np.concatenate([x, np.zeros(100)])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(200) / 200)
    for i in (0, 4, 9):  # frame 9 reads the zero padding at the end
        expected = np.fft.rfft(padded[100 * i : 100 * i + 200] * window, n=256)
        np.testing.assert_allclose(spectrum[i], expected, atol=1e-4)


def test_stft_with_codec_settings_reproduces_the_log_mel_front_end():
    x = _noise((2, 3200), seed=1)
    magnitude = stft_distance.stft_magnitude(jnp.asarray(x), fft_length=1024, hop_length=320, window_length=640)
    mel = np.asarray(magnitude) @ spectrograms.mel_weight_matrix()
    log_mel = np.log(np.clip(mel, 1e-5, 1e8))
    np.testing.assert_allclose(log_mel, np.asarray(spectrograms.compute_log_mel(x)), atol=2e-3)


def test_distance_of_signal_with_itself_is_zero():
    x = jnp.asarray(_noise((2, 8000)))
    assert float(stft_distance.multi_resolution_stft_distance(x, x)) == 0.0


def test_distance_is_positive_and_grows_with_the_error():
    x = jnp.asarray(_noise((2, 8000)))
    noise = jnp.asarray(_noise((2, 8000), seed=3))
    small = float(stft_distance.multi_resolution_stft_distance(x + 0.05 * noise, x))
    large = float(stft_distance.multi_resolution_stft_distance(x + 0.5 * noise, x))
    assert 0.0 < small < large


def test_spectral_convergence_closed_form():
    target = jnp.ones((3, 4))
    assert float(stft_distance.spectral_convergence(0.5 * target, target)) == pytest.approx(0.5)
    assert float(stft_distance.log_magnitude_distance(0.5 * target, target)) == pytest.approx(np.log(2.0))


def test_gradient_is_finite_on_digital_silence():
    silence = jnp.zeros((1, 4000))
    grad = jax.grad(lambda p: stft_distance.multi_resolution_stft_distance(p, silence))(silence)
    assert np.all(np.isfinite(np.asarray(grad)))
    grad = jax.grad(lambda p: stft_distance.multi_resolution_stft_distance(p, jnp.asarray(_noise((1, 4000)))))(
        jnp.asarray(_noise((1, 4000), seed=5))
    )
    assert np.all(np.isfinite(np.asarray(grad))) and float(jnp.abs(grad).max()) > 0


def test_shape_mismatch_and_empty_resolutions_are_errors():
    x = jnp.zeros((1, 1000))
    with pytest.raises(ValueError, match="shape"):
        stft_distance.multi_resolution_stft_distance(x, jnp.zeros((1, 999)))
    with pytest.raises(ValueError, match="at least one"):
        stft_distance.multi_resolution_stft_distance(x, x, resolutions=())
