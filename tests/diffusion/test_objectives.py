"""Closed-form checks of the forward process, posterior, conversions, loss and CFG dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from music_spectrogram_diffusion.diffusion import objectives
from music_spectrogram_diffusion.diffusion import schedules


def _arrays(seed=0, shape=(3, 5, 4)):
    k0, k1, k2 = jax.random.split(jax.random.key(seed), 3)
    x0 = jax.random.uniform(k0, shape, minval=-1.0, maxval=1.0)
    eps = jax.random.normal(k1, shape)
    t = jax.random.uniform(k2, shape[:1], minval=0.05, maxval=0.95)
    return x0, eps, schedules.cosine_log_snr(t)


def test_forward_process_moments():
    # Many noise draws at one x0: mean α x0, variance σ² (closed form).
    x0 = jnp.linspace(-1.0, 1.0, 7)[None, :].repeat(20000, axis=0)  # [20000, 7]
    eps = jax.random.normal(jax.random.key(1), x0.shape)
    log_snr = jnp.full((x0.shape[0],), 0.7)
    z = objectives.diffuse(x0, eps, log_snr)
    alpha, sigma = schedules.alpha_sigma(0.7)
    np.testing.assert_allclose(np.mean(z, 0), alpha * np.asarray(x0[0]), atol=0.02)
    np.testing.assert_allclose(np.var(z, 0), float(sigma) ** 2, rtol=0.05)


def test_posterior_matches_gaussian_conditioning():
    # q(z_s | z_t, x0) from the joint Gaussian of (z_s, z_t) given x0:
    # z_t | z_s has α_{t|s} = α_t/α_s, σ²_{t|s} = σ_t² - α_{t|s}² σ_s²; Bayes gives mean and var.
    x0, eps, _ = _arrays()
    lt, ls = jnp.full((3,), -1.3), jnp.full((3,), 2.1)
    z_t = objectives.diffuse(x0, eps, lt)
    a_t, s_t = (float(v) for v in schedules.alpha_sigma(-1.3))
    a_s, s_s = (float(v) for v in schedules.alpha_sigma(2.1))
    a_ts = a_t / a_s
    var_ts = s_t**2 - a_ts**2 * s_s**2
    var_post = 1.0 / (1.0 / s_s**2 + a_ts**2 / var_ts)
    mean_post = var_post * (a_s * np.asarray(x0) / s_s**2 + a_ts * np.asarray(z_t) / var_ts)
    mean, var_small = objectives.posterior_mean_variance(z_t, x0, lt, ls, variance="small")
    np.testing.assert_allclose(np.asarray(mean), mean_post, atol=1e-5)
    np.testing.assert_allclose(np.asarray(var_small).ravel(), var_post, rtol=1e-5)
    _, var_large = objectives.posterior_mean_variance(z_t, x0, lt, ls, variance="large")
    np.testing.assert_allclose(np.asarray(var_large).ravel(), var_ts, rtol=1e-5)  # β_{t|s}


def test_posterior_rejects_unknown_variance():
    x0, eps, ls = _arrays()
    with pytest.raises(ValueError, match="large, small"):
        objectives.posterior_mean_variance(x0, x0, ls, ls, variance="medium")


def test_conversion_round_trips():
    x0, eps, log_snr = _arrays(seed=3)
    z = objectives.diffuse(x0, eps, log_snr)
    np.testing.assert_allclose(objectives.x0_from_eps(z, eps, log_snr), x0, atol=1e-5)
    np.testing.assert_allclose(objectives.eps_from_x0(z, x0, log_snr), eps, atol=1e-4)
    alpha, sigma = schedules.alpha_sigma(log_snr)
    v_true = alpha[:, None, None] * eps - sigma[:, None, None] * x0
    v = objectives.v_from_eps(z, eps, log_snr)
    np.testing.assert_allclose(v, v_true, atol=1e-5)
    np.testing.assert_allclose(objectives.eps_from_v(z, v, log_snr), eps, atol=1e-5)
    np.testing.assert_allclose(objectives.x0_from_v(z, v, log_snr), x0, atol=1e-5)


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_masked_loss_is_mean_over_real_frames_and_bins(norm):
    pred = jnp.zeros((2, 4, 3))
    target = jnp.arange(24.0).reshape(2, 4, 3) - 10.0
    mask = jnp.array([[1, 1, 0, 0], [1, 0, 0, 0]], jnp.float32)
    loss, per_frame = objectives.masked_loss(pred, target, mask, norm=norm)
    err = np.abs(np.asarray(target)) if norm == "l1" else np.asarray(target) ** 2
    real = err[np.asarray(mask) > 0]  # [3 frames, 3 bins]
    assert float(loss) == pytest.approx(real.mean())
    np.testing.assert_allclose(per_frame, err.sum(-1) * np.asarray(mask))
    with pytest.raises(ValueError, match="l1, l2"):
        objectives.masked_loss(pred, target, mask, norm="huber")


def test_drop_conditioning_drops_notes_and_context_together():
    batch = 4000
    tokens = jnp.arange(1, 6, dtype=jnp.int32)[None].repeat(batch, 0)  # [batch, 5], no padding
    context_mask = jnp.ones((batch, 7), jnp.float32)
    new_tokens, new_mask, keep = objectives.drop_conditioning(
        jax.random.key(0), tokens, context_mask, 0.1)
    keep = np.asarray(keep)
    tokens_kept = np.asarray(new_tokens).any(-1)
    context_kept = np.asarray(new_mask).any(-1)
    np.testing.assert_array_equal(tokens_kept, keep > 0)
    np.testing.assert_array_equal(context_kept, keep > 0)
    # Kept rows are untouched; the drop rate is 0.1 up to sampling error (sd ~ 0.005).
    np.testing.assert_array_equal(np.asarray(new_tokens)[keep > 0], np.asarray(tokens)[keep > 0])
    assert abs((1 - keep.mean()) - 0.1) < 0.02
    # Without a context (basic model) only the tokens are dropped.
    t2, m2, k2 = objectives.drop_conditioning(jax.random.key(0), tokens, None, 1.0)
    assert m2 is None and not np.asarray(t2).any() and not np.asarray(k2).any()


def test_apply_guidance():
    c, u = jnp.full((2,), 3.0), jnp.full((2,), 1.0)
    np.testing.assert_allclose(objectives.apply_guidance(c, u, 2.0), 5.0)  # 2*3 - 1*1
    np.testing.assert_allclose(objectives.apply_guidance(c, u, 1.0), 3.0)
    np.testing.assert_allclose(objectives.apply_guidance(c, u, 0.0), 1.0)
