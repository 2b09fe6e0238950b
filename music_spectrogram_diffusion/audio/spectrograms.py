"""The log-mel front end of the original MelGAN/SoundStream codec, in JAX (spec §2.2).

Audio at 16 kHz becomes ``[frames, 128]`` natural-log mel magnitudes:

1. Frame i covers samples ``[320 i, 320 i + 640)``; frames are not centred and the signal is
   zero-padded at the end, so ``frames = ceil(num_samples / 320)`` (``tf.signal.stft`` with
   ``pad_end=True``).
2. Each frame is multiplied by a 640-sample *periodic* Hann window, zero-padded to 1024 and
   transformed with an rfft (513 bins). The magnitude (not the power) is kept.
3. A TF/HTK mel matrix ``[513, 128]`` (``mel_weight_matrix``) maps bins to mels.
4. ``ln(clip(mel, 1e-5, 1e8))``.

``compute_log_mel`` is the JAX version (jit-able, batched over leading axes, float32) and matches
``tf.signal`` to well under 1e-3 in log-mel on rendered music (tests/audio/test_spectrograms.py).
``compute_log_mel_numpy`` is the same computation in float64 numpy for host-side data pipelines,
which should not touch an accelerator. Both share the framing code below, so they cannot drift.

``scale_features`` / ``scale_to_features`` map log-mel ``[ln 1e-5, 4.0]`` <-> ``[-1, 1]``, the
range the diffusion model works in (silence is -1, log-mel 0.0 is +0.4843).

Every number comes from ``FeatureConfig`` (features.py).
"""

from __future__ import annotations

import functools
import math
from types import ModuleType

import jax
import jax.numpy as jnp
import numpy as np

from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig

ArrayLike = np.ndarray | jax.Array


def hz_to_htk_mel(hertz: np.ndarray) -> np.ndarray:
    """HTK mel scale, mel(f) = 1127 ln(1 + f / 700), as used by tf.signal (spec §2.2)."""
    return 1127.0 * np.log1p(np.asarray(hertz, np.float64) / 700.0)


def periodic_hann_window(length: int) -> np.ndarray:
    """[length] float64 periodic Hann window, w[n] = 0.5 - 0.5 cos(2 pi n / length)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length, dtype=np.float64) / length)


@functools.lru_cache(maxsize=8)
def _mel_weight_matrix_cached(features: FeatureConfig) -> np.ndarray:
    num_bins = features.fft_length // 2 + 1
    # Bin frequencies exclude DC, exactly like tf.signal.linear_to_mel_weight_matrix: the DC row
    # is set to zero afterwards rather than weighted.
    bin_hertz = np.linspace(0.0, features.sample_rate / 2.0, num_bins)[1:]
    bin_mel = hz_to_htk_mel(bin_hertz)[:, None]  # [bins - 1, 1]
    # num_mels + 2 equally spaced edges in mel: (lower, center, upper) for each triangle.
    edges = np.linspace(
        hz_to_htk_mel(features.lower_edge_hertz),
        hz_to_htk_mel(features.upper_edge_hertz),
        features.num_mels + 2,
    )
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]  # [mels] each
    # Triangles linear in mel with peak 1 and no area normalisation.
    rising = (bin_mel - lower) / (center - lower)
    falling = (upper - bin_mel) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))  # [bins - 1, mels]
    matrix = np.concatenate([np.zeros((1, features.num_mels)), weights], axis=0)
    matrix.setflags(write=False)
    return matrix


def mel_weight_matrix(features: FeatureConfig = DEFAULT_FEATURES) -> np.ndarray:
    """[fft_length // 2 + 1, num_mels] = [513, 128] float64 TF/HTK mel matrix (read-only).

    Equals ``tf.signal.linear_to_mel_weight_matrix(128, 513, 16000, 0, 8000)`` computed in
    float64 (TF's default float32 matrix carries ~1e-5 rounding): 130 edges equally spaced in
    HTK mel between the edge frequencies, triangles linear in mel with peak 1, no area
    normalisation, DC row zero. Computed once per FeatureConfig.
    """
    return _mel_weight_matrix_cached(features)


def num_frames(num_samples: int, features: FeatureConfig = DEFAULT_FEATURES) -> int:
    """Frames of a signal of num_samples samples: ceil(num_samples / hop), as pad_end=True."""
    return -(-num_samples // features.hop_length)


def _frame_signal(xp: ModuleType, samples: ArrayLike, features: FeatureConfig) -> ArrayLike:
    """[..., num_samples] -> [..., frames, window_length], end zero-padded (pad_end=True).

    Frame i is samples [hop i, hop i + window). Built from hop-sized blocks and shifted views of
    them (no gather), which works for jnp under jit and for numpy alike.
    """
    hop, window = features.hop_length, features.window_length
    frames = num_frames(samples.shape[-1], features)
    blocks_per_frame = -(-window // hop)
    total_blocks = frames + blocks_per_frame - 1
    pad = total_blocks * hop - samples.shape[-1]
    padded = xp.pad(samples, [(0, 0)] * (samples.ndim - 1) + [(0, pad)])
    blocks = padded.reshape(samples.shape[:-1] + (total_blocks, hop))  # [..., blocks, hop]
    shifted = [blocks[..., k : k + frames, :] for k in range(blocks_per_frame)]
    return xp.concatenate(shifted, axis=-1)[..., :window]  # [..., frames, window]


def _check_features(features: FeatureConfig) -> None:
    if features.window_length > features.fft_length:
        raise ValueError(
            f"window_length {features.window_length} exceeds fft_length {features.fft_length}"
        )


def compute_log_mel(
    samples: ArrayLike,  # [..., num_samples] at features.sample_rate
    features: FeatureConfig = DEFAULT_FEATURES,
) -> jax.Array:  # [..., ceil(num_samples / hop), num_mels] float32
    """Natural-log mel magnitudes of audio, exactly as the original codec (spec §2.2).

    Jit-able and batched over any leading axes; ``features`` is a hashable frozen dataclass,
    so pass it as a static argument (``jax.jit(compute_log_mel, static_argnames="features")``).
    Computed in float32; the mel matmul asks for full float32 precision so that accelerators
    do not silently drop to bfloat16 passes. An empty signal gives ``[..., 0, num_mels]``
    zeros.
    """
    _check_features(features)
    samples = jnp.asarray(samples, jnp.float32)
    if samples.ndim == 0:
        raise ValueError(f"samples must have a time axis, got a scalar of shape {samples.shape}")
    if samples.shape[-1] == 0:
        return jnp.zeros(samples.shape[:-1] + (0, features.num_mels), jnp.float32)
    frames = _frame_signal(jnp, samples, features)  # [..., frames, window]
    window = jnp.asarray(periodic_hann_window(features.window_length), jnp.float32)
    spectrum = jnp.fft.rfft(frames * window, n=features.fft_length)  # [..., frames, bins]
    magnitude = jnp.abs(spectrum)
    mel = jnp.matmul(
        magnitude,
        jnp.asarray(mel_weight_matrix(features), jnp.float32),
        precision=jax.lax.Precision.HIGHEST,
    )  # [..., frames, mels]
    return jnp.log(jnp.clip(mel, features.log_floor, features.log_ceiling))


def compute_log_mel_numpy(
    samples: np.ndarray,  # [..., num_samples]
    features: FeatureConfig = DEFAULT_FEATURES,
) -> np.ndarray:  # [..., ceil(num_samples / hop), num_mels] float32
    """``compute_log_mel`` in float64 numpy, returned as float32: for host data pipelines.

    Needs no accelerator and no jit compilation per audio length (songs all differ in length).
    Agrees with ``compute_log_mel`` to float32 rounding.
    """
    _check_features(features)
    samples = np.asarray(samples, np.float64)
    if samples.ndim == 0:
        raise ValueError(f"samples must have a time axis, got a scalar of shape {samples.shape}")
    if samples.shape[-1] == 0:
        return np.zeros(samples.shape[:-1] + (0, features.num_mels), np.float32)
    frames = _frame_signal(np, samples, features)
    spectrum = np.fft.rfft(frames * periodic_hann_window(features.window_length),
                           n=features.fft_length)
    mel = np.abs(spectrum) @ mel_weight_matrix(features)
    return np.log(np.clip(mel, features.log_floor, features.log_ceiling)).astype(np.float32)


def silence_log_mel(features: FeatureConfig = DEFAULT_FEATURES) -> float:
    """Log-mel value of digital silence, ln(1e-5) = -11.5129 (the original's pad_value)."""
    return math.log(features.log_floor)


def scale_features(
    log_mel: ArrayLike,  # [..., mels] unscaled log-mel
    clip: bool = True,
    features: FeatureConfig = DEFAULT_FEATURES,
) -> jax.Array:  # [..., mels] in [-1, 1] when clip=True
    """Maps log-mel [ln 1e-5, 4.0] linearly onto [-1, 1] (``AudioCodec.scale_features``).

    With ``clip`` the input is first clipped to [ln 1e-5, 4.0]. Silence -> -1, 0.0 -> +0.4843.
    """
    low, high = features.min_log_mel, features.max_log_mel
    x = jnp.asarray(log_mel, jnp.float32)
    if clip:
        x = jnp.clip(x, low, high)
    return 2.0 * (x - low) / (high - low) - 1.0


def scale_to_features(
    x: ArrayLike,  # [..., mels] in [-1, 1]
    clip: bool = True,
    features: FeatureConfig = DEFAULT_FEATURES,
) -> jax.Array:  # [..., mels] unscaled log-mel
    """Inverse of ``scale_features``; with ``clip`` the input is first clipped to [-1, 1]."""
    low, high = features.min_log_mel, features.max_log_mel
    x = jnp.asarray(x, jnp.float32)
    if clip:
        x = jnp.clip(x, -1.0, 1.0)
    return (x + 1.0) / 2.0 * (high - low) + low
