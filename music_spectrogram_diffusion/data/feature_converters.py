"""Feature converters: task examples -> the model batch every model takes (spec §3.5).

The model batch (names per STYLE.md, not t5x's ``decoder_target_tokens`` for frames)::

  note_tokens     int32   [B, note_tokens_length]  0-padded (t5x: encoder_input_tokens)
  target_frames   float32 [B, target_length, 128]  unscaled log-mel (decoder_target_tokens)
  target_mask     float32 [B, target_length]       1 = real frame (decoder_target_mask)
  context_frames  float32 [B, context_length, 128] unscaled log-mel (encoder_continuous_inputs)
  context_mask    float32 [B, context_length]      valid prefix (encoder_continuous_mask)

A task example may already be padded (``data/windows.py`` output, with masks) or hold only its
real content (``note_tokens`` up to EOS, ``target_frames`` of n <= target_length frames,
``context_frames`` of L <= context_length frames, no masks). Converters pad either kind:
targets with silence, ln(1e-5), and mask 0 (the original padded with 0.0 log-mel, which is loud
garbage where the mask is ignored, §11.9); context with 0.0 and mask 0 (always masked, §2.3).
Packing is not supported, as in the original. The no-context converter returns an all-zero,
fully-masked context so that a no-context model can never read one by accident.

Note tokens are padded to 2048, but a window holds a few hundred. ``bucket_note_tokens`` cuts a
batch's padding to the smallest of a few bucket lengths that holds its longest example: exact,
because padded tokens (id 0) are masked keys everywhere (see ``bucket_note_tokens``), and a
bounded number of shapes to compile. The trainer applies it to each global batch.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig

MODEL_FEATURES = ("note_tokens", "target_frames", "target_mask", "context_frames", "context_mask")
# Training batches are cut to the smallest of these that holds their longest note tokens.
DEFAULT_NOTE_TOKEN_BUCKETS: tuple[int, ...] = (256, 512, 1024, 2048)


class FeatureConversionError(ValueError):
    """A task example that does not fit the model's feature lengths."""


@dataclasses.dataclass(frozen=True)
class TaskFeatureLengths:
    """t5x ``TASK_FEATURE_LENGTHS``: {inputs: 2048, targets: 256[, targets_context: 256]}."""

    note_tokens: int = DEFAULT_FEATURES.max_note_tokens
    target_frames: int = DEFAULT_FEATURES.segment_frames
    context_frames: int = DEFAULT_FEATURES.context_frames

    @classmethod
    def from_t5x(cls, lengths: Mapping[str, int]) -> TaskFeatureLengths:
        """From t5x-style names (inputs, targets, targets_context) or model names."""
        names = {"inputs": "note_tokens", "targets": "target_frames",
                 "targets_context": "context_frames"}
        unknown = sorted(set(lengths) - set(names) - set(names.values()))
        if unknown:
            raise ValueError(f"TASK_FEATURE_LENGTHS: unknown keys {unknown}; valid keys: "
                             f"{sorted(names)}")
        return cls(**{names.get(k, k): int(v) for k, v in lengths.items()})


def _pad_rows(x: np.ndarray, length: int, value: float, name: str) -> np.ndarray:
    if x.shape[0] > length:
        raise FeatureConversionError(
            f"{name} has {x.shape[0]} entries, more than the feature length {length}"
        )
    pad = [(0, length - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
    return np.pad(x, pad, constant_values=value)


def _mask(example: Mapping[str, np.ndarray], key: str, frames: np.ndarray) -> np.ndarray:
    if key in example:
        return np.asarray(example[key], np.float32)
    return np.ones(frames.shape[0], np.float32)


@dataclasses.dataclass(frozen=True)
class ContinuousFeatureConverter:
    """Examples -> model batch; ``with_context`` keeps the context, else it is zeroed and masked.

    The original's ``ContinuousOutpusEncDecFeatureConverter`` (no context; also the
    autoregressive model, which shifts targets itself) and ``ContinuousContextFeatureConverter``.
    """

    with_context: bool
    lengths: TaskFeatureLengths = TaskFeatureLengths()
    features: FeatureConfig = DEFAULT_FEATURES

    def convert_example(self, example: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One example: every model feature, padded to the feature lengths."""
        missing = [k for k in ("note_tokens", "target_frames") if k not in example]
        if self.with_context and "context_frames" not in example:
            missing.append("context_frames")
        if missing:
            raise FeatureConversionError(f"task example lacks {missing}; it has {sorted(example)}")
        lengths, mels = self.lengths, self.features.num_mels
        tokens = np.asarray(example["note_tokens"], np.int32)
        targets = np.asarray(example["target_frames"], np.float32)
        if targets.ndim != 2 or targets.shape[1] != mels:
            raise FeatureConversionError(f"target_frames must be [frames, {mels}], got "
                                         f"{targets.shape}")
        out = {
            "note_tokens": _pad_rows(tokens, lengths.note_tokens, 0, "note_tokens"),
            "target_frames": _pad_rows(targets, lengths.target_frames,
                                       self.features.min_log_mel, "target_frames"),
            "target_mask": _pad_rows(_mask(example, "target_mask", targets),
                                     lengths.target_frames, 0.0, "target_mask"),
        }
        if self.with_context:
            context = np.asarray(example["context_frames"], np.float32).reshape(-1, mels)
            out["context_frames"] = _pad_rows(context, lengths.context_frames, 0.0,
                                              "context_frames")
            out["context_mask"] = _pad_rows(_mask(example, "context_mask", context),
                                            lengths.context_frames, 0.0, "context_mask")
        else:
            out["context_frames"] = np.zeros((lengths.context_frames, mels), np.float32)
            out["context_mask"] = np.zeros((lengths.context_frames,), np.float32)
        return out

    def __call__(self, examples: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """A list of task examples -> one model batch (leading [batch] axis on every feature)."""
        if not examples:
            raise FeatureConversionError("cannot convert an empty list of examples")
        converted = [self.convert_example(e) for e in examples]
        return {k: np.stack([c[k] for c in converted]) for k in MODEL_FEATURES}


def make_feature_converter(
    with_context: bool, task_feature_lengths: Mapping[str, int] | None = None
) -> ContinuousFeatureConverter:
    """The converter for a task family, from t5x-style TASK_FEATURE_LENGTHS."""
    lengths = (TaskFeatureLengths.from_t5x(task_feature_lengths)
               if task_feature_lengths else TaskFeatureLengths())
    return ContinuousFeatureConverter(with_context=with_context, lengths=lengths)


def longest_note_tokens(note_tokens: np.ndarray) -> int:
    """Columns of int [B, L] tokens up to the last one holding a real (nonzero) token."""
    nonzero = np.nonzero(np.any(np.asarray(note_tokens) != 0, axis=0))[0]
    return int(nonzero[-1]) + 1 if nonzero.size else 0


def bucket_length(longest: int, buckets: Sequence[int], length: int) -> int:
    """The smallest bucket >= ``longest``, capped at the padded ``length``.

    ``length`` itself when no bucket holds ``longest`` or ``buckets`` is empty (no bucketing).
    """
    fitting = [b for b in buckets if b >= longest]
    return min(min(fitting), length) if fitting else length


def check_buckets(buckets: Sequence[int]) -> tuple[int, ...]:
    """``buckets`` as a tuple of increasing positive ints (a clear error otherwise)."""
    buckets = tuple(buckets)
    if any(not isinstance(b, int) or b < 1 for b in buckets) or list(buckets) != sorted(set(buckets)):
        raise ValueError(f"note-token buckets must be increasing positive ints, got {buckets}")
    return buckets


def bucket_note_tokens(batch: Mapping[str, np.ndarray], buckets: Sequence[int],
                       longest: int | None = None) -> dict[str, np.ndarray]:
    """``batch`` with ``note_tokens`` [B, L] cut to ``bucket_length(longest, buckets, L)``.

    Exact for every model here: padded tokens are masked keys in the note encoder's
    self-attention and in the decoder's cross-attention (a masked logit adds exp(-1e10) = 0
    to the softmax), position p keeps row p of the position table, and the encodings of padded
    positions are never read; only float summation order changes. (With network dropout > 0
    the masks of length-shaped dropout are drawn for the cut shape: other draws, same
    distribution.)

    Args:
      batch: a model batch.
      buckets: increasing bucket lengths; empty for no bucketing.
      longest: the longest real token prefix to hold; default this batch's. With several
        hosts it must be the maximum over all hosts' rows (``partitioning.max_over_hosts``), so
        that every host cuts its rows of the global batch to the same length.
    """
    tokens = batch["note_tokens"]
    if longest is None:
        longest = longest_note_tokens(tokens)
    length = bucket_length(longest, buckets, tokens.shape[1])
    if length == tokens.shape[1]:
        return dict(batch)
    return dict(batch, note_tokens=tokens[:, :length])
