"""Readers of public dataset releases, one module per dataset (spec §1.2, §2.1, §3.1).

  name        module        release layout read by the raw reader
  maestrov3   maestro.py    maestro-v3.0.0.csv/.json + <year>/<name>.{midi,wav}
  slakh       slakh.py      slakh2100_flac_redux/{train,validation,test}/TrackNNNNN/
  cerberus4   slakh.py      the Slakh tracks with piano, guitar, bass and drums
  guitarset   guitarset.py  annotation/*.jams + audio_mono-mic/*_mic.wav
  musicnet    musicnet.py   {train,test}_labels/*.csv + {train,test}_data/*.wav
  urmp        urmp.py       <nn>_<Piece>_<codes>/AuMix_*.wav + Notes_*.txt
  folder      folder.py     your recordings: <name>.mid/.midi + <name>.wav/.flac (nested)

Every dataset can also be read from the original pipeline's TFRecords (``tfrecord.py``).
``get_reader(name, source_format)`` returns a ``base.DatasetReader``; ``data/prepare.py`` turns
a release into the prepared layout the tasks read (``data/sources/registry.py``).
"""

from __future__ import annotations

import importlib

from music_spectrogram_diffusion.data.sources.base import (
    DatasetReader,
    SourceError,
    SourcePiece,
    SourceRef,
)

DATASET_NAMES = ("maestrov3", "slakh", "cerberus4", "guitarset", "musicnet", "urmp", "folder")
# Names people type for the same datasets.
ALIASES = {"maestro": "maestrov3", "maestro3": "maestrov3", "slakh2100": "slakh"}
SOURCE_FORMATS = ("raw", "tfrecord")

__all__ = ["ALIASES", "DATASET_NAMES", "DatasetReader", "READERS", "SOURCE_FORMATS", "SourceError",
           "SourcePiece", "SourceRef", "canonical_name", "get_reader"]


def canonical_name(name: str) -> str:
    """'maestro' -> 'maestrov3'; ValueError listing the valid names for anything unknown."""
    canonical = ALIASES.get(name.lower(), name.lower())
    if canonical not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)} "
                         f"(aliases: {', '.join(sorted(ALIASES))})")
    return canonical


# name -> (module, attribute) of its raw-release reader; imported on first use so reading one
# dataset never imports the others' dependencies. A new dataset adds one row here, its name to
# DATASET_NAMES and a DatasetSpec in data/sources/registry.py.
READERS: dict[str, tuple[str, str]] = {
    "maestrov3": ("maestro", "READER"),
    "slakh": ("slakh", "READER"),
    "cerberus4": ("slakh", "CERBERUS4_READER"),
    "guitarset": ("guitarset", "READER"),
    "musicnet": ("musicnet", "READER"),
    "urmp": ("urmp", "READER"),
    "folder": ("folder", "READER"),
}
assert set(READERS) == set(DATASET_NAMES)


def get_reader(name: str, source_format: str = "raw") -> DatasetReader:
    """The reader of dataset ``name`` for ``source_format`` 'raw' (the release) or 'tfrecord'."""
    name = canonical_name(name)
    if source_format not in SOURCE_FORMATS:
        raise ValueError(f"unknown source format {source_format!r}; valid values: "
                         f"{', '.join(SOURCE_FORMATS)}")
    if source_format == "tfrecord":
        from music_spectrogram_diffusion.data.sources import tfrecord

        return tfrecord.reader_for(name)
    module, attribute = READERS[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
