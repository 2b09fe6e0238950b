"""What the two dataset manifests share: pieces in splits, with files relative to the folder.

``embedded_dataset.Manifest`` (the built-in music21 dataset) and ``prepare.PreparedManifest``
(a prepared public release) list their pieces the same way, and the task code reads both
through the same accessors (``dataset_specs``, ``sources/registry``), so the accessors live
here once rather than drifting apart in two copies.
"""

from __future__ import annotations

import os
from typing import Generic, Protocol, TypeVar

SPLITS = ("train", "validation", "test")


class PieceFiles(Protocol):
    """The fields of a manifest entry that the shared accessors read."""

    split: str
    midi_path: str  # relative to the manifest's data_dir
    audio_path: str  # relative to the manifest's data_dir
    duration_seconds: float


PieceT = TypeVar("PieceT", bound=PieceFiles)


class PieceManifest(Generic[PieceT]):
    """Split and file accessors for a manifest dataclass with ``data_dir`` and ``pieces``.

    A plain mixin, not a dataclass: the subclass declares the fields (and their order in
    ``manifest.json``); these annotations only say what the methods read.
    """

    data_dir: str
    pieces: tuple[PieceT, ...]

    def split(self, name: str) -> tuple[PieceT, ...]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; valid splits: {', '.join(SPLITS)}")
        return tuple(p for p in self.pieces if p.split == name)

    def split_seconds(self, name: str) -> float:
        return sum(p.duration_seconds for p in self.split(name))

    def midi_file(self, piece: PieceT) -> str:
        return os.path.join(self.data_dir, piece.midi_path)

    def audio_file(self, piece: PieceT) -> str:
        return os.path.join(self.data_dir, piece.audio_path)
