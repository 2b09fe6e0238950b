"""The log-mel front end against tf.signal on real rendered music, plus closed-form checks."""

import io
import math

import jax
import jax.numpy as jnp
import numpy as np
import pretty_midi
import pytest

from music_spectrogram_diffusion.audio import spectrograms
from music_spectrogram_diffusion.data import rendering
from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig

SILENCE = math.log(1e-5)


def _ensemble_midi_bytes(seconds: float = 6.0) -> bytes:
    """Piano chords, a string melody, a bass line and drums: a dense multi-instrument mix."""
    midi = pretty_midi.PrettyMIDI(initial_tempo=120)
    piano = pretty_midi.Instrument(program=0)
    strings = pretty_midi.Instrument(program=48)
    bass = pretty_midi.Instrument(program=33)
    drums = pretty_midi.Instrument(program=0, is_drum=True)
    beat = 0.5
    for i in range(int(seconds / beat)):
        t = i * beat
        root = [48, 53, 55, 50][(i // 4) % 4]
        for offset in (12, 16, 19):
            piano.notes.append(pretty_midi.Note(90, root + offset, t, t + 0.45))
        bass.notes.append(pretty_midi.Note(100, root - 12, t, t + 0.4))
        strings.notes.append(pretty_midi.Note(70, 72 + (i * 5) % 12, t, t + beat))
        drums.notes.append(pretty_midi.Note(110, 36 if i % 2 == 0 else 38, t, t + 0.1))
        drums.notes.append(pretty_midi.Note(80, 42, t + beat / 2, t + beat / 2 + 0.05))
    midi.instruments.extend([piano, strings, bass, drums])
    buffer = io.BytesIO()
    midi.write(buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def music() -> np.ndarray:
    audio = rendering.render_midi(_ensemble_midi_bytes(6.0), tail_seconds=0.5)
    assert audio.shape[0] > 6 * 16000 and np.abs(audio).max() > 0.1
    return audio


def _tf_log_mel(samples: np.ndarray) -> np.ndarray:
    """The original codec's encode (spec §2.2), written with tf.signal."""
    tf = pytest.importorskip("tensorflow")
    stft = tf.signal.stft(
        tf.constant(samples, tf.float32),
        frame_length=640,
        frame_step=320,
        fft_length=1024,
        window_fn=tf.signal.hann_window,
        pad_end=True,
    )
    matrix = tf.signal.linear_to_mel_weight_matrix(128, 513, 16000, 0.0, 8000.0)
    mel = tf.tensordot(tf.abs(stft), matrix, 1)
    return tf.math.log(tf.clip_by_value(mel, 1e-5, 1e8)).numpy()


def test_mel_matrix_matches_tensorflow():
    tf = pytest.importorskip("tensorflow")
    matrix = spectrograms.mel_weight_matrix()
    assert matrix.shape == (513, 128)
    # Same algorithm: TF run in float64 agrees to rounding.
    exact = tf.signal.linear_to_mel_weight_matrix(
        128, 513, 16000, 0.0, 8000.0, dtype=tf.float64).numpy()
    np.testing.assert_allclose(matrix, exact, atol=1e-12)
    # TF's default float32 matrix (what the original used) carries its own float32 rounding of
    # mel values near 2800 divided by ~22-mel band widths: about 1e-5.
    float32 = tf.signal.linear_to_mel_weight_matrix(128, 513, 16000, 0.0, 8000.0).numpy()
    np.testing.assert_allclose(matrix, float32, atol=2e-5)
    np.testing.assert_array_equal(matrix[0], 0.0)  # DC row forced to zero
    assert matrix.max() <= 1.0 and matrix.max() > 0.99  # peak 1, no area normalisation
    assert not matrix.flags.writeable


def test_periodic_hann_matches_tensorflow():
    tf = pytest.importorskip("tensorflow")
    np.testing.assert_allclose(
        spectrograms.periodic_hann_window(640),
        tf.signal.hann_window(640, periodic=True, dtype=tf.float64).numpy(),
        atol=1e-12,
    )
    np.testing.assert_allclose(
        spectrograms.periodic_hann_window(640), tf.signal.hann_window(640).numpy(), atol=1e-6
    )


def test_log_mel_matches_tf_signal_on_rendered_music(music):
    expected = _tf_log_mel(music)
    actual = np.asarray(jax.jit(spectrograms.compute_log_mel)(music))
    assert actual.shape == expected.shape == (-(-music.shape[0] // 320), 128)
    max_error = float(np.max(np.abs(actual - expected)))
    print(f"max |log-mel(jax) - log-mel(tf.signal)| on {music.shape[0] / 16000:.2f} s: "
          f"{max_error:.3g}")
    assert max_error < 1e-3
    # The numpy (float64) version agrees as well, so the data pipeline needs no JAX.
    numpy_error = float(np.max(np.abs(spectrograms.compute_log_mel_numpy(music) - expected)))
    print(f"max |log-mel(numpy) - log-mel(tf.signal)|: {numpy_error:.3g}")
    assert numpy_error < 1e-3
    # The music is loud and varied: not a trivially clipped spectrogram.
    assert actual.max() > 0.0 and np.mean(actual > SILENCE + 1.0) > 0.5


def test_jit_and_batching_give_the_same_numbers(music):
    clip = music[: 320 * 40 + 17]
    batch = np.stack([clip, 0.5 * clip[::-1], np.roll(clip, 1000)])  # [3, N]
    eager = np.stack([np.asarray(spectrograms.compute_log_mel(x)) for x in batch])
    jitted = np.asarray(jax.jit(spectrograms.compute_log_mel)(batch))
    nested = np.asarray(spectrograms.compute_log_mel(batch.reshape(3, 1, -1)))
    assert jitted.shape == (3, 41, 128) and nested.shape == (3, 1, 41, 128)
    np.testing.assert_allclose(jitted, eager, atol=1e-5)
    np.testing.assert_allclose(nested[:, 0], eager, atol=1e-5)
    assert jitted.dtype == np.float32
    np.testing.assert_allclose(spectrograms.compute_log_mel_numpy(batch), eager, atol=1e-3)


@pytest.mark.parametrize(
    "num_samples, frames", [(0, 0), (1, 1), (319, 1), (320, 1), (321, 2), (640, 2), (32000, 100)]
)
def test_frame_count_is_ceil_of_samples_over_hop(num_samples, frames):
    samples = np.full(num_samples, 0.1, np.float32)
    assert spectrograms.num_frames(num_samples) == frames
    assert spectrograms.compute_log_mel(samples).shape == (frames, 128)
    assert spectrograms.compute_log_mel_numpy(samples).shape == (frames, 128)
    assert spectrograms.compute_log_mel(np.zeros((2, num_samples))).shape == (2, frames, 128)


def test_empty_input_gives_zeros():
    out = spectrograms.compute_log_mel(np.zeros(0, np.float32))
    assert out.shape == (0, 128) and out.dtype == jnp.float32


def test_frame_i_sees_samples_320i_to_320i_plus_640():
    samples = np.zeros(320 * 6, np.float32)
    samples[700] = 1.0  # inside frame 1 ([320, 960)) and frame 2 ([640, 1280)) only
    log_mel = np.asarray(spectrograms.compute_log_mel(samples))
    sounding = np.any(log_mel > SILENCE + 1e-3, axis=-1)
    np.testing.assert_array_equal(sounding, [False, True, True, False, False, False])
    np.testing.assert_allclose(log_mel[[0, 3, 4, 5]], SILENCE)


def test_silence_scaling_and_sine_peak():
    np.testing.assert_allclose(spectrograms.compute_log_mel(np.zeros(3200)), SILENCE, atol=1e-6)
    t = np.arange(16000) / 16000
    sine = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    log_mel = np.asarray(spectrograms.compute_log_mel(sine))
    # Mel bin m is centred on edge m + 1 of 130 edges equally spaced in HTK mel up to 8 kHz.
    centres_mel = np.arange(1, 129) * spectrograms.hz_to_htk_mel(8000.0) / 129
    centres_hz = 700.0 * np.expm1(centres_mel / 1127.0)
    assert np.all(np.argmax(log_mel[1:-1], axis=-1) == np.argmin(np.abs(centres_hz - 1000.0)))
    # Magnitudes are linear in the signal: 10x louder adds ln 10 wherever nothing is clipped.
    louder = np.asarray(spectrograms.compute_log_mel(10 * sine))
    # (Bins more than 1e3 below the peak are left out: there float32 FFT rounding of the
    # peak, ~1e-7 relative, is no longer negligible.)
    unclipped = (log_mel > log_mel.max() - math.log(1e3)) & (louder < math.log(1e8))
    np.testing.assert_allclose((louder - log_mel)[unclipped], math.log(10), atol=1e-3)


def test_scaling_reference_points_and_round_trip():
    scale = spectrograms.scale_features
    np.testing.assert_allclose(scale(jnp.array([SILENCE, 4.0])), [-1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(scale(jnp.array(0.0)), 0.4843, atol=1e-4)
    np.testing.assert_allclose(scale(jnp.array([-20.0, 10.0])), [-1.0, 1.0], atol=1e-6)
    unclipped = np.asarray(scale(jnp.array([10.0]), clip=False))
    assert unclipped[0] > 1.5
    x = np.linspace(SILENCE, 4.0, 257).astype(np.float32)
    np.testing.assert_allclose(spectrograms.scale_to_features(scale(x)), x, atol=1e-5)
    np.testing.assert_allclose(spectrograms.scale_to_features(jnp.array([-3.0, 3.0])),
                               [SILENCE, 4.0], atol=1e-5)
    assert float(spectrograms.scale_to_features(jnp.array(3.0), clip=False)) > 4.0
    assert spectrograms.silence_log_mel() == pytest.approx(SILENCE)


def test_other_feature_configs_are_respected():
    features = FeatureConfig(num_mels=64, hop_length=160, window_length=400, fft_length=512)
    matrix = spectrograms.mel_weight_matrix(features)
    assert matrix.shape == (257, 64)
    log_mel = spectrograms.compute_log_mel(np.ones(1000, np.float32), features)
    assert log_mel.shape == (7, 64)
    jitted = jax.jit(spectrograms.compute_log_mel, static_argnames="features")
    np.testing.assert_allclose(jitted(np.ones(1000, np.float32), features=features), log_mel,
                               atol=1e-5)
    with pytest.raises(ValueError, match="fft_length"):
        spectrograms.compute_log_mel(np.ones(10), FeatureConfig(window_length=2048))
    assert DEFAULT_FEATURES.num_mels == 128
