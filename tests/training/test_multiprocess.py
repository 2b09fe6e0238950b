"""msd-train across two real processes on 127.0.0.1 (gloo collectives), against one process.

Each process is the real command (``python -m music_spectrogram_diffusion.cli.train``) with t5x's
``--coordinator_address/--process_count/--process_index`` flags, two CPU devices per process and
``num_partitions=2``, so the run uses a 2 (data) x 2 (model) mesh across the processes, reads
only its host's rows of every batch and checkpoints through orbax's multi-process path. The
1-process reference uses a 1 x 2 mesh and the same global batch.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from music_spectrogram_diffusion.training import checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS, PERIOD, BATCH = 8, 2, 4
TIMEOUT = 900  # seconds per phase; a loaded 2-core machine is slow to start four JAX processes


@pytest.fixture(scope="module")
def data_dir(small_embedded_dataset):
    return small_embedded_dataset(max_piece_seconds=12.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(model_dir, data_dir, *distributed):
    return [sys.executable, "-m", "music_spectrogram_diffusion.cli.train",
            "--gin_file=gin/models/diffusion/tiny.gin", "--gin_file=gin/tasks/embedded.gin",
            "--gin_file=gin/train.gin", f"--gin.MODEL_DIR='{model_dir}'",
            f"--gin.DATA_DIR='{data_dir}'", f"--gin.TRAIN_STEPS={STEPS}",
            f"--gin.BATCH_SIZE={BATCH}", f"--gin.CHECKPOINT_PERIOD={PERIOD}",
            "--gin.EVAL_PERIOD=100000", "--gin.trainer.train.log_period=1",
            "--gin.partitioning.PartitionConfig.num_partitions=2", *distributed]


def _start(model_dir, data_dir, processes: int) -> list[subprocess.Popen]:
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    if processes == 1:
        commands = [_command(model_dir, data_dir)]
    else:
        address = f"127.0.0.1:{_free_port()}"
        commands = [_command(model_dir, data_dir, f"--coordinator_address={address}",
                             f"--process_count={processes}", f"--process_index={i}")
                    for i in range(processes)]
    return [subprocess.Popen(c, cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for c in commands]


def _finish(procs) -> list[str]:
    outputs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError("a training process did not finish in time")
        outputs.append(out)
        assert p.returncode == 0, f"process exited {p.returncode}:\n{out[-3000:]}"
    return outputs


def _params(model_dir, step) -> np.ndarray:
    """All parameters of checkpoint_<step>, restored onto this process's one device (the
    checkpoint may come from another topology)."""
    import jax

    path = os.path.abspath(os.path.join(checkpoints.checkpoint_path(str(model_dir), step), "state"))
    checkpointer = ocp.StandardCheckpointer()
    metadata = checkpointer.metadata(path)
    metadata = getattr(metadata, "item_metadata", metadata)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          metadata)
    tree = checkpointer.restore(path, target)
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree["params"])])


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_two_processes_equal_one_and_resume_after_one_is_killed(tmp_path, data_dir):
    reference = tmp_path / "one_process"
    _finish(_start(reference, data_dir, 1))

    run = tmp_path / "two_processes"
    procs = _start(run, data_dir, 2)
    deadline = time.time() + TIMEOUT
    while not checkpoints.list_checkpoints(str(run)):
        assert all(p.poll() is None for p in procs), "a process exited before its first checkpoint"
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    assert all(p.poll() is None for p in procs), "the run finished before it could be killed"
    procs[1].send_signal(signal.SIGKILL)  # one host dies mid-run ...
    try:
        procs[0].wait(timeout=10)
    except subprocess.TimeoutExpired:
        procs[0].kill()  # ... and its peer, blocked in a collective, is taken down by the launcher
    for p in procs:
        p.communicate()
    survived = checkpoints.list_checkpoints(str(run))
    assert survived and survived[-1] < STEPS

    outputs = _finish(_start(run, data_dir, 2))  # restart both: resumes from the newest checkpoint
    assert all(f"at step {survived[-1]}" in out and "Resumed from" in out for out in outputs)
    assert "done at step 8" in outputs[0]
    assert checkpoints.list_checkpoints(str(run))[-1] == STEPS
    # model.json and config.gin come from process 0 alone, and are complete.
    assert (run / "model.json").stat().st_size > 0 and (run / "config.gin").stat().st_size > 0
    error = _relative(_params(run, STEPS), _params(reference, STEPS))
    assert error < 1e-5, error
