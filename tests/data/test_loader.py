"""BatchLoader: batch s == source.get_batch(s), in process or in Grain workers; resumable."""

import json
import multiprocessing
import os

import numpy as np
import pytest

from music_spectrogram_diffusion.data import loader, piece_store, tasks
from music_spectrogram_diffusion.data.sources import registry
from music_spectrogram_diffusion.data.loader import BatchLoader

CONTEXT_TRAIN = "synthesis_with_context_embedded_notes_ties_melgan_vb1_train"


class StepSource:
    """Batch s, row r holds s * 1000 + r + seed * 10**6 in every field (distinct per field)."""

    def __init__(self):
        self.calls = []

    def get_batch(self, index, batch_size, *, seed, rows=None):
        self.calls.append(index)
        ids = np.arange(index * batch_size, (index + 1) * batch_size)
        if rows is not None:
            ids = ids[rows]
        return {"a": ids + seed * 10**6, "b": -(ids + seed * 10**6)}


def _assert_same(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_yields_steps_from_start_with_the_sources_batches():
    source = StepSource()
    with BatchLoader(source, batch_size=4, seed=2, start_step=5, end_step=9) as batches:
        got = list(batches)
    assert [step for step, _ in got] == [5, 6, 7, 8]
    for step, batch in got:
        _assert_same(batch, StepSource().get_batch(step, 4, seed=2))
    assert source.calls == [5, 6, 7, 8]  # in process, one read per step, nothing ahead


def test_state_resumes_exactly_where_an_uninterrupted_run_is():
    uninterrupted = BatchLoader(StepSource(), batch_size=3, seed=1)
    expected = [next(uninterrupted) for _ in range(7)]
    first = BatchLoader(StepSource(), batch_size=3, seed=1)
    head = [next(first) for _ in range(4)]
    state = json.loads(json.dumps(first.get_state()))  # as saved in a checkpoint
    assert state == {"next_step": 4, "seed": 1, "batch_size": 3}
    first.close()
    resumed = BatchLoader.from_state(StepSource(), state)
    tail = [next(resumed) for _ in range(3)]
    for (s1, b1), (s2, b2) in zip(head + tail, expected):
        assert s1 == s2
        _assert_same(b1, b2)
    with pytest.raises(ValueError, match="next_step"):
        BatchLoader.from_state(StepSource(), {"next_step": 4})


def test_host_rows_split_the_global_batch():
    source = StepSource()
    rows = [loader.host_rows(8, process_index=h, process_count=4) for h in range(4)]
    parts = [next(BatchLoader(source, batch_size=8, seed=0, start_step=3, rows=r))[1]
             for r in rows]
    _assert_same({k: np.concatenate([p[k] for p in parts]) for k in parts[0]},
                 source.get_batch(3, 8, seed=0))
    assert loader.host_rows(8, process_index=0, process_count=1) is None
    with pytest.raises(ValueError, match="not divisible"):
        loader.host_rows(6, process_index=0, process_count=4)


def _mixture(data_dir):
    """Two members (train and validation windows) at rates 3:1, as the mega mixture samples."""
    spec = tasks.get_task_spec(CONTEXT_TRAIN)
    sources = {"train": tasks.ExampleSource(spec, "train", data_dir),
               "validation": tasks.ExampleSource(spec, "eval", data_dir)}
    return registry.MixtureBatchSource(sources, {"train": 3.0, "validation": 1.0},
                                       tasks.make_feature_converter(True, None))


@pytest.mark.parametrize("kind", ["task", "mixture"])
def test_worker_processes_yield_the_in_process_batches(data_dir, kind):
    source = (tasks.get_batch_source(CONTEXT_TRAIN, data_dir=data_dir) if kind == "task"
              else _mixture(data_dir))
    rows = slice(1, 3)
    expected = list(BatchLoader(source, batch_size=4, seed=9, start_step=2, end_step=7,
                                rows=rows))
    with BatchLoader(source, batch_size=4, seed=9, start_step=2, end_step=7, rows=rows,
                     num_workers=2, prefetch=2) as batches:
        got = list(batches)
        assert len(multiprocessing.active_children()) >= 2
    assert [s for s, _ in got] == [s for s, _ in expected] == [2, 3, 4, 5, 6]
    for (_, a), (_, b) in zip(got, expected):
        _assert_same(a, b)
    assert not [p for p in multiprocessing.active_children() if "grain" in p.name]


def test_mixture_keeps_its_rates(data_dir):
    source = _mixture(data_dir)
    members = [source.example(0, i)["dataset"] for i in range(400)]
    assert 0.68 < members.count("train") / 400 < 0.82  # rate 3:1 -> 0.75


def test_a_worker_error_reaches_the_caller_with_its_message(data_dir, tmp_path):
    import shutil

    copy = str(tmp_path / "embedded")
    shutil.copytree(data_dir, copy)
    source = tasks.get_batch_source(CONTEXT_TRAIN, data_dir=copy)
    store = source.examples.store
    shard = os.path.join(store.directory, store.shards[0]["log_mel"].file)
    os.remove(shard)  # after opening, before any worker maps it
    with BatchLoader(source, batch_size=2, seed=0, num_workers=1) as batches:
        with pytest.raises(piece_store.StoreError, match="msd-build-store"):
            next(batches)
