"""Loading trained models: config.gin -> MODEL, params only, one clear error per bad directory."""

import os
import shutil
import sys

import gin
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from music_spectrogram_diffusion.inference import loading
from music_spectrogram_diffusion.models.diffusion_model import DiffusionModel

sys.path.insert(0, os.path.dirname(__file__))
import trained_checkpoints  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return trained_checkpoints.shared_checkpoint(tmp_path_factory, "diffusion_context")


@pytest.fixture
def copy_of(model_dir, tmp_path):
    """A private copy of the trained MODEL_DIR that a test may damage."""
    target = tmp_path / "run"
    shutil.copytree(model_dir, target)
    return str(target)


def _stored_params(checkpoint_dir):
    tree = ocp.StandardCheckpointer().restore(os.path.join(checkpoint_dir, "state"))
    return tree["params"]


def test_model_dir_loads_the_newest_checkpoint(model_dir):
    loaded = loading.load_trained_model(model_dir)
    assert loaded.step == trained_checkpoints.TRAIN_STEPS == 2
    assert loaded.checkpoint_dir == os.path.join(model_dir, "checkpoint_2")
    assert loaded.model_dir == model_dir
    # The model is what gin/models/diffusion_context/tiny.gin defines.
    assert isinstance(loaded.model, DiffusionModel) and loaded.model.with_context
    assert loaded.model.network_config.emb_dim == 32
    stored = _stored_params(loaded.checkpoint_dir)
    leaves = jax.tree_util.tree_leaves_with_path(loaded.params)
    assert len(leaves) == len(jax.tree.leaves(stored)) > 10
    for (path, value), expected in zip(leaves, jax.tree.leaves(stored)):
        assert value.dtype == np.float32, path
        np.testing.assert_array_equal(np.asarray(value), np.asarray(expected))


def test_a_specific_checkpoint_dir_loads_that_step(model_dir):
    first = loading.load_trained_model(os.path.join(model_dir, "checkpoint_1"))
    last = loading.load_trained_model(model_dir)
    assert first.step == 1 and first.model == last.model
    # One training step changed the trainable weights (frozen position tables excepted).
    differences = [float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                   for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(last.params))]
    assert max(differences) > 0


def test_callers_gin_config_survives_loading(model_dir):
    gin.clear_config()
    try:
        gin.parse_config("CALLER_MACRO = 7")
        loading.load_trained_model(model_dir)
        assert gin.query_parameter("%CALLER_MACRO") == 7
        with pytest.raises(ValueError):
            gin.query_parameter("%MODEL")  # the checkpoint's config did not leak
    finally:
        gin.clear_config()


def test_missing_directory_and_file_instead_of_directory(tmp_path):
    with pytest.raises(loading.CheckpointLoadError, match="nowhere: no such checkpoint directory"):
        loading.load_trained_model(str(tmp_path / "nowhere"))
    path = tmp_path / "file.txt"
    path.write_text("x")
    with pytest.raises(loading.CheckpointLoadError, match="file.txt: is a file"):
        loading.load_trained_model(str(path))


def test_directory_without_checkpoints(tmp_path):
    (tmp_path / "config.gin").write_text("")
    with pytest.raises(loading.CheckpointLoadError, match=f"{tmp_path}: no checkpoint here"):
        loading.load_trained_model(str(tmp_path))


def test_missing_config_gin(copy_of):
    os.remove(os.path.join(copy_of, "config.gin"))
    with pytest.raises(loading.CheckpointLoadError, match=r"run/config.gin: missing"):
        loading.load_trained_model(copy_of)


def test_config_without_model_or_unparsable(copy_of):
    config = os.path.join(copy_of, "config.gin")
    with open(config, "w") as f:
        f.write("SEED = 3\n")
    with pytest.raises(loading.CheckpointLoadError, match="config.gin: defines no MODEL macro"):
        loading.load_trained_model(copy_of)
    with open(config, "w") as f:
        f.write("MODEL = @no_such_module.Model()\n")
    with pytest.raises(loading.CheckpointLoadError, match="config.gin: cannot be parsed"):
        loading.load_trained_model(copy_of)


def test_config_of_another_model_does_not_match_the_checkpoint(copy_of):
    # A config.gin that builds the autoregressive tiny model, next to diffusion parameters.
    gin.clear_config()
    try:
        gin.parse_config_file(os.path.join(trained_checkpoints.REPO_ROOT,
                                           "gin/models/autoregressive/tiny.gin"))
        text = gin.config_str()
    finally:
        gin.clear_config()
    with open(os.path.join(copy_of, "config.gin"), "w") as f:
        f.write(text)
    with pytest.raises(loading.CheckpointLoadError,
                       match=r"checkpoint_2: parameters do not match the model built from "
                             r".*config.gin \(.*missing from the checkpoint"):
        loading.load_trained_model(copy_of)


def test_incomplete_checkpoint_is_refused(copy_of):
    # Orbax writes this marker last; without it the write never finished.
    os.remove(os.path.join(copy_of, "checkpoint_2", "_CHECKPOINT_METADATA"))
    with pytest.raises(loading.CheckpointLoadError, match="checkpoint_2: incomplete checkpoint"):
        loading.load_trained_model(os.path.join(copy_of, "checkpoint_2"))
    # The MODEL_DIR then resolves to the newest complete one.
    assert loading.load_trained_model(copy_of).step == 1


def test_unreadable_checkpoint_is_refused(copy_of):
    state = os.path.join(copy_of, "checkpoint_2", "state")
    for root, _, names in os.walk(state):
        for name in names:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"garbage")
    with pytest.raises(loading.CheckpointLoadError,
                       match="checkpoint_2: unreadable checkpoint.*other checkpoints to try: "
                             "checkpoint_1"):
        loading.load_trained_model(copy_of)
