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
