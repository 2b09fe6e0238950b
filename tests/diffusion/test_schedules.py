"""Closed-form checks of the noise schedules (spec §5.2)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from music_spectrogram_diffusion.diffusion import schedules


def test_cosine_endpoints_are_plus_minus_20():
    log_snr = np.asarray(schedules.cosine_log_snr(jnp.array([0.0, 1.0])))
    np.testing.assert_allclose(log_snr, [20.0, -20.0], atol=1e-4)


def test_cosine_matches_closed_form_and_is_decreasing():
    t = np.linspace(0.0, 1.0, 101)
    b = math.atan(math.exp(-10.0))
    a = math.atan(math.exp(10.0)) - b
    expected = -2.0 * np.log(np.tan(a * t + b))
    got = np.asarray(schedules.cosine_log_snr(jnp.asarray(t)))
    np.testing.assert_allclose(got, expected, atol=2e-4)
    assert np.all(np.diff(got) < 0)
    # Midpoint: a/2 + b = π/4 exactly, so λ(0.5) = -2 ln tan(π/4) = 0.
    assert abs(float(schedules.cosine_log_snr(0.5))) < 1e-5


def test_linear_schedule_endpoints_and_monotone():
    t = jnp.linspace(0.0, 1.0, 101)
    log_snr = np.asarray(schedules.linear_log_snr(t))
    assert np.all(np.isfinite(log_snr))
    assert log_snr[0] == pytest.approx(20.0)
    # λ(1) = -ln(expm1(0.1 + 9.95)).
    assert log_snr[-1] == pytest.approx(-math.log(math.expm1(10.05)), abs=1e-4)
    assert np.all(np.diff(log_snr) < 0)


@pytest.mark.parametrize("name", schedules.SCHEDULE_NAMES)
def test_variance_preserving(name):
    log_snr = schedules.get_schedule(name)(jnp.linspace(0.0, 1.0, 33))
    alpha, sigma = schedules.alpha_sigma(log_snr)
    np.testing.assert_allclose(np.asarray(alpha**2 + sigma**2), 1.0, atol=1e-6)
    # And α²/σ² really is e^λ (checked where both are representable).
    mid = slice(4, -4)
    np.testing.assert_allclose(
        np.log(np.asarray(alpha[mid] ** 2 / sigma[mid] ** 2)), np.asarray(log_snr[mid]), atol=1e-3)


def test_get_schedule_error_lists_valid_names():
    with pytest.raises(ValueError, match="cosine, linear"):
        schedules.get_schedule("sigmoid")


def test_time_from_log_snr_inverts_the_cosine_closed_form_and_the_linear_schedule():
    log_snr = np.array([-10.0, -3.0, 0.0, 4.5, 10.0, 15.0])
    t = np.asarray(schedules.time_from_log_snr(schedules.cosine_log_snr, jnp.asarray(log_snr)))
    # Closed form of the cosine inverse: t = (arctan(e^(-λ/2)) - b) / a (spec §5.2).
    b = math.atan(math.exp(-10.0))
    a = math.atan(math.exp(10.0)) - b
    np.testing.assert_allclose(t, (np.arctan(np.exp(-0.5 * log_snr)) - b) / a, atol=1e-6)
    linear = schedules.time_from_log_snr(schedules.linear_log_snr, jnp.asarray([-5.0, 0.0, 5.0]))
    np.testing.assert_allclose(np.asarray(schedules.linear_log_snr(linear)), [-5.0, 0.0, 5.0],
                               atol=1e-3)
    # Out of range: the nearer end.
    ends = schedules.time_from_log_snr(schedules.cosine_log_snr, jnp.asarray([-30.0, 30.0]))
    np.testing.assert_allclose(np.asarray(ends), [1.0, 0.0], atol=1e-6)
