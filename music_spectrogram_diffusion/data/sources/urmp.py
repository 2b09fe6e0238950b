"""URMP (Li et al. 2018): chamber ensembles recorded part by part, with note annotations.

Get URMP from https://labsites.rochester.edu/air/projects/URMP.html. Layout: one folder per
piece, ``<nn>_<Name>_<code>_<code>...``::

    01_Jupiter_vn_vc/
      AuMix_01_Jupiter_vn_vc.wav     the mixture (48 kHz)        (the audio used here)
      Notes_1_vn_01_Jupiter.txt      part 1's notes: onset (s), frequency (Hz), duration (s)
      Notes_2_vc_01_Jupiter.txt      ...
      AuSep_*, F0s_*, Sco_*, Vid_*   separated audio, pitch tracks, score, video (not used)

Programs per instrument code (spec §1.2, ``urmp_instrument_to_program``); any other code is an
"unknown instrument" error. Frequencies become the nearest MIDI pitch; velocity
``base.DEFAULT_VELOCITY``; one instrument number per part, so sustain and overlaps are per part.

Splits: train and validation as the original (spec §3.1); validation is the pieces MT3 held out
(``VALIDATION_PIECES``, Gardner et al. 2022, appendix).
"""

from __future__ import annotations

import glob
import math
import os

from music_spectrogram_diffusion.data.sources import base
from music_spectrogram_diffusion.data.sources.base import SourceError, SourcePiece, SourceRef

NAME = "urmp"
INSTRUMENT_PROGRAMS = {"vn": 40, "va": 41, "vc": 42, "db": 43, "tpt": 56, "tbn": 57, "tba": 58,
                       "hn": 60, "sax": 64, "ob": 68, "bn": 70, "cl": 71, "fl": 73}
VALIDATION_PIECES = frozenset({1, 2, 12, 13, 24, 25, 31, 38, 39})


def list_pieces(source_dir: str) -> list[SourceRef]:
    source_dir = os.path.abspath(base.require_dir(source_dir, "URMP folder"))
    refs = []
    for name in sorted(os.listdir(source_dir)):
        folder = os.path.join(source_dir, name)
        number = name.split("_", 1)[0]
        if not (os.path.isdir(folder) and number.isdigit()):
            continue  # Supplementary files (e.g. the dataset's README) sit beside the pieces.
        parts = sorted(glob.glob(os.path.join(folder, "Notes_*.txt")),
                       key=lambda p: _part_number(p))
        files = {"mix": os.path.join(folder, f"AuMix_{name}.wav")}
        files.update({f"part{_part_number(p)}": p for p in parts})
        split = "validation" if int(number) in VALIDATION_PIECES else "train"
        refs.append(SourceRef(id=base.sanitize_id(name), split=split, files=files))
    if not refs:
        raise SourceError(source_dir, "no URMP piece folders (like 01_Jupiter_vn_vc) here")
    return refs


def _part_number(path: str) -> int:
    fields = os.path.basename(path).split("_")
    return int(fields[1]) if len(fields) > 2 and fields[1].isdigit() else 0


def read_part_notes(path: str, ns: base.NoteSequence, instrument: int) -> None:
    """Adds the notes of one ``Notes_<n>_<code>_<piece>.txt`` file to ``ns``."""
    fields = os.path.basename(path).split("_")
    if len(fields) < 4 or not fields[1].isdigit():
        raise SourceError(path, "note file name is not Notes_<part>_<instrument>_<piece>.txt")
    code = fields[2]
    if code not in INSTRUMENT_PROGRAMS:
        raise SourceError(path, f"unknown instrument {code!r}; known URMP instruments: "
                                f"{', '.join(sorted(INSTRUMENT_PROGRAMS))}")
    base.require_file(path, "URMP note file")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SourceError(path, f"unreadable note file ({type(e).__name__}: {e})") from e
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            onset, frequency, duration = (float(v) for v in line.split())
        except ValueError as e:
            raise SourceError(path, f"line {number}: expected 'onset frequency duration', got "
                                    f"{line.strip()!r}") from e
        if not (frequency > 0 and math.isfinite(frequency)):
            raise SourceError(path, f"line {number}: frequency {frequency} is not positive")
        base.add_note(ns, start=onset, end=onset + duration,
                      pitch=base.hz_to_midi_pitch(frequency),
                      program=INSTRUMENT_PROGRAMS[code], instrument=instrument)


def load_piece(ref: SourceRef) -> SourcePiece:
    mix = ref.files["mix"]
    parts = [path for role, path in ref.files.items() if role.startswith("part")]
    if not parts:
        raise SourceError(os.path.dirname(mix), "no Notes_*.txt files in this piece folder")
    ns = base.NoteSequence(ticks_per_quarter=220)
    for instrument, path in enumerate(parts):
        read_part_notes(path, ns, instrument)
    samples = base.load_audio(base.require_file(mix, "mixture audio"))
    return base.make_piece(ref, samples, ns, os.path.dirname(mix))


READER = base.DatasetReader(NAME, "URMP (AuMix WAV + Notes_*.txt per part)",
                            list_pieces, load_piece,
                            splits=("train", "validation"))
