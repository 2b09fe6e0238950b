"""The one copy of every T5 building block used by the networks (spec §4.1-§4.3).

T5.1.1 conventions throughout: no biases, RMSNorm with eps 1e-6 computed in float32, gated
tanh-GELU MLPs, no 1/sqrt(Dh) at runtime (it is folded into the query initializer), boolean masks
turned into a -1e10 additive bias, and dropout that shares one mask over the sequence axis.

Kernels are stored flattened in 2-D, ``[prod(in), prod(out)]`` (q/k/v ``[d, H*Dh]``, out
``[H*Dh, d]``, the head layout of a column being h*Dh + j), exactly like the original's copy of
the MT3 layers, so released t5x checkpoints load without reshaping (spec §4.1, §9.5). Parameters
are float32 and carry logical axis names ('vocab', 'embed', 'mlp', 'joined_kv', 'length', 'mel',
'time_embed', 'film'); activations are constrained to ('batch', 'length', 'embed' | 'mlp' |
'heads', 'kv'). The training code maps these names to mesh axes in one rules table.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Initializer = Callable[..., Array]
LogicalAxes = tuple[str, ...]

MASK_BIAS = -1e10  # additive bias of masked attention logits (spec §4.1)

# Dense layers: lecun truncated normal; attention kernels: lecun normal (spec §4.1, §6).
default_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
attention_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")


def _as_tuple(x: int | Sequence[int]) -> tuple[int, ...]:
    return tuple(x) if isinstance(x, Sequence) else (x,)


def dropout(rate: float) -> nn.Dropout:
    """T5 dropout: one mask per example shared by every position (broadcast over length, §4.1)."""
    return nn.Dropout(rate=rate, broadcast_dims=(-2,))


def constrain(x: Array, *names: str) -> Array:
    """Logical sharding constraint on an activation; a no-op outside a mesh/rules context."""
    return nn.with_logical_constraint(x, names)


class RMSNorm(nn.Module):
    """T5 LayerNorm: y = x * rsqrt(mean(x^2) + eps) * scale, no mean and no bias, in float32."""

    epsilon: float = 1e-6
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:  # [..., d] -> [..., d]
        x32 = jnp.asarray(x, jnp.float32)
        mean_square = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
            (x.shape[-1],),
            jnp.float32,
        )
        return (x32 * jax.lax.rsqrt(mean_square + self.epsilon) * scale).astype(self.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def dense_matmul(x: Array, kernel: Array, dtype: Any) -> Array:
    """x [N, K] @ kernel [K, M] -> [N, M] in ``dtype``: inputs cast to ``dtype``, f32 accumulation.

    With ``dtype`` bfloat16 every product (forward, and both products of the backward pass)
    runs on bfloat16 inputs with float32 accumulation, which the CPU's bf16 dot units execute
    about twice as fast as float32 (a bf16 x bf16 -> bf16 dot takes a slow path). The kernel
    gradient is float32, like the kernel.
    """
    return _dense_product(x, kernel, dtype)


def _dense_product(x: Array, kernel: Array, dtype: Any) -> Array:
    y = jnp.dot(jnp.asarray(x, dtype), jnp.asarray(kernel, dtype),
                preferred_element_type=jnp.float32)
    return y.astype(dtype)


def _dense_matmul_fwd(x, kernel, dtype):
    return _dense_product(x, kernel, dtype), (x, kernel)


def _dense_matmul_bwd(dtype, residuals, g):
    x, kernel = residuals
    # Materialise the incoming gradient before the two products: otherwise XLA:CPU fuses the
    # elementwise backward ops that produce it with the transpose the kernel-gradient product
    # needs, a strided loop that took a quarter of the small model's training step.
    g = jax.lax.optimization_barrier(jnp.asarray(g, dtype))
    x = jnp.asarray(x, dtype)
    dx = jnp.dot(g, jnp.asarray(kernel, dtype).T, preferred_element_type=jnp.float32)
    dkernel = jnp.dot(x.T, g, preferred_element_type=jnp.float32)
    return dx.astype(residuals[0].dtype), dkernel.astype(kernel.dtype)


dense_matmul.defvjp(_dense_matmul_fwd, _dense_matmul_bwd)


class DenseGeneral(nn.Module):
    """Bias-free dense layer over one or more trailing axes, kernel stored flattened in 2-D.

    Computed as one 2-D product ``dense_matmul`` of the flattened inputs [N, prod(in)] and the
    stored kernel [prod(in), prod(out)]: the same numbers as contracting the reshaped kernel.

    Attributes:
      features: output shape appended after the uncontracted input axes.
      axis: trailing input axes to contract (e.g. (-2, -1) for the attention output [H, Dh]).
      kernel_axes: logical names of the two stored kernel dimensions (in, out).
    """

    features: int | Sequence[int]
    axis: int | Sequence[int] = -1
    kernel_axes: LogicalAxes = ()
    kernel_init: Initializer = default_kernel_init
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs: Array) -> Array:
        features = _as_tuple(self.features)
        axis = tuple(a % inputs.ndim for a in _as_tuple(self.axis))
        if axis != tuple(range(inputs.ndim - len(axis), inputs.ndim)):
            raise ValueError(f"DenseGeneral contracts trailing axes only, got axis={self.axis}")
        in_shape = tuple(inputs.shape[a] for a in axis)
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(self.kernel_init, self.kernel_axes),
            (int(np.prod(in_shape)), int(np.prod(features))),
            jnp.float32,
        )
        batch_shape = inputs.shape[: inputs.ndim - len(axis)]
        flat = jnp.reshape(inputs, (-1, kernel.shape[0]))
        return dense_matmul(flat, kernel, jnp.dtype(self.dtype)).reshape(batch_shape + features)


def check_ids_in_table(ids: np.ndarray | Array, num_embeddings: int, *,
                       what: str = "token ids") -> None:
    """ValueError unless every id of a concrete (not traced) array is in [0, num_embeddings).

    An id past the table must be an error: the one-hot lookup would embed it as a zero vector
    and the model would silently ignore the token.
    """
    ids = np.asarray(ids)
    if ids.size == 0:
        return
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= num_embeddings:
        raise ValueError(
            f"{what} range over [{low}, {high}] but the embedding table has {num_embeddings} rows "
            f"(valid ids 0..{num_embeddings - 1}): they come from a larger vocabulary than the "
            f"table was built for (the note-token table has T5Config.vocab_size rows)")


class Embed(nn.Module):
    """Learned embedding table (token embedder: normal(1) init, one-hot matmul lookup, §4.3).

    Ids must lie in [0, num_embeddings): a one-hot lookup embeds any other id as zeros. The
    batches are checked where they enter a model (``check_ids_in_table``: ``make_batch`` and
    every train and train-eval batch of the trainer), not inside the jitted forward pass.
    """

    num_embeddings: int
    features: int
    embedding_axes: LogicalAxes = ("vocab", "embed")
    embedding_init: Initializer = nn.initializers.normal(stddev=1.0)
    one_hot: bool = True
    dtype: Any = jnp.float32

    def setup(self):
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(self.embedding_init, self.embedding_axes),
            (self.num_embeddings, self.features),
            jnp.float32,
        )

    def __call__(self, inputs: Array) -> Array:  # int [...] -> [..., features]
        if not jnp.issubdtype(inputs.dtype, jnp.integer):
            raise ValueError(f"Embed takes integer ids, got dtype {inputs.dtype}")
        table = jnp.asarray(self.embedding, self.dtype)
        if self.one_hot:
            one_hot = jax.nn.one_hot(inputs, self.num_embeddings, dtype=self.dtype)
            return one_hot @ table
        return jnp.take(table, inputs, axis=0)

    def attend(self, query: Array) -> Array:  # [..., features] -> [..., num_embeddings]
        """Logits against every row (tied output layer); unused by the spectrogram models."""
        return jnp.dot(jnp.asarray(query, self.dtype), jnp.asarray(self.embedding, self.dtype).T)


# ------------------------------------------------------------------ position and time signals


def sinusoid_angles(length: int, features: int, max_timescale: float = 1e4) -> np.ndarray:
    """angle[p, k] = p * exp(-k ln(max_timescale) / (d/2 - 1)) for k < d/2 (spec §4.2)."""
    half = features // 2
    inv_timescales = np.exp(-np.arange(half) * math.log(max_timescale) / (half - 1))
    return np.arange(length, dtype=np.float64)[:, None] * inv_timescales[None, :]  # [L, d/2]


def sinusoid_table(length: int, features: int) -> np.ndarray:
    """The plain sinusoid (``fixed``; the autoregressive model's FixedEmbed): [sin | cos]."""
    angles = sinusoid_angles(length, features)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=-1).astype(np.float32)  # [L, d]


def fixed_permuted_offset_init(key: Array, shape: Sequence[int], dtype: Any = jnp.float32) -> Array:
    """``fixed_permuted_offset`` table (spec §4.2): random per-band phases, then shuffled columns.

    φ_sin, φ_cos ~ U[0, 2π) per band; columns [0, d/2) = sin(angle + φ_sin), [d/2, d) =
    cos(angle + φ_cos); all d columns are then randomly permuted. The draw is saved with the
    parameters and frozen, so a trained model must keep (or load) its own tables.
    """
    length, features = shape
    key_sin, key_cos, key_perm = jax.random.split(key, 3)
    angles = jnp.asarray(sinusoid_angles(length, features), jnp.float32)
    phase_sin = jax.random.uniform(key_sin, (features // 2,), maxval=2 * jnp.pi)
    phase_cos = jax.random.uniform(key_cos, (features // 2,), maxval=2 * jnp.pi)
    table = jnp.concatenate([jnp.sin(angles + phase_sin), jnp.cos(angles + phase_cos)], axis=-1)
    return table[:, jax.random.permutation(key_perm, features)].astype(dtype)


class FrozenPositionTable(nn.Module):
    """A frozen position table stored as a parameter; instantiate it with ``name='Embed_0'``.

    The original keeps the table as the ``embedding`` of an ``Embed`` module (hence the
    checkpoint path ``<scope>/Embed_0/embedding``) and stops its gradient (spec §4.2).
    ``frozen_param_mask`` marks it so the optimizer leaves it alone, too.
    """

    max_length: int
    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, positions: Array) -> Array:  # int [..., L] -> [..., L, features]
        table = self.param(
            "embedding",
            nn.with_logical_partitioning(fixed_permuted_offset_init, ("length", "embed")),
            (self.max_length, self.features),
            jnp.float32,
        )
        return jnp.take(jax.lax.stop_gradient(table), positions, axis=0).astype(self.dtype)


def terminal_relative_positions(context_mask: Array) -> Array:
    """Context positions with the last valid frame at C-1 (spec §4.2): jnp.roll(arange(C), L).

    L is the index of the first masked frame (C when none is masked), so frame j gets
    (j - L) mod C. Valid frames must form a prefix, as the feature converter guarantees.
    """
    num_frames = context_mask.shape[-1]
    invalid = context_mask <= 0  # [B, C]
    valid_length = jnp.where(jnp.any(invalid, -1), jnp.argmax(invalid, -1), num_frames)  # [B]
    return (jnp.arange(num_frames)[None, :] - valid_length[:, None]) % num_frames  # [B, C]


def timestep_embedding(noise_time: Array, features: int, max_time: float) -> Array:
    """Sinusoid of t * max_time, min timescale 1, max timescale max_time (spec §4.3).

    Args:
      noise_time: [batch] diffusion time in [0, 1].
    Returns:
      [batch, features]: sin half first, then cos.
    """
    half = features // 2
    inv_timescales = jnp.exp(-jnp.arange(half, dtype=jnp.float32) * math.log(max_time) / (half - 1))
    scaled_time = jnp.asarray(noise_time, jnp.float32)[:, None] * max_time * inv_timescales[None]
    return jnp.concatenate([jnp.sin(scaled_time), jnp.cos(scaled_time)], axis=-1)


# ------------------------------------------------------------------------------- attention


def make_attention_mask(query_mask: Array, key_mask: Array) -> Array:
    """[B, Lq] x [B, Lk] validity -> bool [B, 1, Lq, Lk]: True where the query may see the key."""
    return (query_mask[:, None, :, None] > 0) & (key_mask[:, None, None, :] > 0)


def make_causal_mask(length: int) -> Array:
    """bool [1, 1, L, L]: query i sees keys 0..i."""
    return jnp.tril(jnp.ones((length, length), dtype=bool))[None, None]


def zero_activations_if_masked(y: Array, mask: Array) -> Array:
    """Zeroes output rows whose keys are ALL masked (spec §4.1).

    Softmax over an all-masked row is uniform, not zero; for the CFG-unconditional pass (token and
    context masks both zero) the cross-attention must contribute nothing, so it is zeroed here.

    Args:
      y: [B, Lq, d] attention output.
      mask: [B, h, Lq, Lk] boolean attention mask (h = 1 or heads).
    """
    row_has_key = jnp.any(mask, axis=(1, 3))  # [B, Lq]
    return y * row_has_key[..., None].astype(y.dtype)


def dot_product_attention(
    query: Array,  # [B, Lq, H, Dh]
    key: Array,  # [B, Lk, H, Dh]
    value: Array,  # [B, Lk, H, Dh]
    mask: Array | None = None,  # bool [B, 1|H, Lq, Lk]
    *,
    dropout_rng: Array | None = None,
    dropout_rate: float = 0.0,
    dtype: Any = jnp.float32,
) -> Array:  # [B, Lq, H, Dh]
    """Softmax attention with NO 1/sqrt(Dh): T5 folds it into the query initializer (§4.1)."""
    # Heads-first operands ([B, H, L, Dh], explicit transposes) make both products plain batched
    # matmuls; with XLA:CPU choosing the layouts itself the attention ran at ~2/3 the speed.
    query, key, value = (jnp.swapaxes(x, 1, 2) for x in (query, key, value))
    logits = jnp.einsum("bhqd,bhkd->bhqk", query, key, preferred_element_type=jnp.float32)
    if mask is not None:
        logits = logits + jnp.where(mask, 0.0, MASK_BIAS).astype(jnp.float32)
    weights = jax.nn.softmax(logits, axis=-1).astype(dtype)  # softmax in float32
    if dropout_rng is not None and dropout_rate > 0.0:
        # One dropout mask shared by every query position (broadcast over the query axis, §4.1).
        keep_shape = weights.shape[:-2] + (1,) + weights.shape[-1:]
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, keep_shape)
        weights = weights * (keep.astype(dtype) / jnp.asarray(1.0 - dropout_rate, dtype))
    out = jnp.einsum("bhqk,bhkd->bhqd", weights, value.astype(dtype),
                     preferred_element_type=jnp.float32).astype(dtype)
    return jnp.swapaxes(out, 1, 2)


class KVCache(nn.Module):
    """Decode-time key/value cache ('cache' collection) for causal self-attention.

    Each call writes ``key``/``value`` ([B, l, H, Dh]) at the running index and returns the whole
    cache plus the causal mask of the l new queries over it. The first call (from
    ``jax.eval_shape`` of a full-length pass) fixes the cache length.
    """

    @nn.compact
    def __call__(self, key: Array, value: Array) -> tuple[Array, Array, Array]:
        cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
        index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
        step_length, cache_length = key.shape[1], cached_key.value.shape[1]
        start = index.value
        cached_key.value = jax.lax.dynamic_update_slice(
            cached_key.value, key.astype(cached_key.value.dtype), (0, start, 0, 0)
        )
        cached_value.value = jax.lax.dynamic_update_slice(
            cached_value.value, value.astype(cached_value.value.dtype), (0, start, 0, 0)
        )
        index.value = start + step_length
        query_positions = start + jnp.arange(step_length)
        mask = jnp.arange(cache_length)[None, :] <= query_positions[:, None]  # [l, cache]
        return cached_key.value, cached_value.value, mask[None, None]


class MultiHeadDotProductAttention(nn.Module):
    """T5 multi-head attention: q/k/v [d, H*Dh] and out [H*Dh, d] kernels, no biases.

    Attributes:
      features: output width d.
    """

    features: int
    num_heads: int
    head_dim: int
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    kernel_init: Initializer = attention_kernel_init

    def setup(self):
        depth_scaling = math.sqrt(self.head_dim)

        def query_init(*args):
            # The 1/sqrt(Dh) of scaled dot-product attention lives here, not at runtime (§4.1).
            return self.kernel_init(*args) / depth_scaling

        projection = functools.partial(
            DenseGeneral,
            features=(self.num_heads, self.head_dim),
            kernel_axes=("embed", "joined_kv"),
            dtype=self.dtype,
        )
        self.query = projection(kernel_init=query_init)
        self.key = projection(kernel_init=self.kernel_init)
        self.value = projection(kernel_init=self.kernel_init)
        self.out = DenseGeneral(
            features=self.features,
            axis=(-2, -1),
            kernel_axes=("joined_kv", "embed"),
            kernel_init=self.kernel_init,
            dtype=self.dtype,
        )
        self.cache = KVCache()

    def project_kv(self, inputs_kv: Array) -> tuple[Array, Array]:
        """[B, S, d] -> (key, value), each [B, S, H, Dh]; reusable across denoising steps."""
        key = constrain(self.key(inputs_kv), "batch", "length", "heads", "kv")
        value = constrain(self.value(inputs_kv), "batch", "length", "heads", "kv")
        return key, value

    def __call__(
        self,
        inputs_q: Array,  # [B, Lq, d]
        inputs_kv: Array | None,  # [B, Lk, d]; may be None when kv is given
        mask: Array | None = None,  # bool [B, 1|H, Lq, Lk]
        *,
        kv: tuple[Array, Array] | None = None,  # precomputed project_kv(inputs_kv)
        decode: bool = False,
        deterministic: bool = True,
    ) -> Array:  # [B, Lq, d]
        query = constrain(self.query(inputs_q), "batch", "length", "heads", "kv")
        key, value = self.project_kv(inputs_kv) if kv is None else kv
        if decode:
            key, value, cache_mask = self.cache(key, value)
            mask = cache_mask if mask is None else mask & cache_mask
        dropout_rng = None
        if not deterministic and self.dropout_rate > 0.0:
            dropout_rng = self.make_rng("dropout")
        x = dot_product_attention(
            query, key, value, mask,
            dropout_rng=dropout_rng, dropout_rate=self.dropout_rate, dtype=self.dtype,
        )
        return self.out(x)


# ------------------------------------------------------------------------- MLP and FiLM


class MlpBlock(nn.Module):
    """Gated GELU MLP: (gelu_tanh(x W_i0) * (x W_i1)) -> dropout -> W_o (spec §4.1)."""

    intermediate_dim: int
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool) -> Array:  # [B, L, d] -> [B, L, d]
        dense = functools.partial(
            DenseGeneral, self.intermediate_dim, kernel_axes=("embed", "mlp"), dtype=self.dtype
        )
        # flax's gelu defaults to the tanh approximation, which the original therefore used.
        hidden = nn.gelu(dense(name="wi_0")(x), approximate=True) * dense(name="wi_1")(x)
        hidden = dropout(self.dropout_rate)(hidden, deterministic=deterministic)
        hidden = constrain(hidden, "batch", "length", "mlp")
        return DenseGeneral(
            x.shape[-1], kernel_axes=("mlp", "embed"), dtype=self.dtype, name="wo"
        )(hidden)


class FiLMLayer(nn.Module):
    """x * (1 + scale) + shift with (scale, shift) = split(Dense_{4d->2d}(cond)) (spec §4.1)."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, conditioning: Array) -> Array:
        # x: [B, L, d]; conditioning: [B, 1, 4d], broadcast over length.
        features = x.shape[-1]
        scale_shift = DenseGeneral(
            2 * features, kernel_axes=("time_embed", "film"), dtype=self.dtype,
            name="DenseGeneral_0",
        )(conditioning)
        scale, shift = scale_shift[..., :features], scale_shift[..., features:]  # scale first
        return x * (1 + scale) + shift


# --------------------------------------------------------------------- parameter utilities


def _is_frozen_path(path: Sequence[Any]) -> bool:
    return any(getattr(entry, "key", None) == "Embed_0" for entry in path)


def frozen_param_mask(params: Any) -> Any:
    """Bool pytree like ``params``: True for the frozen ``Embed_0`` position tables (§4.2)."""
    return jax.tree_util.tree_map_with_path(lambda path, _: _is_frozen_path(path), params)


def count_parameters(params: Any, *, include_frozen: bool = False) -> int:
    """Number of scalars in ``params`` (arrays or ShapeDtypeStructs, boxed or not)."""
    total = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if include_frozen or not _is_frozen_path(path):
            total += int(np.prod(leaf.shape))
    return total
