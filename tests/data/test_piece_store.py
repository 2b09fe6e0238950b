"""The on-disk piece store: same examples as the in-RAM pieces, lazy reads, clear errors."""

import json
import os
import pickle
import shutil

import numpy as np
import pytest

from music_spectrogram_diffusion.cli import build_store as build_store_cli
from music_spectrogram_diffusion.data import dataset_specs, piece_store, tasks, windows
from music_spectrogram_diffusion.features import DEFAULT_FEATURES

CONTEXT_TRAIN = "synthesis_with_context_embedded_notes_ties_melgan_vb1_train"
TRAIN = "synthesis_embedded_notes_ties_melgan_vb1_train"
FULL_TEST = "synthesis_full_embedded_notes_ties_melgan_vb1_test"


@pytest.fixture(scope="module")
def data_dir(small_embedded_dataset):
    return small_embedded_dataset(max_piece_seconds=12.0)


@pytest.fixture
def copy_dir(data_dir, tmp_path):
    """A private copy of the dataset folder, store included, to damage."""
    out = str(tmp_path / "embedded")
    shutil.copytree(data_dir, out)
    return out


def _store_path(data_dir):
    return os.path.join(piece_store.store_dir(data_dir, dataset_specs.EMBEDDED),
                        piece_store.STORE_NAME)


class InRamReference:
    """Today's ExampleSource before the store: every piece computed into RAM, then windowed."""

    def __init__(self, task, split, data_dir):
        self.task = task
        refs = task.dataset.pieces(data_dir, task.splits[split])
        self.pieces = [dataset_specs.compute_piece(ref, task.dataset) for ref in refs]
        if task.kind == "full":
            self.segments = [dict(s, piece_id=p.id, segment_index=k) for p in self.pieces
                             for k, s in enumerate(windows.full_song_segments(p.log_mel, p.index))]
        else:
            frames = np.array([p.log_mel.shape[0] for p in self.pieces], np.float64)
            starts = frames if task.with_context else frames + DEFAULT_FEATURES.segment_frames - 1
            self.weights = starts / starts.sum()

    def example(self, seed, index):
        if self.task.kind == "full":
            return self.segments[index % len(self.segments)]
        rng = np.random.default_rng([seed, index])
        piece = self.pieces[int(rng.choice(len(self.pieces), p=self.weights))]
        example = windows.training_example(piece.log_mel, piece.index, rng,
                                           with_context=self.task.with_context)
        return dict(example, piece_id=piece.id)


@pytest.mark.parametrize("name,split,count", [(CONTEXT_TRAIN, "train", 40),
                                              (TRAIN, "train", 40), (CONTEXT_TRAIN, "eval", 20),
                                              (FULL_TEST, "eval", 5)])
def test_store_examples_are_bit_identical_to_in_ram_pieces(data_dir, name, split, count):
    task = tasks.get_task_spec(name)
    source = tasks.ExampleSource(task, split, data_dir)
    reference = InRamReference(task, split, data_dir)
    if task.kind == "full":
        assert source.num_examples == len(reference.segments)
        count = source.num_examples + 1  # wraps around
    for index in range(count):
        got, want = source.example(7, index), reference.example(7, index)
        assert sorted(got) == sorted(want)
        for key in want:
            if key in ("piece_id", "segment_index"):
                assert got[key] == want[key]
            else:
                assert got[key].dtype == want[key].dtype, key
                np.testing.assert_array_equal(got[key], want[key], err_msg=f"{key} @ {index}")


def test_pieces_are_views_of_read_only_maps_and_pickle_without_data(data_dir):
    source = tasks.ExampleSource(tasks.get_task_spec(CONTEXT_TRAIN), "train", data_dir)
    (piece,) = source.pieces
    assert not piece.log_mel.flags.writeable and not piece.log_mel.flags.owndata
    assert not piece.index.events.flags.owndata
    source.example(0, 0)  # opens the maps
    data = pickle.dumps(source)
    assert len(data) < piece.log_mel.nbytes / 10  # the table, not the arrays
    again = pickle.loads(data)
    np.testing.assert_array_equal(again.example(0, 5)["target_frames"],
                                  source.example(0, 5)["target_frames"])


def test_dataset_build_writes_the_store_and_a_second_build_keeps_it(data_dir):
    store = piece_store.open_store(data_dir, dataset_specs.EMBEDDED, build_missing=False)
    assert len(store.ids) == 3 and sorted(set(store.splits)) == ["test", "train", "validation"]
    again = piece_store.build_store(data_dir, dataset_specs.EMBEDDED, progress=False)
    assert [s["log_mel"].file for s in again.shards] == [s["log_mel"].file for s in store.shards]


def test_rebuild_reuses_unchanged_pieces_and_drops_old_shards(copy_dir, caplog):
    before = piece_store.open_store(copy_dir, dataset_specs.EMBEDDED, build_missing=False)
    pieces = [before.piece(row) for row in range(3)]  # maps opened: they outlive the rebuild
    audio = dataset_specs.EMBEDDED.pieces(copy_dir, "test")[0].audio_path
    os.utime(audio, ns=(1, 1))  # the piece's file changed: it is computed again
    with caplog.at_level("INFO"):
        after = piece_store.build_store(copy_dir, dataset_specs.EMBEDDED, progress=False)
    assert "(2 reused, 1 computed)" in caplog.text
    old = {f.file for s in before.shards for f in s.values()}
    assert not old & set(os.listdir(after.directory))
    for row, a in enumerate(pieces):
        b = after.piece(row)
        np.testing.assert_array_equal(a.log_mel, b.log_mel)
        np.testing.assert_array_equal(a.index.state_events, b.index.state_events)


def test_a_folder_without_store_is_converted_on_first_use(copy_dir, data_dir, caplog):
    shutil.rmtree(os.path.join(copy_dir, piece_store.STORE_DIR))
    with caplog.at_level("INFO"):
        source = tasks.ExampleSource(tasks.get_task_spec(TRAIN), "train", copy_dir)
    assert "no piece store yet" in caplog.text
    reference = tasks.ExampleSource(tasks.get_task_spec(TRAIN), "train", data_dir)
    np.testing.assert_array_equal(source.example(1, 2)["target_frames"],
                                  reference.example(1, 2)["target_frames"])


def _open(data_dir):
    return tasks.ExampleSource(tasks.get_task_spec(TRAIN), "train", data_dir)


def _shard_file(data_dir, array="log_mel"):
    with open(_store_path(data_dir), encoding="utf-8") as f:
        name = json.load(f)["shards"][0][array]["file"]
    return os.path.join(os.path.dirname(_store_path(data_dir)), name)


def _edit_store_json(data_dir, edit):
    path = _store_path(data_dir)
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    edit(data)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)
    return path


def _expect_store_error(data_dir, path, match):
    with pytest.raises(piece_store.StoreError) as info:
        _open(data_dir)
    message = str(info.value)
    assert message.startswith(path) and match in message
    assert f"msd-build-store {data_dir}" in message


def test_missing_shard_names_the_file_and_the_fix(copy_dir):
    path = _shard_file(copy_dir, "events")
    os.remove(path)
    _expect_store_error(copy_dir, path, "shard file missing")


def test_truncated_shard_names_the_file_and_the_fix(copy_dir):
    path = _shard_file(copy_dir)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 512)
    _expect_store_error(copy_dir, path, "truncated")


def test_store_json_disagreeing_with_its_shard_is_an_error(copy_dir):
    def claim_more_frames(data):
        shard = data["shards"][0]["log_mel"]
        shard["shape"][0] += 1
        shard["bytes"] += 128 * 4
    _edit_store_json(copy_dir, claim_more_frames)
    _expect_store_error(copy_dir, _shard_file(copy_dir), "truncated or replaced")


def test_shard_with_another_shape_is_an_error_when_mapped(copy_dir):
    path = _shard_file(copy_dir)
    size = os.path.getsize(path)
    np.save(path, np.load(path).reshape(-1))  # same bytes, another header
    assert os.path.getsize(path) == size
    source = _open(copy_dir)
    with pytest.raises(piece_store.StoreError, match="says <f4") as info:
        source.example(0, 0)
    assert str(info.value).startswith(path) and "msd-build-store" in str(info.value)
    assert build_store_cli.main([copy_dir, "--quiet"]) == 0  # not reused: computed again
    _open(copy_dir).example(0, 0)


def test_piece_outside_its_shard_is_an_error(copy_dir):
    def move_piece(data):
        data["pieces"][0]["event_offset"] = data["shards"][0]["events"]["shape"][0]
    path = _edit_store_json(copy_dir, move_piece)
    _expect_store_error(copy_dir, path, "lies outside its shard")


def test_store_of_another_manifest_is_an_error_not_a_silent_rebuild(copy_dir):
    manifest = os.path.join(copy_dir, "manifest.json")
    with open(manifest, "a", encoding="utf-8") as f:
        f.write("\n")
    _expect_store_error(copy_dir, _store_path(copy_dir), "another version of")
    assert build_store_cli.main([copy_dir, "--quiet"]) == 0  # the command the message gives
    _open(copy_dir).example(0, 0)


def test_build_store_command(copy_dir, tmp_path, capsys):
    shutil.rmtree(os.path.join(copy_dir, piece_store.STORE_DIR))
    assert build_store_cli.main([copy_dir, "--quiet"]) == 0
    assert "3 pieces" in capsys.readouterr().out
    assert build_store_cli.main([str(tmp_path / "nothing"), "--quiet"]) == 2
    assert "no dataset manifest here" in capsys.readouterr().err
