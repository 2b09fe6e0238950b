"""Embedders: audio preparation (spec §8.1), the registry, and the worker process machinery."""

import os
import signal
import time

import numpy as np
import pytest

from music_spectrogram_diffusion.evaluation import embedders
from music_spectrogram_diffusion.evaluation import embedding_worker


def _tone(seconds: float, hertz: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hertz * t)).astype(np.float32)


def test_prepare_audio_pads_symmetrically_to_whole_seconds():
    audio = np.ones(16000 + 101, np.float32)
    audio[5] = np.nan
    prepared = embedders.prepare_audio(audio)
    # 15899 samples of padding: 7949 before, 7950 after.
    assert prepared.shape == (32000,) and prepared.dtype == np.float32
    assert np.all(prepared[:7949] == 0) and prepared[7949] == 1
    assert np.all(prepared[-7950:] == 0) and prepared[-7951] == 1
    assert prepared[7949 + 5] == 0  # NaN -> 0
    np.testing.assert_array_equal(embedders.prepare_audio(np.ones(32000)), np.ones(32000))
    # Other rates are resampled to 16 kHz first: 1.5 s at 8 kHz -> 24000 samples -> 2 s.
    assert embedders.prepare_audio(_tone(1.5, 440, rate=8000), sample_rate=8000).shape == (32000,)
    with pytest.raises(ValueError, match="empty"):
        embedders.prepare_audio(np.zeros(0))
    with pytest.raises(ValueError, match="mono"):
        embedders.prepare_audio(np.zeros((2, 100)))


def test_registry_errors_list_valid_choices():
    with pytest.raises(ValueError, match=r"unknown embedder 'openl3'.*'logmel'.*'musicnn'"):
        embedders.get_embedder("openl3")
    with pytest.raises(ValueError, match="bad options for embedder 'logmel'"):
        embedders.get_embedder("logmel", layer="penultimate")
    with pytest.raises(ValueError, match="valid.*penultimate"):
        embedders.get_embedder("musicnn", layer="conv9")
    with pytest.raises(ValueError, match="valid.*MSD_musicnn"):
        embedders.MusicnnConfig(model="MSD_musicnn_big")


@pytest.mark.parametrize("name", ["vggish", "trill"])
def test_saved_model_embedders_reject_bad_paths(tmp_path, name):
    missing = tmp_path / "nowhere"
    with pytest.raises(embedders.EmbedderError, match=f"{missing}: {name} SavedModel directory not found"):
        embedders.get_embedder(name, path=missing)
    not_a_model = tmp_path / "empty_dir"
    not_a_model.mkdir()
    with pytest.raises(embedders.EmbedderError, match="not a SavedModel"):
        embedders.get_embedder(name, path=not_a_model)
    a_file = tmp_path / "model.tflite"
    a_file.write_bytes(b"x")
    with pytest.raises(embedders.EmbedderError, match="not a directory"):
        embedders.get_embedder(name, path=a_file)
    with pytest.raises(ValueError, match="bad options"):
        embedders.get_embedder(name)  # path is required


def test_logmel_embedder_frames():
    with embedders.get_embedder("logmel") as embedder:
        frames = embedder.embed(_tone(2.5, 440))  # padded to 3 s -> three 1-s frames
        assert frames.shape == (3, 128) and embedder.dim == 128
        # The padded first and last quarter-seconds are quieter than the middle second.
        assert frames[1].max() > frames[0].max()


def test_worker_survives_repeated_calls_and_matches_in_process():
    a, b = _tone(2.0, 440), _tone(2.0, 660)
    with embedders.get_embedder("logmel", in_worker=True) as worker, \
            embedders.get_embedder("logmel") as local:
        first = worker.embed(a)
        assert worker.embed(b).shape == first.shape
        np.testing.assert_array_equal(worker.embed(a), first)  # same input, same output
        assert not np.allclose(worker.embed(b), first)  # different input, different output
        np.testing.assert_allclose(first, local.embed(a), rtol=1e-6)
        pid = worker.pid
        assert worker.is_alive()
    # The context manager shut the worker down cleanly.
    assert not worker.is_alive()
    with pytest.raises(embedders.EmbedderError, match="closed"):
        worker.embed(a)
    worker.close()  # idempotent
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_dead_worker_gives_a_clear_error():
    embedder = embedders.get_embedder("logmel", in_worker=True)
    try:
        os.kill(embedder.pid, signal.SIGKILL)
        time.sleep(0.2)
        with pytest.raises(embedders.EmbedderError, match=r"logmel embedding worker \(pid \d+\).*exit status -9"):
            embedder.embed(_tone(1.0, 440))
    finally:
        embedder.close()
    # A failed worker's log is kept for the user (the error names it); tidy up here.
    log_path = embedder._worker.log_path
    assert os.path.exists(log_path)
    os.remove(log_path)


def test_worker_reports_errors_and_keeps_serving():
    backends = "music_spectrogram_diffusion.evaluation.embedding_backends"
    with pytest.raises(embedding_worker.WorkerError, match="AttributeError"):
        embedding_worker.WorkerProcess("bad", f"{backends}:NoSuchBackend", {})
    worker = embedding_worker.WorkerProcess("logmel", f"{backends}:LogMelBackend", {})
    try:
        with pytest.raises(embedding_worker.WorkerError, match="unknown request 'bogus'"):
            worker.request(("bogus",))
        assert worker.request(("embed", _tone(1.0, 440))).shape == (1, 128)
    finally:
        worker.close()


@pytest.mark.slow
def test_musicnn_in_worker_repeated_calls():
    # Loading takes about 13 s (TensorFlow import + checkpoint) on a busy 2-core machine.
    a = _tone(4.0, 440) + _tone(4.0, 554)
    b = np.random.default_rng(0).normal(size=4 * 16000).astype(np.float32) * 0.1
    with embedders.get_embedder("musicnn") as embedder:
        assert embedder.dim == 200
        first = embedder.embed(a)
        # 4 s -> 250 mel frames; 3-s patches every 62 frames -> 2 patches.
        assert first.shape == (2, 200)
        # White noise at this level overflowed musicnn's float16 preprocessing (inf -> NaN).
        second = embedder.embed(b)
        assert np.all(np.isfinite(first)) and np.all(np.isfinite(second))
        np.testing.assert_array_equal(embedder.embed(a), first)
        assert np.abs(second - first).max() > 0.1
        short = embedder.embed(_tone(0.5, 440))  # padded to 1 s, then to one 3-s patch
        assert short.shape == (1, 200) and np.all(np.isfinite(short))


def _save_tiny_hub_models(directory):
    """SavedModels with the call signatures of TF-Hub VGGish/1 and TRILL/3 (tiny, random-free)."""
    import tensorflow as tf

    frame = 15360  # VGGish: one embedding per 0.96 s

    class TinyVggish(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def __call__(self, waveform):
            frames = tf.signal.frame(waveform, frame, frame)  # [frames, 15360]
            return tf.stack([tf.reduce_mean(frames, -1), tf.math.reduce_std(frames, -1)], axis=-1)

    class TinyTrill(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.int32)])
        def __call__(self, samples, sample_rate):
            frames = tf.signal.frame(samples, sample_rate // 2, sample_rate // 2)
            energy = tf.reduce_mean(tf.square(frames), -1)
            embedding = tf.stack([energy, 2.0 * energy, tf.reduce_max(frames, -1)], axis=-1)
            return {"embedding": embedding[None], "layer19": embedding[None]}

    tf.saved_model.save(TinyVggish(), str(directory / "vggish"))
    tf.saved_model.save(TinyTrill(), str(directory / "trill"))


@pytest.mark.slow
def test_saved_model_embedders_load_local_directories(tmp_path):
    # Three TensorFlow start-ups (here and in two workers): 75 s on a busy 2-core machine.
    _save_tiny_hub_models(tmp_path)
    audio = _tone(1.9, 440)  # padded to 2 s
    with embedders.get_embedder("vggish", path=tmp_path / "vggish") as vggish:
        assert vggish.dim == 2
        frames = vggish.embed(audio)
        assert frames.shape == (2, 2)  # floor(32000 / 15360) frames
        np.testing.assert_array_equal(vggish.embed(audio), frames)
    with embedders.get_embedder("trill", path=tmp_path / "trill") as trill:
        assert trill.dim == 3
        frames = trill.embed(audio)
        assert frames.shape == (4, 3)  # 0.5-s frames, batch axis dropped
        np.testing.assert_allclose(frames[:, 1], 2 * frames[:, 0], rtol=1e-6)


def test_worker_that_times_out_is_stopped():
    backends = "music_spectrogram_diffusion.evaluation.embedding_backends"
    worker = embedding_worker.WorkerProcess(
        "logmel", f"{backends}:LogMelBackend", {}, call_timeout=1e-3
    )
    try:
        # The first embedding imports the log-mel front end: far longer than 1 ms.
        with pytest.raises(embedding_worker.WorkerError, match="timed out and was stopped"):
            worker.request(("embed", _tone(1.0, 440)))
        assert not worker.is_alive()
    finally:
        worker.close()
        os.remove(worker.log_path)
