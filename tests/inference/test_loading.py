"""Loading trained models: model.json -> model (no gin), params only, one clear error per bad directory."""

import json
import os
import shutil
import subprocess
import sys

import gin
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from music_spectrogram_diffusion.inference import loading
from music_spectrogram_diffusion.models import registry
from music_spectrogram_diffusion.models.autoregressive_model import AutoregressiveModel
from music_spectrogram_diffusion.models.config import T5Config
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


def test_run_saves_model_json_that_rebuilds_the_model(model_dir):
    loaded = loading.load_trained_model(model_dir)
    assert os.path.isfile(os.path.join(model_dir, "model.json"))
    assert registry.read_model_config(model_dir) == loaded.model
    with open(os.path.join(model_dir, "model.json")) as f:
        payload = json.load(f)
    assert payload["format"] == "msd-model" and payload["version"] == 1
    assert payload["kind"] == "diffusion" and payload["config"]["with_context"] is True
    assert payload["config"]["network_config"]["emb_dim"] == 32
    # The tasks' vocabulary (gin/train.gin) is recorded: inference tokenizes MIDI with it.
    assert payload["vocabulary"]["num_velocity_bins"] == 1
    assert loaded.vocab == registry.read_vocabulary(model_dir)


def test_model_json_vocabulary_must_fit_the_embedding_table(tmp_path):
    from music_spectrogram_diffusion.data.vocabularies import VocabularyConfig

    model = DiffusionModel(network_config=T5Config.tiny())  # 1536 rows
    with pytest.raises(registry.ModelConfigError, match="1536 rows but its vocabulary .* needs 1664"):
        registry.write_model_config(str(tmp_path), model, VocabularyConfig(num_velocity_bins=127))
    assert not os.listdir(tmp_path)
    # A run without a recorded vocabulary (imports of the released models) gets the default.
    registry.write_model_config(str(tmp_path), model)
    assert registry.read_vocabulary(str(tmp_path)) == VocabularyConfig()


def test_inference_path_imports_no_gin(model_dir):
    script = ("import sys; from music_spectrogram_diffusion.inference import loading, synthesis; "
              f"loading.load_trained_model({model_dir!r}); "
              "print('gin' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr[-2000:]


def test_callers_gin_config_survives_loading(copy_of):
    os.remove(os.path.join(copy_of, "model.json"))  # the legacy path parses config.gin
    gin.clear_config()
    try:
        gin.parse_config("CALLER_MACRO = 7")
        loading.load_trained_model(copy_of)
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


def test_vocoder_directory_is_named_as_such(tmp_path):
    (tmp_path / "vocoder_config.json").write_text("{}")
    with pytest.raises(loading.CheckpointLoadError, match="is a trained vocoder.*--vocoder"):
        loading.load_trained_model(str(tmp_path))


def test_missing_model_json_and_config_gin(copy_of):
    os.remove(os.path.join(copy_of, "model.json"))
    os.remove(os.path.join(copy_of, "config.gin"))
    with pytest.raises(loading.CheckpointLoadError, match=r"run/model.json: missing \(and no "
                                                          r"config.gin to convert\)"):
        loading.load_trained_model(copy_of)


def test_legacy_run_with_only_config_gin_is_converted_once(copy_of, model_dir):
    os.remove(os.path.join(copy_of, "model.json"))
    loaded = loading.load_trained_model(copy_of)
    assert loaded.model == loading.load_trained_model(model_dir).model
    # The conversion wrote model.json, so the next load parses no gin.
    assert registry.read_model_config(copy_of) == loaded.model


def test_legacy_config_without_model_or_unparsable(copy_of):
    os.remove(os.path.join(copy_of, "model.json"))
    config = os.path.join(copy_of, "config.gin")
    with open(config, "w") as f:
        f.write("SEED = 3\n")
    with pytest.raises(loading.CheckpointLoadError, match="config.gin: the config defines no MODEL"):
        loading.load_trained_model(copy_of)
    with open(config, "w") as f:
        f.write("MODEL = @no_such_module.Model()\n")
    with pytest.raises(loading.CheckpointLoadError, match="config.gin: cannot be parsed"):
        loading.load_trained_model(copy_of)


@pytest.mark.parametrize("edit, message", [
    (lambda p: p.update(format="other"), r"model.json: not an msd-model file"),
    (lambda p: p.update(version=99), r"model.json: version 99 is not supported"),
    (lambda p: p.update(kind="gan"), r"model.json: unknown model kind 'gan'; valid kinds: "
                                     r"diffusion, autoregressive"),
    (lambda p: p["config"]["network_config"].update(emb_dims=3),
     r"model.json: config.network_config: unknown T5Config fields \['emb_dims'\]"),
    (lambda p: p["config"]["network_config"].update(emb_dim=-2),
     r"model.json: config.network_config: T5Config.emb_dim must be a positive int"),
    (lambda p: p.update(vocabulary={"num_velocity_bins": 3}),
     r"model.json: vocabulary: VocabularyConfig.num_velocity_bins=3; valid values: \[1, 127\]"),
])
def test_bad_model_json_is_one_clear_error(copy_of, edit, message):
    path = os.path.join(copy_of, "model.json")
    with open(path) as f:
        payload = json.load(f)
    edit(payload)
    with open(path, "w") as f:
        json.dump(payload, f)
    with pytest.raises(loading.CheckpointLoadError, match=message):
        loading.load_trained_model(copy_of)


def test_model_json_of_another_model_does_not_match_the_checkpoint(copy_of):
    registry.write_model_config(copy_of, AutoregressiveModel(network_config=T5Config.tiny()))
    with pytest.raises(loading.CheckpointLoadError,
                       match=r"checkpoint_2: parameters do not match the model described by "
                             r".*model.json \(.*missing from the checkpoint"):
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
