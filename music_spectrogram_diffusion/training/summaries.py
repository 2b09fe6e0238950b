"""TensorBoard scalars and spectrogram images, plus the console progress line.

Events are written as TFRecord-framed ``Event`` protos with tensorboard's ``RecordWriter`` on
a plain file (tensorboard's ``EventFileWriter`` would import all of TensorFlow: ~30 s), under
``MODEL_DIR/train`` and ``MODEL_DIR/eval`` as t5x does. Eval spectrogram comparisons are also
saved as PNG files next to them, because people look at pictures, not numbers, and
``write_sampled_audio`` makes the sampled segment heard (Griffin-Lim audio summaries and WAVs).
"""

from __future__ import annotations

import io
import os
import socket
import time

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig


class SummaryWriter:
    """Writes scalar and image summaries to one TensorBoard run directory."""

    def __init__(self, logdir: str):
        os.makedirs(logdir, exist_ok=True)
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"
        self.path = os.path.join(logdir, name)
        self._file = open(self.path, "wb")
        self._writer = RecordWriter(self._file)
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event: event_pb2.Event) -> None:
        self._writer.write(event.SerializeToString())

    def _add(self, step: int, value: summary_pb2.Summary.Value) -> None:
        self._write(event_pb2.Event(
            wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=[value])
        ))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in sorted(values.items()):
            self._add(step, summary_pb2.Summary.Value(tag=tag, simple_value=float(value)))

    def image(self, step: int, tag: str, png: bytes, height: int, width: int) -> None:
        image = summary_pb2.Summary.Image(
            height=height, width=width, colorspace=4, encoded_image_string=png
        )
        self._add(step, summary_pb2.Summary.Value(tag=tag, image=image))

    def audio(self, step: int, tag: str, samples: np.ndarray, sample_rate: int) -> None:
        """A mono clip as TensorBoard's audio summary (16-bit WAV; the Audio tab plays it)."""
        audio = summary_pb2.Summary.Audio(
            sample_rate=float(sample_rate), num_channels=1, length_frames=len(samples),
            encoded_audio_string=wav_bytes(samples, sample_rate), content_type="audio/wav")
        self._add(step, summary_pb2.Summary.Value(tag=tag, audio=audio))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def spectrogram_comparison_png(
    target: np.ndarray,  # [frames, mels] unscaled log-mel
    predicted: np.ndarray,  # [frames, mels] unscaled log-mel
    features: FeatureConfig = DEFAULT_FEATURES,
) -> tuple[bytes, int, int]:
    """Target above prediction, low mels at the bottom, as a PNG; returns (png, height, width)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import cm

    def to_unit(x):
        x = np.clip(np.asarray(x, np.float32), features.min_log_mel, features.max_log_mel)
        return (x - features.min_log_mel) / (features.max_log_mel - features.min_log_mel)

    gap = np.ones((4, target.shape[0]), np.float32)
    stacked = np.concatenate([to_unit(target).T[::-1], gap, to_unit(predicted).T[::-1]], axis=0)
    rgba = (cm.magma(stacked) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    import matplotlib.image

    matplotlib.image.imsave(buffer, rgba, format="png")
    return buffer.getvalue(), rgba.shape[0], rgba.shape[1]


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """[num_samples] float audio as the bytes of a 16-bit PCM WAV file (clipped to [-1, 1])."""
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(np.asarray(samples, np.float64), -1.0, 1.0), int(sample_rate),
                    format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def write_sampled_audio(
    writer: SummaryWriter,
    step: int,
    target: np.ndarray,  # [frames, mels] unscaled log-mel
    predicted: np.ndarray,  # [frames, mels] unscaled log-mel
    out_dir: str | None = None,
    features: FeatureConfig = DEFAULT_FEATURES,
) -> dict[str, np.ndarray]:
    """Target and sampled segment as listenable audio at eval time.

    Both log-mels are vocoded with Griffin-Lim (no trained vocoder needed, so a run can be heard
    from its first evaluation; it sounds phasey, the sampled spectrogram is what is judged) and
    written as the audio summaries ``audio/target`` and ``audio/sampled`` at ``step``; with
    ``out_dir`` (MODEL_DIR/eval) also as ``audio_step_<step>_{target,sampled}.wav``.

    Returns:
      {"target": [frames * hop], "sampled": [frames * hop]} float32 audio.
    """
    from music_spectrogram_diffusion import file_io
    from music_spectrogram_diffusion.audio.vocoders.griffin_lim import GriffinLimVocoder

    vocoder = GriffinLimVocoder(features=features)
    clips = {}
    for name, log_mel in (("target", target), ("sampled", predicted)):
        audio = np.asarray(vocoder.vocode(np.asarray(log_mel, np.float32)[None]))[0]
        clips[name] = audio
        writer.audio(step, f"audio/{name}", audio, features.sample_rate)
        if out_dir is not None:
            file_io.write_bytes_atomic(os.path.join(out_dir, f"audio_step_{step}_{name}.wav"),
                                       wav_bytes(audio, features.sample_rate))
    return clips


class Progress:
    """Tracks rate and ETA for the periodic progress line."""

    def __init__(self, start_step: int, total_steps: int):
        self.start_step = start_step
        self.total_steps = total_steps
        self._t0 = time.perf_counter()
        self._last_time = self._t0
        self._last_step = start_step

    def rate(self, step: int) -> float:
        """Steps per second since the previous call."""
        now = time.perf_counter()
        rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_time, self._last_step = now, step
        return rate

    def line(self, step: int, rate: float, loss: float) -> str:
        remaining = (self.total_steps - step) / rate if rate > 0 else float("inf")
        eta = time.strftime("%H:%M:%S", time.gmtime(remaining)) if np.isfinite(remaining) else "?"
        return (
            f"step {step}/{self.total_steps} loss {loss:.5g} {rate:.3g} steps/s ETA {eta}"
        )


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
    """The scalar summaries of a TensorBoard run directory: tag -> [(step, value)], by step.

    Read with tensorboard's own ``EventAccumulator`` (every event file of the directory, record
    CRCs checked; no sampling). It imports TensorFlow when present, so this is for analysis and
    tests, not for a training loop.
    """
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(
        logdir, size_guidance={event_accumulator.SCALARS: 0})
    accumulator.Reload()
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()[event_accumulator.SCALARS]}
