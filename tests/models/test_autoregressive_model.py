"""AutoregressiveModel and AutoregressiveTransformer (spec §4.5, §5.5) at tiny size."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from music_spectrogram_diffusion.models import layers
from music_spectrogram_diffusion.models.autoregressive_model import AutoregressiveModel
from music_spectrogram_diffusion.models.autoregressive_model import shift_frames_right
from music_spectrogram_diffusion.models.config import T5Config

CONFIG = T5Config.tiny(num_heads=3, head_dim=8, num_encoder_layers=1, num_decoder_layers=1,
                       note_tokens_length=24, target_frames=12)
MODEL = AutoregressiveModel(CONFIG)


def _batch(seed=0, real_frames=(12, 7)):
    rng = np.random.default_rng(seed)
    tokens = np.zeros((2, CONFIG.note_tokens_length), np.int32)
    tokens[:, :10] = rng.integers(3, 1536, (2, 10))
    frames = rng.uniform(-11.5, 4.0, (2, CONFIG.target_frames, 128)).astype(np.float32)
    mask = (np.arange(CONFIG.target_frames)[None] < np.array(real_frames)[:, None]).astype(np.float32)
    return {"note_tokens": jnp.asarray(tokens), "target_frames": jnp.asarray(frames),
            "target_mask": jnp.asarray(mask)}


@functools.lru_cache(maxsize=None)
def _params():
    return jax.jit(MODEL.init)(jax.random.PRNGKey(0), _batch())


_loss = jax.jit(MODEL.loss_fn, static_argnames="train")
_predict = jax.jit(MODEL.predict, static_argnames="dither_amount")
_apply = jax.jit(lambda p, tokens, inputs: MODEL.network.apply({"params": p}, tokens, inputs,
                                                               deterministic=True))


def test_parameter_tree_is_t5x_encoder_decoder():
    small = AutoregressiveModel(T5Config.named("small"))
    batch = {"note_tokens": jnp.zeros((1, 2048), jnp.int32), "target_frames": jnp.zeros((1, 256, 128)),
             "target_mask": jnp.ones((1, 256))}
    abstract = jax.eval_shape(small.init, jax.random.PRNGKey(0), batch)
    flat = traverse_util.flatten_dict(nn.unbox(abstract), sep="/")
    assert flat["token_embedder/embedding"].shape == (1536, 512)
    assert flat["encoder/layers_7/attention/query/kernel"].shape == (512, 384)
    assert flat["decoder/layers_0/self_attention/out/kernel"].shape == (384, 512)
    assert flat["decoder/layers_0/encoder_decoder_attention/key/kernel"].shape == (512, 384)
    assert flat["decoder/continuous_inputs_projection/kernel"].shape == (128, 512)
    assert flat["decoder/spec_out_dense/kernel"].shape == (512, 128)
    assert not any("Embed_0" in k or "FiLM" in k for k in flat)  # FixedEmbed is no parameter
    assert layers.count_parameters(abstract) == 44_979_200  # spec §4.6: 44.98 M


def test_shift_frames_right():
    frames = jnp.arange(2 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 2)
    shifted = np.asarray(shift_frames_right(frames))
    np.testing.assert_array_equal(shifted[:, 0], 0.0)
    np.testing.assert_array_equal(shifted[:, 1:], np.asarray(frames)[:, :-1])


def test_decoder_is_causal():
    params, batch = _params(), _batch(seed=1)
    inputs = shift_frames_right(batch["target_frames"])
    base = np.asarray(_apply(params, batch["note_tokens"], inputs))
    changed = np.asarray(_apply(params, batch["note_tokens"], inputs.at[:, 5].add(3.0)))
    np.testing.assert_allclose(changed[:, :5], base[:, :5], rtol=1e-5, atol=1e-5)
    assert not np.allclose(changed[:, 5:], base[:, 5:], atol=1e-4)


def test_loss_is_mean_squared_error_over_real_frames_and_bins():
    params, batch = _params(), _batch(seed=2)
    loss, metrics = _loss(params, batch, jax.random.PRNGKey(0), train=False)
    predictions = _apply(params, batch["note_tokens"], shift_frames_right(batch["target_frames"]))
    squared = (np.asarray(predictions) - np.asarray(batch["target_frames"])) ** 2
    mask = np.asarray(batch["target_mask"])
    expected = (squared.mean(-1) * mask).sum() / mask.sum()
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(metrics["loss_sum"], expected * mask.sum(), rtol=1e-5)
    np.testing.assert_allclose(metrics["target_frames"], (12 + 7) / 2)
    # Padded frames (and the inputs they feed, which only reach padded frames) do not count.
    padded = batch["target_frames"].at[1, 7:].set(123.0)
    np.testing.assert_allclose(_loss(params, {**batch, "target_frames": padded},
                                     jax.random.PRNGKey(0), train=False)[0], loss, rtol=1e-6)


def test_input_noise_perturbs_only_training_inputs():
    params, batch = _params(), _batch(seed=3)
    noisy = AutoregressiveModel(CONFIG, input_noise_std=2.0)
    key = jax.random.PRNGKey(4)
    clean_train = MODEL.loss_fn(params, batch, key, train=True)[0]
    noisy_train = noisy.loss_fn(params, batch, key, train=True)[0]
    assert not np.isclose(noisy_train, clean_train)
    np.testing.assert_array_equal(noisy_train, noisy.loss_fn(params, batch, key, train=True)[0])
    assert not np.isclose(noisy_train, noisy.loss_fn(params, batch, jax.random.PRNGKey(5), train=True)[0])
    # Evaluation and decoding never see the noise.
    np.testing.assert_array_equal(noisy.loss_fn(params, batch, key, train=False)[0],
                                  MODEL.loss_fn(params, batch, key, train=False)[0])
    with pytest.raises(ValueError, match="input_noise_std must be >= 0"):
        AutoregressiveModel(CONFIG, input_noise_std=-1.0)


def test_training_steps_reduce_the_loss():
    params, batch = nn.unbox(_params()), _batch(seed=3)
    optimizer = optax.adam(1e-2)
    state = optimizer.init(params)

    @jax.jit
    def step(params, state, rng):
        (loss, _), grads = jax.value_and_grad(MODEL.loss_fn, has_aux=True)(params, batch, rng)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for i in range(8):
        params, state, loss = step(params, state, jax.random.PRNGKey(i))
        losses.append(float(loss))
    assert losses[-1] < 0.8 * losses[0], losses  # targets are noise: the floor is their variance


def test_cached_decoding_equals_full_recomputation():
    params, batch = _params(), _batch(seed=4)
    predicted = _predict(params, batch, jax.random.PRNGKey(0))
    assert predicted.shape == (2, CONFIG.target_frames, 128) and predicted.dtype == jnp.float32
    # Teacher-forcing the model on its own predictions must reproduce them frame for frame.
    recomputed = _apply(params, batch["note_tokens"], shift_frames_right(predicted))
    np.testing.assert_allclose(recomputed, predicted, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(_predict(params, batch, jax.random.PRNGKey(1)), predicted)


def test_dither_uses_the_key():
    params, batch = _params(), _batch(seed=5)
    a = _predict(params, batch, jax.random.PRNGKey(0), dither_amount=0.5)
    b = _predict(params, batch, jax.random.PRNGKey(1), dither_amount=0.5)
    np.testing.assert_array_equal(a, _predict(params, batch, jax.random.PRNGKey(0), dither_amount=0.5))
    assert not np.allclose(a, b)


def test_bfloat16_predict_runs_close_to_float32():
    params, batch = _params(), _batch(seed=6)
    bf16 = AutoregressiveModel(dataclasses.replace(CONFIG, dtype="bfloat16"))
    out16 = jax.jit(bf16.loss_fn, static_argnames="train")(params, batch, jax.random.PRNGKey(0), train=False)[0]
    out32 = _loss(params, batch, jax.random.PRNGKey(0), train=False)[0]
    assert abs(float(out16) - float(out32)) < 0.05 * float(out32)
