"""Short-time Fourier transform in jnp and the multi-resolution STFT distance.

This is the one copy of the multi-resolution STFT distance in the package: the vocoder losses
(audio/vocoders/losses.py) train with it and the evaluation metrics report it, so a number in a
training log and a number in an evaluation table mean the same thing.

The STFT follows the original's codec framing (spec §2.2): frames start at ``hop * i``, are not
centred, the signal is zero-padded at the end so there are ceil(N / hop) frames, and each frame
is windowed by a periodic Hann window and zero-padded to ``fft_length`` before the rfft. With
``(1024, 320, 640)`` this is exactly the STFT behind our log-mel features.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from music_spectrogram_diffusion.audio import spectrograms

# (fft_length, hop_length, window_length) triples; short, medium and long windows so that the
# distance sees both transients and harmonics (Yamamoto et al., Parallel WaveGAN, 2020).
DEFAULT_RESOLUTIONS: tuple[tuple[int, int, int], ...] = (
    (512, 128, 512),
    (1024, 256, 1024),
    (2048, 512, 2048),
)

# Magnitudes below this are treated as this value inside logs and square roots: it keeps the
# gradient of |X| finite at X = 0 and bounds log-magnitude differences in digital silence.
_MAGNITUDE_FLOOR = 1e-5


def num_stft_frames(num_samples: int, hop_length: int) -> int:
    """ceil(N / hop): the frame count of an end-padded, non-centred STFT (spec §2.2)."""
    return -(-num_samples // hop_length)


def stft(
    samples: jnp.ndarray,  # [..., num_samples]
    *,
    fft_length: int,
    hop_length: int,
    window_length: int,
) -> jnp.ndarray:  # [..., ceil(num_samples / hop), fft_length // 2 + 1] complex64
    """Complex STFT with the original codec's framing: not centred, zero padding at the end."""
    if window_length > fft_length:
        raise ValueError(f"window_length {window_length} exceeds fft_length {fft_length}")
    num_samples = samples.shape[-1]
    num_frames = num_stft_frames(num_samples, hop_length)
    padded_length = (num_frames - 1) * hop_length + window_length
    pad = [(0, 0)] * (samples.ndim - 1) + [(0, max(0, padded_length - num_samples))]
    padded = jnp.pad(samples.astype(jnp.float32), pad)
    # Gather frames with a static index table; XLA turns this into a cheap strided slice.
    index = np.arange(num_frames)[:, None] * hop_length + np.arange(window_length)[None, :]
    window = spectrograms.periodic_hann_window(window_length).astype(np.float32)
    frames = padded[..., index] * window  # [..., frames, window]
    return jnp.fft.rfft(frames, n=fft_length, axis=-1)


def stft_magnitude(
    samples: jnp.ndarray,  # [..., num_samples]
    *,
    fft_length: int,
    hop_length: int,
    window_length: int,
) -> jnp.ndarray:  # [..., frames, fft_length // 2 + 1]
    """|STFT|, floored at 1e-5 so that its gradient stays finite at zero."""
    spectrum = stft(samples, fft_length=fft_length, hop_length=hop_length, window_length=window_length)
    power = jnp.square(spectrum.real) + jnp.square(spectrum.imag)
    return jnp.sqrt(jnp.maximum(power, _MAGNITUDE_FLOOR**2))


def _safe_norm(x: jnp.ndarray) -> jnp.ndarray:  # [..., frames, bins] -> [...]
    """Frobenius norm over the last two axes whose gradient at 0 is 0, not NaN."""
    squared = jnp.sum(jnp.square(x), axis=(-2, -1))
    positive = squared > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def spectral_convergence(
    pred_magnitude: jnp.ndarray,  # [..., frames, bins]
    target_magnitude: jnp.ndarray,  # [..., frames, bins]
) -> jnp.ndarray:  # scalar
    """||T - P||_F / ||T||_F per example, averaged over the leading axes."""
    numerator = _safe_norm(target_magnitude - pred_magnitude)
    denominator = _safe_norm(target_magnitude)
    return jnp.mean(numerator / jnp.maximum(denominator, _MAGNITUDE_FLOOR))


def log_magnitude_distance(
    pred_magnitude: jnp.ndarray,  # [..., frames, bins]
    target_magnitude: jnp.ndarray,  # [..., frames, bins]
) -> jnp.ndarray:  # scalar
    """Mean |ln T - ln P| over all bins, frames and examples."""
    return jnp.mean(jnp.abs(jnp.log(target_magnitude) - jnp.log(pred_magnitude)))


def multi_resolution_stft_distance(
    pred: jnp.ndarray,  # [..., num_samples]
    target: jnp.ndarray,  # [..., num_samples]
    resolutions: Sequence[tuple[int, int, int]] = DEFAULT_RESOLUTIONS,
) -> jnp.ndarray:  # scalar
    """Spectral convergence + log-magnitude L1, averaged over STFT resolutions.

    Args:
      pred: audio to score.
      target: reference audio of the same shape.
      resolutions: (fft_length, hop_length, window_length) per STFT.

    Returns:
      A float32 scalar; 0 exactly when pred == target, positive otherwise. Differentiable in
      ``pred`` (the magnitude floor keeps gradients finite in silence).
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {pred.shape} != target shape {target.shape}")
    if not resolutions:
        raise ValueError("resolutions must name at least one (fft, hop, window) triple")
    total = jnp.zeros((), jnp.float32)
    for fft_length, hop_length, window_length in resolutions:
        kwargs = dict(fft_length=fft_length, hop_length=hop_length, window_length=window_length)
        pred_magnitude = stft_magnitude(pred, **kwargs)
        target_magnitude = stft_magnitude(target, **kwargs)
        total += spectral_convergence(pred_magnitude, target_magnitude)
        total += log_magnitude_distance(pred_magnitude, target_magnitude)
    return total / len(resolutions)
