"""msd-prepare-dataset: prints a summary with the bad files, exit codes, one-line errors."""

import os
import subprocess
import sys

import pytest

from music_spectrogram_diffusion.cli import prepare_dataset
from music_spectrogram_diffusion.data import prepare
from music_spectrogram_diffusion.data.sources import fixtures


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("GuitarSet"))
    fixtures.write_guitarset_release(root, bad=True)
    return root


def test_prepares_and_lists_bad_files(release, tmp_path, capsys):
    out = str(tmp_path / "guitarset")
    code = prepare_dataset.main(["guitarset", "--source", release, "--out", out, "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "train" in printed and "1 pieces failed" in printed
    missing = os.path.join(release, "audio_mono-mic", "01_Rock1-90-C#_comp_mic.wav")
    assert f"{missing}: audio file not found" in printed
    assert len(prepare.load_prepared_manifest(out).pieces) == 2
    # --strict turns failures into exit status 2; the run itself resumes (nothing redone).
    assert prepare_dataset.main(["guitarset", "--source", release, "--out", out, "--quiet",
                                 "--strict"]) == 2
    err = capsys.readouterr().err  # failed pieces, when prepared now, are logged above it
    assert err.splitlines()[-1] == "msd-prepare-dataset: error: 1 piece(s) failed (--strict)"


@pytest.mark.parametrize("args, message", [
    (["lakh"], "unknown dataset 'lakh'"),
    (["urmp", "--num-workers", "0"], "--num_workers must be a positive integer"),
    (["urmp", "--num_workers", "0"], "--num_workers must be a positive integer"),
    (["maestro", "--guitarset-audio", "mix"], "--guitarset_audio applies to raw GuitarSet"),
])
def test_bad_arguments_exit_2_with_one_message(tmp_path, capsys, args, message):
    code = prepare_dataset.main([*args[:1], "--source", str(tmp_path), "--out",
                                 str(tmp_path / "out"), *args[1:]])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("msd-prepare-dataset: error:") and message in err
    assert err.count("\n") == 1


def test_missing_source_folder_names_it(tmp_path, capsys):
    missing = str(tmp_path / "nowhere")
    assert prepare_dataset.main(["musicnet", "--source", missing, "--out",
                                 str(tmp_path / "out")]) == 2
    assert f"{missing}: MusicNet folder not found" in capsys.readouterr().err


def test_out_is_a_file(release, tmp_path, capsys):
    out = tmp_path / "notes.txt"
    out.write_text("a file")
    assert prepare_dataset.main(["guitarset", "--source", release, "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"msd-prepare-dataset: error: {out}: exists and is a file, not a directory; the prepared "
        "dataset needs a directory (--out DIR)\n")


def test_nothing_prepared_exits_2(tmp_path, capsys):
    root = str(tmp_path / "URMP")
    fixtures.write_urmp_release(root, bad=True)
    for name in ("01_Jupiter_vn_vc", "03_Dance_fl_cl"):
        for f in os.listdir(os.path.join(root, name)):
            if f.startswith("AuMix"):
                os.remove(os.path.join(root, name, f))
    assert prepare_dataset.main(["urmp", "--source", root, "--out", str(tmp_path / "o"),
                                 "--quiet"]) == 2
    assert capsys.readouterr().err.endswith(
        f"msd-prepare-dataset: error: no piece of {root} could be prepared (see the failures "
        "above)\n")


def test_bad_flag_value_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        prepare_dataset.main(["urmp", "--source", str(tmp_path), "--out", str(tmp_path / "o"),
                              "--source_format", "zip"])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "msd-prepare-dataset: error: argument --source_format/--source-format: invalid choice: "
        "'zip' (choose from 'raw', 'tfrecord') (see msd-prepare-dataset --help)\n")


@pytest.mark.slow
def test_console_entry_point_in_parallel(release, tmp_path):
    out = str(tmp_path / "out")
    result = subprocess.run(
        [sys.executable, "-m", "music_spectrogram_diffusion.cli.prepare_dataset", "guitarset",
         "--source", release, "--out", out, "--num-workers", "2"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "prepare guitarset" in result.stderr  # the tqdm progress bar
    assert "1 pieces failed" in result.stdout
