"""MusicNet (Thickstun et al. 2017): classical recordings with aligned note labels.

Get musicnet.tar.gz from https://zenodo.org/record/5120004. Layout::

    musicnet/
      train_data/<id>.wav     44.1 kHz recordings      test_data/<id>.wav
      train_labels/<id>.csv   one row per note         test_labels/<id>.csv

Label columns: ``start_time, end_time`` (sample indices at 44.1 kHz, ``LABEL_SAMPLE_RATE``),
``instrument, note`` (MIDI pitch), ``start_beat, end_beat, note_value``.

Programs: MusicNet's instrument numbers are General MIDI program numbers counted from 1
(1 Acoustic Grand Piano, 7 Harpsichord, 41 Violin, ... 74 Flute), so the program is the number
minus one. Any number outside ``INSTRUMENT_PROGRAMS`` is an "unknown instrument" error.

Splits: test is the release's test folder (10 pieces); validation is the 15 train-folder pieces
MT3 held out (``VALIDATION_IDS``, Gardner et al. 2022, appendix); the rest is train (spec §3.1:
train / validation / test).
"""

from __future__ import annotations

import csv
import glob
import os

from music_spectrogram_diffusion.data.sources import base
from music_spectrogram_diffusion.data.sources.base import SourceError, SourcePiece, SourceRef

NAME = "musicnet"
LABEL_SAMPLE_RATE = 44100
# MusicNet instrument number -> General MIDI program (0-based).
INSTRUMENT_PROGRAMS = {1: 0, 7: 6, 41: 40, 42: 41, 43: 42, 44: 43, 61: 60, 69: 68, 71: 70,
                       72: 71, 74: 73}
VALIDATION_IDS = frozenset({"1733", "1765", "1790", "1818", "2160", "2198", "2289", "2300",
                            "2308", "2315", "2336", "2466", "2477", "2504", "2611"})
_COLUMNS = ("start_time", "end_time", "instrument", "note")


def list_pieces(source_dir: str) -> list[SourceRef]:
    source_dir = os.path.abspath(base.require_dir(source_dir, "MusicNet folder"))
    refs = []
    for folder in ("train", "test"):
        label_dir = os.path.join(source_dir, f"{folder}_labels")
        if not os.path.isdir(label_dir):
            continue
        for path in sorted(glob.glob(os.path.join(label_dir, "*.csv"))):
            piece_id = os.path.basename(path)[: -len(".csv")]
            split = folder if folder == "test" else (
                "validation" if piece_id in VALIDATION_IDS else "train")
            refs.append(SourceRef(
                id=base.sanitize_id(piece_id), split=split,
                files={"labels": path,
                       "audio": os.path.join(source_dir, f"{folder}_data", piece_id + ".wav")}))
    if not refs:
        raise SourceError(source_dir, "no train_labels/*.csv or test_labels/*.csv files (is "
                                      "--source the unpacked musicnet folder?)")
    return refs


def read_labels(path: str) -> base.NoteSequence:
    """The notes of a MusicNet label CSV (times in 44.1 kHz samples), one instrument per part."""
    base.require_file(path, "MusicNet labels")
    ns = base.NoteSequence(ticks_per_quarter=220)
    instruments: dict[int, int] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in _COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise SourceError(path, f"missing columns {missing}; found {reader.fieldnames}")
            for line, row in enumerate(reader, start=2):
                try:
                    number = int(row["instrument"])
                    start = int(row["start_time"]) / LABEL_SAMPLE_RATE
                    end = int(row["end_time"]) / LABEL_SAMPLE_RATE
                    pitch = int(row["note"])
                except (TypeError, ValueError) as e:
                    raise SourceError(path, f"line {line}: not a number ({e})") from e
                if number not in INSTRUMENT_PROGRAMS:
                    raise SourceError(path, (
                        f"line {line}: unknown instrument {number}; known MusicNet instruments: "
                        f"{sorted(INSTRUMENT_PROGRAMS)}"))
                base.add_note(ns, start=start, end=end, pitch=pitch,
                              program=INSTRUMENT_PROGRAMS[number],
                              instrument=instruments.setdefault(number, len(instruments)))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SourceError(path, f"unreadable labels ({type(e).__name__}: {e})") from e
    return ns


def load_piece(ref: SourceRef) -> SourcePiece:
    return base.load_annotated_piece(ref, "labels", read_labels)


READER = base.DatasetReader(NAME, "MusicNet (label CSVs in 44.1 kHz samples + WAV)",
                            list_pieces, load_piece)
