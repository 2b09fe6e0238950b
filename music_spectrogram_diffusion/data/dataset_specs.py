"""What "a dataset" is to the task pipeline: pieces per split, each as (log-mel, note EventIndex).

A ``DatasetSpec`` is small: a name (used in task names, spec §3.2), its splits, the splits that
get eval and full-song tasks, a function listing a split's pieces, and whether programs are
mapped onto the Slakh classes. The pieces are ``PieceRef``s pointing at a MIDI file and a 16 kHz
audio file. Adding MAESTRO or Slakh (exported to MIDI + WAV) means writing one ``list_pieces``
function and one ``DatasetSpec``: a few dozen lines.

``PieceStore`` turns a piece into the two arrays the windowing code needs, computed once per
piece: the whole-song log-mel (``spectrograms.compute_log_mel_numpy``) and the ``EventIndex``
(``tokenizer.index_note_sequence``). Results are cached in memory and on disk under
``<data_dir>/cache/<CACHE_VERSION>/<dataset>/``; the cache key includes the source files' size
and modification time, so an edited file is recomputed, and ``CACHE_VERSION`` changes whenever
the representation does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from typing import Callable

import numpy as np

from music_spectrogram_diffusion.data.tokenizer import EventIndex
from music_spectrogram_diffusion.data.vocabularies import DEFAULT_VOCABULARY, VocabularyConfig
from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig

# Bump when the log-mel front end, the tokenizer's EventIndex or this file's layout changes.
CACHE_VERSION = "v1"
_INDEX_FIELDS = ("events", "event_start_indices", "event_end_indices", "state_events",
                 "state_event_indices")


@dataclasses.dataclass(frozen=True)
class PieceRef:
    """One piece of a dataset split: absolute paths of its MIDI and audio files."""

    id: str
    midi_path: str
    audio_path: str


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A dataset as the task registry sees it.

    Attributes:
      name: short name used in task names, e.g. 'embedded' or 'maestrov3'.
      splits: every split name.
      train_split: pieces for ``*_train`` tasks.
      train_eval_split: pieces for train-eval loss (the train task's 'eval' split).
      infer_eval_splits: splits with eval tasks and full-song tasks (§3.1).
      eval_mixture_splits: the infer-eval splits in the ``*_eval`` mixture (the ✓ of §3.1).
      list_pieces: (data_dir, split) -> pieces of that split, in a fixed order.
      slakh_programs: map MIDI programs onto the Slakh classes (spec §9.4).
    """

    name: str
    splits: tuple[str, ...]
    train_split: str
    train_eval_split: str
    infer_eval_splits: tuple[str, ...]
    eval_mixture_splits: tuple[str, ...]
    list_pieces: Callable[[str, str], list[PieceRef]]
    slakh_programs: bool = False

    def __post_init__(self):
        used = (self.train_split, self.train_eval_split, *self.infer_eval_splits,
                *self.eval_mixture_splits)
        unknown = sorted(set(used) - set(self.splits))
        if unknown:
            raise ValueError(f"DatasetSpec {self.name!r}: unknown splits {unknown}; valid "
                             f"splits: {list(self.splits)}")

    def pieces(self, data_dir: str, split: str) -> list[PieceRef]:
        if split not in self.splits:
            raise ValueError(f"dataset {self.name!r} has no split {split!r}; valid splits: "
                             f"{list(self.splits)}")
        return self.list_pieces(data_dir, split)


def embedded_pieces(data_dir: str, split: str) -> list[PieceRef]:
    """Pieces of the embedded dataset's manifest.json (``data/embedded_dataset.py``)."""
    from music_spectrogram_diffusion.data import embedded_dataset

    manifest = embedded_dataset.load_manifest(data_dir)
    return [
        PieceRef(id=p.id, midi_path=manifest.midi_file(p), audio_path=manifest.audio_file(p))
        for p in manifest.split(split)
    ]


EMBEDDED = DatasetSpec(
    name="embedded",
    splits=("train", "validation", "test"),
    train_split="train",
    train_eval_split="validation",
    infer_eval_splits=("validation", "test"),
    eval_mixture_splits=("validation",),
    list_pieces=embedded_pieces,
)

DATASETS: dict[str, DatasetSpec] = {EMBEDDED.name: EMBEDDED}


@dataclasses.dataclass(frozen=True, eq=False)
class Piece:
    """A piece ready for windowing."""

    id: str
    log_mel: np.ndarray  # [song_frames, mels] unscaled log-mel
    index: EventIndex


def _file_key(path: str) -> str:
    stat = os.stat(path)
    return f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}"


class PieceStore:
    """Loads pieces as (log-mel, EventIndex), once each, with an on-disk cache.

    Args:
      dataset: the dataset spec (its name separates cache folders and program mapping).
      cache_dir: where cached pieces go; None keeps them in memory only.
      vocab, features: the token and spectrogram settings (part of the cache key).
    """

    def __init__(
        self,
        dataset: DatasetSpec,
        cache_dir: str | None,
        *,
        vocab: VocabularyConfig = DEFAULT_VOCABULARY,
        features: FeatureConfig = DEFAULT_FEATURES,
    ):
        self.dataset = dataset
        self.cache_dir = (
            os.path.join(cache_dir, CACHE_VERSION, dataset.name) if cache_dir else None
        )
        self.vocab = vocab
        self.features = features
        self._memory: dict[str, Piece] = {}

    def _cache_path(self, ref: PieceRef) -> str | None:
        if self.cache_dir is None:
            return None
        key = "|".join([_file_key(ref.midi_path), _file_key(ref.audio_path), repr(self.vocab),
                        repr(self.features), repr(self.dataset.slakh_programs)])
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return os.path.join(self.cache_dir, f"{ref.id}-{digest}.npz")

    def load(self, ref: PieceRef) -> Piece:
        """The piece's whole-song log-mel and EventIndex (computed at most once per cache)."""
        if ref.id in self._memory:
            return self._memory[ref.id]
        path = self._cache_path(ref)
        piece = self._read_cache(ref, path) if path and os.path.exists(path) else None
        if piece is None:
            piece = self._compute(ref)
            if path:
                self._write_cache(piece, path)
        self._memory[ref.id] = piece
        return piece

    def _compute(self, ref: PieceRef) -> Piece:
        from music_spectrogram_diffusion.audio import audio_io, spectrograms
        from music_spectrogram_diffusion.data import midi_io, note_sequences, tokenizer

        samples = audio_io.load_audio(ref.audio_path, self.features.sample_rate)
        log_mel = spectrograms.compute_log_mel_numpy(samples, self.features)  # [frames, mels]
        ns = note_sequences.preprocess_note_sequence(
            midi_io.read_midi(ref.midi_path),
            steps_per_second=self.vocab.steps_per_second,
            slakh_programs=self.dataset.slakh_programs,
            name=ref.midi_path,
        )
        # The audio decides the frame count: notes past the audio's end cannot be heard.
        index = tokenizer.index_note_sequence(
            ns, num_frames=log_mel.shape[0], vocab=self.vocab, features=self.features
        )
        return Piece(id=ref.id, log_mel=log_mel, index=index)

    @staticmethod
    def _read_cache(ref: PieceRef, path: str) -> Piece | None:
        try:
            with np.load(path) as data:
                index = EventIndex(**{k: data[k] for k in _INDEX_FIELDS},
                                   num_frames=int(data["num_frames"]))
                return Piece(id=ref.id, log_mel=data["log_mel"], index=index)
        except (OSError, KeyError, ValueError):
            return None  # A damaged cache entry is recomputed and overwritten.

    @staticmethod
    def _write_cache(piece: Piece, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, log_mel=piece.log_mel, num_frames=piece.index.num_frames,
                     **{k: getattr(piece.index, k) for k in _INDEX_FIELDS})
        os.replace(tmp, path)
