"""The paper's evaluation columns over a set of songs, and prediction timing (spec §8.2).

``evaluate_songs`` takes one ``SongEvaluation`` per song (real audio, synthesized audio, input
notes, and optionally predicted and real log-mel) and returns one flat dict:

===========================  =============================================================
``{embedder}_distance``      mean over songs of the mean frame embedding distance (§8.2)
``{embedder}_frechet``       Frechet distance of all real vs all synthesized frames (§8.2)
``Model onset F1`` ...       transcription of the synthesized audio vs the input notes
``GT onset F1`` ...          transcription of the real audio: the ceiling
``mel_l1``, ``mel_l2``       unscaled log-mel distances (spectral_metrics.py)
``mr_stft``                  multi-resolution STFT distance, the vocoder's loss function
``examples_count``           number of songs
===========================  =============================================================

Songs are processed one at a time (statistics are streamed), so a generator of songs keeps
memory flat. The synthesized audio is cut to the real audio's length first: the original scored
the generated tail beyond the end of the real audio (§11.9).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from music_spectrogram_diffusion.evaluation import frechet
from music_spectrogram_diffusion.evaluation import spectral_metrics
from music_spectrogram_diffusion.evaluation import transcription
from music_spectrogram_diffusion.evaluation.embedders import Embedder
from music_spectrogram_diffusion.features import DEFAULT_FEATURES

_LOG_EVERY_SECONDS = 30.0


@dataclasses.dataclass(frozen=True)
class SongEvaluation:
    """What one song contributes to the metrics. All audio is mono at ``sample_rate``."""

    reference_audio: np.ndarray  # [samples] real audio (raw targets, not vocoded)
    predicted_audio: np.ndarray  # [samples] synthesized audio
    reference_notes: Any = None  # NoteSequence | PrettyMIDI | transcription.NoteArrays
    predicted_mel: np.ndarray | None = None  # [frames, mels] unscaled log-mel
    reference_mel: np.ndarray | None = None  # [frames, mels] unscaled log-mel
    song_id: str = ""


class _Mean:
    """Running means of named values that may be missing for some songs."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1

    def result(self) -> dict[str, float]:
        return {key: total / self.counts[key] for key, total in self.sums.items()}


def evaluate_songs(
    songs: Iterable[SongEvaluation],
    *,
    embedders: Sequence[Embedder] = (),
    transcriber: transcription.BasicPitchTranscriber | None = None,
    transcribe_reference: bool = True,
    stft_resolutions: Sequence[tuple[int, int, int]] | None = None,
    sample_rate: int = DEFAULT_FEATURES.sample_rate,
) -> dict[str, float]:
    """Computes the evaluation columns over ``songs`` (see the module docstring).

    Args:
      songs: per-song inputs; a list or a generator.
      embedders: open embedders (callers own and close them), e.g. ``get_embedder('musicnn')``.
      transcriber: enables the transcription rows (songs need ``reference_notes``).
      transcribe_reference: also transcribe the real audio for the "GT" ceiling rows.
      stft_resolutions: MR-STFT (fft, hop, window) triples; None for the vocoder's default.
      sample_rate: rate of all audio.

    Returns:
      A flat dict of floats; rows whose inputs were never given are absent.
    """
    means = _Mean()
    gaussians: dict[str, tuple[frechet.StreamingGaussian, frechet.StreamingGaussian]] = {
        e.name: (frechet.StreamingGaussian(e.dim), frechet.StreamingGaussian(e.dim))
        for e in embedders
    }
    total = len(songs) if isinstance(songs, Sequence) else None
    start = last_log = time.monotonic()
    count = 0
    for song in songs:
        reference = np.asarray(song.reference_audio, np.float32)
        # Drop the generated tail beyond the real audio (§11.9).
        predicted = np.asarray(song.predicted_audio, np.float32)[: len(reference)]
        values: dict[str, float] = {}
        for embedder in embedders:
            target_frames = embedder.embed(reference, sample_rate)
            predicted_frames = embedder.embed(predicted, sample_rate)
            values[f"{embedder.name}_distance"] = frechet.mean_frame_distance(
                target_frames, predicted_frames
            )
            gaussians[embedder.name][0].update(target_frames)
            gaussians[embedder.name][1].update(predicted_frames)
        if transcriber is not None and song.reference_notes is not None:
            sources = {"Model": predicted}
            if transcribe_reference:
                sources["GT"] = reference
            # Both rows score against the notes of the real audio's time span (§11.9).
            end_seconds = len(reference) / sample_rate
            for prefix, audio in sources.items():
                values.update(transcription.song_transcription_scores(
                    transcriber, song.reference_notes, audio, prefix=prefix,
                    sample_rate=sample_rate, end_seconds=end_seconds,
                ))
        if song.predicted_mel is not None and song.reference_mel is not None:
            values.update(spectral_metrics.mel_distances(song.predicted_mel, song.reference_mel))
        values["mr_stft"] = spectral_metrics.multi_resolution_stft(
            predicted, reference, stft_resolutions
        )
        means.add(values)
        count += 1
        now = time.monotonic()
        if now - last_log > _LOG_EVERY_SECONDS or count == total:
            last_log = now
            rate = count / max(now - start, 1e-9)
            eta = f", ETA {(total - count) / rate:.0f} s" if total else ""
            of_total = f"/{total}" if total else ""
            logging.info("evaluated %d%s songs (%.2f songs/s%s)", count, of_total, rate, eta)
    if count == 0:
        raise ValueError("evaluate_songs got no songs")
    results = means.result()
    for name, (target_gaussian, predicted_gaussian) in gaussians.items():
        results[f"{name}_frechet"] = frechet.gaussian_frechet_distance(
            target_gaussian, predicted_gaussian
        )
    results["examples_count"] = float(count)
    return results


class PredictionTimer:
    """Accumulates prediction wall time against the audio time produced (spec §8.2 model_timing).

    Usage::

        timer = PredictionTimer()
        with timer.measure(audio_seconds=5.12):
            mel = jax.block_until_ready(model.predict(params, batch, rng))
        timer.summary()  # {'prediction_seconds_per_chunk': ..., ...per_audio_second': ...}

    JAX dispatches asynchronously: block on the result inside the ``with`` (or use ``call``),
    or the time measured is only the dispatch.
    """

    def __init__(self):
        self.seconds = 0.0
        self.audio_seconds = 0.0
        self.chunks = 0

    @contextlib.contextmanager
    def measure(self, audio_seconds: float) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds += time.perf_counter() - start
        self.audio_seconds += audio_seconds
        self.chunks += 1

    def call(self, fn: Callable[..., Any], *args: Any, audio_seconds: float, **kwargs: Any) -> Any:
        """Runs ``fn(*args, **kwargs)``, waits for its arrays, and records the time."""
        import jax

        with self.measure(audio_seconds):
            result = jax.block_until_ready(fn(*args, **kwargs))
        return result

    def summary(self) -> dict[str, float]:
        if self.chunks == 0:
            raise ValueError("PredictionTimer has measured nothing")
        return {
            "prediction_seconds_per_chunk": self.seconds / self.chunks,
            "prediction_seconds_per_audio_second": self.seconds / max(self.audio_seconds, 1e-12),
        }
