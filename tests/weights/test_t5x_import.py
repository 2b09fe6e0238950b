"""msd-import-weights --format t5x: a checkpoint in t5x's on-disk format -> a MODEL_DIR whose
forward pass is the source parameters' forward pass; bad input -> one line naming the tensor,
exit 1, nothing written; an interrupted import leaves no MODEL_DIR."""

import json
import os

import flax.linen as nn
import jax
import msgpack
import numpy as np
import pytest

from music_spectrogram_diffusion.cli import import_weights as import_cli
from music_spectrogram_diffusion.inference.loading import load_trained_model
from music_spectrogram_diffusion.models import registry
from music_spectrogram_diffusion.models.config import T5Config
from music_spectrogram_diffusion.models.contract import example_batch
from music_spectrogram_diffusion.models.diffusion_model import DiffusionModel
from music_spectrogram_diffusion.testing import weight_fixtures
from music_spectrogram_diffusion.training import checkpoints as ckpt_lib
from music_spectrogram_diffusion.weights import t5x_checkpoint
from music_spectrogram_diffusion.weights.param_tree import flatten

STEP = 500


def random_params(model: DiffusionModel, seed: int) -> dict:
    """The model's initial parameters plus noise, so no two tensors (norms included) are alike."""
    params = nn.unbox(model.init(jax.random.key(seed), example_batch(model.network_config)))
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda x: np.asarray(x + 0.1 * rng.standard_normal(x.shape), np.float32), params)


def forward(model: DiffusionModel, params: dict) -> np.ndarray:
    """ε̂ of the whole network for fixed notes (with padding), context and noisy frames."""
    cfg = model.network_config
    rng = np.random.default_rng(7)
    tokens = np.zeros((2, 32), np.int32)
    tokens[:, :20] = rng.integers(1, cfg.vocab_size, (2, 20))
    context = rng.uniform(-1, 1, (2, cfg.context_frames, cfg.num_mels)).astype(np.float32)
    context_mask = np.ones((2, cfg.context_frames), np.float32)
    context_mask[1, 100:] = 0
    z = rng.standard_normal((2, cfg.target_frames, cfg.num_mels)).astype(np.float32)
    t = np.array([0.3, 0.8], np.float32)
    return np.asarray(model.network.apply({"params": params}, tokens, context, context_mask, z, t,
                                          deterministic=True))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A t5x checkpoint_<step> of a tiny model, whose optimizer arrays have been deleted."""
    model = DiffusionModel(network_config=T5Config.tiny())
    params = random_params(model, seed=1)
    optimizer_state = jax.tree.map(lambda x: np.ones((2, 3), np.float32), params)
    root = tmp_path_factory.mktemp("t5x")
    checkpoint_dir = weight_fixtures.write_t5x_checkpoint(
        str(root / "tiny_with_context"), params, step=STEP, optimizer_state=optimizer_state)
    weight_fixtures.remove_optimizer_arrays(checkpoint_dir)  # so reading them would fail
    return {"model": model, "params": params, "checkpoint_dir": checkpoint_dir,
            "parent": str(root / "tiny_with_context")}


def _run(argv, capsys):
    status = import_cli.main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_fixture_is_in_t5x_format(source):
    names = os.listdir(source["checkpoint_dir"])
    assert "checkpoint" in names and "target.decoder.layers_1.mlp.wo.kernel" in names
    with open(os.path.join(source["checkpoint_dir"], "checkpoint"), "rb") as f:
        contents = msgpack.unpackb(f.read(), raw=False)
    assert contents["version"] == 3 and set(contents["optimizer"]) == {"target", "state"}
    spec = contents["optimizer"]["target"]["decoder"]["spec_out_dense"]["kernel"]
    assert spec["driver"] == "zarr" and spec["kvstore"] == {
        "driver": "file", "path": "target.decoder.spec_out_dense.kernel/"}
    assert isinstance(contents["optimizer"]["target"]["decoder"]["decoder_norm"]["scale"],
                      msgpack.ExtType)  # 1-D arrays inline


def test_import_then_forward_equals_the_source_forward(source, tmp_path, capsys):
    out = tmp_path / "imported"
    status, stdout, stderr = _run(["--format", "t5x", "--source", source["parent"], "--size",
                                   "tiny", "--out", str(out)], capsys)
    assert status == 0, stderr
    assert f"step {STEP}" in stdout and "with context" in stdout
    assert sorted(os.listdir(out)) == ["checkpoint_500", "model.json"]
    assert sorted(os.listdir(tmp_path)) == ["imported"]  # nothing else written
    loaded = load_trained_model(str(out))
    assert loaded.model == source["model"] and loaded.step == STEP
    ours, theirs = flatten(loaded.params), flatten(source["params"])
    assert ours.keys() == theirs.keys()
    for name in theirs:
        np.testing.assert_array_equal(np.asarray(ours[name]), theirs[name], err_msg=name)
    np.testing.assert_array_equal(forward(loaded.model, loaded.params),
                                  forward(source["model"], source["params"]))
    # The checkpoint file itself is a source too.
    again = tmp_path / "again"
    assert _run(["--format", "t5x", "--source", os.path.join(source["checkpoint_dir"],
                 "checkpoint"), "--size", "tiny", "--out", str(again)], capsys)[0] == 0
    with open(again / "model.json") as f:
        assert registry.model_from_json(json.load(f)) == source["model"]


def test_gcs_specs_of_the_released_checkpoints_read_from_the_local_copy(tmp_path):
    model = DiffusionModel(network_config=T5Config.tiny(num_encoder_layers=1,
                                                        num_decoder_layers=1), with_context=False)
    params = random_params(model, seed=2)
    checkpoint_dir = weight_fixtures.write_t5x_checkpoint(str(tmp_path), params, step=3, gcs=True)
    checkpoint_file, step = t5x_checkpoint.find_checkpoint(str(tmp_path))
    assert (checkpoint_file, step) == (os.path.join(checkpoint_dir, "checkpoint"), 3)
    flat = t5x_checkpoint.read_target(checkpoint_file)
    expected = flatten(params)
    assert flat.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(flat[name], value)


def _rewrite_target(checkpoint_dir, change):
    path = os.path.join(checkpoint_dir, "checkpoint")
    with open(path, "rb") as f:
        contents = msgpack.unpackb(f.read(), raw=False)
    change(contents["optimizer"]["target"])
    with open(path, "wb") as f:
        f.write(msgpack.packb(contents, use_bin_type=True))


@pytest.mark.parametrize("change,message", [
    (lambda t: t["decoder"].update(spec_out=t["decoder"].pop("spec_out_dense")),
     "unexpected tensor 'decoder/spec_out/kernel' (not a parameter of the model; did you mean "
     "'decoder/spec_out_dense/kernel'?) (and 1 more problem)"),
    (lambda t: t["token_encoder"].pop("encoder_norm"),
     "tensor 'token_encoder/encoder_norm/scale' is missing"),
])
def test_name_mismatches_are_one_line_naming_the_tensor(source, tmp_path, capsys, change,
                                                        message):
    broken = tmp_path / "broken"
    weight_fixtures.write_t5x_checkpoint(str(broken), source["params"], step=1)
    _rewrite_target(str(broken / "checkpoint_1"), change)
    out = tmp_path / "out"
    status, _, stderr = _run(["--format", "t5x", "--source", str(broken), "--size", "tiny",
                              "--out", str(out)], capsys)
    assert status == 2
    assert stderr.startswith("msd-import-weights: error: ") and message in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert sorted(os.listdir(tmp_path)) == ["broken"]


def test_wrong_size_missing_array_and_bad_source_are_one_line(source, tmp_path, capsys):
    out = str(tmp_path / "out")
    status, _, stderr = _run(["--format", "t5x", "--source", source["checkpoint_dir"], "--size",
                              "small", "--out", out], capsys)
    assert status == 2 and ("tensor 'continuous_encoder/Embed_0/embedding' has shape (256, 32), "
                            "the model needs (256, 512)") in stderr
    status, _, stderr = _run(["--format", "t5x", "--source", source["checkpoint_dir"],
                              "--out", out], capsys)
    assert status == 2 and "pass --size" in stderr
    status, _, stderr = _run(["--format", "t5x", "--source", str(tmp_path), "--size", "tiny",
                              "--out", out], capsys)
    assert status == 2 and "not a t5x checkpoint" in stderr
    truncated = tmp_path / "truncated"
    weight_fixtures.write_t5x_checkpoint(str(truncated), source["params"], step=1)
    import shutil

    shutil.rmtree(truncated / "checkpoint_1" / "target.decoder.time_emb_dense1.kernel")
    status, _, stderr = _run(["--format", "t5x", "--source", str(truncated), "--size", "tiny",
                              "--out", out], capsys)
    assert status == 2 and "'decoder/time_emb_dense1/kernel': its tensorstore array" in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not os.path.exists(out)


def test_out_is_never_overwritten(source, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    status, _, stderr = _run(["--format", "t5x", "--source", source["checkpoint_dir"], "--size",
                              "tiny", "--out", str(out)], capsys)
    assert status == 2 and "already exists and is not empty" in stderr
    assert os.listdir(out) == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()  # an empty directory is fine
    assert _run(["--format", "t5x", "--source", source["checkpoint_dir"], "--size", "tiny",
                 "--out", str(empty)], capsys)[0] == 0
    assert ckpt_lib.list_checkpoints(str(empty)) == [STEP]


def test_interrupted_import_leaves_no_model_dir(source, tmp_path, monkeypatch):
    def interrupt(model_dir, model):  # after the checkpoint is written, before model.json
        assert ckpt_lib.list_checkpoints(model_dir) == [STEP]
        raise KeyboardInterrupt

    monkeypatch.setattr(registry, "write_model_config", interrupt)
    with pytest.raises(KeyboardInterrupt):
        import_cli.main(["--format", "t5x", "--source", source["checkpoint_dir"], "--size",
                         "tiny", "--out", str(tmp_path / "out")])
    assert os.listdir(tmp_path) == []  # no MODEL_DIR, no temporary sibling
