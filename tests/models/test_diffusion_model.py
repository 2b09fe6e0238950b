"""DiffusionModel on the real (tiny) networks: loss, training, sampling, caching and trimming."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from music_spectrogram_diffusion.audio import spectrograms
from music_spectrogram_diffusion.diffusion import objectives
from music_spectrogram_diffusion.diffusion import samplers
from music_spectrogram_diffusion.models import layers
from music_spectrogram_diffusion.models.config import T5Config
from music_spectrogram_diffusion.models.diffusion_model import DiffusionConfig
from music_spectrogram_diffusion.models.diffusion_model import DiffusionModel
from music_spectrogram_diffusion.models.diffusion_model import segment_rng
from music_spectrogram_diffusion.models.diffusion_model import trim_note_tokens

TOKENS, FRAMES, MELS = 64, 16, 128
CONFIG = T5Config.tiny(note_tokens_length=TOKENS, target_frames=FRAMES, context_frames=FRAMES)


def _batch(seed=0, batch_size=3, real_tokens=(20, 7, 0)):
    """Distinct per-example lengths: padded tokens, a padded target tail, partial contexts."""
    rng = np.random.default_rng(seed)
    tokens = np.zeros((batch_size, TOKENS), np.int32)
    for b, n in enumerate(real_tokens[:batch_size]):
        tokens[b, :n] = rng.integers(3, CONFIG.vocab_size, n)
    target_mask = np.ones((batch_size, FRAMES), np.float32)
    target_mask[1, 10:] = 0.0
    context_mask = np.zeros((batch_size, FRAMES), np.float32)
    for b, n in enumerate((FRAMES, 5, 0)[:batch_size]):
        context_mask[b, :n] = 1.0
    log_mel = lambda: rng.uniform(-11.5, 4.0, (batch_size, FRAMES, MELS)).astype(np.float32)  # noqa: E731
    return {
        "note_tokens": tokens,
        "target_frames": log_mel(),
        "target_mask": target_mask,
        "context_frames": log_mel(),
        "context_mask": context_mask,
    }


@functools.partial(jax.jit, static_argnums=0)
def _plain_eps(model, params, note_tokens, context_frames, context_mask, z, t):
    """ε̂ from the network's plain __call__: encoders and cross-attention K/V inside."""
    context = spectrograms.scale_features(context_frames)
    return model.network.apply(
        {"params": params}, note_tokens, context, context_mask, z, t, deterministic=True)


@pytest.fixture(scope="module")
def model_and_params():
    model = DiffusionModel(network_config=CONFIG, diffusion_config=DiffusionConfig(token_bucket=16))
    return model, jax.jit(model.init)(jax.random.key(0), _batch())


@pytest.mark.parametrize("with_context", [True, False])
def test_loss_and_gradient_are_finite_and_deterministic(model_and_params, with_context):
    model, params = model_and_params
    batch = _batch()
    if not with_context:
        model = DiffusionModel(network_config=CONFIG, with_context=False)
        params = jax.jit(model.init)(jax.random.key(1), batch)
    loss_and_grad = jax.jit(jax.value_and_grad(model.loss_fn, has_aux=True))
    (loss, metrics), grads = loss_and_grad(params, batch, jax.random.key(2))
    assert np.isfinite(float(loss)) and float(loss) > 0
    # Same key, same numbers; another key, other noise / times / CFG draws.
    assert float(loss_and_grad(params, batch, jax.random.key(2))[0][0]) == float(loss)
    assert float(loss_and_grad(params, batch, jax.random.key(3))[0][0]) != float(loss)
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
    assert metrics["target_frames"] == pytest.approx((16 + 10 + 16) / 3)
    assert float(metrics["loss_per_frame"]) == pytest.approx(float(loss) * MELS, rel=1e-5)
    if with_context:
        assert metrics["context_frames"] == pytest.approx((16 + 5 + 0) / 3)
        assert "continuous_encoder" in params
    else:
        assert "context_frames" not in metrics and "continuous_encoder" not in params
    # Frozen position tables (spec §4.2) get no gradient.
    frozen = layers.frozen_param_mask(grads)
    for is_frozen, g in zip(jax.tree_util.tree_leaves(frozen), jax.tree_util.tree_leaves(grads)):
        if is_frozen:
            assert not np.any(np.asarray(g))


def test_adam_steps_reduce_loss_on_one_batch(model_and_params):
    model, params = model_and_params
    batch = _batch()
    params = nn.unbox(params)
    optimizer = optax.adam(3e-3)
    state = optimizer.init(params)
    rng = jax.random.key(9)  # fixed: the same noise, times and CFG draws every step

    @jax.jit
    def step(params, state):
        (loss, _), grads = jax.value_and_grad(model.loss_fn, has_aux=True)(params, batch, rng)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for _ in range(8):
        params, state, loss = step(params, state)
        losses.append(float(loss))
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("name,steps", [("ddpm", 4), ("ddim", 3), ("dpm++", 3)])
def test_predict_runs_with_each_sampler(model_and_params, name, steps):
    model, params = model_and_params
    batch = _batch()
    sampler = samplers.SamplerConfig(name=name, num_steps=steps, guidance_weight=2.0)
    out = np.asarray(model.predict(params, batch, jax.random.key(3), sampler=sampler))
    assert out.shape == (3, FRAMES, MELS) and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    assert out.min() >= np.log(1e-5) - 1e-4 and out.max() <= 4.0 + 1e-4
    again = np.asarray(model.predict(params, batch, jax.random.key(3), sampler=sampler))
    np.testing.assert_array_equal(out, again)


def test_cached_kv_and_trimmed_tokens_match_plain_path(model_and_params):
    model, params = model_and_params
    batch = _batch()
    z = jax.random.normal(jax.random.key(6), (3, FRAMES, MELS))
    t = jnp.array([0.9, 0.4, 0.05])
    plain = _plain_eps(model, params, batch["note_tokens"], batch["context_frames"],
                       batch["context_mask"], z, t)
    encode, decode = jax.jit(model.encode), jax.jit(model.decode)
    full = encode(params, batch)
    cached = decode(params, full, z, t)
    np.testing.assert_allclose(np.asarray(cached), np.asarray(plain), atol=1e-5)

    trimmed_tokens = trim_note_tokens(batch["note_tokens"], 16)
    assert trimmed_tokens.shape == (3, 32)  # longest real row is 20 tokens
    trimmed = encode(params, dict(batch, note_tokens=trimmed_tokens))
    assert trimmed.encoding_mask.shape == (3, 32 + FRAMES)
    np.testing.assert_allclose(
        np.asarray(decode(params, trimmed, z, t)), np.asarray(plain), atol=1e-5)


def test_batched_guidance_equals_separate_cond_and_dropped_passes(model_and_params):
    model, params = model_and_params
    batch = _batch()
    z = jax.random.normal(jax.random.key(8), (3, FRAMES, MELS))
    t = jnp.array([0.7, 0.3, 0.5])
    tokens, frames, mask = batch["note_tokens"], batch["context_frames"], batch["context_mask"]
    eps_cond = _plain_eps(model, params, tokens, frames, mask, z, t)
    # The training-time CFG dropout: tokens * 0 and context mask * 0 (spec §5.3 step 4).
    eps_uncond = _plain_eps(model, params, tokens * 0, frames, mask * 0, z, t)
    assert not np.allclose(np.asarray(eps_cond[0]), np.asarray(eps_uncond[0]), atol=1e-3)
    encoding = jax.jit(model.encode)(params, batch)
    guided = jax.jit(lambda p, e, z, t: model.denoise_fn(p, e, 2.0)(z, t))
    conditional = jax.jit(lambda p, e, z, t: model.denoise_fn(p, e, 1.0)(z, t))
    np.testing.assert_allclose(
        np.asarray(guided(params, encoding, z, t)), np.asarray(2.0 * eps_cond - eps_uncond), atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(conditional(params, encoding, z, t)), np.asarray(eps_cond), atol=1e-5)


def test_trim_note_tokens():
    tokens = np.zeros((2, 2048), np.int32)
    tokens[0, :300] = 5
    tokens[1, :10] = 7
    assert trim_note_tokens(tokens, 256).shape == (2, 512)
    assert trim_note_tokens(np.zeros((1, 2048), np.int32), 256).shape == (1, 256)
    assert trim_note_tokens(tokens, 0).shape == (2, 2048)
    tokens[1, 2047] = 1
    assert trim_note_tokens(tokens, 256).shape == (2, 2048)
    np.testing.assert_array_equal(trim_note_tokens(tokens[:, :100], 256), tokens[:, :100])


def test_segment_rng_differs_per_segment_and_is_reproducible():
    draw = lambda key: np.asarray(jax.random.normal(key, (4,)))  # noqa: E731
    np.testing.assert_array_equal(draw(segment_rng(7, 2)), draw(segment_rng(7, 2)))
    assert not np.allclose(draw(segment_rng(7, 0)), draw(segment_rng(7, 1)))
    assert not np.allclose(draw(segment_rng(7, 0)), draw(segment_rng(8, 0)))


def test_diffusion_config_validation():
    with pytest.raises(ValueError, match="cosine, linear"):
        DiffusionConfig(schedule="sqrt")
    with pytest.raises(ValueError, match="l1, l2"):
        DiffusionConfig(loss_norm="l3")
    with pytest.raises(ValueError, match="eps, x0, v"):
        DiffusionConfig(prediction="score")
    with pytest.raises(ValueError, match="drop_condition_prob"):
        DiffusionConfig(drop_condition_prob=1.5)


@pytest.mark.parametrize("prediction,loss_target", [("x0", "x0"), ("v", "eps")])
def test_other_parameterisations(model_and_params, prediction, loss_target):
    _, params = model_and_params  # the network is the same; only the objective changes
    model = DiffusionModel(
        network_config=CONFIG,
        diffusion_config=DiffusionConfig(prediction=prediction, loss_target=loss_target, loss_norm="l2"))
    loss, _ = jax.jit(model.loss_fn)(params, _batch(), jax.random.key(2))
    assert np.isfinite(float(loss)) and float(loss) > 0


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_decode_converts_the_network_output_to_eps(model_and_params, prediction):
    """Samplers consume ε̂: an x0- or v-predicting network's output must be converted first."""
    _, params = model_and_params
    model = DiffusionModel(network_config=CONFIG, diffusion_config=DiffusionConfig(prediction=prediction))
    batch = _batch()
    encoding = model.encode(params, batch)
    z = jax.random.normal(jax.random.key(3), batch["target_frames"].shape)
    t = jnp.linspace(0.2, 0.8, z.shape[0])
    raw = model.network.apply({"params": params}, z, t, None, encoding.encoding_mask,
                              cross_kv=encoding.cross_kv, deterministic=True, method="decode")
    log_snr = model.log_snr_fn(t)
    convert = objectives.eps_from_x0 if prediction == "x0" else objectives.eps_from_v
    np.testing.assert_allclose(model.decode(params, encoding, z, t), convert(z, raw, log_snr),
                               rtol=1e-5, atol=1e-5)
