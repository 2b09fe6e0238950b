"""Checkpoint/resume behaviour of the real trainer: SIGKILL, SIGTERM, corrupt checkpoints."""

import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from music_spectrogram_diffusion.training import checkpoints

WORKER = os.path.join(os.path.dirname(__file__), "train_worker.py")
sys.path.insert(0, os.path.dirname(__file__))
import train_worker  # noqa: E402


def _start(model_dir, steps, period, seconds):
    return subprocess.Popen(
        [sys.executable, WORKER, str(model_dir), str(steps), str(period), str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(path, proc, timeout=120.0):
    deadline = time.time() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early:\n{proc.stdout.read()}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.1)


def _params(model_dir, step):
    path = os.path.join(checkpoints.checkpoint_path(str(model_dir), step), "state")
    tree = ocp.StandardCheckpointer().restore(os.path.abspath(path))
    return {"/".join(map(str, k)): np.asarray(v)
            for k, v in _flatten(tree["params"]).items()}


def _flatten(tree, prefix=()):
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flatten(v, prefix + (k,)))
        return out
    return {prefix: tree}


@pytest.mark.slow  # three training processes: ~25 s idle, minutes on a loaded machine
def test_sigkill_mid_run_then_resume_matches_uninterrupted_run(tmp_path):
    steps, period = 12, 2
    killed = tmp_path / "killed"
    proc = _start(killed, steps, period, seconds=0.3)
    _wait_for(checkpoints.checkpoint_path(str(killed), 4), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    saved = checkpoints.list_checkpoints(str(killed))
    assert saved and saved[-1] < steps, saved

    resumed = _start(killed, steps, period, seconds=0.0)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert f"DONE step={steps}" in out

    reference = tmp_path / "reference"
    train_worker.run(str(reference), steps, period)
    a, b = _params(killed, steps), _params(reference, steps)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_sigterm_saves_checkpoint_and_exits_cleanly(tmp_path):
    proc = _start(tmp_path, 1000, 500, seconds=0.2)
    _wait_for(os.path.join(tmp_path, "train"), proc)
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    saved = checkpoints.list_checkpoints(str(tmp_path))
    assert len(saved) == 1 and 0 < saved[0] < 500, saved
    assert f"DONE step={saved[0]} signal=True" in out


def test_corrupt_newest_checkpoint_falls_back_to_previous(tmp_path, caplog):
    train_worker.run(str(tmp_path), 4, 2)
    assert checkpoints.list_checkpoints(str(tmp_path)) == [2, 4]
    # Damage every data file of the newest checkpoint's arrays.
    state_dir = os.path.join(checkpoints.checkpoint_path(str(tmp_path), 4), "state")
    damaged = 0
    for root, _, files in os.walk(state_dir):
        for name in files:
            if name == "manifest.ocdbt" or os.path.basename(root) == "d":
                with open(os.path.join(root, name), "wb") as f:
                    f.write(b"garbage")
                damaged += 1
    assert damaged
    with caplog.at_level(logging.WARNING):
        result = train_worker.run(str(tmp_path), 5, 100)
    assert "checkpoint_4 is unreadable" in caplog.text
    # Resumed from step 2, trained to 5.
    assert result.step == 5
    assert checkpoints.list_checkpoints(str(tmp_path))[-1] == 5
