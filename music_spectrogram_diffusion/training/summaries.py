"""TensorBoard scalars and spectrogram images, plus the console progress line.

Events are written as TFRecord-framed ``Event`` protos with tensorboard's ``RecordWriter`` on
a plain file (tensorboard's ``EventFileWriter`` would import all of TensorFlow: ~30 s), under
``MODEL_DIR/train`` and ``MODEL_DIR/eval`` as t5x does. Eval spectrogram comparisons are also
saved as PNG files next to them, because people look at pictures, not numbers.
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
