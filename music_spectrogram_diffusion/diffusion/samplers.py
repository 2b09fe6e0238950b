"""Samplers for the spectrogram diffusion model: ancestral DDPM, DDIM, DPM-Solver++ and UniPC.

Every sampler takes a ``denoise_fn(z [batch, frames, mels], t [batch]) -> eps`` closure (already
classifier-free guided, see ``guided_denoise_fn``), an explicit random key, the initial noise or
its shape, and runs its whole loop as ONE ``jax.lax.scan``, so a caller can jit encoder + loop as
a single XLA program. Step i = N-1 ... 0 goes from t[i+1] to t[i] of a time grid
(``time_grids``); the default ``uniform_t`` grid is the original's t = (i+1)/N -> i/N (spec §5.4).

``SAMPLERS`` is the table of samplers (name -> function, description, and which
``SamplerConfig`` options it reads):

- ``ddpm``: the original sampler, exactly as spec §5.4 (clipped x̂0, "large" variance, the last
  step returns the clipped x̂0, step noise from ``fold_in(rng, i)``). 1000 steps in the paper.
- ``ddim``: deterministic DDIM (Song et al. 2021), z_s = α_s x̂0 + σ_s ε̂: first order.
- ``dpm++``: DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), the multistep second-order solver of
  the probability-flow ODE in data-prediction form, with x̂0 clipping.
- ``dpm++3m``: its third-order multistep variant (Lu et al. 2022, App. B; the official code).
- ``unipc``: UniPC-bh2 (Zhao et al. 2023): the DPM-Solver++(2M) step as predictor (UniP-2 with
  B(h) = expm1(h) is the same formula) plus the UniC corrector, which reuses each network call
  to correct the point it was made at, so it costs no extra evaluation.

The multistep solvers take a first-order last step by default (``lower_order_final``, the
paper's and diffusers' choice when the last step ends at σ = 0): the last step lands on λ = +20,
so with the uniform_t grid its half-log-SNR step h is ~7.5 after ~0.7 and the second-order
extrapolation would return x̂0 + 5.3 (x̂0 - x̂0_prev) (issue #13).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from music_spectrogram_diffusion.diffusion import objectives
from music_spectrogram_diffusion.diffusion import schedules
from music_spectrogram_diffusion.diffusion import time_grids

DenoiseFn = Callable[[jax.Array, jax.Array], jax.Array]  # (z [B, T, M], t [B]) -> eps [B, T, M]


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """How to draw a spectrogram from a trained diffusion model.

    Attributes:
        name: a key of ``SAMPLERS``: 'ddpm' (the original, spec §5.4), 'ddim', 'dpm++'
            (DPM-Solver++ 2M), 'dpm++3m' or 'unipc'.
        num_steps: number of network evaluations (doubled in batch when guided); any N >= 1.
        guidance_weight: classifier-free guidance weight w. 2.0 as in the released demo (the
            original's code default is 5.0, spec §11.14); w = 1 runs the conditional pass only.
        clip_x0: clip the predicted x̂0 to [-1, 1] at every step (the original does).
        variance: DDPM step variance, 'large' (original) or 'small'; read by 'ddpm' only.
        time_grid: where the steps go, a key of ``time_grids.TIME_GRIDS``: 'uniform_t' (the
            original's), 'quadratic_t' or 'uniform_lambda'.
        lower_order_final: the multistep solvers ('dpm++', 'dpm++3m', 'unipc') take a
            first-order last step (and 'dpm++3m' a second-order one before it). False is the
            plain multistep rule; only those samplers accept it.
    """

    name: str = "ddpm"
    num_steps: int = 1000
    guidance_weight: float = 2.0
    clip_x0: bool = True
    variance: str = "large"
    time_grid: str = "uniform_t"
    lower_order_final: bool = True

    def __post_init__(self):
        if self.name not in SAMPLERS:
            raise ValueError(f"Unknown sampler {self.name!r}; valid samplers: {', '.join(SAMPLER_NAMES)}.")
        if isinstance(self.num_steps, bool) or not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise ValueError(f"SamplerConfig.num_steps must be a positive int, got {self.num_steps!r}.")
        if self.variance not in objectives.VARIANCE_TYPES:
            raise ValueError(
                f"Unknown DDPM variance {self.variance!r}; valid: {', '.join(objectives.VARIANCE_TYPES)}."
            )
        if self.time_grid not in time_grids.TIME_GRIDS:
            raise ValueError(f"Unknown time grid {self.time_grid!r}; valid time grids: "
                             f"{', '.join(time_grids.TIME_GRID_NAMES)}.")
        if not isinstance(self.lower_order_final, bool):
            raise ValueError(f"SamplerConfig.lower_order_final must be a bool, got {self.lower_order_final!r}.")
        if not self.lower_order_final and "lower_order_final" not in SAMPLERS[self.name].options:
            takes = [name for name, spec in SAMPLERS.items() if "lower_order_final" in spec.options]
            raise ValueError(f"lower_order_final=False applies to the multistep samplers "
                             f"({', '.join(takes)}), not to {self.name!r}.")

    @property
    def label(self) -> str:
        """A short name for tables and file names, e.g. 'dpm++ quadratic_t 20'."""
        parts = [self.name]
        if self.time_grid != "uniform_t":
            parts.append(self.time_grid)
        if not self.lower_order_final:
            parts.append("no-lof")
        return " ".join([*parts, str(self.num_steps)])


def guided_denoise_fn(cond_fn: DenoiseFn, paired_fn: DenoiseFn, guidance_weight: float) -> DenoiseFn:
    """Builds the classifier-free-guided ε closure (spec §5.4 step 2).

    Args:
        cond_fn: ε of the conditioned model for a [B] batch.
        paired_fn: ε for a [2B] batch whose first B rows are conditioned and last B rows
            unconditioned, so both passes run as ONE batched network call.
        guidance_weight: w; with w == 1 the unconditional pass is skipped entirely.

    Returns:
        denoise_fn(z [B, T, M], t [B]) -> guided ε [B, T, M].
    """
    if guidance_weight == 1.0:
        return cond_fn

    def denoise(z: jax.Array, t: jax.Array) -> jax.Array:
        eps = paired_fn(jnp.concatenate([z, z]), jnp.concatenate([t, t]))
        eps_cond, eps_uncond = jnp.split(eps, 2)
        return objectives.apply_guidance(eps_cond, eps_uncond, guidance_weight)

    return denoise


def predict_x0(
    z_t: jax.Array, eps: jax.Array, log_snr_t: jax.Array, *, clip_x0: bool
) -> tuple[jax.Array, jax.Array]:
    """x̂0 from ε̂ (clipped to [-1, 1] if asked) and the ε consistent with that x̂0 (spec §5.4 step 3)."""
    x0 = objectives.x0_from_eps(z_t, eps, log_snr_t)
    if not clip_x0:
        return x0, eps
    x0 = jnp.clip(x0, -1.0, 1.0)
    return x0, objectives.eps_from_x0(z_t, x0, log_snr_t)


def ddpm_step(
    z_t: jax.Array,
    eps: jax.Array,
    log_snr_t: jax.Array,
    log_snr_s: jax.Array,
    noise: jax.Array,
    *,
    clip_x0: bool = True,
    variance: str = "large",
) -> tuple[jax.Array, jax.Array]:
    """One ancestral step z_t -> z_s ~ q(z_s | z_t, x̂0) (spec §5.4 step 4).

    Args:
        z_t: [B, T, M] current sample.
        eps: [B, T, M] (guided) ε̂ at t.
        log_snr_t, log_snr_s: λ_t and λ_s (s < t), scalars or [B].
        noise: [B, T, M] unit Gaussian noise for this step.
        clip_x0: clip x̂0 to [-1, 1].
        variance: 'large' = (1 - r) σ_t² or 'small' = (1 - r) σ_s².

    Returns:
        (z_s [B, T, M], x̂0 [B, T, M]); the last step of ``sample_ddpm`` returns x̂0 instead of z_s.
    """
    x0, _ = predict_x0(z_t, eps, log_snr_t, clip_x0=clip_x0)
    mean, var = objectives.posterior_mean_variance(z_t, x0, log_snr_t, log_snr_s, variance=variance)
    return mean + jnp.sqrt(var) * noise, x0


def ddim_step(
    z_t: jax.Array, eps: jax.Array, log_snr_t: jax.Array, log_snr_s: jax.Array, *, clip_x0: bool = True
) -> tuple[jax.Array, jax.Array]:
    """Deterministic DDIM step z_s = α_s x̂0 + σ_s ε̂ (ε̂ recomputed from the clipped x̂0).

    Returns:
        (z_s [B, T, M], x̂0 [B, T, M]).
    """
    x0, eps = predict_x0(z_t, eps, log_snr_t, clip_x0=clip_x0)
    alpha_s, sigma_s = schedules.alpha_sigma(log_snr_s)
    alpha_s = objectives.broadcast_to_rank(alpha_s, z_t)
    sigma_s = objectives.broadcast_to_rank(sigma_s, z_t)
    return alpha_s * x0 + sigma_s * eps, x0




def _half_log_snr_steps(log_snr_s, log_snr_t, log_snr_prev1, log_snr_prev2):
    """h = l_s - l_t and the two previous steps' ratios to it, with l = λ/2 (DPM-Solver's λ)."""
    h = 0.5 * (log_snr_s - log_snr_t)
    r0 = 0.5 * (log_snr_t - log_snr_prev1) / h
    r1 = 0.5 * (log_snr_prev1 - log_snr_prev2) / h
    return h, r0, r1


def dpm_solver_pp_step(
    z_t: jax.Array,
    x0_history: tuple[jax.Array, jax.Array, jax.Array],
    log_snr_history: tuple[jax.Array, jax.Array, jax.Array],
    log_snr_s: jax.Array,
    order: jax.Array | int,
) -> jax.Array:
    """One multistep DPM-Solver++ update z_t -> z_s in data-prediction form (Lu et al. 2022).

    With half-log-SNR l = λ/2, h = l_s - l_t > 0, φ1 = expm1(-h) and ratios r0 = h_prev / h,
    r1 = h_prev2 / h of the previous steps:
        order 1 (= DDIM):  z_s = (σ_s/σ_t) z_t - α_s φ1 x̂0
        order 2 (Alg. 2):  ... - ½ α_s φ1 D1,  D1 = (x̂0 - x̂0_prev) / r0
        order 3 (the official code's 3M):  order 1 + α_s φ2 D1' - α_s φ3 D2,
            φ2 = φ1/h + 1, φ3 = φ2/h - ½, D1' and D2 the divided differences of the three x̂0.

    Args:
        z_t: [B, T, M].
        x0_history: (x̂0 at t, at the previous point, at the one before), each [B, T, M]; the
            older ones are read only by the higher orders.
        log_snr_history: λ at those three points (scalars).
        log_snr_s: λ at the next point (scalar).
        order: 1, 2 or 3 (may be traced).

    Returns:
        z_s [B, T, M].
    """
    x0, x0_prev1, x0_prev2 = x0_history
    h, r0, r1 = _half_log_snr_steps(log_snr_s, *log_snr_history)
    _, sigma_t = schedules.alpha_sigma(log_snr_history[0])
    alpha_s, sigma_s = schedules.alpha_sigma(log_snr_s)
    phi1 = jnp.expm1(-h)
    first = (sigma_s / sigma_t) * z_t - alpha_s * phi1 * x0
    d1_0 = (x0 - x0_prev1) / r0
    second = first - 0.5 * alpha_s * phi1 * d1_0
    d1_1 = (x0_prev1 - x0_prev2) / r1
    d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    phi2 = phi1 / h + 1.0
    phi3 = phi2 / h - 0.5
    third = first + alpha_s * phi2 * d1 - alpha_s * phi3 * d2
    return jnp.where(order == 1, first, jnp.where(order == 2, second, third))


def unic_correct(
    z_prev: jax.Array,
    x0_history: tuple[jax.Array, jax.Array],
    log_snr_history: tuple[jax.Array, jax.Array],
    x0_t: jax.Array,
    log_snr_t: jax.Array,
    order: jax.Array | int,
) -> jax.Array:
    """UniC-bh2 (Zhao et al. 2023, Alg. 2; diffusers' ``multistep_uni_c_bh_update``): the
    corrected z_t, redoing the step z_prev -> z_t with the x̂0 just evaluated at the predicted z_t.

    Args:
        z_prev: [B, T, M] the (corrected) sample the predictor started from.
        x0_history: (x̂0 at z_prev's point, at the point before), each [B, T, M].
        log_snr_history: λ at those two points (scalars).
        x0_t: [B, T, M] x̂0 evaluated at the predicted z_t.
        log_snr_t: λ at t.
        order: 1 or 2, the order of the predictor step being corrected (may be traced).

    Returns:
        corrected z_t [B, T, M].
    """
    x0_prev, x0_prev2 = x0_history
    # Written with h̃ = -h as in the paper's data-prediction form; B(h) = expm1(h̃) ("bh2").
    h = 0.5 * (log_snr_t - log_snr_history[0])
    rk = 0.5 * (log_snr_history[1] - log_snr_history[0]) / h
    hh = -h
    h_phi_1 = jnp.expm1(hh)
    b_h = h_phi_1
    b1 = (h_phi_1 / hh - 1.0) / b_h
    b2 = 2.0 * ((h_phi_1 / hh - 1.0) / hh - 0.5) / b_h
    # Order 2 solves [[1, 1], [rk, 1]] ρ = (b1, b2); order 1 uses ρ = ½ on D1_t alone.
    rho0 = (b1 - b2) / (1.0 - rk)
    rho_t = jnp.where(order == 1, 0.5, b1 - rho0)
    history_term = jnp.where(order == 1, 0.0, rho0) * (x0_prev2 - x0_prev) / rk
    alpha_t, sigma_t = schedules.alpha_sigma(log_snr_t)
    _, sigma_prev = schedules.alpha_sigma(log_snr_history[0])
    base = (sigma_t / sigma_prev) * z_prev - alpha_t * h_phi_1 * x0_prev
    return base - alpha_t * b_h * (history_term + rho_t * (x0_t - x0_prev))


def _initial_noise(rng: jax.Array, initial: jax.Array | Sequence[int]) -> jax.Array:
    if isinstance(initial, (tuple, list)):
        # The original draws z_T from the sampling key itself (spec §5.4); bfloat16 was worse.
        return jax.random.normal(rng, tuple(initial), jnp.float32)
    return jnp.asarray(initial, jnp.float32)


# (i, z_t [B, T, M], eps [B, T, M], λ_t, λ_s, state) -> (z_s [B, T, M], x̂0 [B, T, M], state).
UpdateFn = Callable[
    [jax.Array, jax.Array, jax.Array, jax.Array, jax.Array, Any], tuple[jax.Array, jax.Array, Any]
]


def _no_state(z: jax.Array) -> None:
    del z
    return None


def _run_reverse_scan(
    update_fn: UpdateFn,
    denoise_fn: DenoiseFn,
    rng: jax.Array,
    initial: jax.Array | Sequence[int],
    *,
    grid: time_grids.TimeGrid,
    init_state: Callable[[jax.Array], Any] = _no_state,
    last_step_returns_x0: bool = True,
) -> jax.Array:
    """The loop every sampler shares, so each one only states its update rule.

    Draws (or takes) z_T, then runs step i = N-1 ... 0 from t = grid.t[i+1] to s = grid.t[i] as
    one reverse ``lax.scan``: one ``denoise_fn`` call at t, then ``update_fn``. The
    sampler-specific ``state`` (e.g. DPM-Solver++'s previous x̂0) rides along in the carry.

    Args:
        update_fn: the sampler's rule (i, z_t, ε̂, λ_t, λ_s, state) -> (z_s, x̂0, state).
        grid: the N + 1 times and their λ (``time_grids.make_time_grid``).
        init_state: builds the initial ``state`` from z_T; no state by default.
        last_step_returns_x0: the last step (i == 0) returns x̂0 instead of z_s, as the
            original does (spec §5.4 step 4).

    Returns:
        [B, T, M]: the value carried out of the last step.
    """
    z = _initial_noise(rng, initial)
    batch = z.shape[0]
    num_steps = grid.t.shape[0] - 1

    def body(carry, step):
        z, state = carry
        i, t, log_snr_t, log_snr_s = step
        eps = denoise_fn(z, jnp.full((batch,), t))
        z_s, x0, state = update_fn(i, z, eps, log_snr_t, log_snr_s, state)
        if last_step_returns_x0:
            z_s = jnp.where(i == 0, x0, z_s)
        return (z_s, state), None

    steps = (jnp.arange(num_steps), grid.t[1:], grid.log_snr[1:], grid.log_snr[:-1])
    (z, _), _ = jax.lax.scan(body, (z, init_state(z)), steps, reverse=True)
    return z


def sample_ddpm(
    denoise_fn: DenoiseFn,
    rng: jax.Array,
    initial: jax.Array | Sequence[int],
    *,
    num_steps: int,
    log_snr_fn: schedules.LogSnrFn = schedules.cosine_log_snr,
    clip_x0: bool = True,
    time_grid: str = "uniform_t",
    variance: str = "large",
) -> jax.Array:
    """Ancestral DDPM sampling exactly as the original ``eval_scan`` (spec §5.4).

    Args:
        denoise_fn: guided ε̂(z, t).
        rng: key; step i draws its noise from ``fold_in(rng, i)``.
        initial: z_T [B, T, M], or its shape, in which case z_T ~ N(0, I) is drawn from ``rng``.
        num_steps: N.
        log_snr_fn: the training schedule.
        clip_x0: clip x̂0 to [-1, 1].
        time_grid: 'uniform_t' is the original's.
        variance: 'large' (original) or 'small'.

    Returns:
        x̂0 [B, T, M] in the scaled [-1, 1] feature space.
    """

    def update(i, z, eps, log_snr_t, log_snr_s, state):
        noise = jax.random.normal(jax.random.fold_in(rng, i), z.shape, z.dtype)
        z_s, x0 = ddpm_step(z, eps, log_snr_t, log_snr_s, noise, clip_x0=clip_x0, variance=variance)
        return z_s, x0, state

    grid = time_grids.make_time_grid(time_grid, num_steps, log_snr_fn)
    return _run_reverse_scan(update, denoise_fn, rng, initial, grid=grid)


def sample_ddim(
    denoise_fn: DenoiseFn,
    rng: jax.Array,
    initial: jax.Array | Sequence[int],
    *,
    num_steps: int,
    log_snr_fn: schedules.LogSnrFn = schedules.cosine_log_snr,
    clip_x0: bool = True,
    time_grid: str = "uniform_t",
) -> jax.Array:
    """Deterministic DDIM sampling; the last step returns x̂0.

    ``rng`` is only used to draw z_T when ``initial`` is a shape. Returns x̂0 [B, T, M].
    """

    def update(i, z, eps, log_snr_t, log_snr_s, state):
        z_s, x0 = ddim_step(z, eps, log_snr_t, log_snr_s, clip_x0=clip_x0)
        return z_s, x0, state

    grid = time_grids.make_time_grid(time_grid, num_steps, log_snr_fn)
    return _run_reverse_scan(update, denoise_fn, rng, initial, grid=grid)


def multistep_order(step: jax.Array | int, num_steps: int, max_order: int, lower_order_final: bool):
    """Order of multistep step ``step`` (0 = the first, from pure noise) of ``num_steps``.

    Warm-up: step j has only j earlier x̂0, so its order is at most j + 1. With
    ``lower_order_final`` the last k steps use order at most k (Lu et al.'s rule; diffusers
    applies it whenever the last step ends at σ = 0, as ours does).
    """
    order = jnp.minimum(max_order, step + 1)
    if lower_order_final:
        order = jnp.minimum(order, num_steps - step)
    return order


def sample_multistep(
    denoise_fn: DenoiseFn,
    rng: jax.Array,
    initial: jax.Array | Sequence[int],
    *,
    num_steps: int,
    log_snr_fn: schedules.LogSnrFn = schedules.cosine_log_snr,
    clip_x0: bool = True,
    time_grid: str = "uniform_t",
    order: int = 2,
    corrector: bool = False,
    lower_order_final: bool = True,
) -> jax.Array:
    """DPM-Solver++(2M / 3M), or UniPC-bh2 with ``corrector``: multistep data-prediction solvers.

    Args:
        denoise_fn, rng, initial, num_steps, log_snr_fn, clip_x0, time_grid: as ``sample_ddim``;
            ``rng`` only draws z_T when ``initial`` is a shape.
        order: 2 (DPM-Solver++ 2M, UniP-2) or 3 (DPM-Solver++ 3M).
        corrector: apply UniC to every point after the first (UniPC; order 2 only).
        lower_order_final: lower orders on the last steps (``multistep_order``).

    The final update lands on t = 0 (λ = 20, σ ≈ 4.5e-5), so the result is the solver's data
    estimate; it is clipped to [-1, 1] when ``clip_x0``. Returns x̂0 [B, T, M].
    """
    if order not in (2, 3) or (corrector and order != 2):
        raise ValueError(f"sample_multistep supports order 2 or 3 (the corrector with order 2), "
                         f"got order={order}, corrector={corrector}.")
    grid = time_grids.make_time_grid(time_grid, num_steps, log_snr_fn)

    def update(i, z, eps, log_snr_t, log_snr_s, state):
        z_prev, x0_prev1, x0_prev2, log_snr_prev1, log_snr_prev2 = state
        step = num_steps - 1 - i
        x0, _ = predict_x0(z, eps, log_snr_t, clip_x0=clip_x0)
        if corrector:
            # Corrects with the order of the step that produced z (none for the first point).
            corrected = unic_correct(
                z_prev, (x0_prev1, x0_prev2), (log_snr_prev1, log_snr_prev2), x0, log_snr_t,
                multistep_order(step - 1, num_steps, order, lower_order_final))
            z = jnp.where(step == 0, z, corrected)
        z_s = dpm_solver_pp_step(
            z, (x0, x0_prev1, x0_prev2), (log_snr_t, log_snr_prev1, log_snr_prev2), log_snr_s,
            multistep_order(step, num_steps, order, lower_order_final))
        return z_s, x0, (z, x0, x0_prev1, log_snr_t, log_snr_prev1)

    def init_state(z):
        # Placeholders for the missing history: never selected (the warm-up orders do not read
        # them), finite and distinct so that no unselected branch divides by zero.
        start = grid.log_snr[-1]
        return z, jnp.zeros_like(z), jnp.zeros_like(z), start - 1.0, start - 2.0

    z = _run_reverse_scan(update, denoise_fn, rng, initial, grid=grid, init_state=init_state,
                          last_step_returns_x0=False)
    return jnp.clip(z, -1.0, 1.0) if clip_x0 else z


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """One row of the sampler table.

    Attributes:
        fn: ``fn(denoise_fn, rng, initial, *, num_steps, log_snr_fn, clip_x0, time_grid,
            **options) -> x̂0``.
        description: one line for --help texts and tables.
        options: the further ``SamplerConfig`` fields ``fn`` takes as keyword arguments.
        deterministic: given z_T, the result does not depend on the key (an ODE solver).
    """

    fn: Callable[..., jax.Array]
    description: str
    options: tuple[str, ...] = ()
    deterministic: bool = True


SAMPLERS: dict[str, SamplerSpec] = {
    "ddpm": SamplerSpec(sample_ddpm, "ancestral DDPM, the original (spec §5.4; 1000 steps)",
                        ("variance",), deterministic=False),
    "ddim": SamplerSpec(sample_ddim, "DDIM, first-order ODE solver"),
    "dpm++": SamplerSpec(functools.partial(sample_multistep, order=2),
                         "DPM-Solver++(2M), second-order multistep", ("lower_order_final",)),
    "dpm++3m": SamplerSpec(functools.partial(sample_multistep, order=3),
                           "DPM-Solver++(3M), third-order multistep", ("lower_order_final",)),
    "unipc": SamplerSpec(functools.partial(sample_multistep, order=2, corrector=True),
                         "UniPC-bh2: DPM-Solver++(2M) predictor + UniC corrector",
                         ("lower_order_final",)),
}
SAMPLER_NAMES: tuple[str, ...] = tuple(SAMPLERS)


def sample(
    config: SamplerConfig,
    denoise_fn: DenoiseFn,
    rng: jax.Array,
    initial: jax.Array | Sequence[int],
    *,
    log_snr_fn: schedules.LogSnrFn = schedules.cosine_log_snr,
) -> jax.Array:
    """Runs the sampler named by ``config`` (guidance is already inside ``denoise_fn``).

    Returns:
        x̂0 [B, T, M] in the scaled [-1, 1] feature space.
    """
    spec = SAMPLERS[config.name]
    options = {name: getattr(config, name) for name in spec.options}
    return spec.fn(denoise_fn, rng, initial, num_steps=config.num_steps, log_snr_fn=log_snr_fn,
                   clip_x0=config.clip_x0, time_grid=config.time_grid, **options)
