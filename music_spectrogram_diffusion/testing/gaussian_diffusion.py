"""Diffusion of Gaussian data, where everything a sampler approximates is closed form.

For data x0 ~ N(μ, s²) (independently per element) under the variance-preserving process
z_t = α_t x0 + σ_t ε, the marginal is z_t ~ N(α_t μ, v_t) with v_t = α_t² s² + σ_t², and

- the exact denoiser is E[x0 | z_t] = μ + α_t s² (z_t - α_t μ) / v_t, so the exact ε-prediction
  is (z_t - α_t E[x0 | z_t]) / σ_t;
- the probability-flow ODE moves every element along its standardised value
  u = (z_t - α_t μ) / √v_t, which stays constant (the flow is affine in z and keeps the marginal
  Gaussian), so started from z at λ_start it ends at x0 = μ + s u at t = 0.

The samplers' tests use this to compare each sampler with the exact ODE solution, and the
1000-step DDPM with the data's mean and variance.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from music_spectrogram_diffusion.diffusion import objectives
from music_spectrogram_diffusion.diffusion import schedules


@dataclasses.dataclass(frozen=True)
class GaussianData:
    """x0 ~ N(mean, std²), elementwise; ``mean`` and ``std`` broadcast against the samples
    (e.g. [mels] for one Gaussian per mel bin)."""

    mean: jax.Array
    std: jax.Array
    log_snr_fn: schedules.LogSnrFn = schedules.cosine_log_snr

    def _marginal(self, log_snr: jax.Array, like: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        alpha, sigma = schedules.alpha_sigma(log_snr)
        alpha = objectives.broadcast_to_rank(alpha, like)
        sigma = objectives.broadcast_to_rank(sigma, like)
        return alpha, sigma, alpha**2 * self.std**2 + sigma**2

    def denoise_fn(self, z: jax.Array, t: jax.Array) -> jax.Array:
        """The exact ε̂(z [B, ...], t [B]) (a sampler's ``denoise_fn``)."""
        log_snr = self.log_snr_fn(t)
        alpha, sigma, variance = self._marginal(log_snr, z)
        x0 = self.mean + alpha * self.std**2 * (z - alpha * self.mean) / variance
        return (z - alpha * x0) / sigma

    def ode_solution(self, z: jax.Array, log_snr_start: jax.Array | float) -> jax.Array:
        """x0 that the probability-flow ODE reaches from z at λ_start (same shape as z)."""
        alpha, _, variance = self._marginal(jnp.asarray(log_snr_start), z)
        return self.mean + self.std * (z - alpha * self.mean) / jnp.sqrt(variance)
