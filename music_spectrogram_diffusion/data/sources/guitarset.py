"""GuitarSet (Xi et al. 2018): solo acoustic guitar with per-string note annotations.

Get it from https://zenodo.org/record/3371780 (annotation.zip plus one audio zip). Layout::

    GuitarSet/
      annotation/<id>.jams                  JAMS (JSON): one 'note_midi' annotation per string
      audio_mono-mic/<id>_mic.wav           (default audio) the reference microphone, 44.1 kHz
      audio_mono-pickup_mix/<id>_mix.wav    (``audio='mix'``) the summed hexaphonic pickup

with ids like ``00_BN1-129-Eb_comp`` (player 00-05, style/progression, tempo, key, comp|solo).

Notes: every 'note_midi' observation (time, duration, value = fractional MIDI pitch, rounded)
becomes a note of program 24 (acoustic nylon guitar), velocity ``base.DEFAULT_VELOCITY``; one
instrument number per string (spec §1.2, ``tokenize_guitarset_example``: one "Clean Guitar"
track of program 24). JAMS observations are read in both the list form
(``[{"time", "duration", "value", "confidence"}, ...]``) and the older column form.

Splits: the original's GuitarSet TFRecords had train and validation splits only (spec §3.1) and
its split list is not public. Here player ``VALIDATION_PLAYERS`` (05) is the validation split and
players 00-04 are train: a split by performer, so validation measures a guitarist the model has
not heard (300 / 60 excerpts).
"""

from __future__ import annotations

import glob
import json
import os

from music_spectrogram_diffusion.data.sources import base
from music_spectrogram_diffusion.data.sources.base import SourceError, SourcePiece, SourceRef

NAME = "guitarset"
GUITAR_PROGRAM = 24
VALIDATION_PLAYERS = ("05",)
AUDIO_CHOICES = {"mic": ("audio_mono-mic", "_mic.wav"),
                 "mix": ("audio_mono-pickup_mix", "_mix.wav")}


def list_pieces(source_dir: str, audio: str = "mic") -> list[SourceRef]:
    """One piece per annotation/*.jams file; ``audio`` is 'mic' or 'mix' (see module doc)."""
    if audio not in AUDIO_CHOICES:
        raise ValueError(f"audio={audio!r}; valid values: {sorted(AUDIO_CHOICES)}")
    source_dir = os.path.abspath(base.require_dir(source_dir, "GuitarSet folder"))
    annotation_dir = base.require_dir(os.path.join(source_dir, "annotation"),
                                      "GuitarSet annotation/ folder")
    audio_dir, suffix = AUDIO_CHOICES[audio]
    refs = []
    for path in sorted(glob.glob(os.path.join(annotation_dir, "*.jams"))):
        piece_id = os.path.basename(path)[: -len(".jams")]
        split = "validation" if piece_id[:2] in VALIDATION_PLAYERS else "train"
        refs.append(SourceRef(
            id=base.sanitize_id(piece_id), split=split,
            files={"annotation": path,
                   "audio": os.path.join(source_dir, audio_dir, piece_id + suffix)}))
    if not refs:
        raise SourceError(annotation_dir, "no .jams files here")
    return refs


def _observations(annotation: dict, path: str) -> list[tuple[float, float, float]]:
    """(time, duration, value) of a JAMS annotation, in either JSON form."""
    data = annotation.get("data", [])
    try:
        if isinstance(data, dict):  # column form: {"time": [...], "duration": [...], ...}
            return list(zip(map(float, data["time"]), map(float, data["duration"]),
                            map(float, data["value"])))
        return [(float(o["time"]), float(o["duration"]), float(o["value"])) for o in data]
    except (KeyError, TypeError, ValueError) as e:
        raise SourceError(path, f"malformed note_midi observations ({type(e).__name__}: {e})")


def read_jams_notes(path: str) -> base.NoteSequence:
    """The guitar notes of a GuitarSet .jams file, one instrument per string."""
    base.require_file(path, "JAMS annotation")
    try:
        with open(path, encoding="utf-8") as f:
            jams = json.load(f)
        annotations = [a for a in jams["annotations"] if a.get("namespace") == "note_midi"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError,
            AttributeError) as e:
        raise SourceError(path, f"not a readable JAMS file ({type(e).__name__}: {e})") from e
    if not annotations:
        raise SourceError(path, "no 'note_midi' annotation")
    ns = base.NoteSequence(ticks_per_quarter=220)
    for string, annotation in enumerate(annotations):
        for time, duration, value in _observations(annotation, path):
            if not 0 <= round(value) <= 127 or duration < 0 or time < 0:
                raise SourceError(path, f"bad note (time {time}, duration {duration}, "
                                        f"pitch {value})")
            base.add_note(ns, start=time, end=time + duration, pitch=int(round(value)),
                          program=GUITAR_PROGRAM, instrument=string)
    return ns


def load_piece(ref: SourceRef) -> SourcePiece:
    return base.load_annotated_piece(ref, "annotation", read_jams_notes)


READER = base.DatasetReader(NAME, "GuitarSet (JAMS note_midi + mono mic audio)",
                            list_pieces, load_piece,
                            splits=("train", "validation"))
