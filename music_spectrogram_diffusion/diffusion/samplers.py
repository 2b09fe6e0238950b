"""Samplers for the spectrogram diffusion model: ancestral DDPM, DDIM and DPM-Solver++ (2M).

Every sampler takes a ``denoise_fn(z [batch, frames, mels], t [batch]) -> eps`` closure (already
classifier-free guided, see ``guided_denoise_fn``), an explicit random key, the initial noise or
its shape, and runs its whole loop as ONE ``jax.lax.scan``, so a caller can jit encoder + loop as
a single XLA program. All three share the time grid of the original (spec §5.4): step i = N-1 ... 0
goes from t = (i+1)/N to s = i/N, so the network sees t = 1.0, 1 - 1/N, ..., 1/N.

- ``ddpm``: the original sampler, exactly as spec §5.4 (clipped x̂0, "large" variance, the last
  step returns the clipped x̂0, step noise from ``fold_in(rng, i)``). 1000 steps in the paper.
- ``ddim``: deterministic DDIM (Song et al. 2021), z_s = α_s x̂0 + σ_s ε̂.
- ``dpm++``: DPM-Solver++(2M) (Lu et al. 2022), the multistep second-order solver in data
  prediction form, with x̂0 clipping; good samples in 10-50 steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from music_spectrogram_diffusion.diffusion import objectives
from music_spectrogram_diffusion.diffusion import schedules

DenoiseFn = Callable[[jax.Array, jax.Array], jax.Array]  # (z [B, T, M], t [B]) -> eps [B, T, M]

SAMPLER_NAMES = ("ddpm", "ddim", "dpm++")


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """How to draw a spectrogram from a trained diffusion model.

    Attributes:
        name: 'ddpm' (the original, spec §5.4), 'ddim', or 'dpm++' (DPM-Solver++ 2M).
        num_steps: number of network evaluations (doubled in batch when guided); any N >= 1.
        guidance_weight: classifier-free guidance weight w. 2.0 as in the released demo (the
            original's code default is 5.0, spec §11.14); w = 1 runs the conditional pass only.
        clip_x0: clip the predicted x̂0 to [-1, 1] at every step (the original does).
        variance: DDPM step variance, 'large' (original) or 'small'; ignored by other samplers.
    """

    name: str = "ddpm"
    num_steps: int = 1000
    guidance_weight: float = 2.0
    clip_x0: bool = True
    variance: str = "large"

    def __post_init__(self):
        if self.name not in SAMPLER_NAMES:
            raise ValueError(f"Unknown sampler {self.name!r}; valid samplers: {', '.join(SAMPLER_NAMES)}.")
        if not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise ValueError(f"SamplerConfig.num_steps must be a positive int, got {self.num_steps!r}.")
        if self.variance not in objectives.VARIANCE_TYPES:
            raise ValueError(
                f"Unknown DDPM variance {self.variance!r}; valid: {', '.join(objectives.VARIANCE_TYPES)}."
            )


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


def dpm_solver_pp_2m_step(
    z_t: jax.Array,
    x0: jax.Array,
    x0_prev: jax.Array,
    log_snr_t: jax.Array,
    log_snr_s: jax.Array,
    h_prev: jax.Array,
    *,
    first_order: jax.Array | bool,
) -> jax.Array:
    """One DPM-Solver++(2M) update z_t -> z_s in data-prediction form (Lu et al. 2022, Alg. 2).

    With half-log-SNR l = λ/2 and h = l_s - l_t > 0:
        z_s = (σ_s / σ_t) z_t - α_s expm1(-h) D,
    where D = x̂0 on the first step (first order, = DDIM) and afterwards the linear extrapolation
    D = (1 + 1/(2ρ)) x̂0 - 1/(2ρ) x̂0_prev with ρ = h_prev / h.

    Args:
        z_t: [B, T, M].
        x0: [B, T, M] (clipped) x̂0 at t.
        x0_prev: [B, T, M] x̂0 of the previous (noisier) step; ignored when ``first_order``.
        log_snr_t, log_snr_s: λ at the current and next time (scalars).
        h_prev: half-log-SNR step size of the previous step (scalar).
        first_order: True (or a traced bool) for the first step.

    Returns:
        z_s [B, T, M].
    """
    h = 0.5 * (log_snr_s - log_snr_t)
    ratio = h_prev / h
    d_second = x0 + (x0 - x0_prev) / (2.0 * jnp.where(first_order, 1.0, ratio))
    d = jnp.where(first_order, x0, d_second)
    _, sigma_t = schedules.alpha_sigma(log_snr_t)
    alpha_s, sigma_s = schedules.alpha_sigma(log_snr_s)
    return (sigma_s / sigma_t) * z_t - alpha_s * jnp.expm1(-h) * d


def _initial_noise(rng: jax.Array, initial: jax.Array | Sequence[int]) -> jax.Array:
    if isinstance(initial, (tuple, list)):
        # The original draws z_T from the sampling key itself (spec §5.4); bfloat16 was worse.
        return jax.random.normal(rng, tuple(initial), jnp.float32)
    return jnp.asarray(initial, jnp.float32)


def _times(i: jax.Array, num_steps: int) -> tuple[jax.Array, jax.Array]:
    # Step i goes from t = (i+1)/N to s = i/N (spec §5.4 step 1).
    return (i + 1).astype(jnp.float32) / num_steps, i.astype(jnp.float32) / num_steps


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
    num_steps: int,
    log_snr_fn: schedules.LogSnrFn,
    init_state: Callable[[jax.Array], Any] = _no_state,
    last_step_returns_x0: bool = True,
) -> jax.Array:
    """The loop every sampler shares, so each one only states its update rule.

    Draws (or takes) z_T, then runs step i = N-1 ... 0 as one reverse ``lax.scan``: the §5.4
    time grid, λ_t and λ_s, one ``denoise_fn`` call, then ``update_fn``. The sampler-specific
    ``state`` (e.g. DPM-Solver++'s previous x̂0) rides along in the scan carry.

    Args:
        update_fn: the sampler's rule (i, z_t, ε̂, λ_t, λ_s, state) -> (z_s, x̂0, state).
        init_state: builds the initial ``state`` from z_T; no state by default.
        last_step_returns_x0: the last step (i == 0) returns x̂0 instead of z_s, as the
            original does (spec §5.4 step 4).

    Returns:
        [B, T, M]: the value carried out of the last step.
    """
    z = _initial_noise(rng, initial)
    batch = z.shape[0]

    def body(carry, i):
        z, state = carry
        t, s = _times(i, num_steps)
        log_snr_t, log_snr_s = log_snr_fn(t), log_snr_fn(s)
        eps = denoise_fn(z, jnp.full((batch,), t))
        z_s, x0, state = update_fn(i, z, eps, log_snr_t, log_snr_s, state)
        if last_step_returns_x0:
            z_s = jnp.where(i == 0, x0, z_s)
        return (z_s, state), None

    (z, _), _ = jax.lax.scan(body, (z, init_state(z)), jnp.arange(num_steps), reverse=True)
    return z


def sample_ddpm(
    denoise_fn: DenoiseFn,
    rng: jax.Array,
    initial: jax.Array | Sequence[int],
    *,
    num_steps: int,
    log_snr_fn: schedules.LogSnrFn = schedules.cosine_log_snr,
    clip_x0: bool = True,
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
        variance: 'large' (original) or 'small'.

    Returns:
        x̂0 [B, T, M] in the scaled [-1, 1] feature space.
    """

    def update(i, z, eps, log_snr_t, log_snr_s, state):
        noise = jax.random.normal(jax.random.fold_in(rng, i), z.shape, z.dtype)
        z_s, x0 = ddpm_step(z, eps, log_snr_t, log_snr_s, noise, clip_x0=clip_x0, variance=variance)
        return z_s, x0, state

    return _run_reverse_scan(update, denoise_fn, rng, initial, num_steps=num_steps, log_snr_fn=log_snr_fn)


def sample_ddim(
    denoise_fn: DenoiseFn,
    rng: jax.Array,
    initial: jax.Array | Sequence[int],
    *,
    num_steps: int,
    log_snr_fn: schedules.LogSnrFn = schedules.cosine_log_snr,
    clip_x0: bool = True,
) -> jax.Array:
    """Deterministic DDIM sampling on the §5.4 time grid; the last step returns x̂0.

    ``rng`` is only used to draw z_T when ``initial`` is a shape. Returns x̂0 [B, T, M].
    """

    def update(i, z, eps, log_snr_t, log_snr_s, state):
        z_s, x0 = ddim_step(z, eps, log_snr_t, log_snr_s, clip_x0=clip_x0)
        return z_s, x0, state

    return _run_reverse_scan(update, denoise_fn, rng, initial, num_steps=num_steps, log_snr_fn=log_snr_fn)


def sample_dpm_solver_pp(
    denoise_fn: DenoiseFn,
    rng: jax.Array,
    initial: jax.Array | Sequence[int],
    *,
    num_steps: int,
    log_snr_fn: schedules.LogSnrFn = schedules.cosine_log_snr,
    clip_x0: bool = True,
) -> jax.Array:
    """DPM-Solver++(2M) sampling, data prediction with x̂0 clipping, on the §5.4 time grid.

    The final update lands on t = 0 (λ = 20, σ ≈ 4.5e-5), so the result is the extrapolated
    data estimate; it is clipped to [-1, 1] when ``clip_x0``. ``rng`` is only used to draw z_T
    when ``initial`` is a shape. Returns x̂0 [B, T, M].
    """

    def update(i, z, eps, log_snr_t, log_snr_s, state):
        x0_prev, h_prev = state
        x0, _ = predict_x0(z, eps, log_snr_t, clip_x0=clip_x0)
        z_s = dpm_solver_pp_2m_step(
            z, x0, x0_prev, log_snr_t, log_snr_s, h_prev, first_order=(i == num_steps - 1)
        )
        return z_s, x0, (x0, 0.5 * (log_snr_s - log_snr_t))

    def init_state(z):
        return jnp.zeros_like(z), jnp.ones((), jnp.float32)

    z = _run_reverse_scan(
        update, denoise_fn, rng, initial, num_steps=num_steps, log_snr_fn=log_snr_fn,
        init_state=init_state, last_step_returns_x0=False,
    )
    return jnp.clip(z, -1.0, 1.0) if clip_x0 else z


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
    kwargs = dict(num_steps=config.num_steps, log_snr_fn=log_snr_fn, clip_x0=config.clip_x0)
    if config.name == "ddpm":
        return sample_ddpm(denoise_fn, rng, initial, variance=config.variance, **kwargs)
    if config.name == "ddim":
        return sample_ddim(denoise_fn, rng, initial, **kwargs)
    return sample_dpm_solver_pp(denoise_fn, rng, initial, **kwargs)
