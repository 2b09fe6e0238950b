"""Audio embedders for the paper's embedding and Frechet distances (spec §8.1, §8.2).

Every embedder has one interface::

    with get_embedder("musicnn") as embedder:      # loads the model once
        frames = embedder.embed(audio)             # [frames, embedder.dim] float32

``embed`` takes mono float32 audio at 16 kHz (other rates via ``sample_rate=``) and prepares it
as the original's ``make_output_dict`` did (§8.1): ``nan_to_num``, resampling to 16 kHz, and
symmetric zero padding to a whole number of seconds.

Available embedders (``EMBEDDERS``):

* ``musicnn``: the offline default. Its weights ship inside the musicnn wheel. Runs in a worker
  process (embedding_worker.py) because it switches TensorFlow to graph mode process-wide.
* ``vggish`` and ``trill``: the paper's embeddings, from a local TF-Hub SavedModel directory
  (``path=``); this machine cannot download them. Also in a worker process, which keeps
  TensorFlow off the accelerator that JAX uses.
* ``logmel``: one-second means of our log-mel features; no network. A cheap baseline.

Worker embedders hide TensorFlow from the GPU (``CUDA_VISIBLE_DEVICES=''``) unless
``use_gpu=True``: the models are small and evaluation runs next to a JAX process.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from music_spectrogram_diffusion.evaluation import embedding_backends
from music_spectrogram_diffusion.evaluation import embedding_worker

SAMPLE_RATE = embedding_backends.SAMPLE_RATE
_BACKENDS = "music_spectrogram_diffusion.evaluation.embedding_backends"


class EmbedderError(RuntimeError):
    """An embedder that cannot be built or whose worker failed."""


def pad_to_whole_seconds(
    audio: np.ndarray,  # [samples]
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:  # [ceil(samples / sample_rate) * sample_rate]
    """Zero-pads symmetrically (the extra sample, if any, at the end) to whole seconds (§8.1)."""
    padding = -len(audio) % sample_rate
    left = padding // 2
    return np.pad(audio, (left, padding - left))


def prepare_audio(
    audio: np.ndarray,  # [samples]
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:  # [whole seconds at 16 kHz] float32
    """``nan_to_num``, resampling to 16 kHz, symmetric padding to whole seconds (spec §8.1)."""
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 1:
        raise ValueError(f"embedders take mono audio of shape [samples], got {audio.shape}")
    if audio.size == 0:
        raise ValueError("cannot embed empty audio")
    audio = np.nan_to_num(audio)
    if sample_rate != SAMPLE_RATE:
        import librosa

        # Keyword rates: the original's positional call fails on librosa >= 0.10 (§11.12).
        audio = librosa.resample(audio, orig_sr=sample_rate, target_sr=SAMPLE_RATE)
    return pad_to_whole_seconds(audio.astype(np.float32), SAMPLE_RATE)


class Embedder(abc.ABC):
    """Audio -> ``[frames, dim]`` embeddings. Use as a context manager, or call ``close()``."""

    name: str
    dim: int

    def embed(
        self,
        audio: np.ndarray,  # [samples]
        sample_rate: int = SAMPLE_RATE,
    ) -> np.ndarray:  # [frames, dim] float32
        """Embeds one mono clip (prepared with ``prepare_audio``)."""
        return self._embed_prepared(prepare_audio(audio, sample_rate))

    @abc.abstractmethod
    def _embed_prepared(self, audio: np.ndarray) -> np.ndarray:
        """[whole seconds of 16 kHz audio] -> [frames, dim]."""

    def close(self) -> None:
        """Releases the model (and its worker process, if any). Idempotent."""

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class InProcessEmbedder(Embedder):
    """Runs a backend in the calling process (only for backends without TensorFlow)."""

    def __init__(self, name: str, backend: Any):
        self.name = name
        self._backend = backend
        self.dim = int(backend.dim)

    def _embed_prepared(self, audio: np.ndarray) -> np.ndarray:
        return self._backend.embed(audio)


class WorkerEmbedder(Embedder):
    """Runs a backend in a long-lived worker process that loads the model once.

    Raises ``EmbedderError`` (naming the embedder, the worker's exit status and the tail of its
    log) if the worker cannot start, dies, or times out; a dead worker is not restarted.
    """

    def __init__(
        self,
        name: str,
        backend: str,
        backend_kwargs: dict[str, Any],
        *,
        use_gpu: bool = False,
        startup_timeout: float = 300.0,
        call_timeout: float | None = 600.0,
    ):
        self.name = name
        env = {
            "TF_USE_LEGACY_KERAS": "1",
            "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        }
        if not use_gpu:
            env.update(CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
        try:
            self._worker = embedding_worker.WorkerProcess(
                f"{name} embedding worker",
                f"{_BACKENDS}:{backend}",
                backend_kwargs,
                env=env,
                startup_timeout=startup_timeout,
                call_timeout=call_timeout,
            )
        except embedding_worker.WorkerError as e:
            raise EmbedderError(str(e)) from e
        self.dim = self._worker.dim

    @property
    def pid(self) -> int:
        return self._worker.pid

    def is_alive(self) -> bool:
        return self._worker.is_alive()

    def _embed_prepared(self, audio: np.ndarray) -> np.ndarray:
        try:
            return self._worker.request(("embed", audio))
        except embedding_worker.WorkerError as e:
            raise EmbedderError(str(e)) from e

    def close(self) -> None:
        self._worker.close()


@dataclasses.dataclass(frozen=True)
class MusicnnConfig:
    """musicnn options; see embedding_backends.MusicnnBackend for the choice of default."""

    model: str = "MSD_musicnn"
    layer: str = "penultimate"
    hop_seconds: float = 1.0

    def __post_init__(self):
        if self.model not in embedding_backends.MUSICNN_MODELS:
            raise ValueError(
                f"unknown musicnn model {self.model!r}; valid: {embedding_backends.MUSICNN_MODELS}"
            )
        layers = tuple(embedding_backends.MUSICNN_LAYERS)
        if self.layer not in layers:
            raise ValueError(f"unknown musicnn layer {self.layer!r}; valid: {layers}")
        if not self.hop_seconds > 0:
            raise ValueError(f"musicnn hop_seconds must be positive, got {self.hop_seconds}")


def check_saved_model_dir(path: str | os.PathLike, what: str) -> str:
    """Returns ``path`` as a string if it is a SavedModel directory, else raises EmbedderError."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise EmbedderError(f"{path}: {what} SavedModel directory not found")
    if not os.path.isdir(path):
        raise EmbedderError(f"{path}: not a directory; {what} needs a TF-Hub SavedModel directory")
    if not {"saved_model.pb", "saved_model.pbtxt"} & set(os.listdir(path)):
        raise EmbedderError(
            f"{path}: not a SavedModel (no saved_model.pb); download and unpack the TF-Hub "
            f"{what} model elsewhere and copy the directory here"
        )
    return path


def _make_musicnn(*, use_gpu: bool = False, **options: Any) -> Embedder:
    config = MusicnnConfig(**options)
    return WorkerEmbedder("musicnn", "MusicnnBackend", dataclasses.asdict(config), use_gpu=use_gpu)


def _saved_model_factory(kind: str) -> Callable[..., Embedder]:
    def make(*, path: str | os.PathLike, use_gpu: bool = False) -> Embedder:
        path = check_saved_model_dir(path, kind)
        kwargs = {"path": path, "kind": kind}
        return WorkerEmbedder(kind, "SavedModelBackend", kwargs, use_gpu=use_gpu)

    return make


def _make_logmel(*, frame_seconds: float = 1.0, in_worker: bool = False) -> Embedder:
    if in_worker:
        return WorkerEmbedder("logmel", "LogMelBackend", {"frame_seconds": frame_seconds})
    return InProcessEmbedder("logmel", embedding_backends.LogMelBackend(frame_seconds))


EMBEDDERS: dict[str, Callable[..., Embedder]] = {
    "musicnn": _make_musicnn,
    "vggish": _saved_model_factory("vggish"),
    "trill": _saved_model_factory("trill"),
    "logmel": _make_logmel,
}


def get_embedder(name: str, **options: Any) -> Embedder:
    """Builds an embedder by name; ``options`` are that embedder's keyword arguments.

    musicnn: model, layer, hop_seconds, use_gpu. vggish/trill: path (required), use_gpu.
    logmel: frame_seconds, in_worker.
    """
    if name not in EMBEDDERS:
        raise ValueError(f"unknown embedder {name!r}; valid names: {sorted(EMBEDDERS)}")
    factory = EMBEDDERS[name]
    try:
        inspect.signature(factory).bind(**options)
    except TypeError as e:
        raise ValueError(f"bad options for embedder {name!r}: {e}") from e
    return factory(**options)
