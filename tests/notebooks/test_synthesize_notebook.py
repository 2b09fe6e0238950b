"""notebooks/synthesize_midi.ipynb runs top to bottom on a tiny trained checkpoint, from any
folder, and is committed with its outputs (scripts/run_notebook.py), which name no machine path.

The notebook is executed by nbclient with the 'python3' kernelspec; jupyter_client starts a
kernelspec whose command is ``python`` with ``sys.executable``, i.e. this venv's python, so no
kernel needs installing. The test replaces the first code cell (the parameters) with its own.
"""

import os
import sys

import nbformat
import pytest
import soundfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "inference"))
import trained_checkpoints  # noqa: E402

NOTEBOOK = os.path.join(trained_checkpoints.REPO_ROOT, "notebooks", "synthesize_midi.ipynb")
PARAMETERS = ("CHECKPOINT", "MIDI_PATH", "SAMPLER", "TIME_GRID", "STEPS", "GUIDANCE", "SEED",
              "VOCODER", "OUT_WAV")
MACHINE_PATHS = ("/tmp/", "/work/", "/root/", "/home/", "/Users/")


def _parameter_cell(notebook):
    return next(cell for cell in notebook.cells if cell.cell_type == "code")


def _outputs(notebook):
    return [output for cell in notebook.cells if cell.cell_type == "code"
            for output in cell.outputs]


def _check_outputs(notebook) -> str:
    """The printed text, after checking the picture, the player and the absence of errors."""
    outputs = _outputs(notebook)
    assert not [o for o in outputs if o.output_type == "error"]
    rich = [output.get("data", {}) for output in outputs if output.output_type == "display_data"]
    assert any("image/png" in data for data in rich), "no spectrogram picture"
    assert any("<audio" in data.get("text/html", "") for data in rich), "no audio player"
    return "".join(output.get("text", "") for output in outputs if output.output_type == "stream")


def test_first_code_cell_holds_every_parameter():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    source = _parameter_cell(notebook).source
    assert all(f"{name} = " in source for name in PARAMETERS), source


def test_committed_with_outputs_that_name_no_machine_path():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    text = _check_outputs(notebook)
    assert "DiffusionModel at step 200 (checkpoint_200 of the run)" in text
    assert "band.mid: notes end at 12.00 s, 3 segments" in text
    printed = text + "".join(str(o.get("data", {}).get("text/plain", ""))
                             for o in _outputs(notebook))
    assert not [p for p in MACHINE_PATHS if p in printed], printed


def test_notebook_synthesizes_plots_and_plays(tmp_path_factory, tmp_path):
    from nbclient import NotebookClient

    model_dir = trained_checkpoints.shared_checkpoint(tmp_path_factory, "diffusion_context")
    midi = tmp_path / "melody.mid"
    midi.write_bytes(trained_checkpoints.melody_midi_bytes(6.0))
    out_wav = tmp_path / "melody.wav"
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    values = dict(CHECKPOINT=model_dir, MIDI_PATH=str(midi), SAMPLER="dpm++",
                  TIME_GRID="quadratic_t", STEPS=3, GUIDANCE=2.0, SEED=0, VOCODER="griffin-lim",
                  OUT_WAV=str(out_wav))
    _parameter_cell(notebook).source = "\n".join(f"{k} = {v!r}" for k, v in values.items())
    client = NotebookClient(notebook, kernel_name="python3", timeout=600,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError (with the traceback) if a cell fails

    text = _check_outputs(notebook)
    assert "DiffusionModel at step 2 (checkpoint_2 of the run)" in text
    assert "melody.mid: notes end at 6.00 s, 2 segments" in text
    assert "7.00 s of audio" in text
    audio, rate = soundfile.read(out_wav)
    assert rate == 16000 and len(audio) == 7 * 16000


@pytest.fixture(autouse=True)
def _quiet_jupyter_paths(monkeypatch):
    # jupyter_client warns about the platformdirs migration on every kernel start.
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
