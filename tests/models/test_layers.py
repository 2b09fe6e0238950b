"""Building blocks of models/layers.py against closed forms and einsum references (spec §4.1-§4.3, §10)."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from music_spectrogram_diffusion.models import layers


def _init_apply(module, *args, rng=0, **kwargs):
    variables = module.init(jax.random.PRNGKey(rng), *args, **kwargs)
    return nn.unbox(variables), module.apply(variables, *args, **kwargs)


def _softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def test_rms_norm_closed_form():
    x = np.random.default_rng(0).normal(size=(2, 3, 8)).astype(np.float32) * 3.0
    module = layers.RMSNorm()
    variables = nn.unbox(module.init(jax.random.PRNGKey(0), x))
    np.testing.assert_array_equal(variables["params"]["scale"], np.ones(8))
    scale = np.linspace(0.5, 2.0, 8).astype(np.float32)
    y = module.apply({"params": {"scale": scale}}, x)
    expected = x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + 1e-6) * scale
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    assert module.apply({"params": {"scale": scale}}, jnp.zeros((1, 8))).sum() == 0.0  # eps


def test_rms_norm_bfloat16_output_computed_in_float32():
    x = np.random.default_rng(1).normal(size=(2, 8)).astype(np.float32)
    y = layers.RMSNorm(dtype=jnp.bfloat16).apply({"params": {"scale": np.ones(8)}}, x)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y, np.float32),
                               x / np.sqrt(np.mean(x**2, -1, keepdims=True) + 1e-6), rtol=1e-2)


def test_dense_general_multiple_features_flattened_kernel():
    x = np.random.default_rng(2).normal(size=(2, 5, 6)).astype(np.float32)
    variables, y = _init_apply(layers.DenseGeneral(features=(3, 4), kernel_axes=("embed", "joined_kv")), x)
    kernel = variables["params"]["kernel"]
    assert kernel.shape == (6, 12)  # stored 2-D [in, H*Dh], as t5x checkpoints (spec §4.1)
    assert y.shape == (2, 5, 3, 4)
    np.testing.assert_allclose(y, np.einsum("bli,ihd->blhd", x, kernel.reshape(6, 3, 4)), rtol=1e-5)


def test_dense_general_multiple_axes():
    x = np.random.default_rng(3).normal(size=(2, 5, 3, 4)).astype(np.float32)
    variables, y = _init_apply(layers.DenseGeneral(features=7, axis=(-2, -1)), x)
    kernel = variables["params"]["kernel"]
    assert kernel.shape == (12, 7)
    np.testing.assert_allclose(y, x.reshape(2, 5, 12) @ kernel, rtol=1e-5, atol=1e-5)


def test_dense_general_rejects_leading_axes():
    with pytest.raises(ValueError, match="trailing axes"):
        layers.DenseGeneral(features=3, axis=0).init(jax.random.PRNGKey(0), jnp.ones((4, 5)))


def test_dense_general_has_no_bias_and_logical_axes():
    variables = layers.DenseGeneral(features=3, kernel_axes=("embed", "mlp")).init(
        jax.random.PRNGKey(0), jnp.ones((2, 4)))
    assert list(variables["params"]) == ["kernel"]
    assert nn.get_partition_spec(variables)["params"]["kernel"] == jax.sharding.PartitionSpec("embed", "mlp")


def test_embed_init_lookup_attend_and_integer_check():
    module = layers.Embed(num_embeddings=300, features=64)
    ids = jnp.array([[0, 5, 299], [7, 7, 1]], jnp.int32)
    variables, y = _init_apply(module, ids)
    table = variables["params"]["embedding"]
    assert table.shape == (300, 64) and table.dtype == jnp.float32
    assert abs(float(np.std(table)) - 1.0) < 0.02  # normal(stddev=1) token embeddings (spec §4.3)
    np.testing.assert_allclose(y, np.asarray(table)[np.asarray(ids)], rtol=1e-6)  # one-hot matmul
    take = layers.Embed(300, 64, one_hot=False).apply(variables, ids)
    np.testing.assert_allclose(take, y, rtol=1e-6)
    query = np.random.default_rng(4).normal(size=(2, 64)).astype(np.float32)
    logits = module.apply(variables, query, method="attend")
    np.testing.assert_allclose(logits, query @ np.asarray(table).T, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="integer"):
        module.apply(variables, jnp.ones((2, 3), jnp.float32))


def test_dot_product_attention_matches_einsum_reference_without_scaling():
    rng = np.random.default_rng(5)
    q, k, v = (rng.normal(size=(2, 4, 3, 8)).astype(np.float32) for _ in range(3))
    mask = rng.random((2, 1, 4, 4)) > 0.3
    mask[..., 0] = True
    y = layers.dot_product_attention(q, k, v, jnp.asarray(mask))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k)  # NO 1/sqrt(Dh) (spec §4.1)
    logits = np.where(mask, logits, logits - 1e10)
    expected = np.einsum("bhqk,bkhd->bqhd", _softmax(logits), v)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_masked_keys_do_not_influence_output():
    rng = np.random.default_rng(6)
    q, k, v = (rng.normal(size=(1, 6, 2, 4)).astype(np.float32) for _ in range(3))
    key_mask = np.array([[1, 1, 1, 0, 0, 0]])
    mask = layers.make_attention_mask(np.ones((1, 6)), key_mask)
    assert mask.shape == (1, 1, 6, 6) and mask.dtype == jnp.bool_
    v2 = v.copy()
    v2[:, 3:] = 100.0
    np.testing.assert_allclose(layers.dot_product_attention(q, k, v, mask),
                               layers.dot_product_attention(q, k, v2, mask), rtol=1e-6)


def test_multi_head_attention_matches_reference_and_folds_scaling_into_query_init():
    d, heads, head_dim = 256, 4, 64
    x = np.random.default_rng(7).normal(size=(2, 5, d)).astype(np.float32)
    module = layers.MultiHeadDotProductAttention(features=d, num_heads=heads, head_dim=head_dim)
    variables, y = _init_apply(module, x, x)
    p = {name: np.asarray(p["kernel"]) for name, p in variables["params"].items()}
    assert p["query"].shape == (d, heads * head_dim) and p["out"].shape == (heads * head_dim, d)
    # Query init std = (1/sqrt(fan_in)) / sqrt(Dh); key init std = 1/sqrt(fan_in) (spec §4.1).
    assert abs(p["key"].std() * math.sqrt(d) - 1.0) < 0.03
    assert abs(p["query"].std() * math.sqrt(d) * math.sqrt(head_dim) - 1.0) < 0.03
    split = lambda a: a.reshape(2, 5, heads, head_dim)  # column h*Dh + j (spec §4.7)
    q, k, v = split(x @ p["query"]), split(x @ p["key"]), split(x @ p["value"])
    weights = _softmax(np.einsum("bqhd,bkhd->bhqk", q, k))
    expected = np.einsum("bhqk,bkhd->bqhd", weights, v).reshape(2, 5, -1) @ p["out"]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    # Precomputed key/value give the same result.
    kv = module.apply(variables, x, method="project_kv")
    np.testing.assert_allclose(module.apply(variables, x, None, kv=kv), y, rtol=1e-6)


def test_kv_cache_decoding_equals_full_causal_attention():
    d, length = 16, 6
    x = np.random.default_rng(8).normal(size=(2, length, d)).astype(np.float32)
    module = layers.MultiHeadDotProductAttention(features=d, num_heads=2, head_dim=8)
    variables = module.init(jax.random.PRNGKey(0), x, x)
    full = module.apply(variables, x, x, layers.make_causal_mask(length))
    _, state = module.apply(variables, x, x, decode=True, mutable=["cache"])
    cache = jax.tree_util.tree_map(jnp.zeros_like, state["cache"])
    assert cache["cache"]["cached_key"].shape == (2, length, 2, 8)
    steps = []
    for i in range(length):
        y, state = module.apply({**variables, "cache": cache}, x[:, i:i + 1], x[:, i:i + 1],
                                decode=True, mutable=["cache"])
        cache = state["cache"]
        steps.append(y)
    assert int(cache["cache"]["cache_index"]) == length
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-5, atol=1e-5)


def test_attention_dropout_is_shared_over_queries():
    lq, lk = 5, 8
    q = np.random.default_rng(9).normal(size=(2, lq, 3, lk)).astype(np.float32)
    k = np.random.default_rng(10).normal(size=(2, lk, 3, lk)).astype(np.float32)
    v = np.broadcast_to(np.eye(lk, dtype=np.float32)[None, :, None, :], (2, lk, 3, lk))
    # With v = identity, the output row of each query IS its (dropped-out) attention weights.
    weights = layers.dot_product_attention(q, k, v, dropout_rng=jax.random.PRNGKey(1), dropout_rate=0.5)
    dropped = np.asarray(weights) == 0.0  # [B, Lq, H, Lk]
    assert dropped.any() and not dropped.all()
    assert (dropped == dropped[:, :1]).all()  # the same keys dropped for every query


def test_dropout_is_broadcast_over_length():
    x = jnp.ones((3, 10, 16))
    y = layers.dropout(0.5).apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})
    kept = np.asarray(y) > 0
    assert (kept == kept[:, :1]).all()  # same mask at every position
    assert kept[:, 0].any() and not kept[:, 0].all()
    np.testing.assert_allclose(np.asarray(y)[kept], 2.0)


def test_mlp_block_closed_form_and_length_broadcast_dropout():
    x = np.random.default_rng(11).normal(size=(2, 7, 8)).astype(np.float32)
    module = layers.MlpBlock(intermediate_dim=16, dropout_rate=0.5)
    variables, y = _init_apply(module, x, deterministic=True)
    p = {name: np.asarray(v["kernel"]) for name, v in variables["params"].items()}
    assert set(p) == {"wi_0", "wi_1", "wo"}
    h0 = x @ p["wi_0"]
    gelu_tanh = 0.5 * h0 * (1 + np.tanh(np.sqrt(2 / np.pi) * (h0 + 0.044715 * h0**3)))
    np.testing.assert_allclose(y, (gelu_tanh * (x @ p["wi_1"])) @ p["wo"], rtol=1e-4, atol=1e-5)
    # Dropout: position-independent hidden mask, so identical input rows give identical outputs.
    same = np.broadcast_to(x[:, :1], x.shape)
    z = module.apply(variables, same, deterministic=False, rngs={"dropout": jax.random.PRNGKey(3)})
    np.testing.assert_allclose(z, np.broadcast_to(np.asarray(z)[:, :1], z.shape), rtol=1e-6)


def test_film_closed_form_scale_first_then_shift():
    d = 4
    x = np.random.default_rng(12).normal(size=(2, 3, d)).astype(np.float32)
    cond = np.random.default_rng(13).normal(size=(2, 1, 4 * d)).astype(np.float32)
    module = layers.FiLMLayer()
    variables = nn.unbox(module.init(jax.random.PRNGKey(0), x, cond))
    kernel = np.asarray(variables["params"]["DenseGeneral_0"]["kernel"])
    assert kernel.shape == (4 * d, 2 * d)
    scale_shift = cond @ kernel
    expected = x * (1 + scale_shift[..., :d]) + scale_shift[..., d:]
    np.testing.assert_allclose(module.apply(variables, x, cond), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("valid", [0, 1, 100, 255, 256])
def test_terminal_relative_positions(valid):
    mask = (np.arange(256) < valid).astype(np.float32)[None]
    positions = np.asarray(layers.terminal_relative_positions(jnp.asarray(mask)))[0]
    np.testing.assert_array_equal(positions, np.roll(np.arange(256), valid))
    if 0 < valid:
        assert positions[valid - 1] == 255  # the frame just before the target (spec §4.2)
    if valid in (0, 256):
        np.testing.assert_array_equal(positions, np.arange(256))


def test_terminal_relative_positions_per_example():
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], np.float32)
    np.testing.assert_array_equal(layers.terminal_relative_positions(jnp.asarray(mask)),
                                  [[2, 3, 0, 1], [0, 1, 2, 3]])


def test_zero_activations_if_masked():
    y = jnp.ones((2, 3, 4))
    mask = layers.make_attention_mask(np.ones((2, 3)), np.array([[0, 0, 0, 0, 0], [0, 1, 0, 0, 0]]))
    out = np.asarray(layers.zero_activations_if_masked(y, mask))
    np.testing.assert_array_equal(out[0], 0.0)
    np.testing.assert_array_equal(out[1], 1.0)


def test_timestep_embedding_closed_form():
    t = np.array([0.0, 0.25, 1.0], np.float32)
    d, max_time = 8, 2e4
    out = np.asarray(layers.timestep_embedding(jnp.asarray(t), d, max_time))
    inv = np.exp(-np.arange(4) * np.log(max_time) / 3)  # min timescale 1, max 2e4 (spec §4.3)
    angle = (t * max_time)[:, None] * inv[None]
    np.testing.assert_allclose(out, np.concatenate([np.sin(angle), np.cos(angle)], -1), atol=2e-3)
    np.testing.assert_allclose(out[0], [0, 0, 0, 0, 1, 1, 1, 1], atol=1e-7)


def test_plain_sinusoid_table():
    table = layers.sinusoid_table(50, 8)
    angle = np.arange(50)[:, None] * np.exp(-np.arange(4) * np.log(1e4) / 3)[None]
    np.testing.assert_allclose(table, np.concatenate([np.sin(angle), np.cos(angle)], -1), atol=1e-6)


def test_fixed_permuted_offset_table_is_phase_shifted_permuted_sinusoid():
    length, d = 2048, 8
    table = np.asarray(layers.fixed_permuted_offset_init(jax.random.PRNGKey(3), (length, d)), np.float64)
    bands = np.exp(-np.arange(d // 2) * np.log(1e4) / (d // 2 - 1))
    p = np.arange(length)
    matches = []
    # Every column is A sin(p w_k) + B cos(p w_k) = sin(p w_k + phase) for exactly one band k.
    for column in table.T:
        fits = []
        for w in bands:
            basis = np.stack([np.sin(p * w), np.cos(p * w)], -1)
            coef, *_ = np.linalg.lstsq(basis, column, rcond=None)
            fits.append((np.abs(basis @ coef - column).max(), np.hypot(*coef)))
        good = [k for k, (err, amp) in enumerate(fits) if err < 1e-4 and abs(amp - 1) < 1e-4]
        assert len(good) == 1
        matches.append(good[0])
    assert sorted(matches) == sorted(2 * list(range(d // 2)))  # one sin and one cos per band
    # Random phases: row 0 is not the plain sinusoid's [0]*(d/2) + [1]*(d/2) in any order.
    assert not np.allclose(np.sort(table[0]), [0, 0, 0, 0, 1, 1, 1, 1], atol=1e-3)
    other = np.asarray(layers.fixed_permuted_offset_init(jax.random.PRNGKey(4), (length, d)))
    assert not np.allclose(table, other)
    again = np.asarray(layers.fixed_permuted_offset_init(jax.random.PRNGKey(3), (length, d)))
    np.testing.assert_array_equal(table, again)


def test_frozen_position_table_has_no_gradient():
    module = layers.FrozenPositionTable(max_length=16, features=8)
    positions = jnp.arange(10)[None]
    variables = module.init(jax.random.PRNGKey(0), positions)
    grads = jax.grad(lambda v: module.apply(v, positions).sum())(variables)
    assert float(jnp.abs(nn.unbox(grads)["params"]["embedding"]).sum()) == 0.0


def test_frozen_param_mask_and_count_parameters():
    params = {"Embed_0": {"embedding": jnp.zeros((4, 2))}, "layers_0": {"kernel": jnp.zeros((3, 5))},
              "decoder": {"Embed_0": {"embedding": jnp.zeros((2, 2))}}}
    mask = layers.frozen_param_mask(params)
    assert mask == {"Embed_0": {"embedding": True}, "layers_0": {"kernel": False},
                    "decoder": {"Embed_0": {"embedding": True}}}
    assert layers.count_parameters(params) == 15
    assert layers.count_parameters(params, include_frozen=True) == 27
