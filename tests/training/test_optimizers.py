"""Optimizer defaults (spec §6), schedules in closed form, and frozen-parameter masking."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from music_spectrogram_diffusion.training import optimizers


def _params():
    rng = np.random.default_rng(0)
    return {
        "decoder": {
            "Embed_0": {"embedding": jnp.asarray(rng.normal(size=(256, 8)), jnp.float32)},
            "spec_out_dense": {"kernel": jnp.asarray(rng.normal(size=(8, 128)), jnp.float32)},
        }
    }


def _frozen(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: any(getattr(k, "key", None) == "Embed_0" for k in path), params
    )


def test_default_is_t5x_adafactor_and_matches_optax_reference():
    params = _params()
    grads = jax.tree.map(lambda p: jnp.cos(p) * 0.1, params)
    config = optimizers.OptimizerConfig()
    assert (config.name, config.decay_rate, config.clipping_threshold, config.learning_rate,
            config.schedule) == ("adafactor", 0.8, 1.0, 1e-3, "constant")
    tx = optimizers.make_optimizer(config, _frozen(params))
    reference = optax.adafactor(learning_rate=1e-3, decay_rate=0.8, clipping_threshold=1.0,
                                multiply_by_parameter_scale=True, momentum=None)
    state, ref_state = tx.init(params), reference.init(params)
    for _ in range(3):
        updates, state = tx.update(grads, state, params)
        ref_updates, ref_state = reference.update(grads, ref_state, params)
        kernel = updates["decoder"]["spec_out_dense"]["kernel"]
        np.testing.assert_allclose(kernel, ref_updates["decoder"]["spec_out_dense"]["kernel"],
                                   rtol=1e-6)
        assert np.all(np.asarray(updates["decoder"]["Embed_0"]["embedding"]) == 0.0)
        assert float(jnp.abs(kernel).max()) > 0


def test_frozen_tables_unchanged_under_adamw():
    params = _params()
    config = optimizers.OptimizerConfig(name="adamw", weight_decay=0.1)
    tx = optimizers.make_optimizer(config, _frozen(params))
    state = tx.init(params)
    new = params
    for _ in range(3):
        grads = jax.tree.map(jnp.ones_like, new)
        updates, state = tx.update(grads, state, new)
        new = optax.apply_updates(new, updates)
    np.testing.assert_array_equal(new["decoder"]["Embed_0"]["embedding"],
                                  params["decoder"]["Embed_0"]["embedding"])
    assert not np.allclose(new["decoder"]["spec_out_dense"]["kernel"],
                           params["decoder"]["spec_out_dense"]["kernel"])


def test_schedules_closed_form():
    const = optimizers.make_learning_rate_schedule(optimizers.OptimizerConfig(learning_rate=0.5))
    assert float(const(0)) == float(const(10**6)) == 0.5
    warm = optimizers.make_learning_rate_schedule(
        optimizers.OptimizerConfig(learning_rate=1.0, schedule="linear_warmup", warmup_steps=10))
    np.testing.assert_allclose([float(warm(s)) for s in (0, 4, 9, 50)], [0.1, 0.5, 1.0, 1.0])
    rsqrt = optimizers.make_learning_rate_schedule(
        optimizers.OptimizerConfig(learning_rate=1.0, schedule="rsqrt", warmup_steps=100))
    np.testing.assert_allclose([float(rsqrt(s)) for s in (49, 100, 400)],
                               [0.5, 1.0, 0.5], rtol=1e-6)


@pytest.mark.parametrize("field,value,valid", [("name", "sgd", "adafactor"),
                                               ("schedule", "cosine", "rsqrt")])
def test_invalid_choices_list_valid_values(field, value, valid):
    with pytest.raises(ValueError, match=valid):
        optimizers.OptimizerConfig(**{field: value})
