"""Our forward pass vs the PyTorch port's (diffusers 0.42) classes on the same imported weights.

diffusers saves a tiny pipeline with random weights; we import it (msd-import-weights), run our
network, export it again (msd-export-weights) and diffusers loads the export with each
component class's ``from_pretrained`` and runs its encoders and decoder on the same inputs. The torch side runs in
its own interpreter, MSD_TORCH_PYTHON (for example /tmp/torchvenv/bin/python after
``bash ../shared/bench/setup_venv.sh /tmp/torchvenv``); without it the test is skipped.

The port runs one example at a time and the context mask is all ones: its continuous encoder
rolls the positions along the batch axis (fails for batch > 1, a no-op for batch 1), so it is
only right for full contexts, which is what its pipeline feeds.
"""

import json
import os
import subprocess

import numpy as np
import pytest

from music_spectrogram_diffusion.cli import export_weights as export_cli
from music_spectrogram_diffusion.cli import import_weights as import_cli
from music_spectrogram_diffusion.inference.loading import load_trained_model

TORCH_PYTHON = os.environ.get("MSD_TORCH_PYTHON")
pytestmark = pytest.mark.skipif(
    not TORCH_PYTHON,
    reason="MSD_TORCH_PYTHON is not set: it names a python with torch and diffusers 0.42 "
           "(bash ../shared/bench/setup_venv.sh /tmp/torchvenv) for the comparison with the "
           "PyTorch port")

MAX_RELATIVE_ERROR = 1e-4
# Rows 0-1 at sampling-time noise levels; rows 2-3 near t = 0. The decoder's time embedding is
# sin/cos of t * 2e4 (spec §4.3): angles up to 16000 rad, where float32 holds ~1e-3 rad, so
# both implementations are ~1e-4 off the exact embedding and differ from each other by that
# much at large t. At small t the angles are exact enough that only the weights can differ.
NOISE_TIME = (0.3, 0.8, 0.001, 0.002)
MAX_RELATIVE_ERROR_SMALL_T = 1e-5
# Not square: 3 heads x 8 = 24 attention channels for d = 32; 3 decoder layers.
SIZES = dict(d_model=32, num_heads=3, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=3,
             vocab_size=1536, max_length=64, frames=16)

_TORCH_SCRIPT = r"""
import json, sys
import numpy as np
import torch
from diffusers import DDPMScheduler, T5FilmDecoder
from diffusers.pipelines.deprecated.spectrogram_diffusion import (
    SpectrogramContEncoder, SpectrogramDiffusionPipeline, SpectrogramNotesEncoder)
from transformers.modeling_utils import ModuleUtilsMixin

if not hasattr(ModuleUtilsMixin, "get_extended_attention_mask"):
    # transformers 5 dropped the helper the port's encoders call: [B, L] mask -> additive bias.
    def get_extended_attention_mask(self, mask, input_shape, device=None, dtype=None):
        dtype = dtype or self.dtype
        return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
    for cls in (SpectrogramNotesEncoder, SpectrogramContEncoder):
        cls.get_extended_attention_mask = get_extended_attention_mask

mode, folder = sys.argv[1], sys.argv[2]
if mode == "save":
    s = json.loads(sys.argv[3])
    torch.manual_seed(0)
    shared = dict(d_model=s["d_model"], num_heads=s["num_heads"], d_kv=s["d_kv"],
                  d_ff=s["d_ff"], dropout_rate=0.1)
    notes = SpectrogramNotesEncoder(max_length=s["max_length"], vocab_size=s["vocab_size"],
                                    num_layers=s["num_layers"], feed_forward_proj="gated-gelu",
                                    **shared)
    context = SpectrogramContEncoder(input_dims=128, targets_context_length=s["frames"],
                                     num_layers=s["num_layers"], feed_forward_proj="gated-gelu",
                                     **shared)
    decoder = T5FilmDecoder(input_dims=128, targets_length=s["frames"],
                            max_decoder_noise_time=2e4, num_layers=s["num_decoder_layers"],
                            **shared)
    with torch.no_grad():  # norms start at 1: make every tensor distinct
        for module in (notes, context, decoder):
            for p in module.parameters():
                p.add_(0.1 * torch.randn_like(p))
    pipe = SpectrogramDiffusionPipeline(
        notes_encoder=notes, continuous_encoder=context, decoder=decoder,
        scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2", variance_type="fixed_large"),
        melgan=None)
    pipe.save_pretrained(folder)
else:
    # Each component by its class: in diffusers 0.42 SpectrogramDiffusionPipeline.from_pretrained
    # cannot resolve the ["diffusers", "SpectrogramNotesEncoder"] its own save_pretrained writes.
    pipe = SpectrogramDiffusionPipeline(
        notes_encoder=SpectrogramNotesEncoder.from_pretrained(folder, subfolder="notes_encoder"),
        continuous_encoder=SpectrogramContEncoder.from_pretrained(
            folder, subfolder="continuous_encoder"),
        decoder=T5FilmDecoder.from_pretrained(folder, subfolder="decoder"),
        scheduler=DDPMScheduler.from_pretrained(folder, subfolder="scheduler"), melgan=None)
    inputs = np.load(sys.argv[3])
    with torch.no_grad():
        for m in (pipe.notes_encoder, pipe.continuous_encoder, pipe.decoder):
            m.eval()
        eps = []
        for b in range(len(inputs["note_tokens"])):  # the port's encoders take batch 1 only
            row = {k: torch.from_numpy(v[b:b + 1]) for k, v in inputs.items()}
            encodings = pipe.encode(input_tokens=row["note_tokens"].int(),
                                    continuous_inputs=row["context_frames"],
                                    continuous_mask=row["context_mask"] > 0)
            eps.append(pipe.decode(encodings_and_masks=encodings,
                                   input_tokens=row["noisy_frames"],
                                   noise_time=row["noise_time"]).numpy())
    np.save(sys.argv[4], np.concatenate(eps))
"""


def _torch(*args: str) -> None:
    result = subprocess.run([TORCH_PYTHON, "-c", _TORCH_SCRIPT, *args], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def _inputs(path: str) -> dict:
    rng = np.random.default_rng(11)
    batch, frames = len(NOISE_TIME), SIZES["frames"]
    tokens = np.zeros((batch, 48), np.int32)
    for row, length in enumerate((40, 17, 48, 5)):  # padded, except row 2
        tokens[row, :length] = rng.integers(1, SIZES["vocab_size"], length)
    inputs = {"note_tokens": tokens,
              "context_frames": rng.uniform(-1, 1, (batch, frames, 128)).astype(np.float32),
              "context_mask": np.ones((batch, frames), np.float32),
              "noisy_frames": rng.standard_normal((batch, frames, 128)).astype(np.float32),
              "noise_time": np.array(NOISE_TIME, np.float32)}
    np.savez(path, **inputs)
    return inputs


def _relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))


def test_our_forward_matches_the_ports_on_imported_weights(tmp_path):
    saved, model_dir, exported = tmp_path / "saved", tmp_path / "model", tmp_path / "exported"
    _torch("save", str(saved), json.dumps(SIZES))
    assert import_cli.main(["--format", "diffusers", "--source", str(saved),
                            "--out", str(model_dir)]) == 0
    assert export_cli.main(["--model_dir", str(model_dir), "--out", str(exported)]) == 0

    inputs = _inputs(str(tmp_path / "inputs.npz"))
    loaded = load_trained_model(str(model_dir))
    ours = np.asarray(loaded.model.network.apply(
        {"params": loaded.params}, inputs["note_tokens"], inputs["context_frames"],
        inputs["context_mask"], inputs["noisy_frames"], inputs["noise_time"],
        deterministic=True))
    _torch("run", str(exported), str(tmp_path / "inputs.npz"), str(tmp_path / "exported.npy"))
    _torch("run", str(saved), str(tmp_path / "inputs.npz"), str(tmp_path / "saved.npy"))
    theirs = np.load(tmp_path / "exported.npy")
    # diffusers reads our export exactly as its own save.
    np.testing.assert_array_equal(theirs, np.load(tmp_path / "saved.npy"))
    assert ours.shape == theirs.shape == (len(NOISE_TIME), SIZES["frames"], 128)
    error = _relative_error(ours, theirs)
    error_small_t = _relative_error(ours[2:], theirs[2:])
    print(f"relative error ours vs diffusers: {error:.3g} (t near 0: {error_small_t:.3g})")
    assert error < MAX_RELATIVE_ERROR
    assert error_small_t < MAX_RELATIVE_ERROR_SMALL_T
