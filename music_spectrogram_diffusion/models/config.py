"""Sizes of the T5 networks (spec §4.3, §4.6): one frozen dataclass shared by every model.

The named sizes are the original gin files' (``gin/models/diffusion/context/t5_{small,base,large}``);
``tiny`` is ours, for CPU tests. Every size uses head_dim 64 except tiny, gated tanh-GELU MLPs
and dropout 0.1 (0 for tiny). Note that ``small`` has 6 x 64 = 384 attention channels, not
``emb_dim`` = 512: the q/k/v kernels are [d, H*Dh], never assumed square.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from music_spectrogram_diffusion.data import vocabularies

_VALID_DTYPES = ("float32", "bfloat16")

# name -> the fields that differ from the T5Config defaults (which are 'small').
_NAMED_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        emb_dim=32,
        num_heads=2,
        head_dim=16,
        num_encoder_layers=2,
        num_decoder_layers=2,
        mlp_dim=64,
        dropout_rate=0.0,
    ),
    "small": dict(),
    "base": dict(
        emb_dim=768, num_heads=12, num_encoder_layers=12, num_decoder_layers=12, mlp_dim=2048
    ),
    "large": dict(
        emb_dim=1024, num_heads=16, num_encoder_layers=24, num_decoder_layers=24, mlp_dim=2816
    ),
}


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Hyper-parameters of the encoders and decoders.

    Attributes:
      vocab_size: note-token embedding rows; 1536 = ``num_embeddings`` of the MT3 vocabulary with
        1 velocity bin (spec §1.1), 1664 with 127 bins. The model gins derive it from the
        vocabulary (``token_embedding_rows``), so it always holds the tasks' token ids.
      emb_dim: model width d.
      num_heads: attention heads H.
      head_dim: channels per head Dh (H*Dh need not equal d).
      num_encoder_layers: layers of the note encoder and of the context encoder.
      num_decoder_layers: layers of the decoder.
      mlp_dim: hidden width of the gated MLP.
      dropout_rate: T5 dropout, broadcast over length (spec §4.1).
      max_decoder_noise_time: the time embedding sees t * this, with this as its max timescale
        (spec §4.3; the diffusers port's 2000 default is wrong, §9.1).
      dtype: activation dtype, 'float32' or 'bfloat16'. Parameters are always float32, norms
        and softmax are computed in float32 and the spectrogram output is float32.
      note_tokens_length: rows of the note encoder's frozen position table (2048 tokens).
      target_frames: rows of the decoder's position table (256 frames = 5.12 s).
      context_frames: rows of the context encoder's position table (256 frames).
      num_mels: spectrogram bins in and out.
    """

    vocab_size: int = 1536
    emb_dim: int = 512
    num_heads: int = 6
    head_dim: int = 64
    num_encoder_layers: int = 8
    num_decoder_layers: int = 8
    mlp_dim: int = 1024
    dropout_rate: float = 0.1
    max_decoder_noise_time: float = 2e4
    dtype: str = "float32"
    note_tokens_length: int = 2048
    target_frames: int = 256
    context_frames: int = 256
    num_mels: int = 128

    def __post_init__(self):
        if self.dtype not in _VALID_DTYPES:
            raise ValueError(
                f"T5Config.dtype={self.dtype!r} is not supported; valid values: {_VALID_DTYPES}"
            )
        positive = (
            "vocab_size", "emb_dim", "num_heads", "head_dim", "num_encoder_layers",
            "num_decoder_layers", "mlp_dim", "note_tokens_length", "target_frames",
            "context_frames", "num_mels",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"T5Config.{name} must be a positive int, got {value!r}")
        # The sinusoids of §4.2/§4.3 split d into two halves of d/2 bands with d/2 - 1 in a
        # denominator, so d must be even and at least 4.
        if self.emb_dim % 2 or self.emb_dim < 4:
            raise ValueError(f"T5Config.emb_dim must be even and >= 4, got {self.emb_dim}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"T5Config.dropout_rate must be in [0, 1), got {self.dropout_rate}")
        if self.max_decoder_noise_time <= 1.0:
            raise ValueError(
                f"T5Config.max_decoder_noise_time must be > 1, got {self.max_decoder_noise_time}"
            )

    @property
    def activation_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    @classmethod
    def named(cls, name: str, **overrides: Any) -> "T5Config":
        """The size ``name`` ('tiny', 'small', 'base', 'large') with optional field overrides."""
        if name not in _NAMED_SIZES:
            raise ValueError(f"Unknown T5Config size {name!r}; valid sizes: {tuple(_NAMED_SIZES)}")
        return cls(**{**_NAMED_SIZES[name], **overrides})

    @classmethod
    def tiny(cls, **overrides: Any) -> "T5Config":
        """d=32, 2 heads x 16, 2+2 layers, MLP 64, no dropout: a CPU forward pass in well under 1 s."""
        return cls.named("tiny", **overrides)


NAMED_SIZES: tuple[str, ...] = tuple(_NAMED_SIZES)


def token_embedding_rows(vocab: vocabularies.VocabularyConfig = vocabularies.DEFAULT_VOCABULARY,
                         rows: int | None = None) -> int:
    """``T5Config.vocab_size`` for note tokens of ``vocab``: ``num_embeddings(vocab)`` by default.

    gin/models/t5_common.gin binds ``T5Config.vocab_size`` to this, with the same
    ``VocabularyConfig`` the tasks tokenize with, so the vocabulary decides the table size.
    ``rows`` asks for a larger table (e.g. 1536 rows of imported weights over a vocabulary that
    needs fewer); fewer rows than the vocabulary's ids is an error, not zero-vector tokens.
    """
    needed = vocabularies.num_embeddings(vocab)
    if rows is None:
        return needed
    if rows < needed:
        raise ValueError(
            f"T5Config.vocab_size = {rows} token embedding rows, but the vocabulary with "
            f"{vocab.num_velocity_bins} velocity bin(s) needs num_embeddings = {needed} (its ids, "
            f"extra ids included, reach {vocabularies.vocab_size(vocab) - 1}); unbind "
            f"config.token_embedding_rows.rows (the vocabulary then sizes the table) or set it "
            f">= {needed}")
    return rows
