"""Tests for the msd-make-dataset and msd-main entry points (real builds, tiny sizes)."""

import contextlib
import io
import json
import os

import pytest

from music_spectrogram_diffusion.cli import main as main_cli
from music_spectrogram_diffusion.cli import make_dataset
from music_spectrogram_diffusion.data import embedded_dataset as ed

# Seed 6 starts with two short chorales (see tests/data/test_embedded_dataset.py).
FAST = ["--seed", "6", "--num_workers", "1", "--max-piece-seconds", "8", "--quiet"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(dataset dir, printed output) of `msd-make-dataset --num-pieces 2`."""
    out = str(tmp_path_factory.mktemp("cli") / "ds")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = make_dataset.main(["--out", out, "--num-pieces", "2", *FAST])
    assert code == 0
    return out, printed.getvalue()


def test_make_dataset_builds_and_prints_the_summary(built):
    out, printed = built
    assert f"Embedded dataset {os.path.abspath(out)}" in printed
    assert "train" in printed and "Instruments (parts):" in printed
    manifest = ed.load_manifest(out)
    assert [p.split for p in manifest.pieces] == ["train", "validation"]
    assert all(os.path.isfile(manifest.audio_file(p)) for p in manifest.pieces)
    with open(os.path.join(out, "manifest.json")) as f:
        assert json.load(f)["max_piece_seconds"] == 8.0


def test_make_dataset_reports_a_bad_soundfont_without_a_traceback(tmp_path, capsys):
    out = tmp_path / "ds"
    code = make_dataset.main(["--out", str(out), "--soundfont", str(tmp_path / "no.sf2"), *FAST])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("msd-make-dataset: error: ")
    assert "no.sf2: soundfont file not found" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("make_out", [lambda tmp: tmp / "data.txt",
                                      lambda tmp: tmp / "data.txt" / "embedded"])
def test_make_dataset_out_is_a_file(tmp_path, capsys, make_out):
    (tmp_path / "data.txt").write_text("a file")
    out = make_out(tmp_path)
    assert make_dataset.main(["--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"msd-make-dataset: error: {out}: ") and err.count("\n") == 1
    assert "is a file, not a directory; the dataset needs a directory (--out DIR)" in err


def test_make_dataset_bad_number_names_the_flag(tmp_path, capsys):
    assert make_dataset.main(["--out", str(tmp_path / "ds"), "--num_pieces", "0", *FAST]) == 2
    assert capsys.readouterr().err == (
        "msd-make-dataset: error: --num_pieces must be a positive integer, got 0\n")


def test_make_dataset_requires_out(capsys):
    with pytest.raises(SystemExit) as exit_info:
        make_dataset.main([])
    assert exit_info.value.code == 2
    assert "--out" in capsys.readouterr().err


def test_main_refuses_a_directory_built_with_another_seed(built, capsys):
    out, _ = built
    assert main_cli.main(["--data-dir", out, "--quick", "--seed", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("msd-main: error: ") and "seed=6 (asked for 0)" in err


@pytest.mark.slow
def test_main_quick_builds_the_quick_dataset(tmp_path, capsys):
    out = str(tmp_path / "embedded")
    assert main_cli.main(["--data-dir", out, "--quick"]) == 0
    assert f"{ed.QUICK_NUM_PIECES} pieces" in capsys.readouterr().out
    assert len(ed.load_manifest(out).pieces) == ed.QUICK_NUM_PIECES
