"""The main job (msd-main): sizing, gin wiring, the step-0 checkpoint, and a miniature
end-to-end run."""

import os

import jax
import numpy as np
import pytest

from music_spectrogram_diffusion.data import embedded_dataset
from music_spectrogram_diffusion.jobs import main_job
from music_spectrogram_diffusion.training import checkpoints as ckpt_lib

FAKE_MODEL_GIN = """
from __gin__ import dynamic_registration
from music_spectrogram_diffusion.testing import fake_models
MODEL = @fake_models.FakeSpectrogramModel()
fake_models.FakeSpectrogramModel.with_context = True
"""


def test_budget_sizes_the_runs():
    quick = main_job.MainJobConfig.for_budget(quick=True)
    default = main_job.MainJobConfig.for_budget()
    assert quick.num_pieces == embedded_dataset.QUICK_NUM_PIECES
    assert default.max_piece_seconds == embedded_dataset.DEFAULT_MAX_PIECE_SECONDS
    assert default.num_pieces == embedded_dataset.DEFAULT_NUM_PIECES
    assert quick.train_steps < default.train_steps == 200
    assert default.checkpoint_period == 100  # checkpoints 0, 100, 200 per model
    # Deadlines are a safety net far above the planned ~1 s per step.
    assert default.train_minutes * 60 > 2 * default.train_steps
    assert default.vocoder_minutes == pytest.approx(6.0) and quick.vocoder_minutes is None
    double = main_job.MainJobConfig.for_budget(60)
    assert double.train_steps == 400 and double.train_minutes == pytest.approx(15.0)
    with pytest.raises(ValueError, match="budget_minutes must be > 0"):
        main_job.MainJobConfig.for_budget(0)
    with pytest.raises(ValueError, match="train_steps must be >= 1"):
        main_job.MainJobConfig(num_pieces=1, train_steps=0, batch_size=1, checkpoint_period=1,
                               train_minutes=None, vocoder_gin="x", vocoder_steps=1,
                               eval_songs=1, eval_seconds=None)


def test_cli_bad_budget_is_one_message(capsys, tmp_path):
    from music_spectrogram_diffusion.cli import main as main_cli

    assert main_cli.main(["--budget-minutes", "0", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == "msd-main: error: --budget_minutes must be > 0, got 0.0\n"
    assert not os.path.exists(tmp_path / "r")


@pytest.mark.parametrize("run", main_job.MODEL_RUNS, ids=lambda r: r.name)
def test_gin_stacks_build_each_model_and_bind_the_step0_checkpoint(run, tmp_path):
    import gin

    from music_spectrogram_diffusion import gin_config

    bindings = [f"MODEL_DIR = '{tmp_path}'", f"DATA_DIR = '{tmp_path}'"]
    gin_config.parse_gin([*run.gin_files, main_job.TRAIN_GIN, *run.overrides], bindings)
    try:
        model = gin.query_parameter("%MODEL").scoped_configurable_fn()
        assert type(model).__name__ == ("AutoregressiveModel" if run.name == "autoregressive"
                                        else "DiffusionModel")
        assert getattr(model, "with_context", False) == (run.name == "diffusion_context")
        assert model.network_config.emb_dim == 32  # tiny: CPU-sized
        assert gin.query_parameter("trainer.train.save_initial_checkpoint") is True
        assert gin.query_parameter("%TRAIN_STEPS") == 300
        assert gin.query_parameter("trainer.train.eval_images") is False
    finally:
        gin.clear_config()


def test_mel_l1_check_compares_first_and_last_checkpoint():
    rows = [{"kind": "ground_truth", "metrics": {"mel_l1": 0.0}},
            {"kind": "model", "model_label": "m", "step": 30, "metrics": {"mel_l1": 2.0}},
            {"kind": "model", "model_label": "m", "step": 0, "metrics": {"mel_l1": 8.0}},
            {"kind": "model", "model_label": "n", "step": 0, "metrics": {"mel_l1": 1.0}},
            {"kind": "model", "model_label": "n", "step": 9, "metrics": {"mel_l1": 1.5}}]
    assert main_job.mel_l1_check(rows) == [
        "m: mel L1 8.000 at step 0 -> 2.000 at step 30 (lower, -75%)",
        "n: mel L1 1.000 at step 0 -> 1.500 at step 9 (NOT lower, +50%)",
    ]


@pytest.fixture(scope="module")
def data_dir(small_embedded_dataset):
    return small_embedded_dataset(max_piece_seconds=8.0)


def _params(model_dir, step):
    from music_spectrogram_diffusion.inference.loading import abstract_params, restore_params
    from music_spectrogram_diffusion.testing.fake_models import FakeSpectrogramModel

    expected = abstract_params(FakeSpectrogramModel(with_context=True))
    return restore_params(ckpt_lib.checkpoint_path(model_dir, step), expected)


@pytest.mark.slow
def test_step0_checkpoint_is_the_trainers_own_start(tmp_path, data_dir):
    """Training through checkpoint_0 gives the same step-2 parameters as a plain run."""
    model_gin = tmp_path / "fake.gin"
    model_gin.write_text(FAKE_MODEL_GIN)
    run = main_job.ModelRun("fake", "fake", (str(model_gin), "gin/tasks/context_embedded.gin"))
    config = main_job.MainJobConfig(
        num_pieces=3, train_steps=2, batch_size=2, checkpoint_period=2, train_minutes=None,
        vocoder_gin="gin/vocoders/hifigan_tiny.gin", vocoder_steps=1, eval_songs=1,
        eval_seconds=5.12)
    with_zero = str(tmp_path / "with_zero")
    info = main_job.train_model(run, model_dir=with_zero, data_dir=data_dir, config=config)
    assert info["step"] == 2 and not info["stopped_early"]
    assert ckpt_lib.list_checkpoints(with_zero) == [0, 2]
    assert main_job.train_model(run, model_dir=with_zero, data_dir=data_dir,
                                config=config)["seconds"] == 0.0  # finished: nothing to do

    plain = str(tmp_path / "plain")
    from music_spectrogram_diffusion.training import trainer
    from music_spectrogram_diffusion.data import tasks
    from music_spectrogram_diffusion.testing.fake_models import FakeSpectrogramModel

    trainer.train(
        model=FakeSpectrogramModel(with_context=True), model_dir=plain, train_steps=2,
        batch_size=2, seed=0, eval_data=None, log_period=1,
        train_data=tasks.get_batch_source(
            "synthesis_with_context_embedded_notes_ties_melgan_vb1_train", data_dir=data_dir),
        checkpoint=ckpt_lib.CheckpointConfig(period=2, keep=None))
    jax.tree.map(np.testing.assert_array_equal, _params(with_zero, 2), _params(plain, 2))
    zero, two = _params(with_zero, 0), _params(with_zero, 2)
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(zero),
                                                         jax.tree.leaves(two)))


@pytest.mark.slow
def test_miniature_main_job_end_to_end(tmp_path, data_dir):
    """The --quick path at a miniature size: three real tiny models, a vocoder, the table."""
    config = main_job.MainJobConfig(
        num_pieces=3, train_steps=2, batch_size=2, checkpoint_period=2, train_minutes=None,
        vocoder_gin="gin/vocoders/hifigan_tiny.gin", vocoder_steps=2, eval_songs=1,
        eval_seconds=5.12, embedders=("logmel",), max_piece_seconds=8.0)
    out = str(tmp_path / "results")
    result = main_job.run_main_job(data_dir=data_dir, out_dir=out, config=config,
                                   num_workers=1, progress=False)
    labels = [row["label"] for row in result.rows]
    assert labels[:2] == ["Ground truth (real audio)", "Ground truth -> griffin-lim"]
    assert labels[2] == "Ground truth -> vocoder (hifigan)"
    for run in main_job.MODEL_RUNS:
        assert f"{run.label} @ 0" in labels and f"{run.label} @ 2" in labels
    with open(result.report_paths["markdown"]) as f:
        table = f.read()
    assert "Tiny T5 models" in table and "dpm++, 20 steps" in table
    assert len(main_job.mel_l1_check(result.rows)) == 3
    assert os.path.exists(os.path.join(out, "main_job.json"))
