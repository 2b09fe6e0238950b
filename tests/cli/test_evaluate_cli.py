"""msd-evaluate's choice of songs: any dataset's full-song task, the runs' own test task by
default, one-line errors for a bad split or task; its flags (both spellings, help texts)."""

import os

import pytest

from music_spectrogram_diffusion.cli import evaluate as evaluate_cli
from music_spectrogram_diffusion.data import prepare
from music_spectrogram_diffusion.data.sources import fixtures
from music_spectrogram_diffusion.evaluation import runner

MAESTRO_TEST = "synthesis_full_maestrov3_notes_ties_melgan_vb1_test"


@pytest.fixture(scope="module")
def maestro_dir(tmp_path_factory):
    release = str(tmp_path_factory.mktemp("release") / "maestro")
    fixtures.write_maestro_release(release)
    out = str(tmp_path_factory.mktemp("data") / "maestrov3")
    prepare.prepare_dataset("maestro", release, out, progress=False)
    return out


def _run_dir(tmp_path, name, task, data_dir):
    """A MODEL_DIR whose config.gin names its test task, as msd-train writes it."""
    model_dir = tmp_path / name
    model_dir.mkdir()
    (model_dir / "config.gin").write_text(
        f"DATA_DIR = '{data_dir}'\nMODEL_DIR = '{model_dir}'\nTEST_TASK = '{task}'\n")
    return str(model_dir)


@pytest.fixture()
def songs_evaluated(monkeypatch):
    """Stops msd-evaluate where it would start evaluating; records the songs it was given."""
    seen = []

    def run_evaluation(models, songs, **kwargs):
        seen.append(songs)
        raise runner.EvaluationError("stopped by the test")

    monkeypatch.setattr(runner, "run_evaluation", run_evaluation)
    return seen


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("msd-evaluate: error: "), err
    return err


def test_full_song_task_of_a_prepared_dataset(maestro_dir):
    songs = runner.list_songs(data_dir=maestro_dir, task=MAESTRO_TEST)
    assert [s.id for s in songs] == ["2018__MIDI-Unprocessed_02_R1_2018_wav--3"]
    assert all(os.path.isfile(s.midi_path) and os.path.isfile(s.audio_path) for s in songs)
    context = runner.list_songs(data_dir=maestro_dir, task=MAESTRO_TEST.replace(
        "synthesis_full", "synthesis_with_context_full").replace("_test", "_validation"))
    assert len(context) == 1 and context[0].id.endswith("--2")


def test_defaults_to_the_runs_test_task(tmp_path, maestro_dir, songs_evaluated, capsys):
    model_dir = _run_dir(tmp_path, "run", MAESTRO_TEST, maestro_dir)
    assert evaluate_cli.main(["--model_dir", model_dir, "--out", str(tmp_path / "o")]) == 2
    assert "stopped by the test" in _one_line(capsys)
    assert [s.id for s in songs_evaluated[0]] == ["2018__MIDI-Unprocessed_02_R1_2018_wav--3"]


def test_runs_with_different_test_tasks_need_task(tmp_path, maestro_dir, songs_evaluated,
                                                  capsys):
    a = _run_dir(tmp_path, "a", MAESTRO_TEST, maestro_dir)
    b = _run_dir(tmp_path, "b", "synthesis_full_embedded_notes_ties_melgan_vb1_test", "x")
    assert evaluate_cli.main(["--model_dir", a, "--model_dir", b, "--out", "o"]) == 2
    assert "the runs name different test tasks" in _one_line(capsys)
    # --task (and --data-dir, the dashed spelling) settle it.
    assert evaluate_cli.main(["--model_dir", a, "--model_dir", b, "--task", MAESTRO_TEST,
                              "--data-dir", maestro_dir, "--out", "o"]) == 2
    assert len(songs_evaluated) == 1 and len(songs_evaluated[0]) == 1


@pytest.mark.parametrize("argv, message", [
    (["--split", "bogus"], "no split 'bogus' in the embedded dataset; --split takes one of "
                           "train, validation, test (or give --task)"),
    (["--task", "synthesis_full_lakh_notes_ties_melgan_vb1_test"],
     "unknown task 'synthesis_full_lakh_notes_ties_melgan_vb1_test'; full-song tasks: "),
    (["--task", "synthesis_maestrov3_notes_ties_melgan_vb1_train"],
     "is not a full-song task; full-song tasks of maestrov3: "),
    (["--split", "test", "--steps", "0"], "--steps must be a positive int"),
])
def test_bad_choice_of_songs_is_one_line(tmp_path, capsys, argv, message):
    code = evaluate_cli.main(["--model_dir", str(tmp_path), "--out", str(tmp_path / "o"), *argv])
    assert code == 2
    assert message in _one_line(capsys)


def test_run_without_a_test_task(tmp_path, capsys):
    model_dir = tmp_path / "mega_run"
    model_dir.mkdir()
    (model_dir / "config.gin").write_text("DATA_DIR = 'data'\nTEST_TASK = None\n")
    assert evaluate_cli.main(["--model_dir", str(model_dir), "--out", "o"]) == 2
    assert "the run names no test task" in _one_line(capsys)
    assert evaluate_cli.main(["--model_dir", str(tmp_path / "none"), "--out", "o"]) == 2
    assert "config.gin: cannot be read" in _one_line(capsys)


def test_sampler_flags_have_help(capsys):
    with pytest.raises(SystemExit) as info:
        evaluate_cli.main(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for expected in ("--sampler {", "diffusion sampler (default dpm++", "sampler steps (default 20)",
                     "classifier-free guidance weight (default 2", "sampling seed",
                     "--data_dir DATA_DIR, --data-dir DATA_DIR"):
        assert expected in text, expected
