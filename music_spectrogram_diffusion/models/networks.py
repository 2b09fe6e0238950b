"""The three T5 encoder-decoders (spec §4.3-§4.5).

* ``ContextTransformer``: note encoder + context encoder + FiLM diffusion decoder (the paper's
  model, ``ContinuousContextTransformer`` in the original).
* ``NoContextTransformer``: note encoder + FiLM diffusion decoder (the original ``Transformer``).
* ``AutoregressiveTransformer``: plain T5.1.1 encoder-decoder with a causal decoder that reads the
  previous raw log-mel frame (the ablation baseline).

Module and parameter names are the original checkpoint tree's (spec §4.7), including the
unlovely ``MultiHeadDotProductAttention_0`` and ``Embed_0``: released t5x checkpoints then map one
to one onto these parameters with no renaming. Do not rename them.

The diffusion networks split into ``encode`` (once per segment), ``cross_attention_kv`` (once per
segment: the cross-attention keys/values of every decoder layer) and ``decode`` (once per
denoising step), so a sampler never re-runs the encoders (spec §11.15).

Other notes on spec §11:
* §11.13: the context encoder and the decoder own separate random position tables, so context
  position C-1 does not "continue" into decoder position 0. Kept as in the original, because
  the released checkpoints carry exactly these three tables.
* §11.15: ``T5Config.dtype='bfloat16'`` runs the transformer in bfloat16 while parameters, norms,
  softmax and the spectrogram output stay float32 (the original found bfloat16 sampling state
  much worse, so the diffusion state itself never leaves float32). Padded encoder positions
  are masked as queries as well as keys.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from music_spectrogram_diffusion.models import layers
from music_spectrogram_diffusion.models.config import T5Config

Array = jax.Array
CrossKV = tuple[tuple[Array, Array], ...]  # per decoder layer: (key, value), each [B, S, H, Dh]


def _check_length(name: str, length: int, table_length: int) -> None:
    if length > table_length:
        raise ValueError(
            f"{name} has length {length} but the network's position table has {table_length} "
            f"rows; raise T5Config accordingly or cut the input"
        )


def _attention(cfg: T5Config, **kwargs: Any) -> layers.MultiHeadDotProductAttention:
    return layers.MultiHeadDotProductAttention(
        features=cfg.emb_dim,
        num_heads=cfg.num_heads,
        head_dim=cfg.head_dim,
        dropout_rate=cfg.dropout_rate,
        dtype=cfg.activation_dtype,
        **kwargs,
    )


def _mel_projection(cfg: T5Config, **kwargs: Any) -> layers.DenseGeneral:
    # 128 log-mel bins -> d; the decoder's input projection is lecun-normal (spec §4.3).
    return layers.DenseGeneral(
        cfg.emb_dim, kernel_axes=("mel", "embed"), dtype=cfg.activation_dtype, **kwargs
    )


def _spec_out(cfg: T5Config, **kwargs: Any) -> layers.DenseGeneral:
    # d -> 128 in float32 whatever the activation dtype (spec §4.3 step 4).
    return layers.DenseGeneral(
        cfg.num_mels, kernel_axes=("embed", "mel"), dtype=jnp.float32, **kwargs
    )


class EncoderLayer(nn.Module):
    """Pre-norm self-attention and gated MLP with residuals (token and context encoders)."""

    config: T5Config

    @nn.compact
    def __call__(self, x: Array, mask: Array, *, deterministic: bool) -> Array:
        cfg = self.config
        dtype = cfg.activation_dtype
        y = layers.RMSNorm(dtype=dtype, name="pre_attention_layer_norm")(x)
        y = _attention(cfg, name="attention")(y, y, mask, deterministic=deterministic)
        x = x + layers.dropout(cfg.dropout_rate)(y, deterministic=deterministic)
        y = layers.RMSNorm(dtype=dtype, name="pre_mlp_layer_norm")(x)
        y = layers.MlpBlock(cfg.mlp_dim, cfg.dropout_rate, dtype, name="mlp")(
            y, deterministic=deterministic
        )
        x = x + layers.dropout(cfg.dropout_rate)(y, deterministic=deterministic)
        return layers.constrain(x, "batch", "length", "embed")


def _encoder_stack(
    cfg: T5Config, x: Array, mask: Array, *, deterministic: bool
) -> Array:
    """Input dropout, N EncoderLayers, final norm (named as the caller's scope expects)."""
    x = layers.dropout(cfg.dropout_rate)(x, deterministic=deterministic)
    attention_mask = layers.make_attention_mask(mask, mask)  # [B, 1, L, L]
    for i in range(cfg.num_encoder_layers):
        x = EncoderLayer(cfg, name=f"layers_{i}")(x, attention_mask, deterministic=deterministic)
    x = layers.RMSNorm(dtype=cfg.activation_dtype, name="encoder_norm")(x)
    # The one element-wise (not length-broadcast) dropout of the original (spec §4.1).
    return nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)


class TokenEncoder(nn.Module):
    """Note tokens -> encodings (scope ``token_encoder``, or ``encoder`` without context)."""

    config: T5Config

    @nn.compact
    def __call__(self, note_tokens: Array, *, deterministic: bool) -> tuple[Array, Array]:
        # note_tokens: int [B, L] (0 = padding) -> ([B, L, d], bool [B, L])
        cfg = self.config
        length = note_tokens.shape[1]
        _check_length("note_tokens", length, cfg.note_tokens_length)
        x = layers.Embed(
            cfg.vocab_size, cfg.emb_dim, dtype=cfg.activation_dtype, name="token_embedder"
        )(note_tokens)
        x = x + layers.FrozenPositionTable(
            cfg.note_tokens_length, cfg.emb_dim, cfg.activation_dtype, name="Embed_0"
        )(jnp.arange(length)[None])
        mask = note_tokens > 0
        x = layers.constrain(x, "batch", "length", "embed")
        return _encoder_stack(cfg, x, mask, deterministic=deterministic), mask


class ContinuousEncoder(nn.Module):
    """Previous segment's scaled log-mel -> encodings (scope ``continuous_encoder``)."""

    config: T5Config

    @nn.compact
    def __call__(
        self, context_frames: Array, context_mask: Array, *, deterministic: bool
    ) -> tuple[Array, Array]:
        # context_frames: [B, C, mels] in [-1, 1]; context_mask: [B, C], valid frames a prefix.
        cfg = self.config
        _check_length("context_frames", context_frames.shape[1], cfg.context_frames)
        x = _mel_projection(cfg, name="input_proj")(context_frames)
        # Terminal-relative positions (spec §4.2): the frame just before the target is C-1.
        positions = layers.terminal_relative_positions(context_mask)
        x = x + layers.FrozenPositionTable(
            cfg.context_frames, cfg.emb_dim, cfg.activation_dtype, name="Embed_0"
        )(positions)
        mask = context_mask > 0
        x = layers.constrain(x, "batch", "length", "embed")
        return _encoder_stack(cfg, x, mask, deterministic=deterministic), mask


class DiffusionDecoderLayer(nn.Module):
    """FiLM self-attention, cross-attention over the encodings, FiLM MLP (spec §4.3 step 3)."""

    config: T5Config

    def setup(self):
        cfg = self.config
        dtype = cfg.activation_dtype
        self.pre_self_attention_layer_norm = layers.RMSNorm(dtype=dtype)
        self.FiLMLayer_0 = layers.FiLMLayer(dtype=dtype)
        self.self_attention = _attention(cfg)
        self.pre_cross_attention_layer_norm = layers.RMSNorm(dtype=dtype)
        self.MultiHeadDotProductAttention_0 = _attention(cfg)
        self.pre_mlp_layer_norm = layers.RMSNorm(dtype=dtype)
        self.FiLMLayer_1 = layers.FiLMLayer(dtype=dtype)
        self.mlp = layers.MlpBlock(cfg.mlp_dim, cfg.dropout_rate, dtype)
        self.residual_dropout = layers.dropout(cfg.dropout_rate)

    def cross_attention_kv(self, encodings: Array) -> tuple[Array, Array]:
        return self.MultiHeadDotProductAttention_0.project_kv(encodings)

    def __call__(
        self,
        x: Array,  # [B, T, d]
        conditioning: Array,  # [B, 1, 4d]
        encodings: Array | None,  # [B, S, d]
        cross_mask: Array,  # bool [B, 1, T, S]
        *,
        cross_kv: tuple[Array, Array] | None,
        deterministic: bool,
    ) -> Array:
        # Self-attention is unmasked and bidirectional: every target frame is noise of one step.
        y = self.FiLMLayer_0(self.pre_self_attention_layer_norm(x), conditioning)
        y = self.self_attention(y, y, None, deterministic=deterministic)
        x = x + self.residual_dropout(y, deterministic=deterministic)

        y = self.pre_cross_attention_layer_norm(x)
        y = self.MultiHeadDotProductAttention_0(
            y, encodings, cross_mask, kv=cross_kv, deterministic=deterministic
        )
        y = layers.zero_activations_if_masked(y, cross_mask)
        x = x + self.residual_dropout(y, deterministic=deterministic)

        y = self.FiLMLayer_1(self.pre_mlp_layer_norm(x), conditioning)
        y = self.mlp(y, deterministic=deterministic)
        x = x + self.residual_dropout(y, deterministic=deterministic)
        return layers.constrain(x, "batch", "length", "embed")


class DiffusionDecoder(nn.Module):
    """Noisy scaled log-mel + noise time + encodings -> predicted ε (scope ``decoder``)."""

    config: T5Config

    def setup(self):
        cfg = self.config
        dtype = cfg.activation_dtype
        self.time_emb_dense0 = layers.DenseGeneral(
            4 * cfg.emb_dim, kernel_axes=("embed", "mlp"), dtype=dtype
        )
        self.time_emb_dense1 = layers.DenseGeneral(
            4 * cfg.emb_dim, kernel_axes=("mlp", "time_embed"), dtype=dtype
        )
        self.Embed_0 = layers.FrozenPositionTable(cfg.target_frames, cfg.emb_dim, dtype)
        self.continuous_inputs_projection = _mel_projection(
            cfg, kernel_init=nn.initializers.lecun_normal()
        )
        self.layers = [DiffusionDecoderLayer(cfg) for _ in range(cfg.num_decoder_layers)]
        self.decoder_norm = layers.RMSNorm(dtype=dtype)
        self.spec_out_dense = _spec_out(cfg)
        self.dropout = layers.dropout(cfg.dropout_rate)

    def cross_attention_kv(self, encodings: Array) -> CrossKV:
        return tuple(layer.cross_attention_kv(encodings) for layer in self.layers)

    def __call__(
        self,
        noisy_frames: Array,  # [B, T, mels], scaled to [-1, 1] (z_t)
        noise_time: Array,  # [B] in [0, 1]
        encodings: Array | None,  # [B, S, d]; may be None when cross_kv is given
        encoding_mask: Array,  # [B, S], > 0 = valid
        *,
        cross_kv: CrossKV | None,
        deterministic: bool,
    ) -> Array:  # [B, T, mels] float32
        cfg = self.config
        dtype = cfg.activation_dtype
        batch, num_frames, _ = noisy_frames.shape
        _check_length("noisy_frames", num_frames, cfg.target_frames)
        if cross_kv is None and encodings is None:
            raise ValueError("DiffusionDecoder needs encodings or precomputed cross_kv")
        if cross_kv is not None and len(cross_kv) != cfg.num_decoder_layers:
            raise ValueError(
                f"cross_kv has {len(cross_kv)} layers, the decoder {cfg.num_decoder_layers}"
            )

        # Time conditioning (spec §4.3 step 1): sinusoid of t * 2e4, then a 2-layer swish MLP.
        time = layers.timestep_embedding(noise_time, cfg.emb_dim, cfg.max_decoder_noise_time)
        time = nn.swish(self.time_emb_dense0(time.astype(dtype)))
        conditioning = nn.swish(self.time_emb_dense1(time))[:, None, :]  # [B, 1, 4d]

        x = self.continuous_inputs_projection(noisy_frames)
        x = x + self.Embed_0(jnp.arange(num_frames)[None])
        x = self.dropout(layers.constrain(x, "batch", "length", "embed"), deterministic=deterministic)

        cross_mask = layers.make_attention_mask(
            jnp.ones((batch, num_frames), bool), encoding_mask
        )  # [B, 1, T, S]: the concat of note and context masks (``concat_encodings``)
        for i, layer in enumerate(self.layers):
            x = layer(
                x, conditioning, encodings, cross_mask,
                cross_kv=None if cross_kv is None else cross_kv[i],
                deterministic=deterministic,
            )
        x = self.dropout(self.decoder_norm(x), deterministic=deterministic)
        return self.spec_out_dense(x.astype(jnp.float32))


class ContextTransformer(nn.Module):
    """Diffusion network with a context encoder (spec §4.3; scopes token_encoder,
    continuous_encoder, decoder). The decoder cross-attends to concat([notes, context])."""

    config: T5Config

    def setup(self):
        self.token_encoder = TokenEncoder(self.config)
        self.continuous_encoder = ContinuousEncoder(self.config)
        self.decoder = DiffusionDecoder(self.config)

    def encode(
        self,
        note_tokens: Array,  # int32 [B, L]
        context_frames: Array | None,  # [B, C, mels] scaled to [-1, 1]
        context_mask: Array | None,  # [B, C]
        *,
        deterministic: bool,
    ) -> tuple[Array, Array]:  # ([B, L + C, d], bool [B, L + C])
        if context_frames is None or context_mask is None:
            raise ValueError("ContextTransformer.encode needs context_frames and context_mask")
        tokens, token_mask = self.token_encoder(note_tokens, deterministic=deterministic)
        context, context_mask = self.continuous_encoder(
            context_frames, context_mask, deterministic=deterministic
        )
        encodings = jnp.concatenate([tokens, context], axis=1)
        return encodings, jnp.concatenate([token_mask, context_mask], axis=1)

    def cross_attention_kv(self, encodings: Array) -> CrossKV:
        return self.decoder.cross_attention_kv(encodings)

    def decode(
        self,
        noisy_frames: Array,
        noise_time: Array,
        encodings: Array | None,
        encoding_mask: Array,
        *,
        cross_kv: CrossKV | None = None,
        deterministic: bool,
    ) -> Array:  # predicted ε [B, T, mels]
        return self.decoder(
            noisy_frames, noise_time, encodings, encoding_mask,
            cross_kv=cross_kv, deterministic=deterministic,
        )

    def __call__(
        self,
        note_tokens: Array,
        context_frames: Array | None,
        context_mask: Array | None,
        noisy_frames: Array,
        noise_time: Array,
        *,
        deterministic: bool,
    ) -> Array:
        encodings, mask = self.encode(
            note_tokens, context_frames, context_mask, deterministic=deterministic
        )
        return self.decode(noisy_frames, noise_time, encodings, mask, deterministic=deterministic)


class NoContextTransformer(ContextTransformer):
    """Diffusion network without context (spec §4.4; scopes encoder, decoder).

    Accepts the context arguments for a uniform call signature and ignores them.
    """

    def setup(self):
        self.encoder = TokenEncoder(self.config)
        self.decoder = DiffusionDecoder(self.config)

    def encode(
        self,
        note_tokens: Array,
        context_frames: Array | None = None,
        context_mask: Array | None = None,
        *,
        deterministic: bool,
    ) -> tuple[Array, Array]:  # ([B, L, d], bool [B, L])
        del context_frames, context_mask  # no context encoder in this model
        return self.encoder(note_tokens, deterministic=deterministic)


# ------------------------------------------------------------------------- autoregressive


class AutoregressiveDecoderLayer(nn.Module):
    """T5.1.1 decoder layer: causal self-attention, encoder-decoder attention, MLP (§4.5)."""

    config: T5Config

    @nn.compact
    def __call__(
        self, x: Array, encodings: Array, cross_mask: Array, *, decode: bool, deterministic: bool
    ) -> Array:
        cfg = self.config
        dtype = cfg.activation_dtype
        drop = layers.dropout(cfg.dropout_rate)
        y = layers.RMSNorm(dtype=dtype, name="pre_self_attention_layer_norm")(x)
        # In decode mode the KV cache supplies the causal mask over everything decoded so far.
        causal = None if decode else layers.make_causal_mask(x.shape[1])
        y = _attention(cfg, name="self_attention")(
            y, y, causal, decode=decode, deterministic=deterministic
        )
        x = x + drop(y, deterministic=deterministic)
        y = layers.RMSNorm(dtype=dtype, name="pre_cross_attention_layer_norm")(x)
        y = _attention(cfg, name="encoder_decoder_attention")(
            y, encodings, cross_mask, deterministic=deterministic
        )
        x = x + drop(y, deterministic=deterministic)
        y = layers.RMSNorm(dtype=dtype, name="pre_mlp_layer_norm")(x)
        y = layers.MlpBlock(cfg.mlp_dim, cfg.dropout_rate, dtype, name="mlp")(
            y, deterministic=deterministic
        )
        x = x + drop(y, deterministic=deterministic)
        return layers.constrain(x, "batch", "length", "embed")


class AutoregressiveTransformer(nn.Module):
    """T5.1.1 encoder-decoder predicting each raw log-mel frame from the previous ones (§4.5).

    Scopes as t5x's ``Transformer``: ``token_embedder`` (top level), ``encoder/{layers_i,
    encoder_norm}``, ``decoder/{continuous_inputs_projection, layers_i/{self_attention,
    encoder_decoder_attention, ...}, decoder_norm, spec_out_dense}``. Positions are the plain
    sinusoid (``FixedEmbed``, max length 2048), not a parameter.

    Differs from the original on purpose: the encoder self-attention masks padding tokens (the
    original attends to all 2048 slots, so a segment's encoding depended on its padding).
    """

    config: T5Config
    max_position: int = 2048  # FixedEmbed max_length of encoder and decoder

    def setup(self):
        cfg = self.config
        self.token_embedder = layers.Embed(cfg.vocab_size, cfg.emb_dim, dtype=cfg.activation_dtype)
        self.encoder = _AutoregressiveEncoder(cfg, self.token_embedder, self.max_position)
        self.decoder = _AutoregressiveDecoder(cfg, self.max_position)

    def encode(self, note_tokens: Array, *, deterministic: bool) -> tuple[Array, Array]:
        return self.encoder(note_tokens, deterministic=deterministic)  # ([B, L, d], bool [B, L])

    def decode(
        self,
        decoder_inputs: Array,  # [B, T, mels]: raw log-mel of the PREVIOUS frames
        encodings: Array,  # [B, L, d]
        encoding_mask: Array,  # [B, L]
        *,
        decoder_positions: Array | None = None,  # int [T]; default 0..T-1
        decode: bool = False,
        deterministic: bool,
    ) -> Array:  # [B, T, mels] predicted raw log-mel
        return self.decoder(
            decoder_inputs, encodings, encoding_mask,
            decoder_positions=decoder_positions, decode=decode, deterministic=deterministic,
        )

    def __call__(
        self, note_tokens: Array, decoder_inputs: Array, *, deterministic: bool
    ) -> Array:
        encodings, mask = self.encode(note_tokens, deterministic=deterministic)
        return self.decode(decoder_inputs, encodings, mask, deterministic=deterministic)


class _AutoregressiveEncoder(nn.Module):
    config: T5Config
    token_embedder: layers.Embed
    max_position: int

    @nn.compact
    def __call__(self, note_tokens: Array, *, deterministic: bool) -> tuple[Array, Array]:
        cfg = self.config
        length = note_tokens.shape[1]
        _check_length("note_tokens", length, self.max_position)
        positions = layers.sinusoid_table(length, cfg.emb_dim)  # rows 0..L-1 of the 2048 table
        x = self.token_embedder(note_tokens) + jnp.asarray(positions, cfg.activation_dtype)[None]
        mask = note_tokens > 0
        return _encoder_stack(cfg, x, mask, deterministic=deterministic), mask


class _AutoregressiveDecoder(nn.Module):
    config: T5Config
    max_position: int

    @nn.compact
    def __call__(
        self,
        decoder_inputs: Array,
        encodings: Array,
        encoding_mask: Array,
        *,
        decoder_positions: Array | None,
        decode: bool,
        deterministic: bool,
    ) -> Array:
        cfg = self.config
        batch, num_frames, _ = decoder_inputs.shape
        if decoder_positions is None:
            _check_length("decoder_inputs", num_frames, self.max_position)
            decoder_positions = jnp.arange(num_frames)
        table = jnp.asarray(layers.sinusoid_table(self.max_position, cfg.emb_dim))
        x = _mel_projection(cfg, kernel_init=nn.initializers.lecun_normal(),
                            name="continuous_inputs_projection")(decoder_inputs)
        x = x + jnp.take(table, decoder_positions, axis=0).astype(cfg.activation_dtype)[None]
        x = layers.dropout(cfg.dropout_rate)(x, deterministic=deterministic)
        cross_mask = layers.make_attention_mask(
            jnp.ones((batch, num_frames), bool), encoding_mask
        )
        for i in range(cfg.num_decoder_layers):
            x = AutoregressiveDecoderLayer(cfg, name=f"layers_{i}")(
                x, encodings, cross_mask, decode=decode, deterministic=deterministic
            )
        x = layers.RMSNorm(dtype=cfg.activation_dtype, name="decoder_norm")(x)
        x = layers.dropout(cfg.dropout_rate)(x, deterministic=deterministic)
        return _spec_out(cfg, name="spec_out_dense")(x.astype(jnp.float32))
