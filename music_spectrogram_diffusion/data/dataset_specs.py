"""What "a dataset" is to the task pipeline: pieces per split, each as (log-mel, note EventIndex).

A ``DatasetSpec`` is small: a name (used in task names, spec §3.2), its splits, the splits that
get eval and full-song tasks, a function listing a split's pieces, and whether programs are
mapped onto the Slakh classes. The pieces are ``PieceRef``s pointing at a MIDI file and a 16 kHz
audio file. Adding MAESTRO or Slakh (exported to MIDI + WAV) means writing one ``list_pieces``
function and one ``DatasetSpec``: a few dozen lines.

``compute_piece`` turns a piece into the two arrays the windowing code needs: the whole-song
log-mel (``spectrograms.compute_log_mel_numpy``) and the ``EventIndex``
(``tokenizer.index_note_sequence``). ``data/piece_store.py`` computes them once per piece and
keeps them on disk, where training reads windows of them.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from music_spectrogram_diffusion.data.tokenizer import EventIndex
from music_spectrogram_diffusion.data.vocabularies import DEFAULT_VOCABULARY, VocabularyConfig
from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig

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


def compute_piece(
    ref: PieceRef,
    dataset: DatasetSpec,
    *,
    vocab: VocabularyConfig = DEFAULT_VOCABULARY,
    features: FeatureConfig = DEFAULT_FEATURES,
) -> Piece:
    """The piece's whole-song log-mel and EventIndex, computed from its audio and MIDI files.

    ``data/piece_store.py`` calls this once per piece and keeps the result on disk.
    """
    from music_spectrogram_diffusion.audio import audio_io, spectrograms
    from music_spectrogram_diffusion.data import midi_io, note_sequences, tokenizer

    samples = audio_io.load_audio(ref.audio_path, features.sample_rate)
    log_mel = spectrograms.compute_log_mel_numpy(samples, features)  # [frames, mels]
    ns = note_sequences.preprocess_note_sequence(
        midi_io.read_midi(ref.midi_path),
        steps_per_second=vocab.steps_per_second,
        slakh_programs=dataset.slakh_programs,
        name=ref.midi_path,
    )
    # The audio decides the frame count: notes past the audio's end cannot be heard.
    index = tokenizer.index_note_sequence(
        ns, num_frames=log_mel.shape[0], vocab=vocab, features=features
    )
    return Piece(id=ref.id, log_mel=log_mel, index=index)
