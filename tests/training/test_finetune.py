"""gin/finetune/: msd-train fine-tunes a trained MODEL_DIR on a folder dataset, params only."""

import os

import gin
import jax
import numpy as np
import pytest

from music_spectrogram_diffusion.cli import train as train_cli
from music_spectrogram_diffusion.data import embedded_dataset, prepare
from music_spectrogram_diffusion.data.sources import folder
from music_spectrogram_diffusion.training import checkpoints, summaries

REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
TINY = "gin/models/diffusion_context/tiny.gin"
# How the main job trains its tiny diffusion models (x0 objective, AdamW 3e-3).
MAIN_JOB = ("gin/main/train_cpu.gin", "gin/main/diffusion_cpu.gin")


@pytest.fixture(scope="module")
def data_dirs(small_embedded_dataset, tmp_path_factory):
    """(embedded dataset, the same 3 pieces exported as .mid + .wav and prepared as a folder)."""
    embedded = small_embedded_dataset(max_piece_seconds=12.0)
    manifest = embedded_dataset.load_manifest(embedded)
    recordings = str(tmp_path_factory.mktemp("recordings"))
    ids = [p.id for p in manifest.pieces]
    names = folder.write_folder(manifest, recordings, dict(zip(ids, ["train", "validation",
                                                                      "test"])))
    assert sorted(os.listdir(recordings)) == ["splits.csv", "test", "train", "validation"]
    out = str(tmp_path_factory.mktemp("folder"))
    prepared = prepare.prepare_dataset("folder", recordings, out, progress=False)
    assert {p.id: p.split for p in prepared.pieces} == {
        n.replace("/", "__"): n.split("/")[0] for n in names}
    assert sorted(n.split("/")[0] for n in names) == ["test", "train", "validation"]
    return embedded, out


def _flags(model_dir, data_dir, steps, *files, **macros):
    flags = [f"--gin_file={TINY}", *(f"--gin_file={f}" for f in files),
             f"--gin.MODEL_DIR='{model_dir}'", f"--gin.DATA_DIR='{data_dir}'",
             f"--gin.TRAIN_STEPS={steps}", "--gin.BATCH_SIZE=2", "--gin.EVAL_STEPS=1",
             "--gin.trainer.train.log_period=1", "--gin.trainer.train.eval_images=False"]
    return flags + [f"--gin.{k}={v}" for k, v in macros.items()]


def test_finetune_gin_starts_from_a_trained_model_dir_on_the_folder(tmp_path, data_dirs):
    from music_spectrogram_diffusion.inference.loading import load_trained_model

    embedded, folder_dir = data_dirs
    base = tmp_path / "base"  # a MODEL_DIR trained as the main job does (one step: fast)
    assert train_cli.main(_flags(base, embedded, 1, "gin/tasks/context_embedded.gin",
                                 *MAIN_JOB)) == 0
    assert checkpoints.list_checkpoints(str(base)) == [0, 1]
    tuned = tmp_path / "tuned"
    assert train_cli.main(_flags(tuned, folder_dir, 1, *MAIN_JOB,
                                 "gin/finetune/diffusion_context.gin",
                                 INITIAL_CHECKPOINT_PATH=f"'{base}'",
                                 CHECKPOINT_PERIOD=1)) == 0
    # checkpoint_0 holds the base run's newest parameters; steps count from 0 on the folder's task.
    assert checkpoints.list_checkpoints(str(tuned)) == [0, 1]
    assert [s for s, _ in summaries.read_scalars(str(tuned / "train"))["loss"]] == [1]
    started = load_trained_model(str(tuned / "checkpoint_0"))
    source = load_trained_model(str(base))
    after = load_trained_model(str(tuned / "checkpoint_1"))
    for a, b in zip(jax.tree.leaves(source.params), jax.tree.leaves(started.params)):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in
               zip(jax.tree.leaves(started.params), jax.tree.leaves(after.params)))
    config = (tuned / "config.gin").read_text()
    assert "synthesis_with_context_folder_notes_ties_melgan_vb1_train" in config
    # The fine-tuning rate, bound on the optimizer over the main job's literal 3e-3.
    assert "LEARNING_RATE = 0.0003" in config
    assert "optimizers.OptimizerConfig.learning_rate = %LEARNING_RATE" in config
    assert "'x0'" in config  # the base run's objective, from gin/main/diffusion_cpu.gin


@pytest.mark.parametrize("name, task", [
    ("diffusion_context.gin", "synthesis_with_context_folder_notes_ties_melgan_vb1_train"),
    ("autoregressive.gin", "synthesis_folder_notes_ties_melgan_vb1_train"),
])
def test_finetune_gin_files_override_the_training_schedule(name, task):
    gin.clear_config()
    gin.add_config_file_search_path(REPO)
    try:
        gin.parse_config_files_and_bindings(
            [os.path.join(REPO, f) for f in ("gin/train.gin", "gin/main/adamw_cpu.gin",
                                             f"gin/finetune/{name}")],
            ["MODEL = None", "MODEL_DIR = '/tmp/x'", "INITIAL_CHECKPOINT_PATH = '/tmp/base'"])
        assert gin.query_parameter("%MIXTURE_OR_TASK_NAME") == task
        assert gin.query_parameter("%TRAIN_STEPS") == 1000
        assert gin.query_parameter("trainer.train.initial_checkpoint") is not None
        # Bound to the macro on the optimizer itself, over adamw_cpu.gin's literal 3e-3.
        assert gin.query_parameter("%LEARNING_RATE") == pytest.approx(3e-4)
        assert "LEARNING_RATE" in repr(
            gin.query_parameter("optimizers.OptimizerConfig.learning_rate"))
    finally:
        gin.clear_config()
    for text in open(os.path.join(REPO, "gin", "finetune", name)).read(), \
            open(os.path.join(REPO, "gin", "finetune", "base.gin")).read():
        assert text.startswith("#")
