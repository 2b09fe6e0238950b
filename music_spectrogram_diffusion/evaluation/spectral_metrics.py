"""Spectral distances between synthesized and real audio: mel L1/L2 and multi-resolution STFT.

Not in the original's metric set (spec §8.2) but cheap, deterministic and free of any embedding
model, so they catch regressions that VGGish/TRILL distances blur.

* **Mel L1 / L2** are computed on *unscaled* natural-log mel (the features of spec §2.2), both
  sides clipped to the model's range [ln 1e-5, 4.0] first: the diffusion model cannot produce
  values outside it, and without clipping a target's loud peaks above 4.0 would count as model
  error. ``mel_l1`` is the mean absolute difference (nepers; multiply by 2 / 15.5129 for the
  scaled [-1, 1] units the diffusion loss sees), ``mel_l2`` the mean squared difference.
* **MR-STFT** is ``audio.stft_distance.multi_resolution_stft_distance``, the same function the
  vocoder trains with, so evaluation and training numbers mean the same thing.

Sequences of different length (a prediction with a generated tail, spec §11.9) are truncated to
the shorter one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig


def mel_distances(
    predicted_log_mel: np.ndarray,  # [frames, mels] unscaled log-mel
    target_log_mel: np.ndarray,  # [frames, mels] unscaled log-mel
    *,
    mask: np.ndarray | None = None,  # [frames] 1 = frame counts; aligned with the target
    features: FeatureConfig = DEFAULT_FEATURES,
) -> dict[str, float]:
    """``{'mel_l1': mean |P - T|, 'mel_l2': mean (P - T)^2}`` over valid frames and mel bins."""
    predicted = np.asarray(predicted_log_mel, np.float64)
    target = np.asarray(target_log_mel, np.float64)
    if predicted.ndim != 2 or target.ndim != 2 or predicted.shape[1] != target.shape[1]:
        raise ValueError(
            f"expected [frames, mels] log-mel with equal mels, got {predicted.shape} and "
            f"{target.shape}"
        )
    num_frames = min(len(predicted), len(target))
    weights = np.ones(num_frames)
    if mask is not None:
        weights = np.asarray(mask, np.float64)[:num_frames]
        if weights.shape != (num_frames,):
            raise ValueError(f"mask of shape {np.shape(mask)} is shorter than {num_frames} frames")
    if weights.sum() == 0:
        raise ValueError("no valid frames to compare")
    low, high = features.min_log_mel, features.max_log_mel
    predicted = np.clip(predicted[:num_frames], low, high)
    difference = predicted - np.clip(target[:num_frames], low, high)
    per_frame_l1 = np.mean(np.abs(difference), axis=-1)
    per_frame_l2 = np.mean(np.square(difference), axis=-1)
    total = weights.sum()
    return {
        "mel_l1": float(np.sum(per_frame_l1 * weights) / total),
        "mel_l2": float(np.sum(per_frame_l2 * weights) / total),
    }


def multi_resolution_stft(
    predicted_audio: np.ndarray,  # [samples]
    target_audio: np.ndarray,  # [samples]
    resolutions: Sequence[tuple[int, int, int]] | None = None,
) -> float:
    """The vocoder's multi-resolution STFT distance of two clips, truncated to the shorter."""
    import jax.numpy as jnp

    from music_spectrogram_diffusion.audio import stft_distance

    predicted = np.nan_to_num(np.asarray(predicted_audio, np.float32))
    target = np.asarray(target_audio, np.float32)
    if predicted.ndim != 1 or target.ndim != 1:
        raise ValueError(f"expected mono [samples] audio, got {predicted.shape} and {target.shape}")
    num_samples = min(len(predicted), len(target))
    if num_samples == 0:
        raise ValueError("cannot compare empty audio")
    resolutions = stft_distance.DEFAULT_RESOLUTIONS if resolutions is None else tuple(resolutions)
    distance = stft_distance.multi_resolution_stft_distance(
        jnp.asarray(predicted[:num_samples]), jnp.asarray(target[:num_samples]), resolutions
    )
    return float(distance)
