"""msd-import-weights --format diffusers and msd-export-weights: a folder as diffusers 0.42 saves
it -> MODEL_DIR -> the same folder back (identical tensors and config values); the size comes
from the config files; bad folders -> one line naming the file and tensor or field."""

import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from music_spectrogram_diffusion.cli import export_weights as export_cli
from music_spectrogram_diffusion.cli import import_weights as import_cli
from music_spectrogram_diffusion.inference.loading import load_trained_model
from music_spectrogram_diffusion.models.config import T5Config
from music_spectrogram_diffusion.models.diffusion_model import DiffusionModel
from music_spectrogram_diffusion.testing import weight_fixtures
from music_spectrogram_diffusion.weights import transfer

# Not square on purpose: 3 heads x 8 = 24 attention channels for d = 32; 3 decoder layers.
SIZES = dict(d_model=32, num_heads=3, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=3,
             max_length=64, frames=16, dropout_rate=0.1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return weight_fixtures.write_diffusers_folder(
        str(tmp_path_factory.mktemp("hub") / "music-spectrogram-diffusion"), seed=3, **SIZES)


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, n), root)
                  for d, _, names in os.walk(root) for n in names)


def _json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _run(main, argv, capsys):
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_import_then_export_gives_identical_tensors_and_configs(folder, tmp_path, capsys):
    model_dir, exported = tmp_path / "model", tmp_path / "exported"
    status, stdout, stderr = _run(import_cli.main, ["--format", "diffusers", "--source", folder,
                                                    "--out", str(model_dir)], capsys)
    assert status == 0, stderr
    assert "step 0" in stdout
    loaded = load_trained_model(str(model_dir))
    assert loaded.model == DiffusionModel(network_config=T5Config(
        emb_dim=32, num_heads=3, head_dim=8, mlp_dim=48, num_encoder_layers=2,
        num_decoder_layers=3, dropout_rate=0.1, note_tokens_length=64, target_frames=16,
        context_frames=16), with_context=True)
    status, _, stderr = _run(export_cli.main, ["--model_dir", str(model_dir), "--format",
                                               "diffusers", "--out", str(exported)], capsys)
    assert status == 0, stderr
    assert _files(exported) == _files(folder)
    for name in _files(folder):
        ours, theirs = os.path.join(exported, name), os.path.join(folder, name)
        if name.endswith(".json"):
            assert _json(ours) == _json(theirs), name
        else:
            a, b = load_file(ours), load_file(theirs)
            assert a.keys() == b.keys(), name
            for key in b:
                assert a[key].dtype == b[key].dtype == np.float32
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")
    # --checkpoint names the step; a missing one is one clear error.
    assert _run(export_cli.main, ["--model_dir", str(model_dir), "--checkpoint", "0", "--out",
                                  str(tmp_path / "step0")], capsys)[0] == 0
    status, _, stderr = _run(export_cli.main, ["--model_dir", str(model_dir), "--checkpoint",
                                               "7", "--out", str(tmp_path / "step7")], capsys)
    assert status == 2 and "checkpoint_7: no such checkpoint directory" in stderr
    assert not os.path.exists(tmp_path / "step7")


def _copy_folder(folder, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    return copy


def _edit(path, edit):
    """Applies ``edit`` to a copied folder's safetensors dict or config JSON, in place."""
    if path.endswith(".json"):
        payload = _json(path)
        edit(payload)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(payload, f)
    else:
        tensors = load_file(path)
        edit(tensors)
        save_file(tensors, path, metadata={"format": "pt"})


WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.mark.parametrize("file,edit,message", [
    (f"decoder/{WEIGHTS}", lambda t: t.update({"decoders.0.layer.0.attention.to_qq.weight":
                                              t.pop("decoders.0.layer.0.attention.to_q.weight")}),
     f"decoder/{WEIGHTS}: unexpected tensor 'decoders.0.layer.0.attention.to_qq.weight' (not a "
     "parameter of the model; did you mean 'decoders.0.layer.0.attention.to_q.weight'?)"),
    (f"notes_encoder/{WEIGHTS}", lambda t: t.pop("layer_norm.weight"),
     f"notes_encoder/{WEIGHTS}: tensor 'layer_norm.weight' is missing"),
    (f"continuous_encoder/{WEIGHTS}",
     lambda t: t.update({"input_proj.weight": t["input_proj.weight"].T}),
     f"continuous_encoder/{WEIGHTS}: tensor 'input_proj.weight' has shape (128, 32), the model "
     "needs (32, 128)"),
    ("decoder/config.json", lambda c: c.pop("d_kv"),
     "decoder/config.json: field 'd_kv' is missing"),
    ("notes_encoder/config.json", lambda c: c.update(feed_forward_proj="relu"),
     "notes_encoder/config.json: feed_forward_proj is 'relu'"),
    ("continuous_encoder/config.json", lambda c: c.update(num_layers=3),
     "notes_encoder has 2 layers, continuous_encoder 3"),
    ("decoder/config.json", lambda c: c.update(_class_name="UNet2DModel"),
     "decoder/config.json: _class_name is 'UNet2DModel', expected 'T5FilmDecoder'"),
])
def test_bad_tensors_and_configs_are_one_line_naming_file_and_tensor_or_field(
        folder, tmp_path, capsys, file, edit, message):
    copy = _copy_folder(folder, tmp_path)
    _edit(str(copy / file), edit)
    status, _, stderr = _run(import_cli.main, ["--format", "diffusers", "--source", str(copy),
                                               "--out", str(tmp_path / "out")], capsys)
    assert status == 2 and message in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "out")


def test_size_flag_is_for_t5x_only(folder, tmp_path, capsys):
    status, _, stderr = _run(import_cli.main, ["--format", "diffusers", "--source", folder,
                                               "--size", "base", "--out", str(tmp_path / "o")],
                             capsys)
    assert status == 2 and "--size is for t5x checkpoints" in stderr


def _torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(_torch_available(), reason="checks the message shown when torch is absent")
def test_bin_weights_without_torch_say_so(folder, tmp_path, capsys):
    copy = _copy_folder(folder, tmp_path)
    weights = copy / "decoder" / WEIGHTS
    weights.rename(weights.with_suffix(".bin"))
    status, _, stderr = _run(import_cli.main, ["--format", "diffusers", "--source", str(copy),
                                               "--out", str(tmp_path / "out")], capsys)
    assert status == 2
    assert "decoder/diffusion_pytorch_model.bin: .bin weights are torch pickles and need " \
           "PyTorch" in stderr


@pytest.mark.skipif(not _torch_available(), reason="needs torch in this environment")
def test_bin_weights_load_with_weights_only(tmp_path):
    import pickle

    bin_folder = weight_fixtures.write_diffusers_folder(
        str(tmp_path / "bin"), seed=3, weights_file="diffusion_pytorch_model.bin", **SIZES)
    safe_folder = weight_fixtures.write_diffusers_folder(str(tmp_path / "safe"), seed=3, **SIZES)
    _, from_bin, _ = transfer.read_source("diffusers", bin_folder)
    _, from_safe, _ = transfer.read_source("diffusers", safe_folder)
    for name in from_safe:
        np.testing.assert_array_equal(from_bin[name], from_safe[name])

    class Payload:  # an arbitrary object: weights_only refuses to build it
        def __reduce__(self):
            return (os.getcwd, ())

    with open(os.path.join(bin_folder, "decoder", "diffusion_pytorch_model.bin"), "wb") as f:
        pickle.dump({"spec_out.weight": Payload()}, f)
    with pytest.raises(transfer.WeightsError, match="unreadable torch weights"):
        transfer.read_source("diffusers", bin_folder)


def test_export_refuses_models_diffusers_cannot_hold(tmp_path, capsys):
    from music_spectrogram_diffusion.inference.loading import abstract_params
    from music_spectrogram_diffusion.weights.param_tree import flatten

    model = DiffusionModel(network_config=T5Config.tiny(num_encoder_layers=1,
                                                        num_decoder_layers=1), with_context=False)
    params = {k: np.zeros(v.shape, np.float32) for k, v in flatten(abstract_params(model)).items()}
    transfer.write_model_dir(str(tmp_path / "no_context"), model, params, 0, {})
    status, _, stderr = _run(export_cli.main, ["--model_dir", str(tmp_path / "no_context"),
                                               "--out", str(tmp_path / "out")], capsys)
    assert status == 2 and "with context only" in stderr
    assert not os.path.exists(tmp_path / "out")
