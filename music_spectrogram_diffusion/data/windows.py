"""Cutting one piece (whole-song log-mel + note EventIndex) into model examples (spec §2.3-2.4).

Every example is a dict of numpy arrays, the per-example form of the model batch:

  note_tokens     int32   [2048]       segment_tokens of the target frames, padded with 0
  target_frames   float32 [256, 128]   unscaled log-mel; frames past the song are silence
  target_mask     float32 [256]        1 = real song frame, 0 = silence padding
  context_frames  float32 [256, 128]   unscaled log-mel of the frames before the target
  context_mask    float32 [256]        1 = valid context frame (valid frames form a prefix)

How this differs from the original pipeline, and why:

* **One log-mel per song.** The caller computes the log-mel of the whole piece once
  (``spectrograms.compute_log_mel_numpy``); frame i is computed from samples
  ``[320 i, 320 i + 640)``, so every frame but the song's last sees real audio. Windows are
  slices of it. The original re-ran the STFT per chunk with 16 look-ahead frames (and 15 in
  the full-song chain, §2.4) to approximate exactly this; slicing makes it exact and cheaper.
* **Whole songs, not 40 s chunks (§11.2).** Windows are drawn from the whole piece, so a
  window in the middle of a song never sees a fake song start (empty context) or a fake end
  (silence while notes still sound).
* **No context leak (§11.1).** The context is exactly frames ``[max(0, s - 256), s)`` of the
  song for a target starting at frame s; a short context never holds target frames.
* **No off-by-one (§11.3).** Target starts cover every frame (including n - 1) and a 1-frame
  song works.

Target windows follow the original's placement: the real frames of a window always start at
target position 0 (for the no-context task a window that "starts before the song", start
s < 0, holds song frames ``[0, s + 256)``, i.e. a short window at the song start; this keeps
the original's uniform coverage of every frame). Positions after the real frames, which only
occur near the end of the song, are filled with silence, ln(1e-5), and have target_mask 0:
silence is what lies past the end of a recording, so a model that ignores the mask still
learns the right thing, and the mask lets the loss and the metrics skip those frames. Context
padding is 0.0 with mask 0, as the original feature converter (§2.3); it is always masked.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from music_spectrogram_diffusion.data.tokenizer import EventIndex, pad_tokens, segment_tokens
from music_spectrogram_diffusion.data.vocabularies import DEFAULT_VOCABULARY, VocabularyConfig
from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig

EXAMPLE_KEYS = ("note_tokens", "target_frames", "target_mask", "context_frames", "context_mask")
CONTEXT_PAD_VALUE = 0.0  # masked; the original feature converter's rank-2 padding (§2.3)


def _check_piece(log_mel: np.ndarray, index: EventIndex, features: FeatureConfig) -> None:
    if log_mel.ndim != 2 or log_mel.shape[1] != features.num_mels:
        raise ValueError(
            f"log_mel must have shape [frames, {features.num_mels}], got {log_mel.shape}"
        )
    if index.num_frames < log_mel.shape[0]:
        raise ValueError(
            f"the EventIndex covers {index.num_frames} frames but the log-mel has "
            f"{log_mel.shape[0]}; index the notes with num_frames=log_mel.shape[0]"
        )


def _padded_frames(
    log_mel: np.ndarray,  # [song_frames, mels]
    start: int,
    end: int,
    length: int,
    pad_value: float,
) -> tuple[np.ndarray, np.ndarray]:  # ([length, mels] float32, [length] float32 mask)
    """Song frames [start, end) at positions [0, end - start), then pad_value; and the mask."""
    frames = np.empty((length, log_mel.shape[1]), np.float32)  # each row written once
    frames[: end - start] = log_mel[start:end]
    frames[end - start:] = pad_value
    mask = np.zeros(length, np.float32)
    mask[: end - start] = 1.0
    return frames, mask


def window_example(
    log_mel: np.ndarray,  # [song_frames, mels] unscaled log-mel of the whole piece
    index: EventIndex,
    target_start: int,
    target_end: int,
    *,
    with_context: bool,
    vocab: VocabularyConfig = DEFAULT_VOCABULARY,
    features: FeatureConfig = DEFAULT_FEATURES,
) -> dict[str, np.ndarray]:
    """The example whose target is song frames [target_start, target_end) (see module doc).

    With ``with_context`` the context holds song frames
    ``[max(0, target_start - context_frames), target_start)`` as a prefix: context position j
    is song frame ``target_start - context_frames + j`` when the context is full. Without it
    the context is empty (all 0.0, mask 0), as for the no-context model and for full-song
    inference, which fills the context with its own previous prediction.
    """
    _check_piece(log_mel, index, features)
    song_frames = log_mel.shape[0]
    if not 0 <= target_start < target_end <= song_frames:
        raise ValueError(
            f"target frames [{target_start}, {target_end}) are not a non-empty range inside "
            f"the song's {song_frames} frames"
        )
    if target_end - target_start > features.segment_frames:
        raise ValueError(
            f"target frames [{target_start}, {target_end}) are longer than "
            f"segment_frames={features.segment_frames}"
        )
    target_frames, target_mask = _padded_frames(
        log_mel, target_start, target_end, features.segment_frames, features.min_log_mel
    )
    context_start = max(0, target_start - features.context_frames) if with_context else 0
    context_end = target_start if with_context else 0
    context_frames, context_mask = _padded_frames(
        log_mel, context_start, context_end, features.context_frames, CONTEXT_PAD_VALUE
    )
    # Too many notes: drop trailing events at an event boundary (the original crashed, §11.6).
    tokens = segment_tokens(
        index,
        target_start,
        target_end,
        vocab=vocab,
        max_tokens=features.max_note_tokens,
        overflow="truncate",
    )
    return {
        "note_tokens": np.asarray(pad_tokens(tokens, length=features.max_note_tokens), np.int32),
        "target_frames": target_frames,
        "target_mask": target_mask,
        "context_frames": context_frames,
        "context_mask": context_mask,
    }


def draw_target_window(
    song_frames: int,
    rng: np.random.Generator,
    *,
    with_context: bool,
    features: FeatureConfig = DEFAULT_FEATURES,
) -> tuple[int, int]:
    """A random target frame range [start, end) of a song, for training (spec §2.3).

    No context: start s ~ U{-(F - 1), ..., n - 1} and the range is
    [max(0, s), min(s + F, n)), F = segment_frames, so every frame is in exactly F of the
    n + F - 1 equally likely windows (``select_random_chunk(uniform_random_start=True)``).
    With context: start s ~ U{0, ..., n - 1} and the range is [s, min(s + F, n)). The
    original drew s from U{0, ..., n - 2} (§11.3: never the last frame, and a crash for n = 1).
    """
    if song_frames <= 0:
        raise ValueError(f"cannot draw a training window from a song of {song_frames} frames")
    length = features.segment_frames
    low = 0 if with_context else -(length - 1)
    start = int(rng.integers(low, song_frames - 1, endpoint=True))
    return max(0, start), min(start + length, song_frames)


def training_example(
    log_mel: np.ndarray,  # [song_frames, mels] unscaled log-mel of the whole piece
    index: EventIndex,
    rng: np.random.Generator,
    *,
    with_context: bool,
    vocab: VocabularyConfig = DEFAULT_VOCABULARY,
    features: FeatureConfig = DEFAULT_FEATURES,
) -> dict[str, np.ndarray]:
    """One random training example from a whole piece (``draw_target_window`` + ``window_example``).

    Deterministic given the state of ``rng``.
    """
    _check_piece(log_mel, index, features)
    start, end = draw_target_window(
        log_mel.shape[0], rng, with_context=with_context, features=features
    )
    return window_example(
        log_mel, index, start, end, with_context=with_context, vocab=vocab, features=features
    )


def full_song_segments(
    log_mel: np.ndarray,  # [song_frames, mels] unscaled log-mel of the whole piece
    index: EventIndex,
    *,
    vocab: VocabularyConfig = DEFAULT_VOCABULARY,
    features: FeatureConfig = DEFAULT_FEATURES,
) -> list[dict[str, np.ndarray]]:
    """Consecutive, non-overlapping segments covering the song, for evaluation and inference.

    Segment k holds song frames [256 k, min(256 (k + 1), n)): ceil(n / 256) segments (none for
    an empty song). The last is padded with silence and its target_mask marks the real frames
    (the original left it to the feature converter's 0.0 padding, §2.4, §11.9). The context is
    empty (mask 0): inference chains the previous segment's prediction into it (spec §7).
    """
    _check_piece(log_mel, index, features)
    song_frames, length = log_mel.shape[0], features.segment_frames
    return [
        window_example(
            log_mel,
            index,
            start,
            min(start + length, song_frames),
            with_context=False,
            vocab=vocab,
            features=features,
        )
        for start in range(0, song_frames, length)
    ]


def stack_examples(
    examples: Sequence[dict[str, np.ndarray]],
) -> dict[str, np.ndarray]:  # each field gains a leading [batch] axis
    """Stacks examples into a model batch: note_tokens [B, 2048], target_frames [B, 256, 128]..."""
    if not examples:
        raise ValueError("cannot stack an empty list of examples")
    return {key: np.stack([example[key] for example in examples]) for key in EXAMPLE_KEYS}
