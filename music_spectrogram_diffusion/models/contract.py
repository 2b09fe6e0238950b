"""The one model contract (``SpectrogramModel``) and the one constructor of the model batch.

Training, inference, evaluation and the benchmarks all talk to a spectrogram model through
``SpectrogramModel``: ``DiffusionModel`` (with or without context) and ``AutoregressiveModel``
implement it, and so does the trainer tests' ``testing.fake_models.FakeSpectrogramModel``.

The model batch is a dict of numpy or jax arrays, one row per example (spec §3.5, with this
codebase's domain names, STYLE.md)::

  note_tokens     int32   [B, L]            0-padded note tokens (t5x: encoder_input_tokens)
  target_frames   float32 [B, T, mels]      unscaled log-mel targets (decoder_target_tokens)
  target_mask     float32 [B, T]            1 = real frame
  context_frames  float32 [B, C, mels]      unscaled log-mel of the preceding frames
  context_mask    float32 [B, C]            1 = valid context frame (a prefix)

``make_batch`` is the only place outside the data pipeline that spells these keys: callers give
what they have (note tokens, and a context for a later segment) and it fills the rest.

A loss reports its normaliser, so that a trainer splitting a batch into microbatches recovers
the full-batch loss and gradient exactly: ``metrics[LOSS_WEIGHT]`` is what ``loss`` is a mean
over (real target frames, or frames x bins), and microbatch losses are combined as
sum(loss_i * weight_i) / sum(weight_i). Every other metric is combined by its name
(``metric_reduction``): ``*_sum`` and ``loss_weight`` add, ``loss*`` are means weighted like
the loss, the rest are means over the examples. The loss's random draws are per example
(``split_loss_keys``), so they do not depend on how the batch is split either.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, runtime_checkable

import jax
import numpy as np

from music_spectrogram_diffusion.diffusion.samplers import SamplerConfig
from music_spectrogram_diffusion.models.config import T5Config
from music_spectrogram_diffusion.models.layers import check_ids_in_table

Array = jax.Array
# A flax parameter pytree (nested dicts of arrays), boxed with logical axis names by ``init``.
Params = Mapping[str, Any]
Batch = Mapping[str, Any]
Metrics = dict[str, Array]

BATCH_KEYS: tuple[str, ...] = (
    "note_tokens", "target_frames", "target_mask", "context_frames", "context_mask")

LOSS_WEIGHT = "loss_weight"  # the metric naming what the loss is a mean over (see above)
METRIC_REDUCTIONS = ("sum", "weighted_mean", "mean")
# Tag of the network-dropout key, folded into the first example's key (``split_loss_keys``).
_NETWORK_KEY_TAG = 0x6E6574


def metric_reduction(name: str) -> str:
    """How a loss metric combines over microbatches: one of ``METRIC_REDUCTIONS``.

    'sum' for ``loss_weight`` and ``*_sum`` (totals), 'weighted_mean' for the other ``loss*``
    metrics (means over the loss weight, like the loss), 'mean' for everything else (means over
    the examples, which every microbatch has equally many of).
    """
    if name == LOSS_WEIGHT or name.endswith("_sum"):
        return "sum"
    if name.startswith("loss"):
        return "weighted_mean"
    return "mean"


def split_loss_keys(rng: Array, batch_size: int) -> tuple[Array, Array]:
    """(network dropout key, per-example keys [batch_size]) for a loss.

    ``rng`` is one key (split here) or one key per example, as the trainer passes them: each
    example's draws (noise, time, guidance dropout) then come from its own key and are the same
    whichever microbatch it lands in. Network dropout takes one key per call (flax), the first
    example's folded with a tag, so with dropout_rate > 0 a microbatched step equals the full
    batch in distribution, not draw for draw. Raw uint32 keys (``PRNGKey``) are accepted.
    """
    if not jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
        rng = jax.random.wrap_key_data(rng)
    if rng.ndim == 0:
        network_rng, examples_rng = jax.random.split(rng)
        return network_rng, jax.random.split(examples_rng, batch_size)
    if rng.shape != (batch_size,):
        raise ValueError(f"loss keys must be one key or {batch_size} keys (one per example), "
                         f"got shape {rng.shape}")
    return jax.random.fold_in(rng[0], _NETWORK_KEY_TAG), rng


@runtime_checkable
class SpectrogramModel(Protocol):
    """What every spectrogram model provides (frozen dataclasses; hashable, so jit-static).

    Attributes:
      network_config: the T5 sizes; its lengths (note tokens, target and context frames,
        mels) are the shapes of the batches the model takes.
      with_context: whether the model reads ``context_frames`` / ``context_mask``.
    """

    @property
    def network_config(self) -> T5Config: ...

    @property
    def with_context(self) -> bool: ...

    def init(self, rng: Array, batch: Batch) -> Params:
        """Parameters (boxed with logical axis names) for batches shaped like ``batch``."""
        ...

    def loss_fn(self, params: Params, batch: Batch, rng: Array, *, train: bool = True
                ) -> tuple[Array, Metrics]:
        """(scalar loss, metrics with ``LOSS_WEIGHT``); ``rng`` draws every random choice.

        ``rng``: one key or one key per example (see ``split_loss_keys``).
        """
        ...

    def encode(self, params: Params, batch: Batch) -> Any:
        """What the model computes once per segment from the conditioning (notes, context)."""
        ...

    def predict(self, params: Params, batch: Batch, rng: Array, *,
                sampler: SamplerConfig = SamplerConfig()) -> Array:
        """One segment per example: float32 [B, T, mels] UNSCALED log-mel.

        ``sampler`` chooses the diffusion sampler; a model that does not sample (the
        autoregressive baseline) accepts it and ignores it.
        """
        ...


def make_batch(
    note_tokens: np.ndarray | Array,  # int32 [B, L], 0-padded
    *,
    network_config: T5Config,
    context_frames: np.ndarray | Array | None = None,  # [B, C, mels] unscaled log-mel
    context_mask: np.ndarray | Array | None = None,  # [B, C]
    target_frames: np.ndarray | Array | None = None,  # [B, T, mels] unscaled log-mel
    target_mask: np.ndarray | Array | None = None,  # [B, T]
) -> dict[str, Any]:
    """The model batch for ``note_tokens``; absent fields get their neutral values.

    Without a context, the context is all zero and fully masked (what a first segment and the
    no-context models see); without targets, the targets are zero with every frame marked
    real (only shapes matter when predicting). A context given without its mask is taken as
    fully valid. Shapes come from ``network_config``; given arrays are passed through.

    Raises:
      ValueError: a note token id outside the model's embedding table (``vocab_size`` rows),
        e.g. tokens of a 127-velocity-bin vocabulary for a model built for 1 bin.
    """
    tokens = note_tokens if isinstance(note_tokens, jax.Array) else np.asarray(note_tokens, np.int32)
    if tokens.ndim != 2:
        raise ValueError(f"note_tokens must be [batch, length], got shape {tuple(tokens.shape)}")
    if not isinstance(tokens, jax.core.Tracer):
        check_ids_in_table(tokens, network_config.vocab_size, what="note token ids")
    batch_size = tokens.shape[0]
    cfg = network_config
    if context_frames is None:
        context_frames = np.zeros((batch_size, cfg.context_frames, cfg.num_mels), np.float32)
        if context_mask is None:
            context_mask = np.zeros((batch_size, cfg.context_frames), np.float32)
    elif context_mask is None:
        context_mask = np.ones(tuple(context_frames.shape[:2]), np.float32)
    if target_frames is None:
        target_frames = np.zeros((batch_size, cfg.target_frames, cfg.num_mels), np.float32)
    if target_mask is None:
        target_mask = np.ones(tuple(target_frames.shape[:2]), np.float32)
    return {"note_tokens": tokens, "target_frames": target_frames, "target_mask": target_mask,
            "context_frames": context_frames, "context_mask": context_mask}


def example_batch(network_config: T5Config, batch_size: int = 1) -> dict[str, np.ndarray]:
    """An all-zero batch with the full shapes a model built for ``network_config`` takes."""
    tokens = np.zeros((batch_size, network_config.note_tokens_length), np.int32)
    return make_batch(tokens, network_config=network_config)
