"""What every dataset reader shares: piece references, loaded pieces, per-file errors.

A reader turns a public dataset release, as its authors distribute it, into pieces in two
steps, so that preparation can list a dataset cheaply and load pieces in parallel:

* ``list_pieces(source_dir, **options) -> list[SourceRef]`` reads only the index files
  (a CSV, folder names, metadata) and says which files make up each piece and its split;
* ``load_piece(ref) -> SourcePiece`` reads the audio and the annotations of one piece and
  returns 16 kHz mono samples plus one NoteSequence in the form of spec §1.2: programs and
  drum flags set per the dataset's instrument table, sustain applied per instrument, control
  changes and pitch bends removed.

Every problem with a file (missing, unreadable, unknown instrument, notes past the end of the
audio) raises ``SourceError`` whose message starts with the file's path, so that preparation
can report it and carry on with the other pieces.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

with warnings.catch_warnings():
    # note_seq imports pydub, which warns that ffmpeg is missing; no audio is decoded by it.
    warnings.simplefilter("ignore", RuntimeWarning)
    import note_seq
    from note_seq.protobuf import music_pb2

from music_spectrogram_diffusion.features import DEFAULT_FEATURES

NoteSequence = music_pb2.NoteSequence

SPLITS = ("train", "validation", "test")
# Velocity given to notes of datasets without velocities (GuitarSet, MusicNet, URMP). The
# released models use one velocity bin (spec §1.1), so any value in 1..127 tokenizes the same.
DEFAULT_VELOCITY = 100
# Notes may start this long after the audio ends before the pair is declared mismatched:
# annotation tools round times, and some releases trim trailing silence. Note ends past the
# audio are cut to its end (sustain and reverb often outlast a trimmed recording).
ALIGNMENT_TOLERANCE_SECONDS = 0.5


class SourceError(ValueError):
    """A file of a dataset release that cannot be used; the message starts with its path."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):  # Crosses process boundaries intact (ProcessPoolExecutor).
        return (SourceError, (self.path, self.reason))


@dataclasses.dataclass(frozen=True)
class SourceRef:
    """One piece of a release, before anything but its index files has been read.

    Attributes:
      id: unique within the dataset; safe as a file name.
      split: 'train' | 'validation' | 'test'.
      files: role -> absolute path, e.g. {'midi': ..., 'audio': ...}; the first entry is the
        file named in progress and error messages.
      details: reader-specific values (e.g. Slakh stem ids), all picklable.
    """

    id: str
    split: str
    files: Mapping[str, str]
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"piece {self.id}: unknown split {self.split!r}; valid splits: "
                             f"{', '.join(SPLITS)}")
        if not self.id or any(c in self.id for c in "/\\") or self.id.startswith("."):
            raise ValueError(f"piece id {self.id!r} cannot be used as a file name")

    @property
    def path(self) -> str:
        return next(iter(self.files.values()))


@dataclasses.dataclass(frozen=True, eq=False)
class SourcePiece:
    """One loaded piece: what preparation writes to disk."""

    id: str
    split: str
    samples: np.ndarray  # [num_samples] float32 mono at 16 kHz
    note_sequence: NoteSequence  # spec §1.2 form: programs, drums, sustain applied
    source_files: tuple[str, ...]

    @property
    def duration_seconds(self) -> float:
        return len(self.samples) / DEFAULT_FEATURES.sample_rate


@dataclasses.dataclass(frozen=True)
class DatasetReader:
    """A dataset release: its name (as in the original's task names), its two functions, and the
    splits its release defines (every ``SourceRef`` it lists has one of them)."""

    name: str
    description: str
    list_pieces: Callable[..., list[SourceRef]]
    load_piece: Callable[[SourceRef], SourcePiece]
    splits: tuple[str, ...] = ("train", "validation", "test")

    def __post_init__(self):
        unknown = [s for s in self.splits if s not in SPLITS]
        if unknown or "train" not in self.splits or "validation" not in self.splits:
            raise ValueError(f"reader {self.name}: splits {self.splits} must include 'train' and "
                             f"'validation' and be among {SPLITS}")


# ---------------------------------------------------------------------------------------------
# Helpers for the readers.


def require_file(path: str, what: str) -> str:
    """``path`` if it is a non-empty file, else SourceError naming it."""
    if not os.path.exists(path):
        raise SourceError(path, f"{what} not found")
    if not os.path.isfile(path):
        raise SourceError(path, f"{what} is not a regular file")
    if os.path.getsize(path) == 0:
        raise SourceError(path, f"{what} is empty (0 bytes)")
    return path


def require_dir(path: str, what: str) -> str:
    if not os.path.isdir(path):
        raise SourceError(path, f"{what} not found (is --source the dataset's root folder?)")
    return path


def load_audio(path: str) -> np.ndarray:  # [num_samples] float32 mono at 16 kHz
    """The file's audio as 16 kHz mono (spec §2.1); any problem is a SourceError."""
    from music_spectrogram_diffusion.audio import audio_io

    try:
        return audio_io.load_audio(path, DEFAULT_FEATURES.sample_rate)
    except audio_io.AudioError as e:
        raise SourceError(path, str(e).removeprefix(f"{path}: ")) from e


def resample(samples: np.ndarray, sample_rate: float, name: str) -> np.ndarray:
    """Float samples at ``sample_rate`` -> 16 kHz float32 mono (TFRecord float audio, §2.1)."""
    samples = np.asarray(samples, np.float32).reshape(-1)  # [num_samples]
    if samples.size == 0:
        raise SourceError(name, "holds no audio samples")
    if not np.all(np.isfinite(samples)):
        raise SourceError(name, "audio holds NaN or infinite samples")
    if not (math.isfinite(sample_rate) and sample_rate > 0):
        raise SourceError(name, f"invalid audio sample rate {sample_rate!r}")
    if sample_rate != DEFAULT_FEATURES.sample_rate:
        import librosa

        # Keyword rates: librosa >= 0.10 rejects the original's positional call (§11.12).
        samples = librosa.resample(samples, orig_sr=float(sample_rate),
                                   target_sr=DEFAULT_FEATURES.sample_rate)
    return np.ascontiguousarray(samples, np.float32)


def read_midi(path: str) -> NoteSequence:
    from music_spectrogram_diffusion.data import midi_io

    require_file(path, "MIDI file")
    try:
        return midi_io.read_midi(path)
    except midi_io.MidiError as e:
        raise SourceError(path, str(e).removeprefix(f"{path}: ")) from e


def hz_to_midi_pitch(frequency_hz: float) -> int:
    """Nearest MIDI pitch of a frequency (A4 = 440 Hz = pitch 69)."""
    return int(round(69 + 12 * math.log2(frequency_hz / 440.0)))


def add_note(ns: NoteSequence, *, start: float, end: float, pitch: int, program: int,
             is_drum: bool = False, instrument: int = 0,
             velocity: int = DEFAULT_VELOCITY) -> None:
    ns.notes.add(start_time=start, end_time=end, pitch=pitch, velocity=velocity,
                 program=program, is_drum=is_drum, instrument=instrument)


def merge_tracks(tracks: Iterable[tuple[NoteSequence, int, bool]]) -> NoteSequence:
    """One NoteSequence of several tracks (ns, program, is_drum), one instrument per track.

    Each track's notes and sustain pedal move to their own instrument number, so that sustain
    is applied per track (spec §1.2) by ``finalize_note_sequence``. Drum notes get program 0.
    Pitch bends are not copied: the synthesis tokens cannot express them (Slakh ignores them,
    spec §1.2; MIDI-derived tracks of the other readers carry none).
    """
    merged = NoteSequence(ticks_per_quarter=220)
    for instrument, (track, program, is_drum) in enumerate(tracks):
        for note in track.notes:
            add_note(merged, start=note.start_time, end=note.end_time, pitch=note.pitch,
                     velocity=note.velocity, program=0 if is_drum else program,
                     is_drum=is_drum, instrument=instrument)
        for cc in track.control_changes:
            merged.control_changes.add(time=cc.time, control_number=cc.control_number,
                                       control_value=cc.control_value, instrument=instrument)
    return merged


def finalize_note_sequence(ns: NoteSequence, name: str) -> NoteSequence:
    """Validated copy with sustain applied per instrument and no control changes (§1.2)."""
    from music_spectrogram_diffusion.data import note_sequences

    for note in ns.notes:
        if note.velocity == 0:  # MIDI note-on with velocity 0 is a note-off; never a note.
            raise SourceError(name, f"note at {note.start_time:.3f} s has velocity 0")
    try:
        note_sequences.validate_note_sequence(ns, name=name)
    except note_sequences.NoteSequenceError as e:
        raise SourceError(name, str(e).removeprefix(f"{name}: ")) from e
    sustained = note_seq.apply_sustain_control_changes(ns)
    del sustained.control_changes[:]
    del sustained.pitch_bends[:]
    sustained.total_time = max((n.end_time for n in sustained.notes), default=0.0)
    return sustained


def align_to_audio(ns: NoteSequence, num_samples: int, name: str,
                   tolerance: float = ALIGNMENT_TOLERANCE_SECONDS) -> NoteSequence:
    """Checks that the notes fit the audio; cuts note ends at the audio's end.

    Raises:
      SourceError: a note starts more than ``tolerance`` seconds after the audio ends (the
        annotation and the recording do not belong together), or there are no notes.
    """
    duration = num_samples / DEFAULT_FEATURES.sample_rate
    if not ns.notes:
        raise SourceError(name, "no notes")
    last_onset = max(n.start_time for n in ns.notes)
    if last_onset > duration + tolerance:
        raise SourceError(name, f"annotations past the audio's end: a note starts at "
                                f"{last_onset:.2f} s but the audio lasts {duration:.2f} s")
    aligned = NoteSequence()
    aligned.CopyFrom(ns)
    kept = []
    for note in aligned.notes:
        if note.start_time < duration:
            note.end_time = min(note.end_time, duration)
            kept.append(note)
    del aligned.notes[:]
    aligned.notes.extend(kept)
    aligned.total_time = max((n.end_time for n in aligned.notes), default=0.0)
    return aligned


def make_piece(ref: SourceRef, samples: np.ndarray, ns: NoteSequence, name: str) -> SourcePiece:
    """The SourcePiece of ``ref`` after the §1.2 clean-up and the audio alignment check."""
    ns = align_to_audio(finalize_note_sequence(ns, name), len(samples), name)
    ns.id = ref.id
    return SourcePiece(id=ref.id, split=ref.split, samples=samples, note_sequence=ns,
                       source_files=tuple(ref.files.values()))


def load_annotated_piece(ref: SourceRef, notes_role: str,
                         read_notes: Callable[[str], NoteSequence]) -> SourcePiece:
    """The piece of a release that pairs one annotation file with one ``'audio'`` file.

    The annotation is read first, so a bad annotation is reported before any audio is decoded,
    and it names the piece in error messages.
    """
    notes_path = ref.files[notes_role]
    ns = read_notes(notes_path)
    samples = load_audio(require_file(ref.files["audio"], "audio file"))
    return make_piece(ref, samples, ns, notes_path)


def sanitize_id(text: str) -> str:
    """A file-name-safe id: path separators and odd characters become '_'."""
    safe = "".join(c if c.isalnum() or c in "-_.+#" else "_" for c in text)
    return safe.lstrip(".") or "_"
