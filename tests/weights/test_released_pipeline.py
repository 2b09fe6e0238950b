"""The released pipeline run whole, as the README's "Use the released models" does: a diffusers
folder (with its melgan/model.onnx) -> msd-import-weights -> msd-synthesize --vocoder melgan
-> a WAV; and msd-evaluate accepts the imported MODEL_DIR."""

import os

import numpy as np
import pytest
import soundfile

from music_spectrogram_diffusion.cli import import_weights as import_cli
from music_spectrogram_diffusion.cli import synthesize as synthesize_cli
from music_spectrogram_diffusion.testing import midi_fixtures, weight_fixtures


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A hub-like folder with random tiny weights and a stand-in melgan, imported."""
    root = tmp_path_factory.mktemp("released")
    hub = weight_fixtures.write_diffusers_folder(str(root / "music-spectrogram-diffusion"),
                                                 seed=5)
    weight_fixtures.write_melgan_onnx(os.path.join(hub, "melgan"))
    model_dir = str(root / "base_with_context")
    assert import_cli.main(["--format", "diffusers", "--source", hub, "--out", model_dir]) == 0
    return {"hub": hub, "model_dir": model_dir, "root": root}


def test_synthesize_an_imported_model_with_the_ports_melgan(released, tmp_path, capsys):
    midi = tmp_path / "chord.mid"
    midi.write_bytes(midi_fixtures.make_midi_bytes(
        [(0, False, pitch, 0.0, 1.5, 90) for pitch in (60, 64, 67)]))
    out = tmp_path / "chord.wav"
    status = synthesize_cli.main([
        "--checkpoint", released["model_dir"], "--midi", str(midi), "--out", str(out),
        "--vocoder", os.path.join(released["hub"], "melgan"), "--sampler", "dpm++",
        "--steps", "2", "--no-progress"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    audio, rate = soundfile.read(out, dtype="float32")
    assert rate == 16000 and len(audio) == int(2.5 * 16000)  # 1.5 s of notes + 1 s release
    assert np.all(np.isfinite(audio)) and np.any(audio != 0)
    assert "chord.wav: 2.50 s" in captured.out
    assert sorted(os.listdir(tmp_path)) == ["chord.mid", "chord.wav"]


def test_evaluate_an_imported_model(released, capsys):
    from music_spectrogram_diffusion.cli import evaluate as evaluate_cli
    from music_spectrogram_diffusion.data import embedded_dataset

    data_dir = str(released["root"] / "data")
    embedded_dataset.build_embedded_dataset(data_dir, num_pieces=3, seed=6, num_workers=1,
                                            progress=False, max_piece_seconds=6.0)
    out = str(released["root"] / "eval")
    status = evaluate_cli.main([
        "--model_dir", f"imported={released['model_dir']}", "--split", "test", "--data_dir",
        data_dir, "--embedders", "logmel", "--no_transcription", "--max_seconds", "5.12",
        "--sampler", "dpm++", "--steps", "2", "--vocoder",
        os.path.join(released["hub"], "melgan"), "--out", out])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "imported @ 0" in captured.out
    assert os.path.getsize(os.path.join(out, "results.json")) > 0
