"""Diffusion objectives as pure functions of arrays (spec §5.2-§5.4).

Conventions: x0 is the clean (scaled, [-1, 1]) spectrogram, ε the unit Gaussian noise, z_t the
noisy sample at diffusion time t, and λ the log-SNR of t (see ``schedules``). Per-example
quantities such as λ have shape [batch] (or are scalars) and are broadcast over the trailing
axes of the arrays they scale.

Written from the variance-preserving relations
    z_t = α_t x0 + σ_t ε,    α_t² = sigmoid(λ_t),    σ_t² = sigmoid(-λ_t),
and, for s < t, the Gaussian posterior q(z_s | z_t, x0) with r = e^(λ_t - λ_s) = SNR_t / SNR_s:
    mean = r (α_s / α_t) z_t + (1 - r) α_s x0,
    var  = (1 - r) σ_s²  ("small", the true posterior variance)
        or (1 - r) σ_t²  ("large", β_{t|s}; what the original samples with).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from music_spectrogram_diffusion.diffusion import schedules

LOSS_NORMS = ("l1", "l2")
VARIANCE_TYPES = ("large", "small")


def broadcast_to_rank(values: jax.Array, like: jax.Array) -> jax.Array:
    """Appends unit axes to ``values`` ([batch] or scalar) so it broadcasts against ``like``."""
    values = jnp.asarray(values)
    return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))


def _alpha_sigma_like(log_snr: jax.Array, like: jax.Array) -> tuple[jax.Array, jax.Array]:
    alpha, sigma = schedules.alpha_sigma(log_snr)
    return broadcast_to_rank(alpha, like), broadcast_to_rank(sigma, like)


# ---------------------------------------------------------------------------------------------
# Forward process and posterior.


def diffuse(x0: jax.Array, eps: jax.Array, log_snr: jax.Array) -> jax.Array:
    """Forward process z_t = α_t x0 + σ_t ε (spec §5.3 step 3).

    Args:
        x0: clean data, e.g. [batch, frames, mels].
        eps: unit Gaussian noise, same shape as ``x0``.
        log_snr: λ_t, [batch] or scalar.

    Returns:
        z_t with the shape of ``x0``.
    """
    alpha, sigma = _alpha_sigma_like(log_snr, x0)
    return alpha * x0 + sigma * eps


def posterior_mean_variance(
    z_t: jax.Array,
    x0: jax.Array,
    log_snr_t: jax.Array,
    log_snr_s: jax.Array,
    *,
    variance: Literal["large", "small"] = "large",
) -> tuple[jax.Array, jax.Array]:
    """Mean and variance of q(z_s | z_t, x0) for s < t (spec §5.4 step 4).

    Args:
        z_t: the current sample, e.g. [batch, frames, mels].
        x0: the (predicted) clean data, same shape.
        log_snr_t: λ_t, [batch] or scalar.
        log_snr_s: λ_s (> λ_t), [batch] or scalar.
        variance: 'large' = (1 - r) σ_t² (the original's sampler), 'small' = (1 - r) σ_s²
            (the exact posterior variance).

    Returns:
        (mean with the shape of ``z_t``, variance broadcastable to it).
    """
    if variance not in VARIANCE_TYPES:
        raise ValueError(f"Unknown variance {variance!r}; valid: {', '.join(VARIANCE_TYPES)}.")
    alpha_t, sigma_t = _alpha_sigma_like(log_snr_t, z_t)
    alpha_s, sigma_s = _alpha_sigma_like(log_snr_s, z_t)
    # -expm1(λ_t - λ_s) = 1 - r without cancellation when the steps are small (N = 1000).
    r = broadcast_to_rank(jnp.exp(log_snr_t - log_snr_s), z_t)
    one_minus_r = broadcast_to_rank(-jnp.expm1(log_snr_t - log_snr_s), z_t)
    mean = r * (alpha_s / alpha_t) * z_t + one_minus_r * alpha_s * x0
    sigma_sq = sigma_t**2 if variance == "large" else sigma_s**2
    return mean, one_minus_r * sigma_sq


# ---------------------------------------------------------------------------------------------
# Parameterisation conversions: any one of (ε, x0, v) plus z_t determines the others.
# v = α ε - σ x0 (Salimans & Ho 2022).


def x0_from_eps(z_t: jax.Array, eps: jax.Array, log_snr: jax.Array) -> jax.Array:
    """x0 = (z_t - σ ε) / α."""
    alpha, sigma = _alpha_sigma_like(log_snr, z_t)
    return (z_t - sigma * eps) / alpha


def eps_from_x0(z_t: jax.Array, x0: jax.Array, log_snr: jax.Array) -> jax.Array:
    """ε = (z_t - α x0) / σ."""
    alpha, sigma = _alpha_sigma_like(log_snr, z_t)
    return (z_t - alpha * x0) / sigma


def v_from_eps(z_t: jax.Array, eps: jax.Array, log_snr: jax.Array) -> jax.Array:
    """v = α ε - σ x0, with x0 recovered from (z_t, ε)."""
    alpha, sigma = _alpha_sigma_like(log_snr, z_t)
    # With x0 = (z - σε)/α: v = αε - σ(z - σε)/α = (ε - σ z)/α using α² + σ² = 1.
    return (eps - sigma * z_t) / alpha


def eps_from_v(z_t: jax.Array, v: jax.Array, log_snr: jax.Array) -> jax.Array:
    """ε = σ z_t + α v."""
    alpha, sigma = _alpha_sigma_like(log_snr, z_t)
    return sigma * z_t + alpha * v


def x0_from_v(z_t: jax.Array, v: jax.Array, log_snr: jax.Array) -> jax.Array:
    """x0 = α z_t - σ v."""
    alpha, sigma = _alpha_sigma_like(log_snr, z_t)
    return alpha * z_t - sigma * v


# ---------------------------------------------------------------------------------------------
# Loss.


def masked_loss(
    prediction: jax.Array,
    target: jax.Array,
    frame_mask: jax.Array,
    *,
    norm: Literal["l1", "l2"] = "l1",
) -> tuple[jax.Array, jax.Array]:
    """Mean L1 or L2 error over the real frames and all bins (spec §5.3 step 7, §11.7).

    Differs from the original on purpose: the original returns the *unnormalised sum* over
    batch, frames and bins (§11.7), which makes the loss scale with batch size and the number of
    real frames; that only worked because Adafactor is invariant to loss scale. We divide by
    (real frames x bins) so the value is comparable across batch sizes and usable with Adam.

    Args:
        prediction: [batch, frames, bins].
        target: [batch, frames, bins].
        frame_mask: [batch, frames], 1 for real frames.
        norm: 'l1' (the original's choice) or 'l2' (squared error).

    Returns:
        (loss: scalar mean per element, sum_per_frame: [batch, frames] error summed over bins,
        already multiplied by the mask).
    """
    if norm not in LOSS_NORMS:
        raise ValueError(f"Unknown loss norm {norm!r}; valid: {', '.join(LOSS_NORMS)}.")
    diff = prediction.astype(jnp.float32) - target.astype(jnp.float32)
    err = jnp.abs(diff) if norm == "l1" else jnp.square(diff)
    mask = frame_mask.astype(jnp.float32)
    sum_per_frame = jnp.sum(err, axis=-1) * mask  # [batch, frames]
    num_elements = jnp.maximum(jnp.sum(mask), 1.0) * err.shape[-1]
    return jnp.sum(sum_per_frame) / num_elements, sum_per_frame


# ---------------------------------------------------------------------------------------------
# Classifier-free guidance (spec §5.3 step 4, §5.4 step 2).


def drop_conditioning(
    rng: jax.Array,
    note_tokens: jax.Array,
    context_mask: jax.Array | None,
    drop_prob: float,
) -> tuple[jax.Array, jax.Array | None, jax.Array]:
    """Drops the notes AND the context of each example together with probability ``drop_prob``.

    As in the original, a dropped example has its note tokens multiplied by 0 (so its whole token
    mask is 0) and its context mask multiplied by 0; the network then zeroes every
    cross-attention output for it, which is the unconditional model.

    Args:
        rng: one key for the [batch] Bernoulli draws, or one key per example ([batch] keys:
            each example's draw from its own key, the same in any microbatch).
        note_tokens: int32 [batch, tokens].
        context_mask: [batch, context_frames] or None (models without context).
        drop_prob: probability in [0, 1] that an example is unconditional.

    Returns:
        (note_tokens, context_mask, keep) where keep is float32 [batch], 1 for conditioned rows.
    """
    batch = note_tokens.shape[0]
    if not jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
        rng = jax.random.wrap_key_data(rng)  # a raw uint32 PRNGKey
    if rng.ndim:
        keep = jax.vmap(lambda key: jax.random.bernoulli(key, 1.0 - drop_prob))(rng)
    else:
        keep = jax.random.bernoulli(rng, 1.0 - drop_prob, (batch,))
    note_tokens = note_tokens * keep[:, None].astype(note_tokens.dtype)
    if context_mask is not None:
        context_mask = context_mask * keep[:, None].astype(context_mask.dtype)
    return note_tokens, context_mask, keep.astype(jnp.float32)


def apply_guidance(
    eps_cond: jax.Array, eps_uncond: jax.Array, guidance_weight: float | jax.Array
) -> jax.Array:
    """Classifier-free guidance: ε = w ε_cond + (1 - w) ε_uncond (w = 1: purely conditional)."""
    return guidance_weight * eps_cond + (1.0 - guidance_weight) * eps_uncond
