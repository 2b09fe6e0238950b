"""Samplers with a stub denoiser, and the DDPM step against the spec §5.4 formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from music_spectrogram_diffusion.diffusion import objectives
from music_spectrogram_diffusion.diffusion import samplers
from music_spectrogram_diffusion.diffusion import schedules

SHAPE = (2, 6, 5)


def _x0():
    return jax.random.uniform(jax.random.key(7), SHAPE, minval=-0.9, maxval=0.9)


def _oracle(x0):
    """A denoiser that knows x0: returns the exact noise of z given x0 at time t."""

    def denoise_fn(z, t):
        assert t.shape == (z.shape[0],)
        return objectives.eps_from_x0(z, x0, schedules.cosine_log_snr(t))

    return denoise_fn


# At t = 1, α = 4.5e-5 (λ = -20), so x̂0 = (z - σ ε)/α loses ~1e-7/4.5e-5 ≈ 2e-3 to float32
# cancellation. DDPM and DDIM re-estimate x̂0 at every later step; DPM-Solver++'s multistep
# extrapolation carries part of the first estimate's rounding, and with 1 step all of it.
@pytest.mark.parametrize(
    "name,num_steps,atol", [("ddpm", 25, 1e-4), ("ddim", 10, 1e-4), ("dpm++", 10, 5e-4), ("dpm++", 1, 5e-3)])
def test_sampler_recovers_x0_with_oracle_denoiser(name, num_steps, atol):
    x0 = _x0()
    config = samplers.SamplerConfig(name=name, num_steps=num_steps, guidance_weight=1.0)
    run = jax.jit(lambda rng: samplers.sample(config, _oracle(x0), rng, SHAPE))
    out = run(jax.random.key(3))
    assert out.shape == SHAPE and out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), np.asarray(x0), atol=atol)


def test_ddpm_step_matches_spec_formulas():
    k = jax.random.split(jax.random.key(11), 3)
    z = jax.random.normal(k[0], SHAPE) * 1.5
    eps = jax.random.normal(k[1], SHAPE)
    noise = jax.random.normal(k[2], SHAPE)
    N, i = 1000, 417
    t, s = (i + 1) / N, i / N
    lt, ls = schedules.cosine_log_snr(t), schedules.cosine_log_snr(s)
    got, got_x0 = samplers.ddpm_step(z, eps, lt, ls, noise, clip_x0=True, variance="large")

    # Spec §5.4, written out in numpy.
    sig = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    lt, ls = float(lt), float(ls)
    a_t, s_t, a_s = np.sqrt(sig(lt)), np.sqrt(sig(-lt)), np.sqrt(sig(ls))
    z, eps, noise = (np.asarray(v, np.float64) for v in (z, eps, noise))
    x0 = np.clip((z - s_t * eps) / a_t, -1.0, 1.0)
    r = np.exp(lt - ls)
    mean = r * (a_s / a_t) * z + (1 - r) * a_s * x0
    var = (1 - r) * s_t**2
    np.testing.assert_allclose(np.asarray(got_x0), x0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(got), mean + np.sqrt(var) * noise, atol=1e-4)
    assert np.any(np.abs(x0) == 1.0), "the random inputs should exercise the clipping"


def test_ddpm_uses_fold_in_noise_and_time_grid():
    # A denoiser that records the times it sees and predicts ε = 0 (x̂0 = z/α).
    seen = []

    def denoise_fn(z, t):
        jax.debug.callback(lambda v: seen.append(float(v[0])), t)
        return jnp.zeros_like(z)

    rng = jax.random.key(5)
    out = samplers.sample_ddpm(denoise_fn, rng, SHAPE, num_steps=4, clip_x0=False)
    jax.effects_barrier()
    np.testing.assert_allclose(seen, [1.0, 0.75, 0.5, 0.25])
    # Replay by hand: z_T from rng, noise of step i from fold_in(rng, i), last step returns x̂0.
    z = jax.random.normal(rng, SHAPE)
    for i in (3, 2, 1):
        lt, ls = schedules.cosine_log_snr((i + 1) / 4), schedules.cosine_log_snr(i / 4)
        noise = jax.random.normal(jax.random.fold_in(rng, i), SHAPE)
        z, _ = samplers.ddpm_step(z, jnp.zeros_like(z), lt, ls, noise, clip_x0=False)
    expected = z / schedules.alpha_sigma(schedules.cosine_log_snr(0.25))[0]
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), rtol=1e-4, atol=1e-4)


def test_ddpm_is_deterministic_given_key_and_differs_across_keys():
    x0 = _x0()
    config = samplers.SamplerConfig(name="ddpm", num_steps=8)
    noisy = lambda z, t: 0.5 * z + 0.1 * x0  # an imperfect denoiser whose x̂0 depends on z  # noqa: E731
    a = samplers.sample(config, noisy, jax.random.key(1), SHAPE)
    b = samplers.sample(config, noisy, jax.random.key(1), SHAPE)
    c = samplers.sample(config, noisy, jax.random.key(2), SHAPE)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))
    assert np.all(np.abs(np.asarray(a)) <= 1.0)


def test_guidance_weight_one_skips_unconditional_pass():
    cond = lambda z, t: z * 2.0  # noqa: E731

    def paired(z, t):
        raise AssertionError("the paired (cond + uncond) pass must not run when w == 1")

    fn = samplers.guided_denoise_fn(cond, paired, 1.0)
    z = jnp.ones(SHAPE)
    np.testing.assert_array_equal(np.asarray(fn(z, jnp.ones(2))), np.asarray(cond(z, None)))


def test_guided_denoise_fn_batches_cond_and_uncond_once():
    calls = []

    def paired(z, t):
        calls.append(z.shape)
        # Rows [0, B) are conditioned (ε = 3), rows [B, 2B) unconditioned (ε = 1).
        half = z.shape[0] // 2
        return jnp.concatenate([jnp.full_like(z[:half], 3.0), jnp.full_like(z[half:], 1.0)])

    fn = samplers.guided_denoise_fn(lambda z, t: None, paired, 2.0)
    out = fn(jnp.zeros(SHAPE), jnp.ones(2))
    assert calls == [(4, 6, 5)]
    np.testing.assert_allclose(np.asarray(out), 5.0)


def test_sampler_config_validation():
    with pytest.raises(ValueError, match="ddpm, ddim, dpm\\+\\+"):
        samplers.SamplerConfig(name="euler")
    with pytest.raises(ValueError, match="num_steps"):
        samplers.SamplerConfig(num_steps=0)
    with pytest.raises(ValueError, match="large, small"):
        samplers.SamplerConfig(variance="tiny")
