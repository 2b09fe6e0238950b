"""Atomic writes leave either the old file or the complete new one, never a partial file."""

import json
import os

import pytest

from music_spectrogram_diffusion import file_io


def test_json_and_bytes_round_trip(tmp_path):
    path = tmp_path / "sub" / "record.json"
    file_io.write_json_atomic(str(path), {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"b": 1, "a": [1, 2]}
    assert path.read_text().endswith("\n")
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o644)
    file_io.write_bytes_atomic(str(path), b"new")
    assert path.read_bytes() == b"new"


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "result.bin"
    path.write_bytes(b"old")

    def explode(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        file_io.write_file_atomic(str(path), explode)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["result.bin"]


class _ReadError(Exception):
    pass


@pytest.mark.parametrize("content,match", [
    (None, "how to make one"), ("{not json", "unreadable manifest"), ("[1, 2]", "must be a JSON object"),
])
def test_read_json_object_names_the_file_and_the_problem(tmp_path, content, match):
    path = tmp_path / "manifest.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(_ReadError, match=match) as info:
        file_io.read_json_object(str(path), _ReadError, what="manifest", missing="how to make one")
    assert str(info.value).startswith(f"{path}: ")


def test_read_json_object_returns_the_object(tmp_path):
    file_io.write_json_atomic(str(tmp_path / "a.json"), {"x": 1})
    assert file_io.read_json_object(str(tmp_path / "a.json"), _ReadError) == {"x": 1}


def test_atomic_directory_appears_whole_or_not_at_all(tmp_path):
    out = tmp_path / "model"
    with file_io.atomic_directory(str(out)) as temp_dir:
        assert os.path.dirname(temp_dir) == str(tmp_path) and not out.exists()
        open(os.path.join(temp_dir, "a.txt"), "w").close()
    assert os.listdir(out) == ["a.txt"] and os.listdir(tmp_path) == ["model"]

    with pytest.raises(FileExistsError, match="not an empty directory"):
        with file_io.atomic_directory(str(out)):
            pass
    with pytest.raises(KeyboardInterrupt):
        with file_io.atomic_directory(str(tmp_path / "other")) as temp_dir:
            open(os.path.join(temp_dir, "half.txt"), "w").close()
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ["model"]  # no partial directory, no temporary sibling
    (tmp_path / "empty").mkdir()
    with file_io.atomic_directory(str(tmp_path / "empty")) as temp_dir:
        open(os.path.join(temp_dir, "b.txt"), "w").close()
    assert os.listdir(tmp_path / "empty") == ["b.txt"]
