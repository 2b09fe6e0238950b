"""msd-tokenize on real MIDI files: in-process through main(argv) and as the installed script."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from music_spectrogram_diffusion.cli import tokenize as tokenize_cli
from music_spectrogram_diffusion.data import tokenizer, vocabularies
from music_spectrogram_diffusion.testing import midi_fixtures

WORKED_EXAMPLE = [1134, 13, 1135, 1133, 1064, 1299, 53, 1132, 1064, 1]


@pytest.fixture()
def band_midi(tmp_path):
    path = tmp_path / "band.mid"
    path.write_bytes(midi_fixtures.multi_instrument_midi_bytes(12.0))
    return str(path)


def _run(argv, capsys):
    code = tokenize_cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_worked_example(tmp_path, capsys):
    path = tmp_path / "example.mid"
    path.write_bytes(midi_fixtures.make_midi_bytes(midi_fixtures.worked_example_notes()))
    code, out, err = _run([str(path)], capsys)
    assert code == 0 and err == ""
    assert json.loads(out) == {"segments": [{"start_seconds": 0.0, "tokens": WORKED_EXAMPLE}]}


@pytest.mark.parametrize("bins, granularity", [("1", "full"), ("127", "midi_class"),
                                               ("1", "flat")])
def test_options_match_library(band_midi, capsys, bins, granularity):
    code, out, _ = _run([band_midi, "--velocity-bins", bins, "--program-granularity",
                         granularity], capsys)
    assert code == 0
    segments = json.loads(out)["segments"]
    vocab = vocabularies.VocabularyConfig(num_velocity_bins=int(bins),
                                          program_granularity=granularity)
    expected = tokenizer.tokenize_midi(band_midi, vocab=vocab)
    assert [s["start_seconds"] for s in segments] == pytest.approx([0.0, 5.12, 10.24])
    assert [s["tokens"] for s in segments] == [e.tokens.tolist() for e in expected]
    assert all(s["tokens"][-1] == 1 and 0 not in s["tokens"] for s in segments)


@pytest.mark.parametrize("name, data, problem", [
    ("empty.mid", b"", "empty file (0 bytes)"),
    ("text.mid", b"hello world", "not a Standard MIDI File"),
    ("cut.mid", None, "truncated"),
])
def test_bad_input_one_message_nonzero_exit(tmp_path, capsys, name, data, problem):
    if data is None:
        data = midi_fixtures.make_midi_bytes([(0, False, 60, 0, 1)])[:30]
    path = tmp_path / name
    path.write_bytes(data)
    code, out, err = _run([str(path)], capsys)
    assert code == 2 and out == ""
    assert err.startswith(f"msd-tokenize: error: {path}: ") and problem in err
    assert err.count("\n") == 1


def test_missing_file(tmp_path, capsys):
    code, out, err = _run([str(tmp_path / "nope.mid")], capsys)
    assert code == 2 and out == "" and "nope.mid: no such file" in err


def test_overflow_error_names_the_file(tmp_path, capsys):
    path = tmp_path / "dense.mid"
    path.write_bytes(midi_fixtures.dense_midi_bytes(6.0))
    code, out, err = _run([str(path), "--overflow", "error"], capsys)
    assert code == 2 and out == ""
    assert err.startswith(f"msd-tokenize: error: {path}: frames [0, 256): ")
    assert "exceed the limit of 2047" in err and err.count("\n") == 1


def test_snake_case_flags_and_dashed_aliases(band_midi, capsys):
    snake = _run([band_midi, "--velocity_bins", "127", "--program_granularity", "flat"], capsys)
    dashed = _run([band_midi, "--velocity-bins", "127", "--program-granularity", "flat"], capsys)
    assert snake[0] == dashed[0] == 0 and snake[1] == dashed[1]


def test_invalid_option_is_usage_error(band_midi, capsys):
    with pytest.raises(SystemExit) as info:
        tokenize_cli.main([band_midi, "--velocity-bins", "16"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("msd-tokenize: error: argument --velocity_bins/--velocity-bins: "
                          "invalid choice") and err.count("\n") == 1


def test_installed_console_script(band_midi, tmp_path):
    script = pathlib.Path(sys.executable).parent / "msd-tokenize"
    if not script.exists():
        pytest.skip(f"{script} is not installed (pip install -e . creates it)")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([str(script), band_midi], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    segments = json.loads(result.stdout)["segments"]
    assert [s["tokens"] for s in segments] == [
        s.tokens.tolist() for s in tokenizer.tokenize_midi(band_midi)]
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd")
    result = subprocess.run([str(script), str(bad)], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"msd-tokenize: error: {bad}: ")
