"""Time grids of the deterministic and ancestral samplers: where the N steps go in t ∈ [0, 1].

A grid is a pure function ``(num_steps N, log_snr_fn) -> TimeGrid`` of N + 1 times in
ascending order, t[0] = 0 (clean data) ... t[N] (pure noise, z_T ~ N(0, I)). Sampler step i = N-1 ... 0 goes
from t[i+1] to t[i], so the network is evaluated at t[N], ..., t[1] and the last step lands on
t = 0 (λ = +20 for the cosine schedule). Each grid also gives λ at its times, so a solver that
works in log-SNR never has to invert the schedule itself.

- ``uniform_t``: t_i = i / N, the original's grid (spec §5.4 step 1). With the cosine schedule
  it spends its steps on λ ∈ [-5, 5] and its last step jumps from λ(1/N) (5.1 for N = 20, 3.2
  for N = 8) to +20: nearly all of the fine detail is left to one step.
- ``quadratic_t``: t_i = (i / N)², DPM-Solver's "time_quadratic" (Lu et al. 2022, App. D.1):
  denser near the data; the last network call is at λ ≈ 11 for N = 20 and 7.4 for N = 8.
- ``uniform_lambda``: DPM-Solver's "logSNR" grid: the N network calls uniform in λ over
  ``UNIFORM_LAMBDA_RANGE``, then a last step to t = 0. The range is narrower than the
  schedule's clipped [-20, 20]: below -10 the signal scale α < 0.007 and x̂0 is the data mean
  whatever z is; above +10 the noise σ < 0.007 is under the data's resolution (see
  ``tests/diffusion/test_samplers.py`` for the measurements behind the choice).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from music_spectrogram_diffusion.diffusion import schedules

# λ range of the uniform_lambda grid's network calls (first = noisiest, last = cleanest).
UNIFORM_LAMBDA_RANGE = (-10.0, 10.0)


class TimeGrid(NamedTuple):
    """N + 1 diffusion times in ascending order and their log-SNR."""

    t: jax.Array  # [N + 1] float32, t[0] = 0 ... t[N] (1, except for uniform_lambda)
    log_snr: jax.Array  # [N + 1] float32, λ(t), descending


GridFn = Callable[[int, schedules.LogSnrFn], TimeGrid]


def _from_times(t: jax.Array, log_snr_fn: schedules.LogSnrFn) -> TimeGrid:
    return TimeGrid(t, log_snr_fn(t))


def uniform_t_grid(num_steps: int, log_snr_fn: schedules.LogSnrFn) -> TimeGrid:
    """t_i = i / N: the original's grid (spec §5.4)."""
    # arange / N in float32 gives exactly the original's (i + 1) / N per step.
    return _from_times(jnp.arange(num_steps + 1, dtype=jnp.float32) / num_steps, log_snr_fn)


def quadratic_t_grid(num_steps: int, log_snr_fn: schedules.LogSnrFn) -> TimeGrid:
    """t_i = (i / N)²: DPM-Solver's time_quadratic grid, denser near the data."""
    return _from_times(jnp.square(jnp.arange(num_steps + 1, dtype=jnp.float32) / num_steps),
                       log_snr_fn)


def uniform_lambda_grid(num_steps: int, log_snr_fn: schedules.LogSnrFn) -> TimeGrid:
    """Network calls uniform in λ over ``UNIFORM_LAMBDA_RANGE``, then a last step to t = 0.

    The sampler starts at the noisiest call, t(λ = -10) ≈ 0.996 rather than t = 1: z_T ~ N(0, I)
    differs from the marginal there by α x0 with α = 0.0067, far below what a sampler resolves.
    """
    low, high = UNIFORM_LAMBDA_RANGE
    # Cleanest call first: index 1 .. N of the ascending grid.
    fraction = jnp.arange(num_steps, dtype=jnp.float32) / max(num_steps - 1, 1)
    calls = high + (low - high) * fraction
    if num_steps == 1:
        calls = jnp.full((1,), low, jnp.float32)
    log_snr = jnp.concatenate([log_snr_fn(jnp.zeros((1,), jnp.float32)), calls])
    # t[0] = 0 exactly: the clean end is the schedule's own λ(0), not an inverse of it.
    t = schedules.time_from_log_snr(log_snr_fn, log_snr).at[0].set(0.0)
    return TimeGrid(t, log_snr)


TIME_GRIDS: dict[str, GridFn] = {
    "uniform_t": uniform_t_grid,
    "quadratic_t": quadratic_t_grid,
    "uniform_lambda": uniform_lambda_grid,
}
TIME_GRID_NAMES: tuple[str, ...] = tuple(TIME_GRIDS)


def make_time_grid(name: str, num_steps: int, log_snr_fn: schedules.LogSnrFn) -> TimeGrid:
    """The grid called ``name`` with ``num_steps`` steps (N + 1 times, ascending).

    Raises:
        ValueError: an unknown name (the message lists the valid ones) or num_steps < 1.
    """
    if name not in TIME_GRIDS:
        raise ValueError(f"Unknown time grid {name!r}; valid time grids: {', '.join(TIME_GRID_NAMES)}.")
    if num_steps < 1:
        raise ValueError(f"A time grid needs num_steps >= 1, got {num_steps}.")
    return TIME_GRIDS[name](num_steps, log_snr_fn)
