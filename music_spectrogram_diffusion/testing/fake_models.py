"""A tiny stand-in model with the real models' interface, for fast trainer tests.

``FakeSpectrogramModel`` follows the model contract (``models.contract.SpectrogramModel``):
``init(rng, batch)`` returns parameters boxed with flax logical axis names, ``loss_fn`` takes an
explicit dropout key, ``predict`` returns [B, 256, 128] log-mel. It has a frozen ``Embed_0``
position table, a model-parallel ('mlp') kernel and dropout, so freezing, sharding and RNG
plumbing are all exercised. It learns a per-frame spectrogram from mean-pooled token embeddings.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from music_spectrogram_diffusion.diffusion.samplers import SamplerConfig
from music_spectrogram_diffusion.features import DEFAULT_FEATURES
from music_spectrogram_diffusion.models.config import T5Config
from music_spectrogram_diffusion.models.contract import LOSS_WEIGHT, split_loss_keys


class _FakeNetwork(nn.Module):
    vocab_size: int
    emb_dim: int
    mlp_dim: int
    num_frames: int
    num_mels: int
    dropout_rate: float

    @nn.compact
    def __call__(self, note_tokens, context_frames, context_mask, *, deterministic: bool):
        embed = self.param(
            "token_embedding",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed")),
            (self.vocab_size, self.emb_dim),
        )
        # Frozen like the real models' position tables (spec §4.2): never updated.
        positions = jax.lax.stop_gradient(
            nn.Embed(
                self.num_frames,
                self.emb_dim,
                embedding_init=nn.with_logical_partitioning(
                    nn.initializers.normal(1.0), ("length", "embed")
                ),
                name="Embed_0",
            ).embedding
        )
        token_mask = (note_tokens > 0).astype(jnp.float32)[..., None]  # [B, L, 1]
        pooled = (embed[note_tokens] * token_mask).sum(1) / jnp.maximum(token_mask.sum(1), 1.0)
        context = (context_frames * context_mask[..., None]).mean(axis=(1, 2))[:, None]  # [B, 1]
        h = pooled[:, None, :] + 0.1 * positions[None] + 0.01 * context[..., None]  # [B, T, d]
        h = nn.Dropout(self.dropout_rate, broadcast_dims=(1,))(h, deterministic=deterministic)
        h = nn.gelu(
            nn.Dense(
                self.mlp_dim,
                use_bias=False,
                kernel_init=nn.with_logical_partitioning(
                    nn.initializers.lecun_normal(), ("embed", "mlp")
                ),
                name="wi",
            )(h)
        )
        return nn.Dense(
            self.num_mels,
            use_bias=False,
            kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("mlp", "mel")),
            name="wo",
        )(h)  # [B, T, mels]


@dataclasses.dataclass(frozen=True)
class FakeSpectrogramModel:
    """Predicts scaled log-mel frames; loss = masked mean absolute error."""

    vocab_size: int = 1536
    emb_dim: int = 16
    mlp_dim: int = 32
    dropout_rate: float = 0.1
    with_context: bool = False

    @property
    def network_config(self) -> T5Config:
        """The batch shapes (the fake network's own sizes are the fields above)."""
        return T5Config.tiny(vocab_size=self.vocab_size)

    @property
    def network(self) -> _FakeNetwork:
        return _FakeNetwork(
            self.vocab_size,
            self.emb_dim,
            self.mlp_dim,
            DEFAULT_FEATURES.segment_frames,
            DEFAULT_FEATURES.num_mels,
            self.dropout_rate,
        )

    def _inputs(self, batch):
        context = batch.get("context_frames")
        if not self.with_context or context is None:
            context = jnp.zeros(batch["target_frames"].shape, jnp.float32)
            mask = jnp.zeros(batch["target_frames"].shape[:2], jnp.float32)
        else:
            mask = batch["context_mask"]
        scale = -DEFAULT_FEATURES.min_log_mel
        return batch["note_tokens"], context / scale, mask

    def init(self, rng: jax.Array, batch: dict) -> Any:
        return self.network.init({"params": rng}, *self._inputs(batch), deterministic=True)

    def loss_fn(self, params: Any, batch: dict, rng: jax.Array, *, train: bool = True):
        dropout_rng, _ = split_loss_keys(rng, batch["note_tokens"].shape[0])
        out = self.network.apply(
            params, *self._inputs(batch), deterministic=not train, rngs={"dropout": dropout_rng}
        )
        target = batch["target_frames"] / -DEFAULT_FEATURES.min_log_mel
        mask = batch["target_mask"]
        frames = jnp.maximum(mask.sum(), 1.0)
        loss = (jnp.abs(out - target).mean(-1) * mask).sum() / frames
        return loss, {"loss": loss, LOSS_WEIGHT: mask.sum(),
                      "target_frames": mask.sum() / mask.shape[0]}

    def encode(self, params: Any, batch: dict) -> Any:
        del params
        return self._inputs(batch)

    def predict(self, params: Any, batch: dict, rng: jax.Array, *,
                sampler: SamplerConfig | None = None, **unused_options) -> jax.Array:
        del rng, sampler
        out = self.network.apply(params, *self._inputs(batch), deterministic=True)
        return out * -DEFAULT_FEATURES.min_log_mel


def frozen_param_mask(params: Any) -> Any:
    """True for parameters under an ``Embed_0`` scope (the models.layers rule, spec §4.2)."""

    def frozen(path, _):
        return any(getattr(k, "key", None) == "Embed_0" for k in path)

    return jax.tree_util.tree_map_with_path(frozen, params)


def random_batch(seed: int, batch_size: int, *, num_tokens: int = 2048) -> dict[str, np.ndarray]:
    """A model batch with random tokens and spectrogram frames (interface layout)."""
    rng = np.random.default_rng(seed)
    features = DEFAULT_FEATURES
    tokens = np.zeros((batch_size, num_tokens), np.int32)
    lengths = rng.integers(5, 40, size=batch_size)
    for b, n in enumerate(lengths):
        tokens[b, :n] = rng.integers(3, 1000, size=n)
        tokens[b, n - 1] = 1
    frames = rng.uniform(features.min_log_mel, 2.0, (batch_size, features.segment_frames, 128))
    context = rng.uniform(features.min_log_mel, 2.0, (batch_size, features.context_frames, 128))
    return {
        "note_tokens": tokens,
        "target_frames": frames.astype(np.float32),
        "target_mask": np.ones((batch_size, features.segment_frames), np.float32),
        "context_frames": context.astype(np.float32),
        "context_mask": np.ones((batch_size, features.context_frames), np.float32),
    }


@dataclasses.dataclass(frozen=True)
class FakeBatchSource:
    """A learnable toy dataset: a fixed pool of random examples, drawn by (seed, index).

    Batch ``index`` is a pure function of (seed, index), as the trainer's BatchSource requires.
    """

    pool_size: int = 8
    pool_seed: int = 1234

    def _pool(self) -> dict[str, np.ndarray]:
        return random_batch(self.pool_seed, self.pool_size)

    def get_batch(
        self, index: int, batch_size: int, *, seed: int, rows: slice | None = None
    ) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([seed, index])
        picks = rng.integers(0, self.pool_size, size=batch_size)
        if rows is not None:
            picks = picks[rows]
        return {k: v[picks] for k, v in self._pool().items()}
