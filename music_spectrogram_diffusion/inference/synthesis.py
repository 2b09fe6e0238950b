"""Whole-MIDI synthesis: segments chained through the context encoder, then a vocoder (spec §7).

A MIDI file is tokenized into consecutive 5.12 s segments. Each segment is predicted with the
previous segment's prediction as its context (mask off for the first segment), the segments'
log-mel frames are concatenated, vocoded, and trimmed to the MIDI's length plus a release tail.

Differences from the original, on purpose:
  * every segment draws its noise from ``segment_rng(seed, i)``: the original used seed 0 for
    every segment, so all segments shared the same initial and step noise (spec §11.8);
  * the release tail after the last note is synthesized from token segments with no events
    (tie state ended, spec §11.4 fix) instead of being the padded end of the last segment;
  * the output is trimmed to the MIDI's end plus ``release_seconds`` (spec §11.9: the original
    kept the generated tail beyond the real length);
  * MIDI files longer than ``max_midi_seconds`` and segments with too many notes are handled
    up front (refused, or truncated with a warning) instead of crashing mid-song (§11.6).

``Synthesizer`` keeps one model's compiled functions across files: every model's ``predict`` is
jitted by the model itself (the diffusion model per sampler and note-token bucket); the vocoder
compiles once per song length in segments.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator
from typing import Callable

import jax
import numpy as np

from music_spectrogram_diffusion.audio.vocoders.base import Vocoder
from music_spectrogram_diffusion.data import midi_io, note_sequences, tokenizer
from music_spectrogram_diffusion.data.vocabularies import (
    DEFAULT_VOCABULARY,
    VocabularyConfig,
    num_embeddings,
)
from music_spectrogram_diffusion.diffusion.samplers import SamplerConfig
from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig
from music_spectrogram_diffusion.models.contract import Params, SpectrogramModel, make_batch
from music_spectrogram_diffusion.models.diffusion_model import segment_rng

logger = logging.getLogger(__name__)

PredictFn = Callable[[Params, dict, jax.Array], jax.Array]  # (params, batch, rng) -> [B, T, mels]
ProgressFn = Callable[[int, float], None]  # (segment index, wall seconds of that segment)


class SynthesisError(ValueError):
    """A MIDI file or set-up that cannot be synthesized; the message names the file."""


@dataclasses.dataclass(frozen=True)
class SynthesisConfig:
    """How a whole MIDI file is synthesized.

    Attributes:
      sampler: diffusion sampler, steps and guidance weight (ignored by autoregressive models).
      seed: user seed; segment i samples with ``segment_rng(seed, i)``.
      release_seconds: audio kept after the last note-off, for releases and reverb.
      max_midi_seconds: longer MIDI files are refused (a 10-minute default keeps a typo from
        starting hours of sampling).
      always_mask_context: never show the previous segment to the context encoder (the
        original's ``--always_mask_context`` ablation).
      slakh_programs: map programs onto the Slakh classes (spec §9.4); needed for models
        trained on Slakh, such as the released checkpoints.
      overflow: a segment with more than 2047 note tokens: 'truncate' (drop trailing events,
        logged) or 'error' (refuse the file). The original crashed (spec §11.6).
    """

    sampler: SamplerConfig = SamplerConfig()
    seed: int = 0
    release_seconds: float = 1.0
    max_midi_seconds: float = 600.0
    always_mask_context: bool = False
    slakh_programs: bool = False
    overflow: str = "truncate"

    def __post_init__(self):
        if self.release_seconds < 0:
            raise ValueError(f"release_seconds must be >= 0, got {self.release_seconds}")
        if self.max_midi_seconds <= 0:
            raise ValueError(f"max_midi_seconds must be > 0, got {self.max_midi_seconds}")
        if self.overflow not in ("truncate", "error"):
            raise ValueError(f"overflow={self.overflow!r}; valid values: ['truncate', 'error']")


@dataclasses.dataclass(frozen=True)
class SynthesisResult:
    """Audio and spectrogram of one synthesized MIDI file."""

    audio: np.ndarray  # [num_samples] float32 at sample_rate
    log_mel: np.ndarray  # [frames, mels] float32, unscaled log-mel, trimmed like the audio
    sample_rate: int
    midi_seconds: float  # end time of the last note
    segment_seconds: tuple[float, ...]  # model wall time per segment (the first compiles)
    vocoder_seconds: float  # wall time of the vocoder

    @property
    def audio_seconds(self) -> float:
        return len(self.audio) / self.sample_rate

    @property
    def spectrogram_seconds(self) -> float:
        """Model wall time of all segments."""
        return float(sum(self.segment_seconds))

    @property
    def real_time_factor(self) -> float:
        """Audio seconds produced per wall second, model and vocoder together (> 1: faster
        than real time)."""
        return self.audio_seconds / max(self.spectrogram_seconds + self.vocoder_seconds, 1e-9)


# Log-mel frames of overlap on each side of a streamed vocoder window (1.28 s at 50 frames/s):
# beyond the receptive field of the trained vocoders, so chunks join without seams.
STREAM_CONTEXT_FRAMES = 64


@dataclasses.dataclass(frozen=True)
class StreamChunk:
    """Audio of one streamed step: what became final after segment ``segment_index``.

    ``audio`` continues the previous chunk at ``start_sample`` (it may be empty while the
    vocoder's overlap waits for the next segment). ``result`` is set on the last chunk only.
    """

    segment_index: int
    num_segments: int
    start_sample: int
    audio: np.ndarray  # [n] float32
    wall_seconds: float  # since the stream started: model and vocoder
    sample_rate: int
    result: SynthesisResult | None = None

    @property
    def end_sample(self) -> int:
        return self.start_sample + len(self.audio)

    @property
    def real_time_factor(self) -> float:
        """Audio seconds streamed so far per wall second (> 1: faster than real time)."""
        return self.end_sample / self.sample_rate / max(self.wall_seconds, 1e-9)


@dataclasses.dataclass(frozen=True)
class PreparedMidi:
    """A MIDI file read, checked and tokenized: everything before the model runs."""

    name: str
    midi_seconds: float  # end of the last note
    total_seconds: float  # midi_seconds + release
    segments: tuple[tokenizer.Segment, ...]


def prepare_midi(
    midi: str | os.PathLike | bytes,
    *,
    name: str | None = None,
    config: SynthesisConfig = SynthesisConfig(),
    vocab: VocabularyConfig = DEFAULT_VOCABULARY,
    features: FeatureConfig = DEFAULT_FEATURES,
) -> PreparedMidi:
    """Reads, checks and tokenizes a MIDI file (cheap; no model needed).

    The segments cover the notes plus ``config.release_seconds``.

    Raises:
      midi_io.MidiError: missing, empty or corrupt file.
      note_sequences.NoteSequenceError: notes outside MIDI's ranges.
      SynthesisError: no notes, longer than ``max_midi_seconds``, or (overflow='error')
        a segment with too many notes.
    """
    if isinstance(midi, (bytes, bytearray)):
        label = name or "<midi bytes>"
    else:
        midi = os.fspath(midi)
        label = name or midi
    ns = midi_io.read_midi(midi, name=label)
    ns = note_sequences.preprocess_note_sequence(
        ns, steps_per_second=vocab.steps_per_second, slakh_programs=config.slakh_programs,
        name=label)
    if not ns.notes:
        raise SynthesisError(f"{label}: MIDI file contains no notes to synthesize")
    midi_seconds = float(ns.total_time)
    if midi_seconds > config.max_midi_seconds:
        raise SynthesisError(
            f"{label}: MIDI file is {midi_seconds:.1f} s long, over the limit of "
            f"{config.max_midi_seconds:g} s (raise max_midi_seconds to allow it)")
    total_seconds = midi_seconds + config.release_seconds
    try:
        segments = tokenizer.tokenize_note_sequence(
            ns, vocab=vocab, segment_frames=features.segment_frames,
            num_frames=tokenizer.num_frames_for_duration(total_seconds, features),
            overflow=config.overflow, features=features)
    except tokenizer.TokenOverflowError as e:
        raise SynthesisError(f"{label}: {e}") from e
    return PreparedMidi(label, midi_seconds, total_seconds, tuple(segments))


def make_predict_fn(model: SpectrogramModel, config: SynthesisConfig) -> PredictFn:
    """``predict(params, batch, rng)`` for one model and sampling config.

    Every model accepts the sampler (the autoregressive baseline ignores it) and jits its own
    prediction, so the compiled program is reused across segments and files.
    """
    return lambda params, batch, rng: model.predict(params, batch, rng, sampler=config.sampler)


def _check_model_features(model: SpectrogramModel, features: FeatureConfig) -> None:
    network = model.network_config
    expected = {"target_frames": features.segment_frames, "num_mels": features.num_mels,
                "context_frames": features.context_frames,
                "note_tokens_length": features.max_note_tokens}
    wrong = {k: (getattr(network, k), v) for k, v in expected.items()
             if getattr(network, k) != v}
    if wrong:
        raise SynthesisError(
            f"the model was built for other features than synthesis uses; (model, features) = "
            f"{wrong}")


class Synthesizer:
    """Synthesizes MIDI files with one model, reusing its compiled functions across files.

    Args:
      model, params: a model object and its parameters (``loading.load_trained_model``).
      vocoder: log-mel -> audio, built for ``features``.
      config: sampling and limits.
      vocab, features: the token vocabulary and representation the model was trained on.
      predict_fn: replaces ``make_predict_fn(model, config)``, e.g. to record or batch the
        per-segment calls; called as ``predict_fn(params, batch, rng)``.
    """

    def __init__(
        self,
        model: SpectrogramModel,
        params: Params,
        vocoder: Vocoder,
        *,
        config: SynthesisConfig = SynthesisConfig(),
        vocab: VocabularyConfig = DEFAULT_VOCABULARY,
        features: FeatureConfig = DEFAULT_FEATURES,
        predict_fn: PredictFn | None = None,
    ):
        if vocoder.features != features:
            raise SynthesisError(
                f"vocoder {vocoder.name!r} was built for other features than the model's "
                f"({vocoder.features} != {features})")
        _check_model_features(model, features)
        if num_embeddings(vocab) > model.network_config.vocab_size:
            raise SynthesisError(
                f"the vocabulary ({vocab}) needs {num_embeddings(vocab)} token embedding rows but "
                f"the model has {model.network_config.vocab_size}: tokenize with the vocabulary "
                "the model was trained on (inference.loading.LoadedModel.vocab)")
        self.model = model
        self.params = params
        self.vocoder = vocoder
        self.config = config
        self.vocab = vocab
        self.features = features
        self.predict_fn = predict_fn or make_predict_fn(model, config)

    def prepare(self, midi: str | os.PathLike | bytes, *, name: str | None = None
                ) -> PreparedMidi:
        """``prepare_midi`` with this synthesizer's config, vocabulary and features."""
        return prepare_midi(midi, name=name, config=self.config, vocab=self.vocab,
                            features=self.features)

    def segment_batch(
        self,
        segment: tokenizer.Segment,
        context_frames: np.ndarray,  # [1, context_frames, mels] unscaled log-mel
        context_mask: np.ndarray,  # [1, context_frames]
    ) -> dict[str, np.ndarray]:
        """The model batch (one example) of one segment."""
        tokens = tokenizer.pad_tokens(segment.tokens, self.features.max_note_tokens)[None]
        return make_batch(tokens, network_config=self.model.network_config,
                          context_frames=context_frames, context_mask=context_mask)

    def iter_segment_predictions(
        self,
        segments: tuple[tokenizer.Segment, ...] | list[tokenizer.Segment],
    ) -> Iterator[tuple[np.ndarray, float]]:
        """Predicts consecutive segments, each with the previous prediction as context.

        Yields, per segment as soon as it is sampled, ([segment_frames, mels] unscaled log-mel,
        wall seconds of that segment).
        """
        f = self.features
        context = np.zeros((1, f.context_frames, f.num_mels), np.float32)
        context_mask = np.zeros((1, f.context_frames), np.float32)
        for i, segment in enumerate(segments):
            start = time.perf_counter()
            batch = self.segment_batch(segment, context, context_mask)
            prediction = self.predict_fn(self.params, batch, segment_rng(self.config.seed, i))
            prediction = np.asarray(jax.device_get(prediction), np.float32)  # [1, T, mels]
            seconds = time.perf_counter() - start
            # The next segment sees this whole prediction with every frame marked valid, as in
            # the original (spec §7); the last 256 frames if a segment were ever longer.
            context = prediction[:, -f.context_frames:]
            if not self.config.always_mask_context:
                context_mask = np.ones((1, f.context_frames), np.float32)
            yield prediction[0], seconds

    def predict_segments(
        self,
        segments: tuple[tokenizer.Segment, ...] | list[tokenizer.Segment],
        progress: ProgressFn | None = None,
    ) -> tuple[np.ndarray, tuple[float, ...]]:
        """All of ``iter_segment_predictions`` at once.

        Returns:
          ([num_segments * segment_frames, mels] unscaled log-mel, wall seconds per segment).
        """
        frames, seconds = [], []
        for i, (prediction, wall) in enumerate(self.iter_segment_predictions(segments)):
            frames.append(prediction)
            seconds.append(wall)
            if progress is not None:
                progress(i, wall)
        return np.concatenate(frames, axis=0), tuple(seconds)

    def synthesize_prepared(self, prepared: PreparedMidi, *, show_progress: bool = False
                            ) -> SynthesisResult:
        """Runs the model over a prepared file's segments, vocodes and trims."""
        f = self.features
        bar = None
        if show_progress:
            from tqdm import tqdm

            bar = tqdm(total=len(prepared.segments), unit="segment", desc=prepared.name,
                       leave=True)

        def progress(i: int, seconds: float) -> None:
            if bar is not None:
                # Real-time factor of this segment: audio seconds per wall second.
                bar.set_postfix(rtf=f"{f.segment_seconds / max(seconds, 1e-9):.3g}")
                bar.update(1)

        try:
            log_mel, segment_seconds = self.predict_segments(prepared.segments, progress)
        finally:
            if bar is not None:
                bar.close()
        start = time.perf_counter()
        audio = self._vocode(log_mel)
        return self._result(prepared, log_mel, audio, segment_seconds,
                            time.perf_counter() - start)

    def _result(self, prepared: PreparedMidi, log_mel: np.ndarray, audio: np.ndarray,
                segment_seconds: tuple[float, ...], vocoder_seconds: float) -> SynthesisResult:
        """The result trimmed to the notes plus the release tail."""
        f = self.features
        num_samples = min(len(audio), int(round(prepared.total_seconds * f.sample_rate)))
        kept_frames = min(len(log_mel), -(-num_samples // f.hop_length))
        return SynthesisResult(
            audio=audio[:num_samples], log_mel=log_mel[:kept_frames], sample_rate=f.sample_rate,
            midi_seconds=prepared.midi_seconds, segment_seconds=segment_seconds,
            vocoder_seconds=vocoder_seconds)

    def _vocode(self, log_mel: np.ndarray) -> np.ndarray:  # [frames, mels] -> [frames * hop]
        return np.asarray(jax.device_get(self.vocoder.vocode(log_mel[None])), np.float32)[0]

    def stream_prepared(self, prepared: PreparedMidi, *,
                        context_frames: int = STREAM_CONTEXT_FRAMES) -> Iterator[StreamChunk]:
        """Synthesizes a prepared file segment by segment, yielding audio as it is made.

        After each segment is sampled, the frames whose audio no longer depends on frames not
        yet sampled are vocoded with ``context_frames`` of log-mel on each side (the overlap),
        and their audio is yielded; consecutive chunks tile the song without gaps. The last
        chunk also carries the ``SynthesisResult`` of the whole file, whose audio is vocoded in
        one pass exactly as ``synthesize_prepared`` does: the same seed gives the same final
        audio, streamed or not. The streamed chunks equal it up to the vocoder's behaviour at
        window edges (``context_frames`` beyond its receptive field: float rounding only).
        """
        if context_frames < 0:
            raise ValueError(f"context_frames must be >= 0, got {context_frames}")
        f = self.features
        hop = f.hop_length
        num_samples_total = int(round(prepared.total_seconds * f.sample_rate))
        start_time = time.perf_counter()
        frames: list[np.ndarray] = []
        segment_seconds: list[float] = []
        vocoder_seconds = 0.0
        emitted = 0  # frames whose audio has been yielded
        total = 0  # frames sampled
        num_segments = len(prepared.segments)
        for i, (prediction, wall) in enumerate(
                self.iter_segment_predictions(prepared.segments)):
            frames.append(prediction)
            segment_seconds.append(wall)
            total += len(prediction)
            last = i == num_segments - 1
            # Frames up to `stable` no longer depend on unsampled ones (given the overlap).
            stable = total if last else max(emitted, total - context_frames)
            audio = np.zeros((0,), np.float32)
            start_sample = min(emitted * hop, num_samples_total)
            if stable > emitted:
                # The window: `context_frames` before the new frames, up to the newest frame
                # (which is at least `context_frames` past `stable`), cut from the last segments.
                window_start = max(0, emitted - context_frames)
                first = window_start // len(prediction)
                window = np.concatenate(frames[first:], axis=0)[
                    window_start - first * len(prediction):]
                vocode_start = time.perf_counter()
                window_audio = self._vocode(window)
                vocoder_seconds += time.perf_counter() - vocode_start
                offset = (emitted - window_start) * hop
                audio = window_audio[offset:offset + (stable - emitted) * hop]
                audio = audio[:max(0, num_samples_total - start_sample)]
                emitted = stable
            result = None
            if last:
                log_mel = np.concatenate(frames, axis=0)
                vocode_start = time.perf_counter()
                full_audio = self._vocode(log_mel)
                vocoder_seconds += time.perf_counter() - vocode_start
                result = self._result(prepared, log_mel, full_audio, tuple(segment_seconds),
                                      vocoder_seconds)
            yield StreamChunk(segment_index=i, num_segments=num_segments,
                              start_sample=start_sample, audio=audio,
                              wall_seconds=time.perf_counter() - start_time,
                              sample_rate=f.sample_rate, result=result)

    def stream(self, midi: str | bytes, *, name: str | None = None,
               context_frames: int = STREAM_CONTEXT_FRAMES) -> Iterator[StreamChunk]:
        """MIDI path or bytes -> audio chunks as segments are sampled (``stream_prepared``)."""
        return self.stream_prepared(self.prepare(midi, name=name), context_frames=context_frames)

    def synthesize(self, midi: str | bytes, *, name: str | None = None,
                   show_progress: bool = False) -> SynthesisResult:
        """MIDI path or bytes -> audio. See the module docstring for the steps."""
        return self.synthesize_prepared(self.prepare(midi, name=name),
                                        show_progress=show_progress)


def synthesize(
    midi: str | bytes,
    model: SpectrogramModel,
    params: Params,
    vocoder: Vocoder,
    *,
    config: SynthesisConfig = SynthesisConfig(),
    vocab: VocabularyConfig = DEFAULT_VOCABULARY,
    features: FeatureConfig = DEFAULT_FEATURES,
) -> np.ndarray:  # [num_samples] float32
    """One-call API: MIDI path or bytes -> 16 kHz audio. Use ``Synthesizer`` for many files."""
    synthesizer = Synthesizer(model, params, vocoder, config=config, vocab=vocab,
                              features=features)
    return synthesizer.synthesize(midi).audio
