"""The paper's evaluation columns over a set of songs, and prediction timing (spec §8.2).

``evaluate_songs`` takes one ``SongEvaluation`` per song (real audio, synthesized audio, input
notes, and optionally predicted and real log-mel) and returns one flat dict:

===========================  =============================================================
``{embedder}_distance``      mean over songs of the mean frame embedding distance (§8.2)
``{embedder}_frechet``       Frechet distance of all real vs all synthesized frames (§8.2)
``{embedder}_frechet_inf``   the same with its small-sample bias extrapolated away (FD-inf)
``Model onset F1`` ...       transcription of the synthesized audio vs the input notes
``GT onset F1`` ...          transcription of the real audio: the ceiling
``mel_l1``, ``mel_l2``       unscaled log-mel distances (spectral_metrics.py)
``mr_stft``                  multi-resolution STFT distance, the vocoder's loss function
``examples_count``           number of songs
===========================  =============================================================

With ``minutes``, every metric that can be sliced in time (``SongMetric.for_slice``) is also
computed over the 5.12-s chunk of each of those minutes (``minutes.py``, the original's
``{task}_{m}minute`` keys, §8.4): ``mel_l1_1minute``, ``musicnn_frechet_2minute`` ... A metric's
``columns`` say which of its columns have such per-minute variants (``Column.per_minute``).

Songs are processed one at a time (statistics are streamed), so a generator of songs keeps
memory small; FD-inf keeps every embedding frame (dim x 4 bytes each: 100 hours of musicnn frames
at 200-d are under 100 MB). The synthesized audio
is cut to the real audio's length first: the original scored the generated tail beyond the end
of the real audio (§11.9).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from music_spectrogram_diffusion.evaluation import frechet
from music_spectrogram_diffusion.evaluation import minutes as minutes_lib
from music_spectrogram_diffusion.evaluation import spectral_metrics
from music_spectrogram_diffusion.evaluation import transcription
from music_spectrogram_diffusion.evaluation.embedders import Embedder
from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig

_LOG_EVERY_SECONDS = 30.0
# FD-inf draws its subsets with this seed: the same frames always give the same value.
FD_INFINITY_SEED = 0


@dataclasses.dataclass(frozen=True)
class SongEvaluation:
    """What one song contributes to the metrics. All audio is mono at ``sample_rate``."""

    reference_audio: np.ndarray  # [samples] real audio (raw targets, not vocoded)
    predicted_audio: np.ndarray  # [samples] synthesized audio
    reference_notes: Any = None  # NoteSequence | PrettyMIDI | transcription.NoteArrays
    predicted_mel: np.ndarray | None = None  # [frames, mels] unscaled log-mel
    reference_mel: np.ndarray | None = None  # [frames, mels] unscaled log-mel
    song_id: str = ""


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of the comparison table: its header, the metric key it shows, its digits."""

    header: str
    key: str
    decimals: int = 3
    plot: bool = True  # also a panel of metrics_vs_step.png (and of metrics_vs_minute.png)
    per_minute: bool = False  # results also hold minute_key(key, m) for the per-minute chunks
    optional: bool = False  # left out of the table when no row has a value
    # Wall-clock measurements: shown in their own table, apart from the metrics, which the same
    # seed and config reproduce exactly while timings vary with the machine's load.
    timing: bool = False
    note: str = ""  # what a timing column measures, printed with its table


class SongMetric(Protocol):
    """A metric over a set of songs: per-song values (averaged) plus whole-set values.

    ``update`` sees each song once, with the synthesized audio already cut to the real
    audio's length; ``result`` returns the values that need every song (e.g. a Frechet
    distance). Keys are what the metric's ``columns`` name. ``for_slice`` returns a fresh metric
    of the same kind for one time slice of every song (the per-minute chunks), or None when the
    metric has no meaning on a slice.
    """

    def update(self, song: SongEvaluation, predicted: np.ndarray, reference: np.ndarray
               ) -> dict[str, float]: ...

    def result(self) -> dict[str, float]: ...

    def for_slice(self) -> SongMetric | None: ...


class EmbeddingMetric:
    """Mean frame embedding distance per song and the Frechet distance of all frames (§8.2),
    plus FD-inf (``frechet.frechet_distance_infinity``) when ``frechet_infinity``.

    FD-inf needs at least 4 x dim frames per side; with fewer it is left out of the results
    (a warning says why) rather than reported as a number nobody should trust.
    """

    def __init__(self, embedder: Embedder, sample_rate: int, *, frechet_infinity: bool = True):
        self.embedder = embedder
        self.sample_rate = sample_rate
        self.frechet_infinity = frechet_infinity
        self._target = frechet.StreamingGaussian(embedder.dim)
        self._predicted = frechet.StreamingGaussian(embedder.dim)
        # Frames kept for FD-inf's subsets: [frames, dim] float32 per song.
        self._frames: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])

    @staticmethod
    def columns(name: str) -> tuple[Column, ...]:
        return (Column(f"{name} dist.", f"{name}_distance", per_minute=True),
                Column(f"{name} FD", f"{name}_frechet", per_minute=True),
                Column(f"{name} FD-inf", f"{name}_frechet_inf", optional=True))

    def update(self, song, predicted, reference):
        target_frames = self.embedder.embed(reference, self.sample_rate)
        predicted_frames = self.embedder.embed(predicted, self.sample_rate)
        self._target.update(target_frames)
        self._predicted.update(predicted_frames)
        if self.frechet_infinity:
            self._frames[0].append(np.asarray(target_frames, np.float32))
            self._frames[1].append(np.asarray(predicted_frames, np.float32))
        return {f"{self.embedder.name}_distance":
                frechet.mean_frame_distance(target_frames, predicted_frames)}

    def result(self):
        name = self.embedder.name
        values = {f"{name}_frechet": frechet.gaussian_frechet_distance(self._target,
                                                                       self._predicted)}
        if self.frechet_infinity and self._frames[0]:
            try:
                values[f"{name}_frechet_inf"] = frechet.frechet_distance_infinity(
                    np.concatenate(self._frames[0]), np.concatenate(self._frames[1]),
                    seed=FD_INFINITY_SEED, diagonal=self._target.diagonal).value
            except frechet.FrechetError as e:
                logging.warning("%s FD-inf not reported: %s", name, e)
        return values

    def for_slice(self):
        # A 5.12-s chunk per song has far too few frames for FD-inf's fit.
        return EmbeddingMetric(self.embedder, self.sample_rate, frechet_infinity=False)


class TranscriptionMetric:
    """Transcription F1 of the synthesized ("Model") and the real ("GT") audio (§8.2, §8.3)."""

    F1_KEY = "onset + offset F1"  # program-agnostic analogue of the paper's column

    def __init__(self, transcriber: transcription.BasicPitchTranscriber, sample_rate: int, *,
                 transcribe_reference: bool = True):
        self.transcriber = transcriber
        self.sample_rate = sample_rate
        self.transcribe_reference = transcribe_reference

    @classmethod
    def columns(cls) -> tuple[Column, ...]:
        return (Column("F1 Model", f"Model {cls.F1_KEY}", per_minute=True),
                Column("F1 GT", f"GT {cls.F1_KEY}", plot=False, per_minute=True))

    def update(self, song, predicted, reference):
        if song.reference_notes is None:
            return {}
        sources = {"Model": predicted}
        if self.transcribe_reference:
            sources["GT"] = reference
        # Both rows score against the notes of the real audio's time span (§11.9).
        end_seconds = len(reference) / self.sample_rate
        values: dict[str, float] = {}
        for prefix, audio in sources.items():
            values.update(transcription.song_transcription_scores(
                self.transcriber, song.reference_notes, audio, prefix=prefix,
                sample_rate=self.sample_rate, end_seconds=end_seconds))
        return values

    def result(self):
        return {}

    def for_slice(self):
        return TranscriptionMetric(self.transcriber, self.sample_rate,
                                   transcribe_reference=self.transcribe_reference)


class MelMetric:
    """Unscaled log-mel L1/L2 between the predicted and the real spectrogram."""

    @staticmethod
    def columns() -> tuple[Column, ...]:
        return (Column("mel L1", "mel_l1", per_minute=True),)

    def update(self, song, predicted, reference):
        if song.predicted_mel is None or song.reference_mel is None:
            return {}
        return spectral_metrics.mel_distances(song.predicted_mel, song.reference_mel)

    def result(self):
        return {}

    def for_slice(self):
        return MelMetric()


class StftMetric:
    """Multi-resolution STFT distance of the audio, the vocoder's loss function."""

    def __init__(self, resolutions: Sequence[tuple[int, int, int]] | None = None):
        self.resolutions = resolutions

    @staticmethod
    def columns() -> tuple[Column, ...]:
        return (Column("MR-STFT", "mr_stft", per_minute=True),)

    def update(self, song, predicted, reference):
        return {"mr_stft": spectral_metrics.multi_resolution_stft(predicted, reference,
                                                                  self.resolutions)}

    def result(self):
        return {}

    def for_slice(self):
        return StftMetric(self.resolutions)


TIMING_COLUMNS = (Column(
    "pred s / audio s", "prediction_seconds_per_audio_second", plot=False, timing=True,
    note="pred s / audio s is model wall time per second of audio, the first segment of each "
         "checkpoint excluded as it includes compilation, as the original's timing (spec §7)"),)


def table_columns(embedders: Sequence[str], *, transcribe: bool = True) -> list[Column]:
    """The comparison table's columns, in order: what each metric declares, then timing.

    A new metric adds its class above and its ``columns()`` here; nothing else changes.
    """
    columns: list[Column] = []
    for spec in embedders:
        columns += EmbeddingMetric.columns(spec.partition("=")[0])
    if transcribe:
        columns += TranscriptionMetric.columns()
    columns += [*MelMetric.columns(), *StftMetric.columns(), *TIMING_COLUMNS]
    return columns


def default_metrics(
    *,
    embedders: Sequence[Embedder] = (),
    transcriber: transcription.BasicPitchTranscriber | None = None,
    transcribe_reference: bool = True,
    stft_resolutions: Sequence[tuple[int, int, int]] | None = None,
    sample_rate: int = DEFAULT_FEATURES.sample_rate,
) -> list[SongMetric]:
    """The paper's metrics (see the module docstring) for the given embedders/transcriber."""
    metrics: list[SongMetric] = [EmbeddingMetric(e, sample_rate) for e in embedders]
    if transcriber is not None:
        metrics.append(TranscriptionMetric(transcriber, sample_rate,
                                           transcribe_reference=transcribe_reference))
    return [*metrics, MelMetric(), StftMetric(stft_resolutions)]


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
    metrics: Sequence[SongMetric] | None = None,
    minutes: Sequence[int] = (),
    features: FeatureConfig = DEFAULT_FEATURES,
) -> dict[str, float]:
    """Computes the evaluation columns over ``songs`` (see the module docstring).

    Args:
      songs: per-song inputs; a list or a generator.
      embedders: open embedders (callers own and close them), e.g. ``get_embedder('musicnn')``.
      transcriber: enables the transcription rows (songs need ``reference_notes``).
      transcribe_reference: also transcribe the real audio for the "GT" ceiling rows.
      stft_resolutions: MR-STFT (fft, hop, window) triples; None for the vocoder's default.
      sample_rate: rate of all audio.
      metrics: the metrics to compute instead of ``default_metrics`` of the arguments above.
      minutes: also compute every sliceable metric over the 5.12-s chunk of each of these
        minutes (``minutes.minute_chunk``), over the songs whose real audio covers it; keys get
        ``minutes.minute_key``'s suffix, ``examples_count_{m}minute`` counts those songs.
      features: the frame and segment geometry of the chunks (and of the log-mel given).

    Returns:
      A flat dict of floats; rows whose inputs were never given are absent.

    Raises:
      ValueError: no songs, or ``features`` at another sample rate than ``sample_rate``.
    """
    if metrics is None:
        metrics = default_metrics(embedders=embedders, transcriber=transcriber,
                                  transcribe_reference=transcribe_reference,
                                  stft_resolutions=stft_resolutions, sample_rate=sample_rate)
    if minutes and features.sample_rate != sample_rate:
        raise ValueError(f"features are at {features.sample_rate} Hz but the audio at "
                         f"{sample_rate} Hz")
    chunks = [minutes_lib.minute_chunk(m, features) for m in dict.fromkeys(minutes)]
    # One fresh set of metrics per chunk: whole-set values (FD) are per minute, as the original.
    sliced = {chunk.minute: [m for m in (metric.for_slice() for metric in metrics) if m is not None]
              for chunk in chunks}
    means = _Mean()
    total = len(songs) if isinstance(songs, Sequence) else None
    start = last_log = time.monotonic()
    count = 0
    for song in songs:
        reference = np.asarray(song.reference_audio, np.float32)
        # Drop the generated tail beyond the real audio (§11.9).
        predicted = np.asarray(song.predicted_audio, np.float32)[: len(reference)]
        for metric in metrics:
            means.add(metric.update(song, predicted, reference))
        trimmed = dataclasses.replace(song, reference_audio=reference, predicted_audio=predicted)
        for chunk in chunks:
            part = minutes_lib.slice_song(trimmed, chunk)
            if part is None:
                continue
            values = {"examples_count": 1.0}
            for metric in sliced[chunk.minute]:
                values.update(metric.update(part, part.predicted_audio, part.reference_audio))
            means.add({minutes_lib.minute_key(k, chunk.minute): v for k, v in values.items()})
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
    for metric in metrics:
        results.update(metric.result())
    for minute, minute_metrics in sliced.items():
        if minutes_lib.minute_key("examples_count", minute) not in results:
            continue  # no song reaches this minute
        results[minutes_lib.minute_key("examples_count", minute)] = float(means.counts[
            minutes_lib.minute_key("examples_count", minute)])
        for metric in minute_metrics:
            results.update({minutes_lib.minute_key(k, minute): v
                            for k, v in metric.result().items()})
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
