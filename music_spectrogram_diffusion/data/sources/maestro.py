"""MAESTRO v3.0.0 (Hawthorne et al. 2019): piano performances with aligned MIDI.

Get it from https://magenta.tensorflow.org/datasets/maestro (maestro-v3.0.0.zip, 101 GB of
WAV; the MIDI-only zip is not enough). Layout of the unzipped release::

    maestro-v3.0.0/
      maestro-v3.0.0.csv    canonical_composer, canonical_title, split, year, midi_filename,
                            audio_filename, duration  (or maestro-v3.0.0.json, column-wise)
      2004/ ... 2018/       <name>.midi and <name>.wav (44.1/48 kHz stereo)

Splits are the release's (train / validation / test). Notes: program 0, no drums, sustain
pedal applied then control changes dropped (spec §1.2, ``tokenize_transcription_example``).
Earlier versions (v1, v2) with the same columns work too, and the metadata file is found by
its ``maestro-v*.csv`` / ``.json`` name.
"""

from __future__ import annotations

import csv
import glob
import json
import os

from music_spectrogram_diffusion.data.sources import base
from music_spectrogram_diffusion.data.sources.base import SourceError, SourcePiece, SourceRef

NAME = "maestrov3"
PIANO_PROGRAM = 0
_COLUMNS = ("split", "midi_filename", "audio_filename")


def _metadata_path(source_dir: str) -> str:
    for pattern in ("maestro-v*.csv", "maestro-v*.json"):
        found = sorted(glob.glob(os.path.join(source_dir, pattern)))
        if found:
            return found[-1]  # the newest version if several are present
    raise SourceError(source_dir, "no maestro-v*.csv or maestro-v*.json metadata file here "
                                  "(is --source the unzipped maestro-v3.0.0 folder?)")


def _read_rows(path: str) -> list[dict[str, str]]:
    try:
        if path.endswith(".csv"):
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        else:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            if isinstance(data, dict):  # v3: {column: {row index: value}}
                keys = sorted(data[_COLUMNS[0]], key=int)
                rows = [{column: values[k] for column, values in data.items()} for k in keys]
            else:  # v1/v2: a list of row objects
                rows = list(data)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, ValueError,
            TypeError, csv.Error) as e:
        raise SourceError(path, f"unreadable metadata ({type(e).__name__}: {e})") from e
    for i, row in enumerate(rows):
        missing = [c for c in _COLUMNS if not isinstance(row, dict) or c not in row]
        if missing:
            raise SourceError(path, f"row {i} lacks the columns {missing}")
    return rows


def list_pieces(source_dir: str) -> list[SourceRef]:
    """Pieces in the metadata file's order; raises SourceError if that file is unusable."""
    source_dir = os.path.abspath(base.require_dir(source_dir, "MAESTRO folder"))
    path = _metadata_path(source_dir)
    refs = []
    for i, row in enumerate(_read_rows(path)):
        split = str(row["split"])
        if split not in base.SPLITS:
            raise SourceError(path, f"row {i} has unknown split {split!r}; valid splits: "
                                    f"{', '.join(base.SPLITS)}")
        midi = os.path.join(source_dir, str(row["midi_filename"]))
        audio = os.path.join(source_dir, str(row["audio_filename"]))
        piece_id = base.sanitize_id(os.path.splitext(str(row["midi_filename"]))[0]
                                    .replace("/", "__"))
        refs.append(SourceRef(id=piece_id, split=split, files={"midi": midi, "audio": audio}))
    return refs


def load_piece(ref: SourceRef) -> SourcePiece:
    midi_path, audio_path = ref.files["midi"], ref.files["audio"]
    ns = base.read_midi(midi_path)
    for note in ns.notes:
        note.program, note.is_drum, note.instrument = PIANO_PROGRAM, False, 0
    for cc in ns.control_changes:
        cc.instrument = 0
    samples = base.load_audio(base.require_file(audio_path, "audio file"))
    return base.make_piece(ref, samples, ns, midi_path)


READER = base.DatasetReader(NAME, "MAESTRO v3 piano (CSV/JSON + year folders)",
                            list_pieces, load_piece)
