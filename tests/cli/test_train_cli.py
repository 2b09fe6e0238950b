"""msd-train end to end: flags -> gin -> trainer, on a real tiny embedded dataset."""

import logging
import os

import numpy as np
import pytest

from music_spectrogram_diffusion.cli import train as train_cli
from music_spectrogram_diffusion.testing import fake_models
from music_spectrogram_diffusion.training import checkpoints, summaries

FAKE_MODEL_GIN = """
from __gin__ import dynamic_registration
from music_spectrogram_diffusion.testing import fake_models
MODEL = @fake_models.FakeSpectrogramModel()
fake_models.FakeSpectrogramModel.with_context = True
"""


@pytest.fixture(scope="module")
def data_dir(small_embedded_dataset):
    return small_embedded_dataset(max_piece_seconds=12.0)


def _flags(model_gin, task_gin, model_dir, data_dir, steps, *extra):
    return [f"--gin_file={model_gin}", f"--gin_file={task_gin}", "--gin_file=gin/train.gin",
            f"--gin.MODEL_DIR='{model_dir}'", f"--gin.DATA_DIR='{data_dir}'",
            f"--gin.TRAIN_STEPS={steps}", "--gin.BATCH_SIZE=2", "--gin.EVAL_STEPS=1",
            "--gin.trainer.train.log_period=1", "--gin.trainer.train.eval_images=False",
            *extra]


def test_cli_smoke_trains_resumes_and_saves_config(tmp_path, data_dir, capsys, caplog,
                                                   monkeypatch):
    model_gin = tmp_path / "fake_model.gin"
    model_gin.write_text(FAKE_MODEL_GIN)
    model_dir = tmp_path / "run"
    flags = _flags(model_gin, "gin/tasks/context_embedded.gin", model_dir, data_dir, 2,
                   "--gin.CHECKPOINT_PERIOD=1")
    # From a folder outside the repository: gin/... is found through the package, and gin's
    # search for it logs no "ERROR root: Path not found" lines.
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO):
        assert train_cli.main(flags) == 0
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert checkpoints.list_checkpoints(str(model_dir)) == [1, 2]
    config = (model_dir / "config.gin").read_text()
    assert "synthesis_with_context_embedded_notes_ties_melgan_vb1_train" in config
    # Same command with more steps resumes from checkpoint_2.
    flags = _flags(model_gin, "gin/tasks/context_embedded.gin", model_dir, data_dir, 3)
    assert train_cli.main(flags) == 0
    assert "done at step 3" in capsys.readouterr().out
    steps = [s for s, _ in summaries.read_scalars(str(model_dir / "train"))["loss"]]
    assert steps == [1, 2, 3]


def test_bad_gin_binding_is_one_clear_error(tmp_path, capsys):
    code = train_cli.main(["--gin_file=gin/train.gin", "--gin.trainer.train.no_such_arg=1",
                           f"--gin.MODEL_DIR='{tmp_path}'"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("msd-train: error: ") and "no_such_arg" in err
    assert len(err.strip().splitlines()) == 1


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("msd-train: error: "), err
    return err


def test_no_model_gin_names_the_missing_file(tmp_path, capsys):
    code = train_cli.main(["--gin_file=gin/train.gin", f"--gin.MODEL_DIR='{tmp_path}'"])
    err = _one_line_error(capsys)
    assert code == 2
    assert "MODEL is not defined: add a model gin file, e.g. --gin_file=gin/models/" in err
    assert "TRAIN_DATA and TRAIN_EVAL_DATA are not defined: add a task gin file" in err


def test_unquoted_string_binding_names_the_binding_and_the_quotes(capsys):
    code = train_cli.main(["--gin_file=gin/train.gin", "--gin.MODEL_DIR=/x"])
    err = _one_line_error(capsys)
    assert code == 2
    assert "binding 'MODEL_DIR = /x'" in err and "strings need gin quotes" in err
    assert "--gin.MODEL_DIR=\"'/x'\"" in err


def test_out_of_device_memory_names_batch_size_and_microbatches(tmp_path, data_dir, capsys,
                                                                 monkeypatch):
    """The default BATCH_SIZE=256 that does not fit: XLA's RESOURCE_EXHAUSTED as one line."""
    import jax

    from music_spectrogram_diffusion.training import trainer

    def step_that_does_not_fit(*args, **kwargs):
        def step(state, batch, rng):
            raise jax.errors.JaxRuntimeError(
                "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 12.50GiB.")
        return step

    monkeypatch.setattr(trainer, "make_train_step", step_that_does_not_fit)
    model_gin = tmp_path / "fake_model.gin"
    model_gin.write_text(FAKE_MODEL_GIN)
    code = train_cli.main([f"--gin_file={model_gin}", "--gin_file=gin/tasks/embedded.gin",
                           "--gin_file=gin/train.gin", f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
                           f"--gin.DATA_DIR='{data_dir}'", "--gin.BATCH_SIZE=16",
                           "--gin.trainer.train.eval_images=False"])
    err = _one_line_error(capsys)
    assert code == 2
    assert "out of device memory at BATCH_SIZE=16 with num_microbatches=1" in err
    assert "12.50GiB" in err and "--gin.trainer.train.num_microbatches" in err


def test_batch_not_divisible_by_microbatches_names_both_bindings(tmp_path, data_dir, capsys):
    model_gin = tmp_path / "fake_model.gin"
    model_gin.write_text(FAKE_MODEL_GIN)
    code = train_cli.main(_flags(model_gin, "gin/tasks/context_embedded.gin", tmp_path / "run",
                                 data_dir, 1, "--gin.BATCH_SIZE=3",
                                 "--gin.trainer.train.num_microbatches=2"))
    err = _one_line_error(capsys)
    assert code == 2
    assert ("BATCH_SIZE (--gin.BATCH_SIZE) 3 must be divisible by the data-parallel size 1 x "
            "--gin.trainer.train.num_microbatches 2") in err


def test_missing_gin_file_and_required_macro(tmp_path, data_dir, capsys):
    assert train_cli.main(["--gin_file=gin/nope.gin"]) == 2
    assert "nope.gin" in capsys.readouterr().err
    model_gin = tmp_path / "fake_model.gin"
    model_gin.write_text(FAKE_MODEL_GIN)
    code = train_cli.main([f"--gin_file={model_gin}", "--gin_file=gin/tasks/embedded.gin",
                           "--gin_file=gin/train.gin", f"--gin.DATA_DIR='{data_dir}'"])
    assert code == 2
    assert "MODEL_DIR" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("model_gin,task_gin", [
    ("gin/models/diffusion_context/tiny.gin", "gin/tasks/context_embedded.gin"),
    ("gin/models/diffusion/tiny.gin", "gin/tasks/embedded.gin"),
    ("gin/models/autoregressive/tiny.gin", "gin/tasks/embedded.gin"),
])
def test_tiny_models_train_from_cli_and_loss_falls(tmp_path, data_dir, model_gin, task_gin):
    steps = 30
    flags = _flags(model_gin, task_gin, tmp_path, data_dir, steps, "--gin.BATCH_SIZE=4",
                   "--gin.LEARNING_RATE=1e-2")
    assert train_cli.main(flags) == 0
    losses = [v for _, v in summaries.read_scalars(str(tmp_path / "train"))["loss"]]
    assert len(losses) == steps and np.all(np.isfinite(losses))
    assert np.mean(losses[-6:]) < 0.9 * np.mean(losses[:6]), losses
    assert checkpoints.list_checkpoints(str(tmp_path)) == [steps]
    assert os.path.exists(tmp_path / "config.gin")


def test_resume_gin_fine_tunes_from_a_specific_checkpoints_params(tmp_path, data_dir, capsys):
    model_gin = tmp_path / "fake_model.gin"
    model_gin.write_text(FAKE_MODEL_GIN)
    first = tmp_path / "first"
    assert train_cli.main(_flags(model_gin, "gin/tasks/context_embedded.gin", first,
                                 data_dir, 3)) == 0
    second = tmp_path / "second"
    flags = [f for f in _flags(model_gin, "gin/tasks/context_embedded.gin", second, data_dir, 2,
                               "--gin.trainer.train.save_initial_checkpoint=True")
             if f != "--gin_file=gin/train.gin"]
    flags += ["--gin_file=gin/resume.gin",
              f"--gin.INITIAL_CHECKPOINT_PATH='{first / 'checkpoint_3'}'"]
    assert train_cli.main(flags) == 0
    # Params only: the step count starts again at 0, so steps 1 and 2 were trained here ...
    assert [s for s, _ in summaries.read_scalars(str(second / "train"))["loss"]] == [1, 2]
    assert checkpoints.list_checkpoints(str(second)) == [0, 2]
    # ... from the other run's parameters, with a fresh (all-zero) optimizer state.
    import jax

    from music_spectrogram_diffusion.inference.loading import abstract_params

    expected = abstract_params(fake_models.FakeSpectrogramModel(with_context=True))
    source = checkpoints.restore_params(str(first / "checkpoint_3"), expected)
    started = checkpoints.restore_params(str(second / "checkpoint_0"), expected)
    for a, b in zip(jax.tree.leaves(source), jax.tree.leaves(started)):
        np.testing.assert_array_equal(a, b)
    restored = checkpoints.restore_checkpoint(str(second / "checkpoint_0"), None)[0]
    assert int(restored["step"]) == 0
    assert all(not np.any(leaf) for leaf in jax.tree.leaves(restored["opt_state"])
               if np.asarray(leaf).dtype.kind == "f")


def test_resume_gin_fine_tunes_imported_weights(tmp_path, data_dir):
    """msd-import-weights' MODEL_DIR (no optimizer state) starts a real tiny model's run."""
    import jax

    from music_spectrogram_diffusion.inference.loading import abstract_params
    from music_spectrogram_diffusion.models.config import T5Config
    from music_spectrogram_diffusion.models.diffusion_model import DiffusionModel
    from music_spectrogram_diffusion.testing import weight_fixtures
    from music_spectrogram_diffusion.weights import transfer

    expected = abstract_params(DiffusionModel(network_config=T5Config.tiny()))
    source = weight_fixtures.write_diffusers_folder(str(tmp_path / "hub"), seed=0)
    imported = str(tmp_path / "imported")
    transfer.import_weights(format="diffusers", source=source, out=imported)
    flags = [f for f in _flags("gin/models/diffusion_context/tiny.gin",
                               "gin/tasks/context_embedded.gin", tmp_path / "tuned", data_dir, 1,
                               "--gin.trainer.train.save_initial_checkpoint=True",
                               "--gin.trainer.train.eval_data=None")
             if f != "--gin_file=gin/train.gin"]
    flags += ["--gin_file=gin/resume.gin", f"--gin.INITIAL_CHECKPOINT_PATH='{imported}'"]
    assert train_cli.main(flags) == 0
    assert checkpoints.list_checkpoints(str(tmp_path / "tuned")) == [0, 1]
    params = checkpoints.restore_params(imported + "/checkpoint_0", expected)
    started = checkpoints.restore_params(str(tmp_path / "tuned" / "checkpoint_0"), expected)
    tuned = checkpoints.restore_params(str(tmp_path / "tuned" / "checkpoint_1"), expected)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(started)):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in
               zip(jax.tree.leaves(params), jax.tree.leaves(tuned)))
