"""Slakh2100 (Manilow et al. 2019) and its Cerberus4 subset: Lakh MIDI rendered per stem.

Get ``slakh2100_flac_redux`` from https://zenodo.org/record/4599666 (the redux removes
duplicated songs). Layout::

    slakh2100_flac_redux/{train,validation,test,omitted}/TrackNNNNN/
      mix.flac            the mixture (44.1 kHz)
      stems/S00.flac ...  one rendered stem per instrument
      MIDI/S00.mid ...    the MIDI of each stem
      all_src.mid         every stem's MIDI in one file (not used: MIDI/ is per stem)
      metadata.yaml       stems: {S00: {inst_class, program_num, is_drum, midi_saved,
                                        audio_rendered, plugin_name, ...}, ...}

Splits are the folders; ``omitted/`` is skipped. Only stems with ``audio_rendered`` and
``midi_saved`` are read: the others are not in the mix.

**Slakh** (all rendered stems, the ``mix.flac`` audio). Programs come from the Slakh class
table of spec §1.2 (``SLAKH_CLASS_PROGRAMS``; "Drums" -> drum notes, program 0). The public
metadata gives each stem's coarse ``inst_class`` ("Guitar") and its MIDI ``program_num``; the
fine class the original's TFRecords carried ("Distorted Electric Guitar") is derived from the
program number with the General MIDI families (``PROGRAM_CLASSES``). A stem whose metadata
names a fine class directly (``slakh_class``, or an ``inst_class`` that is one) uses it. A
rendered stem whose program has no class (sound effects, ethnic, percussive: programs 96-127)
is an "unknown instrument" error for the track. Pitch bends are ignored (spec §1.2).

The original trained Slakh on 10 random sub-mixes per song (spec §3.1,
``slakh_multi_full_subsets_10``); here each song is one piece with its full mix, and the
random windows of the task pipeline provide the variety.

**Cerberus4** (spec §1.2, ``track_specs``): tracks with at least one rendered piano (programs
0-7), guitar (24-31), bass (32-39) and drum stem. The first stem (by stem id) of each class is
used; its notes get program piano 0, guitar 24, bass 32, drums (is_drum), and the audio is the
sum of those four stems' audio (the original's ``cerberus4`` records held exactly such a
four-stem mix). Tracks lacking one of the four are not part of Cerberus4 and are not listed.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from music_spectrogram_diffusion.data.sources import base
from music_spectrogram_diffusion.data.sources.base import SourceError, SourcePiece, SourceRef

logger = logging.getLogger(__name__)

NAME = "slakh"
CERBERUS4_NAME = "cerberus4"
METADATA_NAME = "metadata.yaml"
FOLDER_SPLITS = {"train": "train", "validation": "validation", "test": "test"}
SKIPPED_FOLDERS = ("omitted",)

# Program of each Slakh instrument class (spec §1.2, the original's _SLAKH_CLASS_PROGRAMS).
SLAKH_CLASS_PROGRAMS = {
    "Acoustic Piano": 0, "Electric Piano": 4, "Chromatic Percussion": 8, "Organ": 16,
    "Acoustic Guitar": 24, "Clean Electric Guitar": 26, "Distorted Electric Guitar": 29,
    "Acoustic Bass": 32, "Electric Bass": 33, "Violin": 40, "Viola": 41, "Cello": 42,
    "Contrabass": 43, "Orchestral Harp": 46, "Timpani": 47, "String Ensemble": 48,
    "Synth Strings": 50, "Choir and Voice": 52, "Orchestral Hit": 55, "Trumpet": 56,
    "Trombone": 57, "Tuba": 58, "French Horn": 60, "Brass Section": 61,
    "Soprano/Alto Sax": 64, "Tenor Sax": 66, "Baritone Sax": 67, "Oboe": 68,
    "English Horn": 69, "Bassoon": 70, "Clarinet": 71, "Pipe": 73, "Synth Lead": 80,
    "Synth Pad": 88,
}
DRUMS_CLASS = "Drums"

# Fine Slakh class of each General MIDI program 0-95 (GM families; tremolo/pizzicato strings
# count as the ensemble, muted trumpet as trumpet, synth brass as the brass section).
_CLASS_RANGES = (
    (0, 3, "Acoustic Piano"), (4, 7, "Electric Piano"), (8, 15, "Chromatic Percussion"),
    (16, 23, "Organ"), (24, 25, "Acoustic Guitar"), (26, 28, "Clean Electric Guitar"),
    (29, 31, "Distorted Electric Guitar"), (32, 32, "Acoustic Bass"),
    (33, 39, "Electric Bass"), (40, 40, "Violin"), (41, 41, "Viola"), (42, 42, "Cello"),
    (43, 43, "Contrabass"), (44, 45, "String Ensemble"), (46, 46, "Orchestral Harp"),
    (47, 47, "Timpani"), (48, 49, "String Ensemble"), (50, 51, "Synth Strings"),
    (52, 54, "Choir and Voice"), (55, 55, "Orchestral Hit"), (56, 56, "Trumpet"),
    (57, 57, "Trombone"), (58, 58, "Tuba"), (59, 59, "Trumpet"), (60, 60, "French Horn"),
    (61, 63, "Brass Section"), (64, 65, "Soprano/Alto Sax"), (66, 66, "Tenor Sax"),
    (67, 67, "Baritone Sax"), (68, 68, "Oboe"), (69, 69, "English Horn"),
    (70, 70, "Bassoon"), (71, 71, "Clarinet"), (72, 79, "Pipe"), (80, 87, "Synth Lead"),
    (88, 95, "Synth Pad"),
)
PROGRAM_CLASSES = {p: name for low, high, name in _CLASS_RANGES for p in range(low, high + 1)}

# Cerberus4 (spec §1.2): role -> (program range of the stem, program given to its notes).
CERBERUS4_ROLES = {"bass": ((32, 39), 32), "drums": (None, 0), "guitar": ((24, 31), 24),
                   "piano": ((0, 7), 0)}


def slakh_class_of_stem(stem: dict, stem_id: str, metadata_path: str) -> str:
    """The fine Slakh class of a metadata.yaml stem entry (see module docstring)."""
    if stem.get("is_drum") or stem.get("inst_class") == DRUMS_CLASS:
        return DRUMS_CLASS
    for key in ("slakh_class", "inst_class"):
        if stem.get(key) in SLAKH_CLASS_PROGRAMS:
            return stem[key]
    program = stem.get("program_num")
    if isinstance(program, bool) or not isinstance(program, int) or not 0 <= program <= 127:
        raise SourceError(metadata_path, f"stem {stem_id} has no valid program_num "
                                         f"(got {program!r})")
    if program not in PROGRAM_CLASSES:
        raise SourceError(metadata_path, (
            f"unknown instrument: stem {stem_id} ({stem.get('inst_class')}, program {program}"
            f", {stem.get('midi_program_name', '?')}) has no Slakh class program (spec §1.2 "
            f"covers programs 0-95 and drums)"))
    return PROGRAM_CLASSES[program]


def _read_metadata(path: str) -> dict:
    import yaml

    base.require_file(path, "Slakh metadata")
    try:
        with open(path, encoding="utf-8") as f:
            metadata = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise SourceError(path, f"unreadable metadata ({type(e).__name__}: {e})") from e
    if not isinstance(metadata, dict) or not isinstance(metadata.get("stems"), dict):
        raise SourceError(path, "metadata has no 'stems' mapping")
    return metadata


def _rendered_stems(metadata: dict) -> list[tuple[str, dict]]:
    return [(stem_id, stem) for stem_id, stem in sorted(metadata["stems"].items())
            if isinstance(stem, dict) and stem.get("audio_rendered", True)
            and stem.get("midi_saved", True)]


def _track_dirs(source_dir: str) -> list[tuple[str, str]]:
    """(split, track folder) of every track, in split then name order."""
    source_dir = os.path.abspath(base.require_dir(source_dir, "Slakh2100 folder"))
    found = [folder for folder in FOLDER_SPLITS if os.path.isdir(os.path.join(source_dir, folder))]
    if not found:
        raise SourceError(source_dir, "no train/, validation/ or test/ folder here (is --source "
                                      "the slakh2100_flac_redux folder?)")
    tracks = []
    for folder in found:
        split_dir = os.path.join(source_dir, folder)
        for name in sorted(os.listdir(split_dir)):
            if os.path.isdir(os.path.join(split_dir, name)):
                tracks.append((FOLDER_SPLITS[folder], os.path.join(split_dir, name)))
    return tracks


def list_pieces(source_dir: str) -> list[SourceRef]:
    """Every track of the train/validation/test folders (metadata is read at load time)."""
    return [
        SourceRef(id=base.sanitize_id(os.path.basename(track)), split=split,
                  files={"metadata": os.path.join(track, METADATA_NAME),
                         "audio": os.path.join(track, "mix.flac")})
        for split, track in _track_dirs(source_dir)
    ]


def _stem_track(track_dir: str, stem_id: str) -> base.NoteSequence:
    return base.read_midi(os.path.join(track_dir, "MIDI", f"{stem_id}.mid"))


def load_piece(ref: SourceRef) -> SourcePiece:
    metadata_path = ref.files["metadata"]
    track_dir = os.path.dirname(metadata_path)
    metadata = _read_metadata(metadata_path)
    tracks = []
    for stem_id, stem in _rendered_stems(metadata):
        slakh_class = slakh_class_of_stem(stem, stem_id, metadata_path)
        is_drum = slakh_class == DRUMS_CLASS
        program = 0 if is_drum else SLAKH_CLASS_PROGRAMS[slakh_class]
        tracks.append((_stem_track(track_dir, stem_id), program, is_drum))
    if not tracks:
        raise SourceError(metadata_path, "no stem has both audio_rendered and midi_saved")
    samples = base.load_audio(base.require_file(ref.files["audio"], "mix audio"))
    return base.make_piece(ref, samples, base.merge_tracks(tracks), metadata_path)


def cerberus4_stems(metadata: dict, metadata_path: str) -> dict[str, str] | None:
    """Role -> stem id of the first rendered stem of each Cerberus4 class, or None."""
    chosen: dict[str, str] = {}
    for stem_id, stem in _rendered_stems(metadata):
        program = stem.get("program_num")
        for role, (programs, _) in CERBERUS4_ROLES.items():
            if role in chosen:
                continue
            if programs is None:
                matches = bool(stem.get("is_drum")) or stem.get("inst_class") == DRUMS_CLASS
            else:
                matches = (not stem.get("is_drum") and isinstance(program, int)
                           and programs[0] <= program <= programs[1])
            if matches:
                chosen[role] = stem_id
                break
    return chosen if len(chosen) == len(CERBERUS4_ROLES) else None


def list_cerberus4_pieces(source_dir: str) -> list[SourceRef]:
    """Tracks with a piano, guitar, bass and drum stem; the others are logged and left out."""
    refs, left_out = [], 0
    for split, track in _track_dirs(source_dir):
        metadata_path = os.path.join(track, METADATA_NAME)
        try:
            stems = cerberus4_stems(_read_metadata(metadata_path), metadata_path)
        except SourceError:
            stems = {}  # Listed anyway so that preparation reports the bad metadata.
        if stems is None:
            left_out += 1
            continue
        refs.append(SourceRef(
            id=base.sanitize_id(os.path.basename(track)), split=split,
            files={"metadata": metadata_path},
            details={"stems": tuple(sorted(stems.items()))}))
    logger.info("Cerberus4: %d tracks have piano, guitar, bass and drums; %d do not",
                len(refs), left_out)
    return refs


def load_cerberus4_piece(ref: SourceRef) -> SourcePiece:
    metadata_path = ref.files["metadata"]
    track_dir = os.path.dirname(metadata_path)
    stems = dict(ref.details["stems"])
    if not stems:
        _read_metadata(metadata_path)  # raises the SourceError that made the listing skip it
        raise SourceError(metadata_path, "not a Cerberus4 track")
    tracks, audio = [], []
    for role, stem_id in sorted(stems.items()):
        program = CERBERUS4_ROLES[role][1]
        tracks.append((_stem_track(track_dir, stem_id), program, role == "drums"))
        audio.append(base.load_audio(base.require_file(
            os.path.join(track_dir, "stems", f"{stem_id}.flac"), f"{role} stem audio")))
    length = max(len(a) for a in audio)
    samples = np.zeros(length, np.float32)  # [num_samples] the four-stem mix
    for stem_audio in audio:
        samples[: len(stem_audio)] += stem_audio
    return base.make_piece(ref, samples, base.merge_tracks(tracks), metadata_path)


READER = base.DatasetReader(NAME, "Slakh2100 redux, full mixes (metadata.yaml + MIDI/ stems)",
                            list_pieces, load_piece)
CERBERUS4_READER = base.DatasetReader(
    CERBERUS4_NAME, "Slakh2100 tracks with piano, guitar, bass and drums (four-stem mix)",
    list_cerberus4_pieces, load_cerberus4_piece)
