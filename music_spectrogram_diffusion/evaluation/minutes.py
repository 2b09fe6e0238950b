"""The original's evaluation protocol over time: the 10-minute cap and per-minute slices (§8.4).

The original Beam job (``PostProcessForMetrics``) scored each song twice:

* the **full song**, cut at the end of the 256-frame chunk that contains minute 10 (604.16 s at
  16 kHz); ``PROTOCOL_MAX_SECONDS`` rounded up to whole segments, as ``load_references`` does,
  is exactly that cut;
* for m = 0..10, the **single 256-frame chunk** whose index is floor(m * 60 * 50 / 256), under the
  key ``{task}_{m}minute``, with the notes of that time span (``note_seq.extract_subsequence``).
  Every metric is computed again over these chunks of all songs, so a drift of the context
  chain (each segment conditioned on the previous prediction, §7) shows as metrics that worsen
  with m.

Here the per-minute values are extra keys of a row: ``minute_key('mel_l1', 2)`` is
``'mel_l1_2minute'``. One difference: the original also scored a last chunk that the song only
partly fills (its target was padded to whole chunks); here a minute counts only when the real
audio covers its whole chunk, so every per-minute number averages 5.12 s of real audio.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from music_spectrogram_diffusion.evaluation.transcription import NoteArrays, pitched_notes
from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig

# The original's cap on a song's length and its per-minute chunks (spec §8.4).
PROTOCOL_MAX_SECONDS = 600.0
PROTOCOL_MINUTES = tuple(range(11))


def minute_key(key: str, minute: int) -> str:
    """The results key of ``key`` on the chunk of ``minute`` (the original's suffix)."""
    return f"{key}_{minute}minute"


@dataclasses.dataclass(frozen=True)
class MinuteChunk:
    """The 256-frame chunk of one minute: frames [start_frame, end_frame) of the log-mel and
    samples [start_sample, end_sample) of the audio."""

    minute: int
    start_frame: int
    end_frame: int
    hop_length: int
    sample_rate: int

    @property
    def start_sample(self) -> int:
        return self.start_frame * self.hop_length

    @property
    def end_sample(self) -> int:
        return self.end_frame * self.hop_length

    @property
    def start_seconds(self) -> float:
        return self.start_sample / self.sample_rate

    @property
    def end_seconds(self) -> float:
        return self.end_sample / self.sample_rate


def minute_chunk(minute: int, features: FeatureConfig = DEFAULT_FEATURES) -> MinuteChunk:
    """The chunk of index floor(minute * 60 s / 5.12 s) (the original's ``get_idxs_for_minute``)."""
    if minute < 0 or int(minute) != minute:
        raise ValueError(f"minute must be a whole number >= 0, got {minute}")
    frames = features.sample_rate * int(minute) * 60 // features.hop_length
    index = frames // features.segment_frames
    return MinuteChunk(int(minute), index * features.segment_frames,
                       (index + 1) * features.segment_frames, features.hop_length,
                       features.sample_rate)


def minutes_within(max_seconds: float | None,
                   features: FeatureConfig = DEFAULT_FEATURES) -> tuple[int, ...]:
    """The protocol minutes whose chunk lies inside an excerpt of ``max_seconds`` (rounded up to
    whole segments; None = whole songs, up to the 10-minute cap), or () when fewer than two do:
    a single slice of a short excerpt (the main job's 20.48 s) shows no drift and only repeats
    the excerpt's own numbers."""
    if max_seconds is None:
        return PROTOCOL_MINUTES
    segments = int(np.ceil(max_seconds / features.segment_seconds - 1e-9))
    end_frame = segments * features.segment_frames
    inside = tuple(m for m in PROTOCOL_MINUTES if minute_chunk(m, features).end_frame <= end_frame)
    return inside if len(inside) >= 2 else ()


def slice_notes(notes: Any, start_seconds: float, end_seconds: float) -> NoteArrays:
    """The pitched notes of [start, end), shifted to start at 0 (``note_seq.extract_subsequence``:
    notes that start before ``start_seconds`` or at/after ``end_seconds`` are dropped, later
    offsets are clipped to ``end_seconds``)."""
    if not end_seconds > start_seconds:
        raise ValueError(f"empty time span [{start_seconds}, {end_seconds})")
    arrays = pitched_notes(notes)
    onsets = arrays.intervals[:, 0]
    keep = (onsets >= start_seconds) & (onsets < end_seconds)
    intervals = arrays.intervals[keep].copy()
    intervals[:, 1] = np.minimum(intervals[:, 1], end_seconds)
    return pitched_notes(NoteArrays(intervals - start_seconds, arrays.pitches[keep]))


def slice_song(song: Any, chunk: MinuteChunk) -> Any | None:
    """``song`` (a ``metrics.SongEvaluation``) restricted to ``chunk``, or None when its real
    audio does not cover the whole chunk. Audio, log-mel and notes are cut alike."""
    if len(song.reference_audio) < chunk.end_sample:
        return None
    samples = slice(chunk.start_sample, chunk.end_sample)
    frames = slice(chunk.start_frame, chunk.end_frame)
    return dataclasses.replace(
        song,
        reference_audio=song.reference_audio[samples],
        predicted_audio=song.predicted_audio[samples],
        reference_notes=(None if song.reference_notes is None else
                         slice_notes(song.reference_notes, chunk.start_seconds,
                                     chunk.end_seconds)),
        predicted_mel=None if song.predicted_mel is None else song.predicted_mel[frames],
        reference_mel=None if song.reference_mel is None else song.reference_mel[frames],
        song_id=f"{song.song_id}@{chunk.minute}min")
