"""The ground truth of an evaluation: songs, their real audio, log-mel and notes, and disk caches.

``list_songs`` finds the songs of a full-song task of any dataset or a dataset split
(``run_test_task``: the task a training run names as its test task); ``load_references`` reads
each song's real audio (cut to an excerpt if asked), its log-mel and its MIDI notes.
``CachedEmbedder`` and ``CachedTranscriber`` keep embeddings and transcriptions on disk keyed by
the audio's hash, so the ground truth is embedded and transcribed once across rows, checkpoints
and resumed runs (and a resumed row re-uses whatever it had computed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from music_spectrogram_diffusion.evaluation.embedders import Embedder
from music_spectrogram_diffusion.evaluation.transcription import NoteArrays
from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig
from music_spectrogram_diffusion.file_io import write_file_atomic


class EvaluationError(ValueError):
    """Bad evaluation input (no songs, no checkpoints, unknown task); names the problem."""


@dataclasses.dataclass(frozen=True)
class Song:
    """One evaluation song: absolute paths of its MIDI (model input) and real audio."""

    id: str
    midi_path: str
    audio_path: str


def _datasets() -> list:
    """Every dataset a task name can refer to: the embedded one and the prepared releases."""
    from music_spectrogram_diffusion.data import dataset_specs
    from music_spectrogram_diffusion.data.sources import registry

    return [dataset_specs.EMBEDDED, *registry.DATASET_SPECS.values()]


def full_song_task(task: str):
    """The TaskSpec of a full-song task (``synthesis[_with_context]_full_<dataset>_..._<split>``)
    of any dataset: the embedded one or a prepared release (``data/sources/registry.py``).

    Raises:
      EvaluationError: an unknown task, or one that is not a full-song task (lists them).
    """
    from music_spectrogram_diffusion.data import tasks

    full = []
    for dataset in _datasets():
        specs, _ = tasks.make_task_specs(dataset)
        if task in specs:
            if specs[task].kind == "full":
                return specs[task]
            raise EvaluationError(f"task {task!r} is not a full-song task; full-song tasks of "
                                  f"{dataset.name}: {_full_names(specs)}")
        full += _full_names(specs)
    raise EvaluationError(f"unknown task {task!r}; full-song tasks: {', '.join(full)}")


def _full_names(specs) -> list[str]:
    return sorted(name for name, spec in specs.items() if spec.kind == "full")


def list_songs(*, data_dir: str, task: str | None = None, split: str | None = None,
               max_songs: int | None = None) -> list[Song]:
    """Songs of a full-song task (``synthesis*_full_*`` of any dataset, see ``full_song_task``)
    or of a split of the embedded dataset.

    Raises:
      EvaluationError: neither or both of task and split, a task that is not a full-song task,
        a split the dataset does not have, a data_dir that does not hold the dataset, or no songs.
    """
    from music_spectrogram_diffusion.data import dataset_specs

    if (task is None) == (split is None):
        raise EvaluationError("give either a full-song task or a dataset split, not both")
    if task is not None:
        spec = full_song_task(task)
        dataset, split = spec.dataset, spec.splits["eval"]
    else:
        dataset = dataset_specs.EMBEDDED
        if split not in dataset.splits:
            raise EvaluationError(f"no split {split!r} in the embedded dataset; --split takes "
                                  f"one of {', '.join(dataset.splits)} (or give --task)")
    try:
        refs = dataset.pieces(os.path.abspath(data_dir), split)
    except ValueError as e:  # DatasetError / PrepareError: no manifest, another dataset
        raise EvaluationError(str(e)) from e
    songs = [Song(r.id, r.midi_path, r.audio_path) for r in refs][:max_songs]
    if not songs:
        raise EvaluationError(f"{data_dir}: no songs in split {split!r}")
    return songs


def run_test_task(model_dir: str) -> tuple[str, str]:
    """(TEST_TASK, DATA_DIR) of a training run, from the MODEL_DIR/config.gin it wrote.

    The task gins (gin/tasks/*.gin) define both macros; the run's test task is what msd-evaluate
    evaluates when neither --task nor --split is given.

    Raises:
      EvaluationError: no config.gin, or it defines no TEST_TASK (a run of an older version).
    """
    import ast
    import re

    path = os.path.join(model_dir, "config.gin")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise EvaluationError(f"{path}: cannot be read ({e.strerror or e}); give --task or "
                              "--split") from e
    macros = {}
    for name in ("TEST_TASK", "DATA_DIR"):
        match = re.search(rf"^{name} = (.+)$", text, re.M)
        try:
            macros[name] = ast.literal_eval(match.group(1)) if match else None
        except (ValueError, SyntaxError):
            macros[name] = None
    if not isinstance(macros["TEST_TASK"], str) or not isinstance(macros["DATA_DIR"], str):
        raise EvaluationError(f"{path}: the run names no test task (TEST_TASK and DATA_DIR; "
                              "the mega mixture has none); give --task or --split")
    return macros["TEST_TASK"], macros["DATA_DIR"]


@dataclasses.dataclass(frozen=True, eq=False)
class Reference:
    """The ground truth of one song (an excerpt of it, with ``max_seconds``)."""

    song: Song
    audio: np.ndarray  # [samples] real audio
    log_mel: np.ndarray  # [frames, mels] unscaled log-mel of ``audio``
    notes: Any  # NoteSequence of the MIDI file
    max_segments: int | None  # segments to synthesize; None = the whole song


def load_references(songs: Sequence[Song], max_seconds: float | None,
                    features: FeatureConfig = DEFAULT_FEATURES) -> list[Reference]:
    from music_spectrogram_diffusion.audio import audio_io, spectrograms
    from music_spectrogram_diffusion.data import midi_io

    references = []
    for song in songs:
        audio = audio_io.load_audio(song.audio_path, features.sample_rate)
        max_segments = None
        if max_seconds is not None:
            max_segments = int(np.ceil(max_seconds / features.segment_seconds - 1e-9))
            audio = audio[: max_segments * features.segment_frames * features.hop_length]
        references.append(Reference(
            song=song, audio=audio, log_mel=spectrograms.compute_log_mel_numpy(audio, features),
            notes=midi_io.read_midi(song.midi_path), max_segments=max_segments))
    return references


def _audio_key(audio: np.ndarray, sample_rate: int) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(audio, np.float32).tobytes())
    digest.update(str(sample_rate).encode())
    return digest.hexdigest()[:32]




class CachedEmbedder(Embedder):
    """An embedder whose results are kept on disk by audio hash: the ground truth (and any
    audio seen before, e.g. on resume) is embedded once across rows and runs."""

    def __init__(self, inner: Embedder, cache_dir: str):
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.cache_dir = cache_dir

    def embed(self, audio: np.ndarray, sample_rate: int = DEFAULT_FEATURES.sample_rate
              ) -> np.ndarray:  # [frames, dim]
        path = os.path.join(self.cache_dir, _audio_key(audio, sample_rate) + ".npy")
        if os.path.exists(path):
            return np.load(path)
        frames = np.asarray(self.inner.embed(audio, sample_rate), np.float32)
        write_file_atomic(path, lambda f: np.save(f, frames))
        return frames

    def _embed_prepared(self, audio: np.ndarray) -> np.ndarray:
        return self.inner._embed_prepared(audio)

    def close(self) -> None:
        self.inner.close()


class CachedTranscriber:
    """``BasicPitchTranscriber`` with results kept on disk by audio hash; loads it lazily."""

    def __init__(self, cache_dir: str):
        self.cache_dir = cache_dir
        self._inner = None

    def transcribe(self, audio: np.ndarray, sample_rate: int = DEFAULT_FEATURES.sample_rate
                   ) -> NoteArrays:
        path = os.path.join(self.cache_dir, _audio_key(audio, sample_rate) + ".npz")
        if os.path.exists(path):
            with np.load(path) as data:
                return NoteArrays(data["intervals"], data["pitches"])
        if self._inner is None:
            from music_spectrogram_diffusion.evaluation.transcription import BasicPitchTranscriber

            self._inner = BasicPitchTranscriber()
        notes = self._inner.transcribe(audio, sample_rate)
        write_file_atomic(
            path, lambda f: np.savez(f, intervals=notes.intervals, pitches=notes.pitches))
        return notes


def open_embedders(names: Sequence[str], cache_dir: str) -> list[Embedder]:
    """``name`` or ``name=PATH`` (a SavedModel for vggish/trill) -> cached embedders."""
    from music_spectrogram_diffusion.evaluation.embedders import get_embedder

    opened = []
    for spec in names:
        name, _, path = spec.partition("=")
        inner = get_embedder(name, path=path) if path else get_embedder(name)
        key = name if not path else f"{name}-{hashlib.sha256(path.encode()).hexdigest()[:8]}"
        opened.append(CachedEmbedder(inner, os.path.join(cache_dir, key)))
    return opened
