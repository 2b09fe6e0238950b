"""msd-evaluate: checkpoint selection, caches, the table, and an end-to-end run that resumes."""

import json
import os

import numpy as np
import pytest

from music_spectrogram_diffusion.cli import evaluate as evaluate_cli
from music_spectrogram_diffusion.data import embedded_dataset
from music_spectrogram_diffusion.evaluation import references, report, runner
from music_spectrogram_diffusion.jobs import main_job
from music_spectrogram_diffusion.diffusion.samplers import SamplerConfig
from music_spectrogram_diffusion.evaluation.embedders import InProcessEmbedder
from music_spectrogram_diffusion.evaluation.embedding_backends import LogMelBackend
from music_spectrogram_diffusion.training import checkpoints as ckpt_lib

CONTEXT_RUN = main_job.MODEL_RUNS[2]


def _fake_checkpoint(model_dir, step):
    """A finalised-looking checkpoint directory (enough for list_checkpoints)."""
    path = os.path.join(model_dir, f"checkpoint_{step}")
    os.makedirs(path)
    open(os.path.join(path, "_CHECKPOINT_METADATA"), "w").close()


def test_checkpoint_selection(tmp_path):
    for step in (0, 10, 20):
        _fake_checkpoint(tmp_path, step)
    os.makedirs(tmp_path / "checkpoint_30")  # unfinished: no commit marker
    assert runner.select_checkpoints(str(tmp_path), "all") == [0, 10, 20]
    assert runner.select_checkpoints(str(tmp_path), "latest") == [20]
    assert runner.select_checkpoints(str(tmp_path), "20,0") == [0, 20]
    with pytest.raises(runner.EvaluationError, match=r"no checkpoint for steps \[30\]"):
        runner.select_checkpoints(str(tmp_path), "30")
    with pytest.raises(runner.EvaluationError, match="valid values: 'all', 'latest'"):
        runner.EvalConfig(checkpoints="newest")
    with pytest.raises(runner.EvaluationError, match="no finished checkpoint"):
        runner.select_checkpoints(str(tmp_path / "empty"), "all")


def test_fingerprint_ignores_checkpoint_choice_and_vocoder_state_is_per_row(tmp_path):
    songs = [references.Song("a", "a.mid", "a.wav")]
    base = runner.EvalConfig(embedders=("logmel",))
    assert base.fingerprint(songs) == runner.EvalConfig(
        embedders=("logmel",), checkpoints="latest", baseline_vocoders=("x",)).fingerprint(songs)
    assert base.fingerprint(songs) != runner.EvalConfig(embedders=("logmel",), seed=1
                                                        ).fingerprint(songs)
    assert base.fingerprint(songs) != base.fingerprint(songs + songs)
    vocoder_dir = tmp_path / "vocoder"
    row = runner.RowSpec("v", "GT -> v", "vocoder", vocoder=str(vocoder_dir))
    os.makedirs(vocoder_dir)
    before = runner.row_fingerprint(row, "f")
    _fake_checkpoint(vocoder_dir, 5)  # the vocoder trained further: its rows are stale
    assert runner.row_fingerprint(row, "f") != before


def test_cached_embedder_embeds_each_audio_once(tmp_path):
    calls = []

    class Counting(InProcessEmbedder):
        def _embed_prepared(self, audio):
            calls.append(len(audio))
            return super()._embed_prepared(audio)

    inner = Counting("logmel", LogMelBackend())
    cached = references.CachedEmbedder(inner, str(tmp_path))
    audio = np.sin(np.arange(32000) * 0.05).astype(np.float32)
    first = cached.embed(audio)
    second = cached.embed(audio)
    np.testing.assert_array_equal(first, second)
    assert len(calls) == 1
    cached.embed(audio * 0.5)
    assert len(calls) == 2
    assert len(os.listdir(tmp_path)) == 2  # one .npy per distinct audio, no temp files left


def test_table_has_the_papers_rows_and_columns():
    rows = [
        {"label": "Ground truth (real audio)", "kind": "ground_truth",
         "metrics": {"logmel_distance": 0.0, "logmel_frechet": -1e-9, "mel_l1": 0.0,
                     "Model onset + offset F1": 0.5, "GT onset + offset F1": 0.5}},
        {"label": "m @ 10", "kind": "model", "model_label": "m", "step": 10,
         "metrics": {"logmel_distance": 2.5, "mel_l1": 1.23456,
                     "prediction_seconds_per_audio_second": 0.25}},
    ]
    table = report.format_table(rows, report.table_columns(["logmel"]), ["a note"])
    lines = table.splitlines()
    assert lines[0] == "| Row | logmel dist. | logmel FD | F1 Model | F1 GT | mel L1 | MR-STFT |"
    assert lines[2].startswith("| Ground truth (real audio) | 0.000 | 0.000 | 0.500 | 0.500 |")
    assert lines[3] == "| m @ 10 | 2.500 | - | - | - | 1.235 | - |"
    assert lines[5] == "1. a note"
    # Wall-clock timing has its own table, of the rows that were timed: the metrics table
    # above is what two runs with the same seed reproduce exactly.
    assert lines[7].startswith("Wall-clock timing (varies with the machine and its load; pred s")
    assert lines[9:] == ["| Row | pred s / audio s |", "|---|---|", "| m @ 10 | 0.250 |"]


def test_list_songs_needs_a_full_song_task(tmp_path):
    with pytest.raises(runner.EvaluationError, match="not a full-song task; full-song tasks"):
        runner.list_songs(data_dir=str(tmp_path),
                          task="synthesis_embedded_notes_ties_melgan_vb1_train")
    with pytest.raises(runner.EvaluationError, match="not both"):
        runner.list_songs(data_dir=str(tmp_path), task=None, split=None)


def test_cli_bad_input_is_one_message(tmp_path, capsys):
    code = evaluate_cli.main(["--model_dir", str(tmp_path / "missing"), "--split", "test",
                              "--data_dir", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("msd-evaluate: error:") and "manifest" in err
    assert not os.path.exists(tmp_path / "o" / "results.json")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real tiny context-diffusion run with checkpoints 0 and 1, on a 3-piece dataset."""
    root = tmp_path_factory.mktemp("runner")
    data_dir = str(root / "data")
    embedded_dataset.build_embedded_dataset(data_dir, num_pieces=3, seed=0, num_workers=1,
                                            progress=False, max_piece_seconds=8.0)
    config = main_job.MainJobConfig(
        num_pieces=3, train_steps=1, batch_size=2, checkpoint_period=1, train_minutes=None,
        vocoder_gin="gin/vocoders/hifigan_tiny.gin", vocoder_steps=1, eval_songs=1,
        eval_seconds=5.12, embedders=("logmel",))
    model_dir = str(root / "model")
    info = main_job.train_model(CONTEXT_RUN, model_dir=model_dir, data_dir=data_dir,
                                config=config)
    return {"data_dir": data_dir, "model_dir": model_dir, "info": info, "root": root}


@pytest.mark.slow
def test_evaluates_two_checkpoints_then_resumes(trained, monkeypatch):
    assert ckpt_lib.list_checkpoints(trained["model_dir"]) == [0, 1]
    out = str(trained["root"] / "eval")
    config = runner.EvalConfig(embedders=("logmel",), max_seconds=5.12, num_example_wavs=1,
                               sampler=SamplerConfig(name="dpm++", num_steps=2))
    songs = runner.list_songs(data_dir=trained["data_dir"],
                              task="synthesis_with_context_full_embedded_notes_ties_melgan_vb1_test")
    result = runner.run_evaluation({"ctx": trained["model_dir"]}, songs, out_dir=out,
                                   config=config, show_progress=False)
    labels = [row["label"] for row in result.rows]
    assert labels == ["Ground truth (real audio)", "Ground truth -> griffin-lim", "ctx @ 0",
                      "ctx @ 1"]
    by_label = {row["label"]: row["metrics"] for row in result.rows}
    truth = by_label["Ground truth (real audio)"]
    assert truth["mel_l1"] == 0.0 and truth["logmel_distance"] == 0.0
    assert truth["Model onset + offset F1"] == truth["GT onset + offset F1"]
    for label in ("ctx @ 0", "ctx @ 1"):
        metrics = by_label[label]
        assert metrics["mel_l1"] > 0 and np.isfinite(metrics["logmel_frechet"])
        assert metrics["GT onset + offset F1"] == truth["GT onset + offset F1"]
    for name in ("results.json", "results.md", "metrics_vs_step.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    assert os.path.exists(os.path.join(out, "examples", "ctx-step_1",
                                       runner.slugify(songs[0].id) + ".wav"))
    tensorboard = os.path.join(out, "tensorboard", "ctx")
    from music_spectrogram_diffusion.training import summaries

    scalars = summaries.read_scalars(tensorboard)
    assert [step for step, _ in scalars["full_song/mel_l1"]] == [0, 1]
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f)["songs"] == [songs[0].id]

    # Resume: every row is on disk, so nothing is loaded, synthesized or embedded again.
    stamps = {name: os.path.getmtime(os.path.join(out, "rows", name))
              for name in os.listdir(os.path.join(out, "rows"))}

    def fail(*args, **kwargs):
        raise AssertionError("a finished row was recomputed")

    monkeypatch.setattr(runner, "load_references", fail)
    again = runner.run_evaluation({"ctx": trained["model_dir"]}, songs, out_dir=out,
                                  config=config, show_progress=False)
    assert [row["metrics"] for row in again.rows] == [row["metrics"] for row in result.rows]
    assert stamps == {name: os.path.getmtime(os.path.join(out, "rows", name))
                      for name in os.listdir(os.path.join(out, "rows"))}
