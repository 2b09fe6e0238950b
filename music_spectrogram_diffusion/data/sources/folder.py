"""Your own recordings: any folder of MIDI files paired with their audio.

Layout (nested folders allowed; ``--source`` is the top folder)::

    recordings/
      splits.csv                 optional: columns name, split (see below)
      etude_01.mid               paired by relative path without extension:
      etude_01.wav                 etude_01.mid + etude_01.wav
      live/take_2.midi           live/take_2.midi + live/take_2.flac
      live/take_2.flac

MIDI files end in ``.mid`` or ``.midi``, audio in ``.wav`` or ``.flac`` (any rate and channel
count: read as 16 kHz mono, spec §2.1); the case of the extension does not matter. Other files
are ignored, and so are hidden files and folders and a prepared dataset inside the source
(a folder whose ``manifest.json`` is msd-prepare-dataset's). The notes keep the MIDI file's
programs and drum flags (one instrument per track and channel); sustain is applied per
instrument and control changes are dropped (spec §1.2).

Splits: with ``splits.csv`` at the top folder, its ``name`` column (the relative path, with or
without extension, e.g. ``live/take_2``) and ``split`` column (train, validation or test; val,
valid and dev also mean validation) decide; a pair that it does not list is reported, not
guessed. Without it the split is a deterministic function of the piece's relative name alone,
so adding files never moves the others: the first 15 hex digits of SHA-256 of the name, as a
fraction of 16^15, below 0.8 is train, below 0.9 validation, else test (``SPLIT_FRACTIONS``:
80/10/10). A folder that this leaves without a train piece, or with two or more pieces and
no validation piece, has the nearest piece moved into the empty split (few pieces: write a
``splits.csv``).

Checks, each reported per file with its reason while the rest is prepared: a MIDI or audio
file without its partner (or with two partners, e.g. both .wav and .flac), an unreadable file,
a MIDI file without notes, silent audio (peak below ``SILENCE_DBFS``), and a length mismatch:
a note starting more than ``length_tolerance_seconds`` after the audio ends, or audible sound
(above ``TAIL_DB`` relative to the audio's peak) lasting that much longer than the last note.
Note ends past the audio's end are cut to it (a held note outlasting a trimmed recording).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from collections.abc import Mapping

import numpy as np

from music_spectrogram_diffusion.data.piece_manifest import PieceManifest
from music_spectrogram_diffusion.data.sources import base
from music_spectrogram_diffusion.data.sources.base import SourceError, SourcePiece, SourceRef
from music_spectrogram_diffusion.features import DEFAULT_FEATURES

NAME = "folder"
MIDI_EXTENSIONS = (".mid", ".midi")
AUDIO_EXTENSIONS = (".wav", ".flac")
SPLITS_FILE = "splits.csv"
SPLIT_ALIASES = {"val": "validation", "valid": "validation", "dev": "validation"}
# Upper bound of each split's band of the name's hash fraction, in order.
SPLIT_FRACTIONS = (("train", 0.8), ("validation", 0.9), ("test", 1.0))
# How far audio and MIDI may disagree about where the music ends (reverb, trimmed silence).
LENGTH_TOLERANCE_SECONDS = 2.0
SILENCE_DBFS = -80.0  # peak below this: a silent (or failed) recording
TAIL_DB = -50.0  # sound below the peak by more than this counts as silence at the end
_PREPARED_FORMAT = "msd-prepared"  # data/prepare.py's manifest format (not imported: cycle)


def hash_fraction(name: str) -> float:
    """A fraction in [0, 1) that depends on the relative name only."""
    return int(hashlib.sha256(name.encode("utf-8")).hexdigest()[:15], 16) / 16 ** 15


def hash_split(name: str) -> str:
    fraction = hash_fraction(name)
    return next(split for split, upper in SPLIT_FRACTIONS if fraction < upper)


def _is_prepared_dataset(folder: str) -> bool:
    try:
        with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as f:
            return json.load(f).get("format") == _PREPARED_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _scan(source_dir: str) -> dict[str, dict[str, list[str]]]:
    """Relative name (posix, no extension) -> {'midi': [paths], 'audio': [paths]}."""
    found: dict[str, dict[str, list[str]]] = {}
    for folder, dirs, files in os.walk(source_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and not _is_prepared_dataset(os.path.join(folder, d)))
        for file_name in sorted(files):
            stem, extension = os.path.splitext(file_name)
            extension = extension.lower()
            role = ("midi" if extension in MIDI_EXTENSIONS else
                    "audio" if extension in AUDIO_EXTENSIONS else None)
            if role is None or file_name.startswith("."):
                continue
            relative = os.path.relpath(os.path.join(folder, stem), source_dir)
            name = relative.replace(os.sep, "/")
            found.setdefault(name, {"midi": [], "audio": []})[role].append(
                os.path.join(folder, file_name))
    return found


def _strip_extension(name: str) -> str:
    stem, extension = os.path.splitext(name)
    return stem if extension.lower() in MIDI_EXTENSIONS + AUDIO_EXTENSIONS else name


def read_splits(path: str) -> dict[str, tuple[str, int]]:
    """``splits.csv``: relative name (no extension) -> (split, line number).

    Raises:
      SourceError: the file is unreadable, lacks the name or split column, or gives an unknown
        split or two splits for one name (the whole folder's split would be in doubt).
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip().lower() for c in reader.fieldnames or ()]
            if "name" not in columns or "split" not in columns:
                raise SourceError(path, f"needs the columns 'name' and 'split'; found {columns}")
            rows = [(line, {k.strip().lower(): (v or "").strip() for k, v in row.items()
                            if k is not None})
                    for line, row in enumerate(reader, start=2)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SourceError(path, f"unreadable splits file ({type(e).__name__}: {e})") from e
    splits: dict[str, tuple[str, int]] = {}
    for line, row in rows:
        if not row.get("name"):
            continue  # a blank line
        name = _strip_extension(row["name"].replace("\\", "/").strip("/"))
        split = SPLIT_ALIASES.get(row["split"].lower(), row["split"].lower())
        if split not in base.SPLITS:
            raise SourceError(path, f"line {line}: unknown split {row['split']!r}; valid splits: "
                                    f"{', '.join(base.SPLITS)}")
        if name in splits and splits[name][0] != split:
            raise SourceError(path, f"line {line}: {name!r} is already in "
                                    f"{splits[name][0]} (line {splits[name][1]})")
        splits[name] = (split, line)
    return splits


def _fill_empty_splits(splits: dict[str, str]) -> dict[str, str]:
    """Moves the nearest piece (by hash fraction) into an empty train or validation split."""
    splits = dict(splits)
    ranked = sorted(splits, key=hash_fraction)
    if ranked and "train" not in splits.values():
        splits[ranked[0]] = "train"
    if len(ranked) >= 2 and "validation" not in splits.values():
        tests = [n for n in ranked if splits[n] == "test"]
        trains = [n for n in ranked if splits[n] == "train"]
        splits[tests[0] if tests else trains[-1]] = "validation"
    return splits


def _piece_ids(names: list[str]) -> dict[str, str]:
    """Relative name -> file-name-safe id, unique (a short hash is added on a clash)."""
    ids = {name: base.sanitize_id(name.replace("/", "__")) for name in names}
    counts: dict[str, int] = {}
    for piece_id in ids.values():
        counts[piece_id] = counts.get(piece_id, 0) + 1
    return {name: piece_id if counts[piece_id] == 1 else
            f"{piece_id}_{hashlib.sha256(name.encode('utf-8')).hexdigest()[:8]}"
            for name, piece_id in ids.items()}


def _problem(files: Mapping[str, list[str]]) -> str | None:
    midi, audio = files["midi"], files["audio"]
    if len(midi) > 1:
        return f"several MIDI files for one piece: {', '.join(os.path.basename(p) for p in midi)}"
    if len(audio) > 1:
        return (f"several audio files for one piece: "
                f"{', '.join(os.path.basename(p) for p in audio)}; keep one")
    if not audio:
        return (f"MIDI file without audio: no {' or '.join(AUDIO_EXTENSIONS)} file of the same "
                "name beside it")
    if not midi:
        return (f"audio file without MIDI: no {' or '.join(MIDI_EXTENSIONS)} file of the same "
                "name beside it")
    return None


def list_pieces(source_dir: str, *,
                length_tolerance_seconds: float = LENGTH_TOLERANCE_SECONDS) -> list[SourceRef]:
    """One ref per relative name; unpaired files become refs whose loading reports them.

    Raises:
      SourceError: no folder, no MIDI or audio file in it, an unusable ``splits.csv``, or a
        bad tolerance.
    """
    source_dir = os.path.abspath(base.require_dir(source_dir, "recordings folder"))
    tolerance = float(length_tolerance_seconds)
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise SourceError(source_dir, f"length tolerance must be a non-negative number of "
                                      f"seconds, got {length_tolerance_seconds!r}")
    found = _scan(source_dir)
    if not found:
        raise SourceError(source_dir, f"no {'/'.join(MIDI_EXTENSIONS + AUDIO_EXTENSIONS)} files "
                                      "in this folder or below it")
    splits_path = os.path.join(source_dir, SPLITS_FILE)
    listed = read_splits(splits_path) if os.path.isfile(splits_path) else None
    problems = {name: _problem(files) for name, files in found.items()}
    if listed is None:
        splits = {name: hash_split(name) for name in found}
        paired = _fill_empty_splits({n: s for n, s in splits.items() if problems[n] is None})
        splits.update(paired)
    else:
        splits = {name: listed.get(name, (hash_split(name), 0))[0] for name in found}
        for name in found:
            if name not in listed and problems[name] is None:
                problems[name] = f"not listed in {SPLITS_FILE} (add a row '{name},<split>')"
    ids = _piece_ids(list(found) + [n for n in listed or () if n not in found])
    refs = []
    for name, files in found.items():
        roles = {role: paths[0] for role, paths in files.items() if paths}
        details: dict[str, object] = {"name": name, "length_tolerance_seconds": tolerance}
        if problems[name] is not None:
            details["problem"] = problems[name]
        refs.append(SourceRef(id=ids[name], split=splits[name], files=roles, details=details))
    for name, (split, line) in (listed or {}).items():
        if name not in found:
            refs.append(SourceRef(id=ids[name], split=split, files={"splits": splits_path},
                                  details={"name": name, "problem": (
                                      f"line {line}: no MIDI or audio file named {name!r} "
                                      "(relative to the folder, without extension)")}))
    return refs


def _audible_end(samples: np.ndarray, peak: float) -> float:
    """Seconds until the last sample within ``TAIL_DB`` of the peak."""
    threshold = max(peak * 10 ** (TAIL_DB / 20), 10 ** (SILENCE_DBFS / 20))
    loud = np.flatnonzero(np.abs(samples) > threshold)
    return (int(loud[-1]) + 1) / DEFAULT_FEATURES.sample_rate if loud.size else 0.0


def load_piece(ref: SourceRef) -> SourcePiece:
    if "problem" in ref.details:
        raise SourceError(ref.path, str(ref.details["problem"]))
    midi_path, audio_path = ref.files["midi"], ref.files["audio"]
    tolerance = float(ref.details["length_tolerance_seconds"])
    ns = base.read_midi(midi_path)  # the MIDI first: its problems need no audio decoding
    if not ns.notes:
        raise SourceError(midi_path, "MIDI file holds no notes")
    ns = base.finalize_note_sequence(ns, midi_path)
    samples = base.load_audio(base.require_file(audio_path, "audio file"))
    peak = float(np.max(np.abs(samples)))
    if peak < 10 ** (SILENCE_DBFS / 20):
        level = 20 * math.log10(peak) if peak > 0 else -math.inf
        raise SourceError(audio_path, f"silent audio: peak {level:.1f} dBFS, below "
                                      f"{SILENCE_DBFS:.0f} dBFS")
    duration = len(samples) / DEFAULT_FEATURES.sample_rate
    last_onset = max(n.start_time for n in ns.notes)
    last_end = max(n.end_time for n in ns.notes)
    if last_onset > duration + tolerance:
        raise SourceError(midi_path, (
            f"length mismatch with {os.path.basename(audio_path)}: a note starts at "
            f"{last_onset:.2f} s but the audio lasts {duration:.2f} s (tolerance "
            f"{tolerance:g} s)"))
    audible = _audible_end(samples, peak)
    if audible > last_end + tolerance:
        raise SourceError(audio_path, (
            f"length mismatch with {os.path.basename(midi_path)}: the audio sounds until "
            f"{audible:.2f} s but the last note ends at {last_end:.2f} s (tolerance "
            f"{tolerance:g} s)"))
    ns = base.align_to_audio(ns, len(samples), midi_path, tolerance=math.inf)
    ns.id = ref.id
    return SourcePiece(id=ref.id, split=ref.split, samples=samples, note_sequence=ns,
                       source_files=(midi_path, audio_path))


def write_folder(manifest: PieceManifest, out_dir: str, splits: Mapping[str, str]) -> list[str]:
    """Writes pieces of a prepared or embedded dataset as a folder this reader prepares.

    Each piece ``id`` in ``splits`` (piece id -> split) becomes ``<split>/<id>.mid`` and
    ``<split>/<id>.wav`` (copies of its files) and one row of ``splits.csv``, written last; each
    file atomically. Returns the relative names written, e.g. for a demonstration on the
    embedded dataset (scripts/finetune_example.py) or tests.
    """
    from music_spectrogram_diffusion import file_io

    unknown = [s for s in splits.values() if s not in base.SPLITS]
    if unknown:
        raise ValueError(f"unknown splits {sorted(set(unknown))}; valid splits: "
                         f"{', '.join(base.SPLITS)}")
    by_id = {piece.id: piece for piece in manifest.pieces}
    missing = sorted(set(splits) - set(by_id))
    if missing:
        raise ValueError(f"{manifest.data_dir}: no pieces {missing[:5]}")
    names = []
    for piece_id, split in splits.items():
        name = f"{split}/{piece_id}"
        for source, extension in ((manifest.midi_file(by_id[piece_id]), ".mid"),
                                  (manifest.audio_file(by_id[piece_id]), ".wav")):
            with open(source, "rb") as f:
                file_io.write_bytes_atomic(os.path.join(out_dir, name + extension), f.read())
        names.append(name)
    rows = "".join(f"{name},{splits[name.split('/', 1)[1]]}\n" for name in names)
    file_io.write_bytes_atomic(os.path.join(out_dir, SPLITS_FILE),
                               f"name,split\n{rows}".encode("utf-8"))
    return names


READER = base.DatasetReader(NAME, "your own recordings: NAME.mid/.midi + NAME.wav/.flac pairs",
                            list_pieces, load_piece)
