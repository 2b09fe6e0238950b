"""GAN vocoder losses: least-squares adversarial, feature matching, log-mel L1, MR-STFT.

HiFi-GAN (Kong et al., 2020) trains with
    L_G = sum_k LS_G(D_k) + 2 * FM + 45 * mel_L1,    L_D = sum_k LS_D(D_k),
where k runs over the discriminator branches. Our mel L1 is measured on exactly the model's
features (our log-mel front end, spec §2.2), so the generator is trained on the quantity the
diffusion model predicts. The multi-resolution STFT distance (Parallel WaveGAN) is the same
function the evaluation reports (audio/stft_distance.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from music_spectrogram_diffusion.audio import spectrograms
from music_spectrogram_diffusion.audio import stft_distance
from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig


def lsgan_discriminator_loss(
    real_logits: Sequence[jnp.ndarray],  # per branch, any shape
    fake_logits: Sequence[jnp.ndarray],
) -> jnp.ndarray:  # scalar
    """sum_k mean((1 - D_k(x))^2) + mean(D_k(G(s))^2)  (Mao et al., 2017)."""
    return sum(
        jnp.mean(jnp.square(1.0 - real)) + jnp.mean(jnp.square(fake))
        for real, fake in zip(real_logits, fake_logits, strict=True)
    )


def lsgan_generator_loss(fake_logits: Sequence[jnp.ndarray]) -> jnp.ndarray:  # scalar
    """sum_k mean((1 - D_k(G(s)))^2)."""
    return sum(jnp.mean(jnp.square(1.0 - fake)) for fake in fake_logits)


def feature_matching_loss(
    real_features: Sequence[Sequence[jnp.ndarray]],  # [branch][layer] activations
    fake_features: Sequence[Sequence[jnp.ndarray]],
) -> jnp.ndarray:  # scalar
    """sum over branches and layers of mean |D_l(x) - D_l(G(s))|; real activations are constants."""
    total = jnp.zeros((), jnp.float32)
    for real_branch, fake_branch in zip(real_features, fake_features, strict=True):
        for real, fake in zip(real_branch, fake_branch, strict=True):
            total += jnp.mean(jnp.abs(jax.lax.stop_gradient(real) - fake))
    return total


def mel_l1_loss(
    audio: jnp.ndarray,  # [..., frames * hop]
    target_log_mel: jnp.ndarray,  # [..., frames, mels] unscaled
    features: FeatureConfig = DEFAULT_FEATURES,
) -> jnp.ndarray:  # scalar
    """Mean |log-mel(audio) - target| over frames and bins, in natural-log units."""
    log_mel = spectrograms.compute_log_mel(audio, features)
    frames = target_log_mel.shape[-2]
    return jnp.mean(jnp.abs(log_mel[..., :frames, :] - target_log_mel))


def multi_resolution_stft_loss(
    audio: jnp.ndarray,  # [..., samples]
    target_audio: jnp.ndarray,  # [..., samples]
    resolutions: Sequence[tuple[int, int, int]] = stft_distance.DEFAULT_RESOLUTIONS,
) -> jnp.ndarray:  # scalar
    """The evaluation's MR-STFT distance, used as an auxiliary reconstruction loss."""
    return stft_distance.multi_resolution_stft_distance(audio, target_audio, resolutions)
