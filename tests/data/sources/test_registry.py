"""Real-dataset tasks, the mega mixture (rate N^0.3) and the gin/tasks files."""

import os

import gin
import numpy as np
import pytest

from music_spectrogram_diffusion.data import dataset_specs, prepare, tasks
from music_spectrogram_diffusion.data.sources import fixtures, registry

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
MEMBERS = ("maestrov3", "urmp")
MEGA_TRAIN = "synthesis_mega_notes_ties_melgan_vb1_train"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """<root>/maestrov3 and <root>/urmp, prepared from fixture releases."""
    root = tmp_path_factory.mktemp("data")
    releases = tmp_path_factory.mktemp("releases")
    fixtures.write_maestro_release(str(releases / "maestro"))
    fixtures.write_urmp_release(str(releases / "urmp"))
    prepare.prepare_dataset("maestro", str(releases / "maestro"), str(root / "maestrov3"),
                            progress=False)
    prepare.prepare_dataset("urmp", str(releases / "urmp"), str(root / "urmp"), progress=False)
    return str(root)


def test_dataset_specs_follow_the_original_splits():
    specs = registry.DATASET_SPECS
    assert set(specs) == {"maestrov3", "slakh", "cerberus4", "guitarset", "musicnet", "urmp",
                          "folder"}
    assert specs["urmp"].splits == ("train", "validation")
    assert specs["musicnet"].infer_eval_splits == ("validation", "test")
    registry.register_dataset_specs()
    assert dataset_specs.DATASETS["slakh"] is specs["slakh"]
    names = tasks.task_names(specs["maestrov3"])
    assert "synthesis_with_context_full_maestrov3_notes_ties_melgan_vb1_test" in names
    assert "synthesis_maestrov3_notes_ties_melgan_vb1_eval" in names


def test_wrong_data_dir_names_the_manifest(data_root):
    with pytest.raises(prepare.PrepareError, match=r"manifest.json: holds urmp, not maestrov3"):
        registry.DATASET_SPECS["maestrov3"].pieces(os.path.join(data_root, "urmp"), "train")


def test_mega_rates_are_seqio_num_examples_at_temperature_10_3(data_root):
    seqio = pytest.importorskip("seqio")
    dirs = registry.default_data_dirs(data_root, MEMBERS)
    # Every fixture piece is shorter than one 2000-frame chunk: N = number of train pieces.
    counts = {name: len(prepare.load_prepared_manifest(d).split("train"))
              for name, d in dirs.items()}
    assert {n: registry.num_train_examples(d) for n, d in dirs.items()} == counts
    rates = registry.mixing_rates(dirs)
    for name, count in counts.items():
        task = seqio.Task(f"rate_check_{name}", source=seqio.FunctionDataSource(
            dataset_fn=lambda split, shuffle_files: None, splits=["train"],
            num_input_examples={"train": count}), output_features={})
        assert rates[name] == pytest.approx(
            seqio.mixing_rate_num_examples(task, temperature=10 / 3))
        assert rates[name] == pytest.approx(count ** 0.3)


def test_mega_mixture_registered_in_seqio(data_root):
    seqio = pytest.importorskip("seqio")
    dirs = registry.default_data_dirs(data_root, MEMBERS)
    names = registry.register_mega_mixture(dirs)
    assert set(names) == {"synthesis_mega_notes_ties_melgan_vb1_train",
                          "synthesis_mega_notes_ties_melgan_vb1_eval",
                          "synthesis_with_context_mega_notes_ties_melgan_vb1_train",
                          "synthesis_with_context_mega_notes_ties_melgan_vb1_eval"}
    mixture = seqio.get_mixture_or_task(MEGA_TRAIN)
    rates = registry.mixing_rates(dirs)
    for name in MEMBERS:
        task = seqio.get_mixture_or_task(f"synthesis_{name}_notes_ties_melgan_vb1_train")
        assert mixture.get_rate(task) == pytest.approx(rates[name])
    assert registry.register_mega_mixture(dirs) == names  # idempotent


def test_mega_batches_are_deterministic_and_follow_the_rates(data_root):
    source = registry.get_batch_source(MEGA_TRAIN, data_dir=data_root, mega_datasets=MEMBERS)
    rates = registry.mixing_rates(registry.default_data_dirs(data_root, MEMBERS))
    np.testing.assert_allclose(source.probabilities,
                               [rates[n] / sum(rates.values()) for n in source.names])
    batch = source.get_batch(3, 4, seed=7)
    assert batch["note_tokens"].shape == (4, 2048)
    assert batch["target_frames"].shape == (4, 256, 128)
    assert np.all(batch["context_mask"] == 0)  # no-context mixture
    np.testing.assert_array_equal(batch["note_tokens"],
                                  source.get_batch(3, 4, seed=7)["note_tokens"])
    picks = [source.example(0, i)["dataset"] for i in range(200)]
    share = picks.count("maestrov3") / len(picks)
    assert abs(share - source.probabilities[source.names.index("maestrov3")]) < 0.1


REAL_TASK_FILES = [
    os.path.join(REPO, "gin", "tasks", f"{prefix}{name}.gin")
    for name in ("maestro", "slakh", "cerberus4", "guitarset", "musicnet", "urmp", "mega")
    for prefix in ("", "context_")]


@pytest.mark.parametrize("path", REAL_TASK_FILES, ids=os.path.basename)
def test_task_gin_files_parse_and_name_registered_tasks(path):
    gin.clear_config()
    gin.add_config_file_search_path(REPO)
    try:
        gin.parse_config_file(path)
        dataset = gin.query_parameter("%DATASET")
        name = gin.query_parameter("%MIXTURE_OR_TASK_NAME")
        lengths = gin.query_parameter("%TASK_FEATURE_LENGTHS")
        test_task = gin.query_parameter("%TEST_TASK")
    finally:
        gin.clear_config()
    assert ("targets_context" in lengths) == ("with_context" in name)
    if dataset is None:
        assert name.split("_notes")[0].endswith("_mega") and test_task is None
    else:
        spec = registry.DATASET_SPECS[dataset]
        assert name in tasks.task_names(spec) and test_task in tasks.task_names(spec)


def test_gin_task_file_builds_model_batches(data_root):
    gin.clear_config()
    gin.add_config_file_search_path(REPO)
    try:
        gin.parse_config_files_and_bindings(
            [os.path.join(REPO, "gin", "tasks", "context_urmp.gin")],
            [f"DATA_DIR = '{os.path.join(data_root, 'urmp')}'"])
        train_data = gin.query_parameter("%TRAIN_DATA").scoped_configurable_fn()
        eval_data = gin.query_parameter("%TRAIN_EVAL_DATA").scoped_configurable_fn()
    finally:
        gin.clear_config()
    batch = train_data.get_batch(0, 2, seed=0)
    assert batch["context_frames"].shape == (2, 256, 128)
    # Train-eval windows come from the validation split (01_Jupiter).
    assert eval_data.examples.task.splits["eval"] == "validation"
    assert {p.id for p in eval_data.examples.pieces} == {"01_Jupiter_vn_vc"}


def test_registered_seqio_tasks_yield_examples(data_root):
    seqio = pytest.importorskip("seqio")
    registry.register_tasks({"urmp": os.path.join(data_root, "urmp")})
    task = seqio.get_mixture_or_task("synthesis_with_context_urmp_notes_ties_melgan_vb1_train")
    example = next(task.get_dataset(sequence_length=None, split="train", shuffle=False,
                                    seed=0).as_numpy_iterator())
    assert example["note_tokens"].shape == (2048,)
    assert example["context_frames"].shape == (256, 128)
    full = seqio.get_mixture_or_task("synthesis_full_urmp_notes_ties_melgan_vb1_validation")
    segments = list(full.get_dataset(sequence_length=None, split="eval",
                                     shuffle=False).as_numpy_iterator())
    assert len(segments) == 1  # one 1.25 s validation piece: one segment


@pytest.mark.parametrize("name,write", [
    ("maestrov3", fixtures.write_maestro_release), ("slakh", fixtures.write_slakh_release),
    ("guitarset", fixtures.write_guitarset_release),
    ("musicnet", fixtures.write_musicnet_release), ("urmp", fixtures.write_urmp_release),
])
def test_each_reader_owns_the_splits_its_refs_use(tmp_path, name, write):
    from music_spectrogram_diffusion.data.sources import get_reader

    write(str(tmp_path))
    reader = get_reader(name)
    refs = reader.list_pieces(str(tmp_path))
    assert refs and {ref.split for ref in refs} <= set(reader.splits)
    assert registry.DATASET_SPECS[name].splits == reader.splits
    assert get_reader(name, "tfrecord").splits == reader.splits


def test_unknown_reader_lists_the_table():
    from music_spectrogram_diffusion.data.sources import READERS, get_reader

    with pytest.raises(ValueError, match="valid names: " + ", ".join(READERS)):
        get_reader("lakh")


@pytest.mark.parametrize("task_gin", ["maestro_velocity127.gin", "context_maestro_velocity127.gin"])
def test_velocity127_task_files_of_a_prepared_dataset(data_root, task_gin):
    from music_spectrogram_diffusion.data import vocabularies

    gin.clear_config()
    gin.add_config_file_search_path(REPO)
    try:
        gin.parse_config_files_and_bindings(
            [os.path.join(REPO, "gin", "models", "diffusion", "tiny.gin"),
             os.path.join(REPO, "gin", "tasks", task_gin)],
            [f"DATA_DIR = '{os.path.join(data_root, 'maestrov3')}'"])
        model = gin.query_parameter("%MODEL").scoped_configurable_fn()
        train_data = gin.query_parameter("%TRAIN_DATA").scoped_configurable_fn()
        eval_data = gin.query_parameter("%TRAIN_EVAL_DATA").scoped_configurable_fn()
        test_task = gin.query_parameter("%TEST_TASK")
        lengths = gin.query_parameter("%TASK_FEATURE_LENGTHS")
    finally:
        gin.clear_config()
    vocab = vocabularies.VocabularyConfig(num_velocity_bins=127)
    assert model.network_config.vocab_size == vocabularies.num_embeddings(vocab) == 1664
    for source in (train_data, eval_data):
        assert source.examples.vocab == vocab and "_vb1" not in source.examples.task.name
    assert test_task in tasks.task_names(registry.DATASET_SPECS["maestrov3"], vocab)
    batch = train_data.get_batch(0, 2, seed=0)
    assert batch["note_tokens"].max() < 1664
    # The same windows tokenized with one bin differ: the velocity tokens are there.
    one_bin = registry.get_batch_source(
        train_data.examples.task.name.replace("_melgan_", "_melgan_vb1_"),
        data_dir=os.path.join(data_root, "maestrov3"), dataset="maestrov3",
        task_feature_lengths=lengths)
    assert not np.array_equal(batch["note_tokens"], one_bin.get_batch(0, 2, seed=0)["note_tokens"])
