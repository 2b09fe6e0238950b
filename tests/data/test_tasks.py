"""Task registry and batch sources on a real (tiny) embedded dataset."""

import dataclasses

import numpy as np
import pytest

from music_spectrogram_diffusion.data import dataset_specs, embedded_dataset, tasks

TRAIN = "synthesis_embedded_notes_ties_melgan_vb1_train"
CONTEXT_TRAIN = "synthesis_with_context_embedded_notes_ties_melgan_vb1_train"
FULL_VALIDATION = "synthesis_full_embedded_notes_ties_melgan_vb1_validation"


def test_task_names_follow_the_original_scheme():
    names = set(tasks.task_names())
    for prefix in ("synthesis", "synthesis_with_context"):
        for suffix in ("train", "validation", "test", "eval"):
            assert f"{prefix}_embedded_notes_ties_melgan_vb1_{suffix}" in names
        for split in ("validation", "test"):
            assert f"{prefix}_full_embedded_notes_ties_melgan_vb1_{split}" in names
    assert len(names) == 12


def test_train_batches_are_a_pure_function_of_seed_and_index(data_dir):
    source = tasks.get_batch_source(CONTEXT_TRAIN, data_dir=data_dir)
    a = source.get_batch(3, 4, seed=7)
    b = tasks.get_batch_source(CONTEXT_TRAIN, data_dir=data_dir).get_batch(3, 4, seed=7)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    c = source.get_batch(4, 4, seed=7)
    d = source.get_batch(3, 4, seed=8)
    assert not np.array_equal(a["target_frames"], c["target_frames"])
    assert not np.array_equal(a["target_frames"], d["target_frames"])
    # Batch 3 holds examples 12..15; host rows slice it.
    rows = source.get_batch(3, 4, seed=7, rows=slice(2, 4))
    np.testing.assert_array_equal(rows["note_tokens"], a["note_tokens"][2:])
    example = source.examples.example(7, 13)
    np.testing.assert_array_equal(a["target_frames"][1], example["target_frames"])
    assert a["note_tokens"].shape == (4, 2048) and a["context_frames"].shape == (4, 256, 128)
    assert a["context_mask"].sum() > 0


def test_train_split_reads_only_train_pieces(data_dir):
    manifest = embedded_dataset.load_manifest(data_dir)
    train_ids = {p.id for p in manifest.split("train")}
    source = tasks.get_batch_source(TRAIN, data_dir=data_dir)
    seen = {source.examples.example(0, i)["piece_id"] for i in range(20)}
    assert seen == train_ids
    eval_source = tasks.get_batch_source(TRAIN, data_dir=data_dir, split="eval")
    assert {p.id for p in eval_source.examples.pieces} == {
        p.id for p in manifest.split("validation")}
    batch = source.get_batch(0, 2, seed=0)
    assert not batch["context_mask"].any()  # no-context task


def test_full_song_task_covers_each_piece_exactly(data_dir):
    source = tasks.get_batch_source(FULL_VALIDATION, data_dir=data_dir, split="eval")
    (piece,) = source.examples.pieces
    frames = piece.log_mel.shape[0]
    assert source.examples.num_examples == -(-frames // 256)
    batch = source.get_batch(0, source.examples.num_examples, seed=0)
    real = batch["target_frames"][batch["target_mask"] > 0]
    np.testing.assert_array_equal(real, piece.log_mel)


def test_unknown_task_and_split_name_valid_values(data_dir):
    with pytest.raises(ValueError, match="synthesis_embedded_notes_ties_melgan_vb1_train"):
        tasks.get_batch_source("synthesis_embedded_notes_melgan_train", data_dir=data_dir)
    with pytest.raises(ValueError, match="valid splits"):
        tasks.get_batch_source(TRAIN, data_dir=data_dir, split="validation")


@pytest.mark.slow
def test_seqio_registration_is_explicit_and_idempotent(data_dir, tmp_path):
    import seqio

    spec = dataclasses.replace(dataset_specs.EMBEDDED, name="embeddedregtest")
    names = tasks.task_names(spec)
    assert not set(names) & set(seqio.TaskRegistry.names())  # nothing registered on import
    registered = tasks.register_tasks(data_dir, dataset=spec)
    assert sorted(registered) == sorted(names)
    task_name = "synthesis_embeddedregtest_notes_ties_melgan_vb1_train"
    task = seqio.get_mixture_or_task(task_name)
    tasks.register_tasks(data_dir, dataset=spec)
    assert seqio.get_mixture_or_task(task_name) is task  # second call changes nothing
    mixture = seqio.get_mixture_or_task("synthesis_embeddedregtest_notes_ties_melgan_vb1_eval")
    assert [t.name for t in mixture.tasks] == [
        "synthesis_embeddedregtest_notes_ties_melgan_vb1_validation"]
    ds = task.get_dataset(None, split="train", shuffle=False, seed=5)
    first = next(iter(ds.as_numpy_iterator()))
    reference = tasks.ExampleSource(tasks.get_task_spec(task_name, spec), "train", data_dir)
    np.testing.assert_array_equal(first["target_frames"], reference.example(5, 0)["target_frames"])


@pytest.mark.slow
@pytest.mark.parametrize("name", [CONTEXT_TRAIN, TRAIN])
def test_seqio_task_and_the_trainers_loader_yield_the_same_examples(data_dir, name):
    """Users name tasks through seqio; the trainer reads them through BatchLoader: example i of
    seed s is the same either way (row i % B of batch i // B)."""
    import seqio

    from music_spectrogram_diffusion.data.loader import BatchLoader

    tasks.register_tasks(data_dir)
    dataset = seqio.get_mixture_or_task(name).get_dataset(
        None, split="train", shuffle=False, seed=11)
    from_seqio = list(dataset.take(6).as_numpy_iterator())
    batches = BatchLoader(tasks.get_batch_source(name, data_dir=data_dir), batch_size=3,
                          seed=11, end_step=2)
    rows = [{k: v[r] for k, v in batch.items()} for _, batch in batches for r in range(3)]
    for index, (seqio_example, row) in enumerate(zip(from_seqio, rows)):
        for key, value in seqio_example.items():
            np.testing.assert_array_equal(value, row[key], err_msg=f"{key} of example {index}")
        if "context_frames" not in seqio_example:  # no-context tasks: the loader zeroes it
            assert not row["context_mask"].any()
    assert len(rows) == len(from_seqio) == 6
