"""The diffusion networks of models/networks.py (spec §4.3, §4.4, §4.6, §4.7) at tiny size."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from music_spectrogram_diffusion.models import layers
from music_spectrogram_diffusion.models import networks
from music_spectrogram_diffusion.models.config import T5Config

# H*Dh = 24 != d = 32, and three different table lengths, so transposed kernels or swapped
# position tables cannot pass the shape checks. Compiled tests use one layer per stack (XLA
# compile time dominates on CPU); the tree and counts are checked on two via jax.eval_shape.
TREE_CONFIG = T5Config.tiny(num_heads=3, head_dim=8, note_tokens_length=32, target_frames=16,
                            context_frames=12)
CONFIG = dataclasses.replace(TREE_CONFIG, num_encoder_layers=1, num_decoder_layers=1)
BATCH = 2
LOGICAL_NAMES = {"vocab", "embed", "mlp", "joined_kv", "length", "mel", "time_embed", "film"}


def _inputs(seed=0, num_tokens=20, context_valid=(12, 5)):
    rng = np.random.default_rng(seed)
    tokens = np.zeros((BATCH, CONFIG.note_tokens_length), np.int32)
    tokens[:, :num_tokens] = rng.integers(3, CONFIG.vocab_size, (BATCH, num_tokens))
    context = rng.uniform(-1, 1, (BATCH, CONFIG.context_frames, 128)).astype(np.float32)
    context_mask = (np.arange(CONFIG.context_frames)[None] < np.array(context_valid)[:, None])
    noisy = rng.normal(size=(BATCH, CONFIG.target_frames, 128)).astype(np.float32)
    noise_time = rng.uniform(size=(BATCH,)).astype(np.float32)
    return (jnp.asarray(tokens), jnp.asarray(context), jnp.asarray(context_mask, jnp.float32),
            jnp.asarray(noisy), jnp.asarray(noise_time))


@functools.lru_cache(maxsize=None)
def _build(kind):
    """(kind, network, jitted init, params, jitted apply), built once per module and kind."""
    cls = networks.ContextTransformer if kind == "context" else networks.NoContextTransformer
    network = cls(CONFIG)
    init = jax.jit(lambda rng, *a: network.init(rng, *a, deterministic=True))
    params = init(jax.random.PRNGKey(0), *_inputs())["params"]
    apply = jax.jit(lambda p, *a: network.apply({"params": p}, *a, deterministic=True))
    return kind, network, init, params, apply


@pytest.fixture(scope="module", params=["context", "no_context"])
def setup(request):
    return _build(request.param)


def _abstract_params(kind):
    cls = networks.ContextTransformer if kind == "context" else networks.NoContextTransformer
    init = lambda rng: cls(TREE_CONFIG).init(rng, *_inputs(), deterministic=True)["params"]
    return jax.eval_shape(init, jax.random.PRNGKey(0))


def _expected_tree(with_context: bool) -> dict[str, tuple[int, ...]]:
    """The parameter tree of spec §4.7, spelled out."""
    d, inner, mlp = TREE_CONFIG.emb_dim, TREE_CONFIG.num_heads * TREE_CONFIG.head_dim, TREE_CONFIG.mlp_dim
    layers_n = TREE_CONFIG.num_encoder_layers
    attention = lambda prefix: {f"{prefix}/{n}/kernel": (d, inner) for n in ("query", "key", "value")} | {
        f"{prefix}/out/kernel": (inner, d)}
    mlp_block = lambda prefix: {f"{prefix}/mlp/wi_0/kernel": (d, mlp), f"{prefix}/mlp/wi_1/kernel": (d, mlp),
                                f"{prefix}/mlp/wo/kernel": (mlp, d)}

    def encoder(scope, table_length):
        tree = {f"{scope}/Embed_0/embedding": (table_length, d), f"{scope}/encoder_norm/scale": (d,)}
        for i in range(layers_n):
            p = f"{scope}/layers_{i}"
            tree |= {f"{p}/pre_attention_layer_norm/scale": (d,), f"{p}/pre_mlp_layer_norm/scale": (d,)}
            tree |= attention(f"{p}/attention") | mlp_block(p)
        return tree

    token_scope = "token_encoder" if with_context else "encoder"
    tree = encoder(token_scope, CONFIG.note_tokens_length)
    tree[f"{token_scope}/token_embedder/embedding"] = (1536, d)
    if with_context:
        tree |= encoder("continuous_encoder", CONFIG.context_frames)
        tree["continuous_encoder/input_proj/kernel"] = (128, d)
    tree |= {"decoder/time_emb_dense0/kernel": (d, 4 * d), "decoder/time_emb_dense1/kernel": (4 * d, 4 * d),
             "decoder/Embed_0/embedding": (CONFIG.target_frames, d),
             "decoder/continuous_inputs_projection/kernel": (128, d),
             "decoder/decoder_norm/scale": (d,), "decoder/spec_out_dense/kernel": (d, 128)}
    for i in range(layers_n):
        p = f"decoder/layers_{i}"
        tree |= {f"{p}/{n}/scale": (d,) for n in (
            "pre_self_attention_layer_norm", "pre_cross_attention_layer_norm", "pre_mlp_layer_norm")}
        tree |= {f"{p}/FiLMLayer_{j}/DenseGeneral_0/kernel": (4 * d, 2 * d) for j in (0, 1)}
        tree |= attention(f"{p}/self_attention") | attention(f"{p}/MultiHeadDotProductAttention_0")
        tree |= mlp_block(p)
    return tree


@pytest.mark.parametrize("kind", ["context", "no_context"])
def test_parameter_tree_matches_spec(kind):
    flat = traverse_util.flatten_dict(nn.unbox(_abstract_params(kind)), sep="/")
    assert {k: v.shape for k, v in flat.items()} == _expected_tree(kind == "context")
    assert all(v.dtype == jnp.float32 for v in flat.values())


@pytest.mark.parametrize("kind", ["context", "no_context"])
def test_parameter_count_matches_closed_form(kind):
    """§4.6: a decoder layer = 3 norms + 2 FiLM (4d x 2d) + 2 attentions (4 d H Dh) + MLP (3 d f)."""
    params = _abstract_params(kind)
    d, inner, f = TREE_CONFIG.emb_dim, TREE_CONFIG.num_heads * TREE_CONFIG.head_dim, TREE_CONFIG.mlp_dim
    n = TREE_CONFIG.num_encoder_layers
    encoder_layer = 2 * d + 4 * d * inner + 3 * d * f
    decoder_layer = 3 * d + 2 * 8 * d * d + 8 * d * inner + 3 * d * f
    tokens = 1536 * d + n * encoder_layer + d
    context = 128 * d + n * encoder_layer + d
    decoder = 4 * d * d + 16 * d * d + 2 * 128 * d + n * decoder_layer + d
    expected = tokens + decoder + (context if kind == "context" else 0)
    assert layers.count_parameters(params) == expected
    frozen = CONFIG.note_tokens_length + CONFIG.target_frames + (CONFIG.context_frames if kind == "context" else 0)
    assert layers.count_parameters(params, include_frozen=True) == expected + frozen * d


@pytest.mark.parametrize("kind", ["context", "no_context"])
def test_logical_axis_names_on_every_parameter(kind):
    params = _abstract_params(kind)
    specs = traverse_util.flatten_dict(nn.get_partition_spec(params), sep="/")
    shapes = traverse_util.flatten_dict(nn.unbox(params), sep="/")
    for path, spec in specs.items():
        assert len(spec) == shapes[path].ndim, path
        assert set(spec) <= LOGICAL_NAMES, (path, spec)
    assert specs["decoder/layers_0/mlp/wi_0/kernel"] == jax.sharding.PartitionSpec("embed", "mlp")


def test_init_is_deterministic_and_tables_differ_per_module(setup):
    kind, _, init, params, _ = setup
    again = init(jax.random.PRNGKey(0), *_inputs())["params"]
    jax.tree_util.tree_map(np.testing.assert_array_equal, nn.unbox(again), nn.unbox(params))
    flat = traverse_util.flatten_dict(nn.unbox(params), sep="/")
    token_table = flat[("token_encoder" if kind == "context" else "encoder") + "/Embed_0/embedding"]
    decoder_table = flat["decoder/Embed_0/embedding"]
    assert not np.allclose(token_table[:CONFIG.target_frames], decoder_table)  # separate draws (§4.2)


def test_output_shape_and_dtype(setup):
    _, _, _, params, apply = setup
    eps = apply(params, *_inputs())
    assert eps.shape == (BATCH, CONFIG.target_frames, 128) and eps.dtype == jnp.float32
    assert np.isfinite(np.asarray(eps)).all()


def test_decode_with_precomputed_cross_kv_equals_decode(setup):
    _, network, _, params, apply = setup
    tokens, context, context_mask, noisy, noise_time = _inputs(seed=1)

    @jax.jit
    def run(params, tokens, context, context_mask, noisy, noise_time):
        variables = {"params": params}
        encodings, mask = network.apply(variables, tokens, context, context_mask, deterministic=True,
                                        method="encode")
        cross_kv = network.apply(variables, encodings, method="cross_attention_kv")
        plain = network.apply(variables, noisy, noise_time, encodings, mask, deterministic=True,
                              method="decode")
        cached = network.apply(variables, noisy, noise_time, None, mask, cross_kv=cross_kv,
                               deterministic=True, method="decode")
        return encodings, cross_kv, plain, cached

    encodings, cross_kv, plain, cached = run(params, tokens, context, context_mask, noisy, noise_time)
    assert len(cross_kv) == CONFIG.num_decoder_layers
    assert cross_kv[0][0].shape == (BATCH, encodings.shape[1], CONFIG.num_heads, CONFIG.head_dim)
    np.testing.assert_allclose(cached, plain, rtol=1e-5, atol=1e-5)
    full = apply(params, tokens, context, context_mask, noisy, noise_time)
    np.testing.assert_allclose(full, plain, rtol=1e-5, atol=1e-5)


def test_all_masked_encodings_contribute_nothing(setup):
    """The CFG-unconditional pass: encoding mask of zeros -> cross-attention output zero (§4.1)."""
    kind, network, _, params, _ = setup
    _, _, _, noisy, noise_time = _inputs(seed=2)
    length = CONFIG.note_tokens_length + (CONFIG.context_frames if kind == "context" else 0)
    rng = np.random.default_rng(3)
    decode_fn = jax.jit(lambda p, e, m: network.apply({"params": p}, noisy, noise_time, e, m,
                                                      deterministic=True, method="decode"))
    decode = lambda encodings, mask: decode_fn(params, encodings, mask)
    enc_a = jnp.asarray(rng.normal(size=(BATCH, length, CONFIG.emb_dim)), jnp.float32)
    enc_b = 10.0 * jnp.asarray(rng.normal(size=(BATCH, length, CONFIG.emb_dim)), jnp.float32)
    zeros, ones = jnp.zeros((BATCH, length), bool), jnp.ones((BATCH, length), bool)
    np.testing.assert_allclose(decode(enc_a, zeros), decode(enc_b, zeros), rtol=1e-6, atol=1e-6)
    # ... and equals the decoder with its cross-attention sublayers removed (zero out-projection
    # kernels make every cross-attention output zero while the mask is all ones).
    no_cross = jax.tree_util.tree_map(lambda x: x, nn.unbox(params))
    for i in range(CONFIG.num_decoder_layers):
        out = no_cross["decoder"][f"layers_{i}"]["MultiHeadDotProductAttention_0"]["out"]
        out["kernel"] = jnp.zeros_like(out["kernel"])
    without_cross_attention = decode_fn(no_cross, enc_a, ones)
    np.testing.assert_allclose(decode(enc_a, zeros), without_cross_attention, rtol=1e-5, atol=1e-5)
    assert not np.allclose(decode(enc_a, ones), without_cross_attention, atol=1e-3)


def test_padding_does_not_change_the_output(setup):
    kind, _, _, params, apply = setup
    tokens, context, context_mask, noisy, noise_time = _inputs(seed=4)
    base = apply(params, tokens, context, context_mask, noisy, noise_time)
    masked = np.asarray(context_mask)[..., None] > 0
    other_context = jnp.where(masked, context, 0.7)  # change only masked context frames
    np.testing.assert_allclose(apply(params, tokens, other_context, context_mask, noisy, noise_time),
                               base, rtol=1e-5, atol=1e-5)
    changed = apply(params, tokens, context.at[:, 0].add(1.0), context_mask, noisy, noise_time)
    assert np.allclose(changed, base, atol=1e-6) == (kind == "no_context")  # context ignored w/o encoder


def test_frozen_tables_get_no_gradient():
    _, network, _, params, _ = _build("context")  # has all three tables
    inputs = _inputs(seed=5)
    loss = lambda p, *a: jnp.sum(network.apply({"params": p}, *a, deterministic=True) ** 2)
    grads = jax.jit(jax.grad(loss))(params, *inputs)
    frozen = layers.frozen_param_mask(nn.unbox(params))
    flat_grads = traverse_util.flatten_dict(nn.unbox(grads), sep="/")
    flat_frozen = traverse_util.flatten_dict(frozen, sep="/")
    assert [k for k, v in flat_frozen.items() if v] == [k for k in flat_frozen if "Embed_0" in k]
    assert sum(flat_frozen.values()) == 3
    for path, grad in flat_grads.items():
        if flat_frozen[path]:
            assert float(jnp.abs(grad).sum()) == 0.0, path
    assert float(jnp.abs(flat_grads["decoder/spec_out_dense/kernel"]).sum()) > 0.0


def test_bfloat16_activations_with_float32_params_stay_close(setup):
    kind, _, _, params, apply = setup
    cls = networks.ContextTransformer if kind == "context" else networks.NoContextTransformer
    bf16 = cls(dataclasses.replace(CONFIG, dtype="bfloat16"))
    inputs = _inputs(seed=6)
    out16 = jax.jit(lambda p, *a: bf16.apply({"params": p}, *a, deterministic=True))(params, *inputs)
    out32 = apply(params, *inputs)
    assert out16.dtype == jnp.float32  # the output layer runs in float32
    rel = np.linalg.norm(np.asarray(out16) - np.asarray(out32)) / np.linalg.norm(np.asarray(out32))
    assert 0.0 < rel < 0.05


def test_dropout_needs_a_key_and_changes_the_output():
    _, _, _, params, _ = _build("no_context")
    network = networks.NoContextTransformer(dataclasses.replace(CONFIG, dropout_rate=0.3))
    inputs = _inputs(seed=7)
    run = jax.jit(lambda key: network.apply({"params": params}, *inputs, deterministic=False,
                                            rngs={"dropout": key}))
    a, b = run(jax.random.PRNGKey(1)), run(jax.random.PRNGKey(2))
    np.testing.assert_array_equal(a, run(jax.random.PRNGKey(1)))
    assert not np.allclose(a, b)


def test_too_long_inputs_are_rejected():
    network = networks.ContextTransformer(CONFIG)
    tokens, context, context_mask, noisy, noise_time = _inputs()
    long_tokens = jnp.zeros((BATCH, CONFIG.note_tokens_length + 1), jnp.int32)
    with pytest.raises(ValueError, match="note_tokens has length 33"):
        jax.eval_shape(lambda r: network.init(r, long_tokens, context, context_mask, noisy, noise_time,
                                              deterministic=True), jax.random.PRNGKey(0))


def test_context_network_requires_context():
    network = networks.ContextTransformer(CONFIG)
    tokens, _, _, noisy, noise_time = _inputs()
    with pytest.raises(ValueError, match="needs context_frames"):
        jax.eval_shape(lambda r: network.init(r, tokens, None, None, noisy, noise_time,
                                              deterministic=True), jax.random.PRNGKey(0))


def test_context_encoder_uses_terminal_relative_positions():
    """The context table is read at jnp.roll(arange(C), L): last valid frame -> row C-1 (§4.2)."""
    _, network, _, params, _ = _build("context")
    inputs = _inputs(seed=8, context_valid=(12, 5))
    is_table = lambda module, method: isinstance(module, layers.FrozenPositionTable)
    run = jax.jit(lambda p, *a: network.apply({"params": p}, *a, deterministic=True,
                                              capture_intermediates=is_table, mutable=["intermediates"]))
    _, state = run(params, *inputs)
    looked_up = np.asarray(state["intermediates"]["continuous_encoder"]["Embed_0"]["__call__"][0])
    table = np.asarray(nn.unbox(params)["continuous_encoder"]["Embed_0"]["embedding"])
    for example, valid in enumerate((12, 5)):
        np.testing.assert_allclose(looked_up[example], table[np.roll(np.arange(12), valid)])
    np.testing.assert_allclose(looked_up[1, 4], table[11])  # frame before the target
    decoder_rows = np.asarray(state["intermediates"]["decoder"]["Embed_0"]["__call__"][0])
    np.testing.assert_allclose(decoder_rows[0], np.asarray(nn.unbox(params)["decoder"]["Embed_0"]["embedding"]))
