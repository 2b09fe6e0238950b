"""The TFRecords the original pipeline consumed (spec §3.1), as an alternative source format.

``msd-prepare-dataset NAME --source DIR --source_format tfrecord`` reads every file under DIR
whose name contains ``.tfrecord`` (e.g. ``maestro-v3.0.0_ns_wav_train.tfrecord-00000-of-00025``
or ``slakh_multi_cerberus_validation_bass:drums:guitar:piano.tfrecord-00003-of-00212``). The
split is the word ``train``, ``validation`` (or ``valid``) or ``test`` in the file name; the
``*_subset`` files hold copies of pieces of the full splits and are skipped.

``tf.train.Example`` features per dataset (spec §3.1) and how they become a piece:

  maestrov3, guitarset  id, audio (WAV bytes), sequence (NoteSequence bytes)
  urmp                  id, audio, instrument_sequences (NoteSequence bytes per part),
                        inst_names (instrument code per part -> ``urmp.INSTRUMENT_PROGRAMS``)
  musicnet              id, audio (float samples), sample_rate, sequence
  slakh, cerberus4      track_id, mix (float samples), audio_sample_rate, note_sequences
                        (bytes per stem), slakh_class (slakh) / inst_names (cerberus4)

Programs follow spec §1.2 exactly as the raw readers do: MAESTRO and MusicNet keep the
sequence's programs, GuitarSet is program 24, URMP and Slakh map per track. Audio is
resampled to 16 kHz with librosa (§2.1). Piece ids are ``<file name>-<record number>``: the
records are listed by scanning the TFRecord framing (8-byte length, 4-byte CRC, data, 4-byte
CRC) without TensorFlow, and TensorFlow parses each record in the worker that loads it.
The CRCs are not verified; a corrupt record fails to parse and is reported as a SourceError.
"""

from __future__ import annotations

import io
import os
import re
import struct

import numpy as np

from music_spectrogram_diffusion.data import sources
from music_spectrogram_diffusion.data.sources import base, slakh, urmp
from music_spectrogram_diffusion.data.sources.base import SourceError, SourcePiece, SourceRef

DATASETS = ("maestrov3", "guitarset", "urmp", "musicnet", "slakh", "cerberus4")
_SPLIT_PATTERNS = (("validation", r"valid(ation)?"), ("train", r"train"), ("test", r"test"))
_GUITAR_PROGRAM = 24


def split_of_file(name: str) -> str | None:
    """The split named in a TFRecord file name; None for ``*_subset`` files and no match."""
    if re.search(r"(train|valid(ation)?)_subset", name):
        return None
    for split, pattern in _SPLIT_PATTERNS:
        if re.search(rf"(^|[^a-z]){pattern}($|[^a-z])", name):
            return split
    return None


def record_offsets(path: str) -> list[tuple[int, int]]:
    """(offset of the data, length) of each record of a TFRecord file."""
    offsets = []
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        position = 0
        while position < size:
            header = f.read(12)
            if len(header) < 12:
                raise SourceError(path, f"truncated TFRecord header at byte {position}")
            (length,) = struct.unpack("<Q", header[:8])
            data_offset = position + 12
            position = data_offset + length + 4
            if position > size:
                raise SourceError(path, f"truncated TFRecord: record at byte {data_offset - 12} "
                                        f"claims {length} bytes")
            offsets.append((data_offset, length))
            f.seek(position)
    return offsets


def list_pieces(source_dir: str, dataset: str) -> list[SourceRef]:
    if dataset not in DATASETS:
        raise ValueError(f"no TFRecord format for dataset {dataset!r}; valid values: "
                         f"{', '.join(DATASETS)}")
    source_dir = os.path.abspath(base.require_dir(source_dir, "TFRecord folder"))
    files = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(source_dir) for name in names if ".tfrecord" in name)
    refs = []
    for path in files:
        split = split_of_file(os.path.basename(path))
        if split is None:
            continue
        stem = base.sanitize_id(os.path.basename(path))
        for number, (offset, length) in enumerate(record_offsets(path)):
            refs.append(SourceRef(id=f"{stem}-{number:05d}", split=split, files={"tfrecord": path},
                                  details={"dataset": dataset, "offset": offset,
                                           "length": length, "number": number}))
    if not refs:
        raise SourceError(source_dir, "no *.tfrecord* files with train/validation/test in "
                                      "their names here")
    return refs


def _features(ref: SourceRef):
    import tensorflow as tf

    path = ref.files["tfrecord"]
    with open(path, "rb") as f:
        f.seek(ref.details["offset"])
        data = f.read(ref.details["length"])
    try:
        return tf.train.Example.FromString(data).features.feature
    except Exception as e:  # protobuf DecodeError; its module path varies by version.
        raise SourceError(path, f"record {ref.details['number']} is not a tf.train.Example "
                                f"({e})") from e


def _values(features, key: str, kind: str, name: str) -> list:
    if key not in features:
        raise SourceError(name, f"record lacks the feature {key!r}; it has "
                                f"{sorted(features.keys())}")
    return list(getattr(features[key], kind).value)


def _number(features, key: str, name: str) -> float:
    feature = features[key] if key in features else None
    values = (list(feature.float_list.value) or list(feature.int64_list.value)) if feature else []
    if len(values) != 1:
        raise SourceError(name, f"record lacks a single-number feature {key!r}")
    return float(values[0])


def _note_sequence(data: bytes, name: str) -> base.NoteSequence:
    from google.protobuf.message import DecodeError

    try:
        return base.NoteSequence.FromString(data)
    except DecodeError as e:
        raise SourceError(name, f"serialized NoteSequence does not parse ({e})") from e


def _wav_audio(data: bytes, name: str) -> np.ndarray:  # [num_samples] float32 at 16 kHz
    import soundfile

    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile reports bad data with several exception types.
        raise SourceError(name, f"'audio' is not readable WAV data ({e})") from e
    return base.resample(samples.mean(axis=1), rate, name)


def _tracks(features, name: str, sequences_key: str, label_key: str,
            programs_of) -> base.NoteSequence:
    """Per-track NoteSequences merged, with (program, is_drum) = programs_of(track label)."""
    sequences = _values(features, sequences_key, "bytes_list", name)
    labels = [v.decode("utf-8") for v in _values(features, label_key, "bytes_list", name)]
    if len(sequences) != len(labels):
        raise SourceError(name, f"{len(sequences)} note sequences but {len(labels)} {label_key}")
    tracks = []
    for data, label in zip(sequences, labels):
        program, is_drum = programs_of(label)
        tracks.append((_note_sequence(data, name), program, is_drum))
    return base.merge_tracks(tracks)


def _urmp_program(code: str) -> tuple[int, bool]:
    if code not in urmp.INSTRUMENT_PROGRAMS:
        raise KeyError(code)
    return urmp.INSTRUMENT_PROGRAMS[code], False


def _slakh_program(slakh_class: str) -> tuple[int, bool]:
    if slakh_class == slakh.DRUMS_CLASS:
        return 0, True
    return slakh.SLAKH_CLASS_PROGRAMS[slakh_class], False


def _cerberus4_program(role: str) -> tuple[int, bool]:
    return slakh.CERBERUS4_ROLES[role][1], role == "drums"


def load_piece(ref: SourceRef) -> SourcePiece:
    dataset = ref.details["dataset"]
    name = f"{ref.files['tfrecord']} (record {ref.details['number']})"
    features = _features(ref)
    try:
        if dataset in ("slakh", "cerberus4"):
            samples = base.resample(_values(features, "mix", "float_list", name),
                                    _number(features, "audio_sample_rate", name), name)
            label_key, programs_of = (("slakh_class", _slakh_program) if dataset == "slakh"
                                      else ("inst_names", _cerberus4_program))
            ns = _tracks(features, name, "note_sequences", label_key, programs_of)
        elif dataset == "urmp":
            samples = _wav_audio(_values(features, "audio", "bytes_list", name)[0], name)
            ns = _tracks(features, name, "instrument_sequences", "inst_names", _urmp_program)
        else:
            if dataset == "musicnet":
                samples = base.resample(_values(features, "audio", "float_list", name),
                                        _number(features, "sample_rate", name), name)
            else:
                samples = _wav_audio(_values(features, "audio", "bytes_list", name)[0], name)
            ns = _note_sequence(_values(features, "sequence", "bytes_list", name)[0], name)
            if dataset == "guitarset":
                for note in ns.notes:
                    note.program, note.is_drum = _GUITAR_PROGRAM, False
            del ns.pitch_bends[:]
    except KeyError as e:
        raise SourceError(name, f"unknown instrument {e.args[0]!r} for {dataset}") from e
    except IndexError as e:
        raise SourceError(name, "an expected feature is empty") from e
    return base.make_piece(ref, samples, ns, name)


def reader_for(dataset: str) -> base.DatasetReader:
    """The TFRecord reader of a dataset (same piece form as its raw reader)."""
    if dataset not in DATASETS:
        raise ValueError(f"no TFRecord format for dataset {dataset!r}; valid values: "
                         f"{', '.join(DATASETS)}")

    return base.DatasetReader(dataset, f"{dataset} TFRecords of the original pipeline (§3.1)",
                              _ListTFRecords(dataset), load_piece,
                              splits=sources.get_reader(dataset).splits)


class _ListTFRecords:
    """Picklable ``list_pieces`` bound to a dataset name."""

    def __init__(self, dataset: str):
        self.dataset = dataset

    def __call__(self, source_dir: str) -> list[SourceRef]:
        return list_pieces(source_dir, self.dataset)
