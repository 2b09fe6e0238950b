"""Continuous-time noise schedules, written as log-SNR functions of t in [0, 1].

A schedule maps diffusion time t to the log signal-to-noise ratio λ(t) = ln(α_t² / σ_t²).
Everything else (α, σ, the forward process, the posterior, the samplers) is derived from λ,
so a new schedule is one more pure function here (spec §5.2). The process is variance
preserving: α_t² = sigmoid(λ), σ_t² = sigmoid(-λ), so α² + σ² = 1.

All functions are pure, jit-able and broadcast over any array shape.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

# λ is clipped to this range by the cosine schedule (spec §5.2): λ(0) = +20, λ(1) = -20.
LOG_SNR_MAX = 20.0
LOG_SNR_MIN = -20.0

LogSnrFn = Callable[[jax.Array], jax.Array]

# b = arctan(e^(-λmax/2)), a = arctan(e^(-λmin/2)) - b, so that -2 ln tan(a·t + b) runs from
# λmax at t = 0 to λmin at t = 1 (spec §5.2).
_COSINE_B = math.atan(math.exp(-0.5 * LOG_SNR_MAX))
_COSINE_A = math.atan(math.exp(-0.5 * LOG_SNR_MIN)) - _COSINE_B

# The "linear" schedule is the continuous limit of DDPM's linear β schedule (1e-4 .. 0.02 over
# 1000 steps), i.e. the VP-SDE with β(t) = β_min + t (β_max - β_min), β_min = 0.1, β_max = 20:
# ᾱ(t) = exp(-(β_min t + ½ (β_max - β_min) t²)), so λ = -ln(expm1(β_min t + ½ Δβ t²)).
_LINEAR_BETA_MIN = 0.1
_LINEAR_BETA_MAX = 20.0


def cosine_log_snr(t: jax.Array) -> jax.Array:
    """λ(t) = -2 ln tan(a t + b): the original's cosine schedule clipped to [-20, 20] (spec §5.2).

    Args:
        t: diffusion time in [0, 1], any shape.

    Returns:
        log-SNR with the shape of ``t``; +20 at t = 0 and -20 at t = 1.
    """
    t = jnp.asarray(t, jnp.float32)
    log_snr = -2.0 * jnp.log(jnp.tan(_COSINE_A * t + _COSINE_B))
    # The formula hits ±20 exactly at the endpoints; the clip only removes float rounding.
    return jnp.clip(log_snr, LOG_SNR_MIN, LOG_SNR_MAX)


def linear_log_snr(t: jax.Array) -> jax.Array:
    """Continuous-time DDPM linear-β schedule (VP-SDE, β from 0.1 to 20), clipped to ±20.

    The original's ``linear`` option interpolates the log-SNR of the discrete 1000-step linear
    β schedule; this is its closed-form continuous limit. It is not used by any released model.

    Args:
        t: diffusion time in [0, 1], any shape.

    Returns:
        log-SNR with the shape of ``t``; +20 at t = 0 (clipped) and about -10.05 at t = 1.
    """
    t = jnp.asarray(t, jnp.float32)
    integral = _LINEAR_BETA_MIN * t + 0.5 * (_LINEAR_BETA_MAX - _LINEAR_BETA_MIN) * t**2
    # expm1(0) = 0 at t = 0: floor it so λ stays finite (and is then clipped to +20).
    one_minus_over = jnp.maximum(jnp.expm1(integral), math.exp(-LOG_SNR_MAX))
    return jnp.clip(-jnp.log(one_minus_over), LOG_SNR_MIN, LOG_SNR_MAX)


def alpha_sigma(log_snr: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Signal and noise scales of a variance-preserving process: α = √sigmoid(λ), σ = √sigmoid(-λ).

    Args:
        log_snr: λ, any shape.

    Returns:
        (alpha, sigma), each with the shape of ``log_snr``; α² + σ² = 1.
    """
    log_snr = jnp.asarray(log_snr, jnp.float32)
    return jnp.sqrt(jax.nn.sigmoid(log_snr)), jnp.sqrt(jax.nn.sigmoid(-log_snr))


def time_from_log_snr(log_snr_fn: LogSnrFn, log_snr: jax.Array, *, iterations: int = 48) -> jax.Array:
    """The t in [0, 1] with λ(t) = ``log_snr``, for any decreasing schedule, by bisection.

    Used by the samplers' log-SNR-uniform time grid. 48 halvings of [0, 1] reach float32
    resolution; λ outside the schedule's range maps to the nearer end (0 or 1).

    Args:
        log_snr_fn: a schedule (decreasing in t).
        log_snr: target λ, any shape.

    Returns:
        float32 t with the shape of ``log_snr``.
    """
    target = jnp.asarray(log_snr, jnp.float32)

    def halve(_, bounds):
        low, high = bounds
        mid = 0.5 * (low + high)
        # λ decreases in t: λ(mid) > target means the answer lies above mid.
        above = log_snr_fn(mid) > target
        return jnp.where(above, mid, low), jnp.where(above, high, mid)

    low, high = jax.lax.fori_loop(0, iterations, halve,
                                  (jnp.zeros_like(target), jnp.ones_like(target)))
    return 0.5 * (low + high)


_SCHEDULES: dict[str, LogSnrFn] = {
    "cosine": cosine_log_snr,
    "linear": linear_log_snr,
}

SCHEDULE_NAMES: tuple[str, ...] = tuple(_SCHEDULES)


def get_schedule(name: str) -> LogSnrFn:
    """Returns the log-SNR function called ``name``.

    Raises:
        ValueError: for an unknown name; the message lists the valid names.
    """
    try:
        return _SCHEDULES[name]
    except KeyError:
        raise ValueError(
            f"Unknown noise schedule {name!r}; valid schedules: {', '.join(SCHEDULE_NAMES)}."
        ) from None
