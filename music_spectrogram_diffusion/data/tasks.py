"""The task registry: seqio tasks named like the original's (spec §3.2), and the batch sources
the trainer reads.

Names follow ``construct_task_name``: ``{prefix}_{dataset}_notes_ties_melgan_vb1_{suffix}``,
prefix ``synthesis`` (no context) or ``synthesis_with_context``. For a dataset spec (see
``data/dataset_specs.py``) there are, per prefix:

  ``..._train``             random windows of the train split (seqio splits 'train' and 'eval';
                            'eval' draws windows from the train-eval split, for train-eval loss)
  ``..._<split>``           random windows of each infer-eval split (seqio split 'eval')
  ``{prefix}_full_..._<split>``  each piece of the split cut into consecutive segments (§2.4)
  ``..._eval``              a mixture of the eval tasks marked for it (rate 1)

Examples come from ``data/windows.py`` over whole songs (not 40 s cached chunks, §11.2), each
piece's log-mel and EventIndex computed once and read window by window from the dataset's piece
store (``data/piece_store.py``), so no split is held in memory. A training example
is a pure function of (seed, example index): example i uses ``np.random.default_rng([seed, i])``
to pick a piece (weighted by its number of possible windows, so every window of the split is
equally likely) and then the window. Batch s of size B holds examples s*B .. s*B+B-1, so after
a resume the data position is re-derived from the step alone (``data/loader.py`` reads
batches in Grain worker processes and saves that position in checkpoints).

Nothing is registered on import: call ``register_tasks(data_dir)`` (seqio, imports
TensorFlow) or ``get_batch_source(...)`` (numpy only; what the trainer uses).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from typing import Sequence

import numpy as np

from music_spectrogram_diffusion.data import dataset_specs, piece_store, windows
from music_spectrogram_diffusion.data.feature_converters import (
    ContinuousFeatureConverter,
    make_feature_converter,
)
from music_spectrogram_diffusion.data.vocabularies import DEFAULT_VOCABULARY, VocabularyConfig
from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig

logger = logging.getLogger(__name__)

KINDS = ("train", "eval", "full")
_LOCK = threading.Lock()
_SEQIO_REGISTERED: dict[str, str] = {}  # task or mixture name -> data_dir it was registered for


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task: which pieces, how they are cut, with or without context.

    Attributes:
      name: the task name.
      dataset: the dataset spec.
      kind: 'train' (random windows), 'eval' (random windows of an infer-eval split) or 'full'
        (consecutive full-song segments).
      with_context: context model task (adds context_frames / context_mask).
      splits: seqio split name -> dataset split, e.g. {'train': 'train', 'eval': 'validation'}.
    """

    name: str
    dataset: dataset_specs.DatasetSpec
    kind: str
    with_context: bool
    splits: dict[str, str]

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"TaskSpec {self.name}: kind={self.kind!r}; valid values: {KINDS}")


def task_name(prefix: str, dataset: str, suffix: str, vocab: VocabularyConfig) -> str:
    """``construct_task_name`` of the original (spec §3.2); 'vb1' only for one velocity bin."""
    vocab_part = "_vb1" if vocab.num_velocity_bins == 1 else ""
    return f"{prefix}_{dataset}_notes_ties_melgan{vocab_part}_{suffix}"


def make_task_specs(
    dataset: dataset_specs.DatasetSpec = dataset_specs.EMBEDDED,
    vocab: VocabularyConfig = DEFAULT_VOCABULARY,
) -> tuple[dict[str, TaskSpec], dict[str, list[str]]]:
    """All task specs of a dataset, and its eval mixtures (name -> task names)."""
    tasks: dict[str, TaskSpec] = {}
    mixtures: dict[str, list[str]] = {}
    for with_context, prefix in ((False, "synthesis"), (True, "synthesis_with_context")):
        def add(spec: TaskSpec) -> None:
            tasks[spec.name] = spec

        add(TaskSpec(task_name(prefix, dataset.name, "train", vocab), dataset, "train",
                     with_context, {"train": dataset.train_split,
                                    "eval": dataset.train_eval_split}))
        for split in dataset.infer_eval_splits:
            add(TaskSpec(task_name(prefix, dataset.name, split, vocab), dataset, "eval",
                         with_context, {"eval": split}))
            add(TaskSpec(task_name(f"{prefix}_full", dataset.name, split, vocab), dataset,
                         "full", with_context, {"eval": split}))
        mixtures[task_name(prefix, dataset.name, "eval", vocab)] = [
            task_name(prefix, dataset.name, split, vocab) for split in dataset.eval_mixture_splits
        ]
    return tasks, mixtures


def get_task_spec(name: str, dataset: dataset_specs.DatasetSpec = dataset_specs.EMBEDDED,
                  vocab: VocabularyConfig = DEFAULT_VOCABULARY) -> TaskSpec:
    tasks, _ = make_task_specs(dataset, vocab)
    if name not in tasks:
        raise ValueError(f"unknown task {name!r}; tasks of dataset {dataset.name!r}: "
                         f"{sorted(tasks)}")
    return tasks[name]


class ExampleSource:
    """Task examples of one (task, split), by index, read lazily from the piece store.

    Opening reads the store's index (``data/piece_store.py``; built on first use if the folder
    predates it); an example reads only its window's frames and events from the store's
    memory-mapped shards, so memory does not grow with the dataset. Random-window tasks are
    unbounded (``num_examples`` None); full-song tasks have exactly one example per segment,
    in piece order. Pickles without array data (the loader's worker processes reopen the maps).
    """

    def __init__(self, task: TaskSpec, split: str, data_dir: str, *,
                 vocab: VocabularyConfig = DEFAULT_VOCABULARY,
                 features: FeatureConfig = DEFAULT_FEATURES):
        if split not in task.splits:
            raise ValueError(f"task {task.name} has no split {split!r}; valid splits: "
                             f"{sorted(task.splits)}")
        self.task = task
        self.vocab = vocab
        self.features = features
        refs = task.dataset.pieces(data_dir, task.splits[split])
        if not refs:
            raise ValueError(f"{data_dir}: dataset {task.dataset.name!r} has no pieces in split "
                             f"{task.splits[split]!r} (task {task.name})")
        self.store = piece_store.open_store(data_dir, task.dataset, vocab=vocab,
                                            features=features)
        self._rows = self.store.rows_of(refs)
        frames = self.store.num_frames(self._rows).astype(np.float64)
        if task.kind == "full":
            # Segment k of the split is segment k - _first_segment[p] of piece p (spec §2.4).
            counts = -(-frames.astype(np.int64) // features.segment_frames)
            self._first_segment = np.concatenate([[0], np.cumsum(counts)])
        else:
            # Number of distinct windows per piece (windows.draw_target_window).
            starts = frames if task.with_context else frames + features.segment_frames - 1
            self._weights = starts / starts.sum()

    @property
    def pieces(self) -> list[dataset_specs.Piece]:
        """The split's pieces, as views into the store (nothing is read until sliced)."""
        return [self.store.piece(row) for row in self._rows]

    @property
    def num_examples(self) -> int | None:
        return int(self._first_segment[-1]) if self.task.kind == "full" else None

    def example(self, seed: int, index: int) -> dict[str, np.ndarray]:
        """Example ``index``: a pure function of (seed, index) (full-song: of index alone)."""
        if self.task.kind == "full":
            return self._segment(index % int(self._first_segment[-1]))
        rng = np.random.default_rng([seed, index])
        piece = self.store.piece(self._rows[int(rng.choice(len(self._rows), p=self._weights))])
        example = windows.training_example(piece.log_mel, piece.index, rng,
                                           with_context=self.task.with_context,
                                           vocab=self.vocab, features=self.features)
        return dict(example, piece_id=piece.id)

    def _segment(self, index: int) -> dict[str, np.ndarray]:
        """Segment ``index`` of the split, as ``windows.full_song_segments`` cuts its piece."""
        k = int(np.searchsorted(self._first_segment, index, side="right")) - 1
        piece = self.store.piece(self._rows[k])
        segment_index = index - int(self._first_segment[k])
        length = self.features.segment_frames
        start = segment_index * length
        segment = windows.window_example(
            piece.log_mel, piece.index, start, min(start + length, piece.log_mel.shape[0]),
            with_context=False, vocab=self.vocab, features=self.features)
        return dict(segment, piece_id=piece.id, segment_index=segment_index)


class ExampleBatchSource:
    """The trainer's ``BatchSource`` over any ``example(seed, index)``: batch i is examples
    i*B .. i*B+B-1 through ``converter``, so a batch is a pure function of (seed, index)."""

    converter: ContinuousFeatureConverter

    def example(self, seed: int, index: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def get_batch(self, index: int, batch_size: int, *, seed: int,
                  rows: slice | None = None) -> dict[str, np.ndarray]:
        """Batch ``index``: examples index*B .. index*B+B-1 (only ``rows`` of them if given)."""
        ids = np.arange(index * batch_size, (index + 1) * batch_size)
        if rows is not None:
            ids = ids[rows]
        return self.converter([self.example(seed, int(i)) for i in ids])


@dataclasses.dataclass
class TaskBatchSource(ExampleBatchSource):
    """Batches of one task: its example source + feature converter."""

    examples: ExampleSource
    converter: ContinuousFeatureConverter

    def example(self, seed: int, index: int) -> dict[str, np.ndarray]:
        return self.examples.example(seed, index)


def get_batch_source(
    task_name: str,
    *,
    data_dir: str,
    split: str = "train",
    task_feature_lengths: dict[str, int] | None = None,
    dataset: str = "embedded",
    vocab: VocabularyConfig = DEFAULT_VOCABULARY,
) -> TaskBatchSource:
    """Model batches of a task's split (no seqio/TensorFlow needed); bound in gin/tasks/*.gin.

    ``vocab`` tokenizes the notes and names the tasks (``task_name``: '_vb1' only for one
    velocity bin); gin/tasks/*velocity127.gin bind it to the models' VocabularyConfig.
    """
    if dataset not in dataset_specs.DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid values: "
                         f"{sorted(dataset_specs.DATASETS)}")
    spec = get_task_spec(task_name, dataset_specs.DATASETS[dataset], vocab)
    return TaskBatchSource(
        examples=ExampleSource(spec, split, os.path.abspath(data_dir), vocab=vocab),
        converter=make_feature_converter(spec.with_context, task_feature_lengths),
    )


def _output_features(with_context: bool, vocab: VocabularyConfig):
    import seqio
    import tensorflow as tf

    from music_spectrogram_diffusion.data.vocabularies import num_embeddings

    features = {
        "note_tokens": seqio.Feature(seqio.PassThroughVocabulary(num_embeddings(vocab)),
                                     add_eos=False, dtype=tf.int32),
        "target_frames": seqio.ContinuousFeature(dtype=tf.float32, rank=2),
        "target_mask": seqio.ContinuousFeature(dtype=tf.float32, rank=1),
    }
    if with_context:
        features["context_frames"] = seqio.ContinuousFeature(dtype=tf.float32, rank=2)
        features["context_mask"] = seqio.ContinuousFeature(dtype=tf.float32, rank=1)
    return features


def _dataset_fn(task: TaskSpec, data_dir: str, vocab: VocabularyConfig, split: str,
                shuffle_files: bool, seed: int | None = None):
    """seqio dataset_fn: the same examples as ExampleSource, as a tf.data.Dataset."""
    del shuffle_files  # Example order is a function of the seed already.
    import itertools

    import tensorflow as tf

    source = ExampleSource(task, split, data_dir, vocab=vocab)
    keys = windows.EXAMPLE_KEYS if task.with_context else windows.EXAMPLE_KEYS[:3]
    seed = 0 if seed is None else int(seed)
    count = source.num_examples
    indices = range(count) if count is not None else itertools.count()

    def generate():
        for i in indices:
            example = source.example(seed, i)
            yield {k: example[k] for k in keys}

    frames, mels = DEFAULT_FEATURES.segment_frames, DEFAULT_FEATURES.num_mels
    shapes = {"note_tokens": ([None], tf.int32), "target_frames": ([frames, mels], tf.float32),
              "target_mask": ([frames], tf.float32),
              "context_frames": ([DEFAULT_FEATURES.context_frames, mels], tf.float32),
              "context_mask": ([DEFAULT_FEATURES.context_frames], tf.float32)}
    signature = {k: tf.TensorSpec(*shapes[k]) for k in keys}
    return tf.data.Dataset.from_generator(generate, output_signature=signature)


def register_tasks(
    data_dir: str,
    *,
    dataset: dataset_specs.DatasetSpec = dataset_specs.EMBEDDED,
    vocab: VocabularyConfig = DEFAULT_VOCABULARY,
) -> list[str]:
    """Registers the dataset's seqio tasks and eval mixtures; returns their names.

    Idempotent: calling again with the same data_dir changes nothing; with another data_dir
    the tasks are re-registered to read from it.
    """
    import seqio

    data_dir = os.path.abspath(data_dir)
    tasks, mixtures = make_task_specs(dataset, vocab)
    names = []
    with _LOCK:
        for name, spec in tasks.items():
            names.append(name)
            if _SEQIO_REGISTERED.get(name) == data_dir:
                continue
            if name in seqio.TaskRegistry.names():
                seqio.TaskRegistry.remove(name)
            seqio.TaskRegistry.add(
                name,
                source=seqio.FunctionDataSource(
                    dataset_fn=_bind_dataset_fn(spec, data_dir, vocab), splits=list(spec.splits)
                ),
                output_features=_output_features(spec.with_context, vocab),
                preprocessors=[],
                shuffle_buffer_size=None,
            )
            _SEQIO_REGISTERED[name] = data_dir
        for name, members in mixtures.items():
            names.append(name)
            if _SEQIO_REGISTERED.get(name) == data_dir:
                continue
            if name in seqio.MixtureRegistry.names():
                seqio.MixtureRegistry.remove(name)
            seqio.MixtureRegistry.add(name, members, default_rate=1.0)
            _SEQIO_REGISTERED[name] = data_dir
    return names


def _bind_dataset_fn(spec: TaskSpec, data_dir: str, vocab: VocabularyConfig):
    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None):
        return _dataset_fn(spec, data_dir, vocab, split, shuffle_files, seed)

    return dataset_fn


def task_names(dataset: dataset_specs.DatasetSpec = dataset_specs.EMBEDDED,
               vocab: VocabularyConfig = DEFAULT_VOCABULARY) -> Sequence[str]:
    """Every task and mixture name of a dataset, without registering anything."""
    tasks, mixtures = make_task_specs(dataset, vocab)
    return sorted(tasks) + sorted(mixtures)
