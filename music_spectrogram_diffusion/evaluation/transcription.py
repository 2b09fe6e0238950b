"""Transcription F1: transcribe synthesized (and real) audio and score it against the input notes.

The paper transcribes with MT3 (spec §8.3), whose checkpoint cannot be downloaded here. We use
basic-pitch (Bittner et al., ICASSP 2022; its ONNX weights ship inside the basic-pitch wheel)
and score with mir_eval, as the original does, with mir_eval's default tolerances: onsets within
50 ms, offsets within 20% of the note length or 50 ms, pitches within 50 cents.

Differences from the paper's table, on purpose:

* **Program-agnostic.** basic-pitch predicts pitches, not instruments, so notes of all
  instruments are pooled into one set and scored once: the numbers are comparable to MT3's
  "flat" granularity only. Drum notes are excluded from the reference (basic-pitch does not
  transcribe drums). Rows are "onset" and "onset + offset" precision/recall/F1.
* **No AttributeError.** The original called ``mt3.metrics.program_aware_note_scores``, which
  public MT3 does not define (§11.10); here the scoring is our own ~20 lines on mir_eval.
* **Reference notes are clipped to the audio.** The original scored the full-song NoteSequence
  against audio cut at about 10 minutes (§11.9), so recall dropped for long songs. Callers pass
  ``end_seconds`` (the audio duration): notes starting at or after it are dropped and offsets
  are clipped to it.

Silence transcribes to no notes and scores 0 (mir_eval returns 0 for empty estimates).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from music_spectrogram_diffusion import dependencies
from music_spectrogram_diffusion.features import DEFAULT_FEATURES

# Notes shorter than this (zero-length MIDI notes) are lengthened to it: mir_eval needs
# strictly positive intervals. MT3 uses the same 10 ms for drum offsets.
MIN_NOTE_SECONDS = 0.01


@dataclasses.dataclass(frozen=True)
class NoteArrays:
    """A set of pitched notes: ``intervals`` [notes, 2] (onset, offset) s, ``pitches`` [notes]."""

    intervals: np.ndarray
    pitches: np.ndarray

    def __post_init__(self):
        intervals = np.asarray(self.intervals, np.float64).reshape(-1, 2)
        pitches = np.asarray(self.pitches, np.int64).reshape(-1)
        if len(intervals) != len(pitches):
            raise ValueError(f"{len(intervals)} intervals but {len(pitches)} pitches")
        object.__setattr__(self, "intervals", intervals)
        object.__setattr__(self, "pitches", pitches)

    def __len__(self) -> int:
        return len(self.pitches)


def pitched_notes(notes: Any, *, end_seconds: float | None = None) -> NoteArrays:
    """The non-drum notes of a NoteSequence, PrettyMIDI or NoteArrays, clipped to ``end_seconds``.

    Zero-length notes get MIN_NOTE_SECONDS. With ``end_seconds``, notes starting at or after it
    are dropped and later offsets are clipped to it (see the module docstring).
    """
    if isinstance(notes, NoteArrays):
        intervals, pitches = notes.intervals, notes.pitches
    elif hasattr(notes, "instruments"):  # pretty_midi.PrettyMIDI
        rows = [
            (n.start, n.end, n.pitch)
            for inst in notes.instruments
            if not inst.is_drum
            for n in inst.notes
        ]
        intervals = np.array([r[:2] for r in rows], np.float64).reshape(-1, 2)
        pitches = np.array([r[2] for r in rows], np.int64)
    elif hasattr(notes, "notes"):  # note_seq NoteSequence proto
        rows = [(n.start_time, n.end_time, n.pitch) for n in notes.notes if not n.is_drum]
        intervals = np.array([r[:2] for r in rows], np.float64).reshape(-1, 2)
        pitches = np.array([r[2] for r in rows], np.int64)
    else:
        raise TypeError(
            f"expected a NoteSequence, PrettyMIDI or NoteArrays, got {type(notes).__name__}"
        )
    intervals = intervals.copy()
    intervals[:, 1] = np.maximum(intervals[:, 1], intervals[:, 0] + MIN_NOTE_SECONDS)
    if end_seconds is not None:
        keep = intervals[:, 0] < end_seconds
        intervals, pitches = intervals[keep], pitches[keep]
        clipped = np.minimum(intervals[:, 1], end_seconds)
        intervals[:, 1] = np.maximum(clipped, intervals[:, 0] + MIN_NOTE_SECONDS)
    order = np.lexsort((pitches, intervals[:, 0]))
    return NoteArrays(intervals[order], pitches[order])


def note_scores(reference: NoteArrays, estimate: NoteArrays) -> dict[str, float]:
    """Onset and onset+offset precision/recall/F1 of ``estimate`` against ``reference``."""
    import mir_eval

    ref_hz = mir_eval.util.midi_to_hz(reference.pitches.astype(np.float64))
    est_hz = mir_eval.util.midi_to_hz(estimate.pitches.astype(np.float64))
    scores = {}
    for label, offset_ratio in (("onset", None), ("onset + offset", 0.2)):
        if len(reference) == 0 or len(estimate) == 0:
            precision = recall = f1 = 0.0  # What mir_eval returns too, minus its warnings.
        else:
            precision, recall, f1, _ = mir_eval.transcription.precision_recall_f1_overlap(
                reference.intervals, ref_hz, estimate.intervals, est_hz,
                onset_tolerance=0.05, pitch_tolerance=50.0,
                offset_ratio=offset_ratio, offset_min_tolerance=0.05,
            )
        scores[f"{label} precision"] = float(precision)
        scores[f"{label} recall"] = float(recall)
        scores[f"{label} F1"] = float(f1)
    return scores


@dataclasses.dataclass(frozen=True)
class BasicPitchConfig:
    """basic-pitch's own decoding defaults (basic_pitch.inference.predict)."""

    onset_threshold: float = 0.5
    frame_threshold: float = 0.3
    minimum_note_length_ms: float = 127.70
    melodia_trick: bool = True

    def __post_init__(self):
        for name in ("onset_threshold", "frame_threshold"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if self.minimum_note_length_ms < 0:
            raise ValueError(
                f"minimum_note_length_ms must be >= 0, got {self.minimum_note_length_ms}"
            )


def _import_basic_pitch():
    """Imports basic_pitch for its ONNX path without importing TensorFlow.

    basic_pitch's ``__init__`` imports TensorFlow (and CoreML, tflite-runtime) only to probe
    which backends exist, logging a warning for each missing one. We use ONNX, so if TensorFlow
    is not imported yet it is hidden for the duration of the import (saving several seconds
    and keeping TensorFlow out of the evaluating process), and the warnings are silenced.
    """
    root = logging.getLogger()
    level = root.level
    hide_tensorflow = "tensorflow" not in sys.modules
    root.setLevel(logging.ERROR)
    if hide_tensorflow:
        sys.modules["tensorflow"] = None  # makes `import tensorflow` raise ImportError
    try:
        basic_pitch = dependencies.require("basic_pitch")
        from basic_pitch import constants, note_creation
    finally:
        if hide_tensorflow:
            del sys.modules["tensorflow"]
        root.setLevel(level)
    return basic_pitch, constants, note_creation


class BasicPitchTranscriber:
    """Polyphonic, instrument-agnostic transcription with basic-pitch's ONNX model.

    The model is loaded once; ``transcribe`` is the in-memory equivalent of
    ``basic_pitch.inference.predict`` (same resampling, 2-s windows with 30 overlapping frames,
    and note decoding), without reading a file and without loading the TensorFlow SavedModel
    (which would initialise TensorFlow on the accelerator JAX is using).
    """

    def __init__(self, config: BasicPitchConfig = BasicPitchConfig(), *, num_threads: int = 0):
        import onnxruntime

        basic_pitch, self._constants, self._note_creation = _import_basic_pitch()
        model_path = basic_pitch.build_icassp_2022_model_path(basic_pitch.FilenameSuffix.onnx)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads
        self._session = onnxruntime.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.config = config

    def _model_output(self, audio: np.ndarray) -> dict[str, np.ndarray]:
        c = self._constants
        overlap_frames = 30
        overlap = overlap_frames * c.FFT_HOP
        hop = c.AUDIO_N_SAMPLES - overlap
        padded = np.concatenate([np.zeros(overlap // 2, np.float32), audio])
        starts = range(0, len(padded), hop)
        windows = np.zeros((len(starts), c.AUDIO_N_SAMPLES, 1), np.float32)
        for row, start in enumerate(starts):
            chunk = padded[start:start + c.AUDIO_N_SAMPLES]
            windows[row, : len(chunk), 0] = chunk
        # Output names and order as basic_pitch.inference.Model.predict (ONNX branch).
        names = [f"StatefulPartitionedCall:{i}" for i in (1, 2, 0)]
        outputs = self._session.run(names, {"serving_default_input_2:0": windows})
        num_frames = int(np.floor(len(audio) * c.ANNOTATIONS_FPS / c.AUDIO_SAMPLE_RATE))
        half = overlap_frames // 2
        unwrapped = {}
        for key, value in zip(["note", "onset", "contour"], outputs):
            value = value[:, half:-half, :]  # [windows, frames, bins] -> [frames, bins]
            unwrapped[key] = value.reshape(-1, value.shape[-1])[:num_frames]
        return unwrapped

    def transcribe(
        self,
        audio: np.ndarray,  # [samples] mono
        sample_rate: int = DEFAULT_FEATURES.sample_rate,
    ) -> NoteArrays:
        """Notes heard in ``audio`` (instrument-agnostic); empty for silence."""
        import librosa

        audio = np.nan_to_num(np.asarray(audio, np.float32))
        if audio.ndim != 1:
            raise ValueError(f"transcribe takes mono audio of shape [samples], got {audio.shape}")
        target_rate = self._constants.AUDIO_SAMPLE_RATE
        if sample_rate != target_rate:
            audio = librosa.resample(audio, orig_sr=sample_rate, target_sr=target_rate)
        if audio.size == 0:
            return NoteArrays(np.zeros((0, 2)), np.zeros(0))
        output = self._model_output(audio.astype(np.float32))
        frames_per_second = target_rate / self._constants.FFT_HOP
        min_note_seconds = self.config.minimum_note_length_ms / 1000
        min_note_frames = int(np.round(min_note_seconds * frames_per_second))
        # On silence basic-pitch rescales an all-zero onset difference by its maximum, 0 / 0;
        # the NaNs it makes fail every threshold, so silence yields no notes, as it should.
        with np.errstate(divide="ignore", invalid="ignore"):
            _, events = self._note_creation.model_output_to_notes(
                output,
                onset_thresh=self.config.onset_threshold,
                frame_thresh=self.config.frame_threshold,
                min_note_len=min_note_frames,
                include_pitch_bends=False,
                melodia_trick=self.config.melodia_trick,
            )
        intervals = np.array([(start, end) for start, end, *_ in events], np.float64).reshape(-1, 2)
        pitches = np.array([pitch for _, _, pitch, *_ in events], np.int64)
        return pitched_notes(NoteArrays(intervals, pitches))


def song_transcription_scores(
    transcriber: BasicPitchTranscriber,
    notes: Any,  # NoteSequence | PrettyMIDI | NoteArrays
    audio: np.ndarray,  # [samples]
    *,
    prefix: str,
    sample_rate: int = DEFAULT_FEATURES.sample_rate,
    end_seconds: float | None = None,
) -> dict[str, float]:
    """``note_scores`` of one song's audio, keys prefixed ("Model onset F1", "GT onset F1").

    Reference notes are clipped to ``end_seconds``, by default the duration of ``audio``.
    """
    if end_seconds is None:
        end_seconds = len(audio) / sample_rate
    reference = pitched_notes(notes, end_seconds=end_seconds)
    estimate = transcriber.transcribe(audio, sample_rate)
    return {f"{prefix} {name}": value for name, value in note_scores(reference, estimate).items()}


def transcription_scores(
    transcriber: BasicPitchTranscriber,
    reference_notes: Sequence[Any],  # per song: NoteSequence | PrettyMIDI | NoteArrays
    model_audio: Sequence[np.ndarray],  # per song: [samples] synthesized audio
    gt_audio: Sequence[np.ndarray] | None = None,  # per song: [samples] real audio
    *,
    sample_rate: int = DEFAULT_FEATURES.sample_rate,
) -> dict[str, float]:
    """"Model ..." rows (synthesized audio) and, given real audio, "GT ..." rows (the ceiling).

    Each row is averaged over songs, as the original (§8.2). Reference notes of a song are
    clipped to the duration of the audio being scored.
    """
    sources = {"Model": model_audio}
    if gt_audio is not None:
        sources["GT"] = gt_audio
    totals: dict[str, float] = {}
    for prefix, audios in sources.items():
        if len(audios) != len(reference_notes):
            raise ValueError(f"{len(audios)} {prefix} clips for {len(reference_notes)} note sets")
        for notes, audio in zip(reference_notes, audios):
            scores = song_transcription_scores(
                transcriber, notes, audio, prefix=prefix, sample_rate=sample_rate
            )
            for key, value in scores.items():
                totals[key] = totals.get(key, 0.0) + value / len(audios)
    return totals
