"""Tasks of the prepared real datasets and the ``mega`` mixture (spec §3.1-3.2).

Each dataset prepared by ``msd-prepare-dataset`` is a ``dataset_specs.DatasetSpec`` named as
in the original's task names (maestrov3, slakh, cerberus4, guitarset, musicnet, urmp; and
``folder`` for a folder of your own recordings, ``data/sources/folder.py``), so
``data/tasks.py`` gives it the original's task family::

    synthesis[_with_context]_<name>_notes_ties_melgan_vb1_train        (train / train-eval)
    synthesis[_with_context]_<name>_notes_ties_melgan_vb1_validation   (and _test where the
    synthesis[_with_context]_full_<name>_notes_ties_melgan_vb1_<split>  dataset has a test split)
    synthesis[_with_context]_<name>_notes_ties_melgan_vb1_eval         (mixture of validation)

Splits per dataset follow spec §3.1: GuitarSet and URMP have train and validation only. The
original's ``*_subset`` splits (a fixed subset for faster eval) are not reproduced: evaluation
draws a chosen number of random windows instead.

The **mega** mixture (``synthesis[_with_context]_mega_notes_ties_melgan_vb1_train``) samples
the six train tasks with rate N^(1/T), T = 10/3 (``seqio.mixing_rate_num_examples(
temperature=10/3)``), where N counts the 2000-frame chunks of the dataset's train split: the
original's N was the number of cached 2000-frame examples (§3.2). Its ``_eval`` mixture holds
each dataset's validation task at rate 1; there is no mega test task (as the original).

Nothing happens on import. ``register_dataset_specs()`` adds the specs to
``dataset_specs.DATASETS`` (numpy path of the trainer); ``register_tasks(data_dirs)`` and
``register_mega_mixture(data_dirs)`` register seqio tasks and mixtures; ``get_batch_source``
is what gin/tasks/*.gin bind.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence

import numpy as np

from music_spectrogram_diffusion.data import dataset_specs, tasks
from music_spectrogram_diffusion.data.feature_converters import (
    ContinuousFeatureConverter,
    make_feature_converter,
)
from music_spectrogram_diffusion.data.sources import DATASET_NAMES, canonical_name, get_reader
from music_spectrogram_diffusion.data.vocabularies import DEFAULT_VOCABULARY, VocabularyConfig

MEGA_NAME = "mega"
MEGA_DATASETS = ("maestrov3", "guitarset", "urmp", "musicnet", "cerberus4", "slakh")
MEGA_TEMPERATURE = 10 / 3
PREFIXES = {False: "synthesis", True: "synthesis_with_context"}
# Random windows drawn by a mixture to pick its member task: a stream of its own, so the
# member's example (seeded by [seed, index]) does not depend on the choice.
_MIXTURE_STREAM = 1


@dataclasses.dataclass(frozen=True)
class PreparedPieces:
    """``DatasetSpec.list_pieces`` of a prepared directory; checks it holds ``dataset``."""

    dataset: str

    def __call__(self, data_dir: str, split: str) -> list[dataset_specs.PieceRef]:
        from music_spectrogram_diffusion.data import prepare

        manifest = prepare.load_prepared_manifest(data_dir)
        if manifest.dataset != self.dataset:
            raise prepare.PrepareError(
                f"{os.path.join(manifest.data_dir, prepare.MANIFEST_NAME)}: holds "
                f"{manifest.dataset}, not {self.dataset}; check DATA_DIR")
        return [dataset_specs.PieceRef(id=p.id, midi_path=manifest.midi_file(p),
                                       audio_path=manifest.audio_file(p))
                for p in manifest.split(split)]


def make_dataset_spec(name: str) -> dataset_specs.DatasetSpec:
    """The task-pipeline spec of a prepared dataset (programs are mapped by its reader)."""
    name = canonical_name(name)
    splits = get_reader(name).splits  # each reader owns its release's splits
    return dataset_specs.DatasetSpec(
        name=name,
        splits=splits,
        train_split="train",
        train_eval_split="validation",
        infer_eval_splits=tuple(s for s in ("validation", "test") if s in splits),
        eval_mixture_splits=("validation",),
        list_pieces=PreparedPieces(name),
    )


DATASET_SPECS = {name: make_dataset_spec(name) for name in DATASET_NAMES}


def register_dataset_specs() -> None:
    """Adds the real datasets to ``dataset_specs.DATASETS`` (idempotent)."""
    dataset_specs.DATASETS.update(DATASET_SPECS)


def register_tasks(data_dirs: Mapping[str, str], *,
                   vocab: VocabularyConfig = DEFAULT_VOCABULARY) -> list[str]:
    """Registers the seqio tasks of each prepared dataset (name -> its prepared directory)."""
    register_dataset_specs()
    names = []
    for name, data_dir in data_dirs.items():
        names += tasks.register_tasks(data_dir, dataset=DATASET_SPECS[canonical_name(name)],
                                      vocab=vocab)
    return names


def mixture_name(with_context: bool, suffix: str,
                 vocab: VocabularyConfig = DEFAULT_VOCABULARY) -> str:
    """E.g. ``synthesis_with_context_mega_notes_ties_melgan_vb1_train`` (spec §3.2)."""
    return tasks.task_name(PREFIXES[with_context], MEGA_NAME, suffix, vocab)


def num_train_examples(data_dir: str) -> int:
    """N of the mega rate: 2000-frame chunks in the dataset's train split (spec §3.2)."""
    from music_spectrogram_diffusion.data import prepare

    return sum(p.num_chunks for p in prepare.load_prepared_manifest(data_dir).split("train"))


def mixing_rates(data_dirs: Mapping[str, str],
                 temperature: float = MEGA_TEMPERATURE) -> dict[str, float]:
    """Dataset -> N^(1/temperature): ``seqio.mixing_rate_num_examples`` on N (§3.2)."""
    return {canonical_name(name): float(num_train_examples(d)) ** (1.0 / temperature)
            for name, d in data_dirs.items()}


def default_data_dirs(data_root: str,
                      datasets: Sequence[str] = MEGA_DATASETS) -> dict[str, str]:
    """``<data_root>/<name>`` for each dataset, where msd-prepare-dataset's README puts them."""
    return {canonical_name(name): os.path.join(data_root, canonical_name(name))
            for name in datasets}


def register_mega_mixture(data_dirs: Mapping[str, str], *,
                          vocab: VocabularyConfig = DEFAULT_VOCABULARY) -> list[str]:
    """Registers the member tasks and the mega train and eval mixtures; returns their names."""
    import seqio

    register_tasks(data_dirs, vocab=vocab)
    rates = mixing_rates(data_dirs)
    names = []
    for with_context, prefix in PREFIXES.items():
        members = {
            "train": [(tasks.task_name(prefix, name, "train", vocab), rate)
                      for name, rate in rates.items()],
            "eval": [(tasks.task_name(prefix, name, "validation", vocab), 1.0)
                     for name in rates],
        }
        for suffix, tasks_and_rates in members.items():
            name = mixture_name(with_context, suffix, vocab)
            if name in seqio.MixtureRegistry.names():
                seqio.MixtureRegistry.remove(name)
            seqio.MixtureRegistry.add(name, tasks_and_rates)
            names.append(name)
    return names


class MixtureBatchSource(tasks.ExampleBatchSource):
    """Model batches of the mega mixture without seqio (the trainer's numpy path).

    Example i is a pure function of (seed, i), as for a single task: a generator seeded with
    ``[seed, i, 1]`` picks the member task with probability proportional to its rate, and the
    member's own example i is taken.
    """

    def __init__(self, sources: Mapping[str, tasks.ExampleSource], rates: Mapping[str, float],
                 converter: ContinuousFeatureConverter):
        self.names = list(sources)
        self.sources = [sources[name] for name in self.names]
        weights = np.array([rates[name] for name in self.names], np.float64)
        self.probabilities = weights / weights.sum()
        self.converter = converter

    def example(self, seed: int, index: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([seed, index, _MIXTURE_STREAM])
        member = int(rng.choice(len(self.sources), p=self.probabilities))
        return dict(self.sources[member].example(seed, index), dataset=self.names[member])


def _parse_mixture(task_name: str, vocab: VocabularyConfig = DEFAULT_VOCABULARY
                   ) -> tuple[bool, str] | None:
    for with_context in (True, False):
        for suffix in ("train", "eval"):
            if task_name == mixture_name(with_context, suffix, vocab):
                return with_context, suffix
    return None


def get_batch_source(
    task_name: str,
    *,
    data_dir: str,
    split: str = "train",
    task_feature_lengths: dict[str, int] | None = None,
    dataset: str | None = None,
    mega_datasets: Sequence[str] = MEGA_DATASETS,
    vocab: VocabularyConfig = DEFAULT_VOCABULARY,
) -> tasks.TaskBatchSource | MixtureBatchSource:
    """Model batches of a real-dataset task or of the mega mixture (bound in gin/tasks/).

    Args:
      task_name: a task of ``dataset`` (e.g. ``synthesis_maestrov3_notes_ties_melgan_vb1_train``)
        or a mega mixture name (``..._mega_..._train``, or ``_eval``: validation windows).
      data_dir: the prepared directory of ``dataset``; for the mega mixture, the folder holding
        one prepared directory per dataset, named as the dataset (``default_data_dirs``).
      split: 'train' or 'eval' for train tasks (eval = train-eval windows of the validation
        split); 'eval' for the eval and full-song tasks.
      task_feature_lengths: t5x TASK_FEATURE_LENGTHS.
      dataset: the dataset's name; None for the mega mixture.
      mega_datasets: the mixture's member datasets.
      vocab: tokenizes the notes and names the tasks ('_vb1' only for one velocity bin);
        gin/tasks/*velocity127.gin bind it to the models' VocabularyConfig.
    """
    register_dataset_specs()
    mixture = _parse_mixture(task_name, vocab)
    if mixture is None:
        if dataset is None:
            raise ValueError(f"task {task_name!r} is not a mega mixture; give its dataset "
                             f"(valid values: {', '.join(DATASET_NAMES)})")
        return tasks.get_batch_source(task_name, data_dir=data_dir, split=split,
                                      task_feature_lengths=task_feature_lengths,
                                      dataset=canonical_name(dataset), vocab=vocab)
    with_context, suffix = mixture
    prefix = PREFIXES[with_context]
    data_dirs = default_data_dirs(data_dir, mega_datasets)
    member_split = "eval" if suffix == "eval" else split
    sources = {}
    for name, member_dir in data_dirs.items():
        spec = tasks.get_task_spec(tasks.task_name(prefix, name, "train", vocab),
                                   DATASET_SPECS[name], vocab)
        sources[name] = tasks.ExampleSource(spec, member_split, os.path.abspath(member_dir),
                                            vocab=vocab)
    rates = mixing_rates(data_dirs) if suffix == "train" else {name: 1.0 for name in data_dirs}
    return MixtureBatchSource(sources, rates,
                              make_feature_converter(with_context, task_feature_lengths))
