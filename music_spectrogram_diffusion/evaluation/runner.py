"""msd-evaluate's library side: the paper's comparison table over checkpoints (spec §8.4, §7).

``run_evaluation`` evaluates, on the songs of a full-song task (or a split of the embedded
dataset):

  * **baselines**: the ground-truth audio itself, and the ground truth's log-mel through each
    vocoder (the vocoder ceiling; the original's ``gt_raw`` and ``gt_encoded`` sources, §8.4);
  * **models**: every selected checkpoint of every model directory. Each song is synthesized
    up to the original's 10-minute cap (``max_seconds``, 600 s by default, rounded up to whole
    5.12 s segments; None = whole songs) by
    ``inference.synthesis.Synthesizer``: segments chained through the context encoder, the
    previous prediction as context (§7), one sampling key per segment (§11.8 fixed).

Every row gets the metrics of ``metrics.evaluate_songs``: embedding distance and Frechet
distance per embedder, transcription F1 of the row's audio ("Model") and of the real audio
("GT"), mel L1/L2, MR-STFT, plus prediction seconds per audio second; FD-inf where there are
enough frames; and, when the excerpt holds at least two of the original's per-minute chunks
(``minutes.minutes_within``: always at the 10-minute default), every metric again on the chunk of
each minute (``mel_l1_1minute`` ...), which ``report`` tabulates and plots as drift.

Layout of ``out_dir``::

  rows/<row>.json                   one finished row (written atomically; RESUME skips it)
  cache/<embedder>/<sha>.npy        embeddings by audio hash (the ground truth is embedded once)
  cache/transcription/<sha>.npz     transcriptions by audio hash (the GT ceiling once)
  examples/<row>/<song>.{wav,png}   a few synthesized songs and spectrogram comparisons
  tensorboard/<model>/              scalars and a spectrogram image at each checkpoint's step
  results.json, results.md, metrics_vs_step.png      written by ``report.write_report``
  metrics_vs_minute.png             the drift plot, when there are per-minute values

A row is skipped when its file exists with the same evaluation fingerprint (songs, excerpt
length, sampler, vocoder, embedders, seed); changing any of them recomputes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from music_spectrogram_diffusion.audio.vocoders.base import Vocoder
from music_spectrogram_diffusion.diffusion.samplers import SamplerConfig
from music_spectrogram_diffusion.evaluation import metrics as metrics_lib
from music_spectrogram_diffusion.evaluation import minutes as minutes_lib
from music_spectrogram_diffusion.evaluation.embedders import Embedder
from music_spectrogram_diffusion.evaluation.references import (  # re-exported for callers
    CachedTranscriber,
    EvaluationError,
    Reference,
    Song,
    list_songs,
    load_references,
    run_test_task,
    open_embedders,
)
from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig
from music_spectrogram_diffusion.file_io import write_file_atomic, write_json_atomic

logger = logging.getLogger(__name__)

CHECKPOINT_CHOICES = ("all", "latest")
# The sampler the main job and msd-evaluate use by default on CPU instead of the original's
# 1000-step DDPM (spec §5.4, §11.15): DPM-Solver++(2M) with its first-order final step, 20
# steps on the quadratic time grid, guidance w = 2 (§11.14). Chosen with
# scripts/benchmark_samplers.py (README, "Samplers"): on the quadratic grid every solver's
# 20-step synthesis is the closest to 1000-step DDPM's (mel L1 0.086 between them, against
# 0.125 on the uniform grid), within 1% of DDPM's mel L1 and musicnn distance to the real
# audio; the solvers tie there, and DPM-Solver++(2M) is 2x closer than DDIM to the exact ODE.
FAST_SAMPLER = SamplerConfig(name="dpm++", num_steps=20, guidance_weight=2.0,
                             time_grid="quadratic_t")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What an evaluation computes (see ``fingerprint`` for what makes a stored row stale).

    Attributes:
      checkpoints: 'all', 'latest', or a comma-separated list of steps ('0,2000').
      embedders: embedder names ('musicnn', 'logmel', 'vggish=/path/to/savedmodel', ...).
      vocoder: the vocoder of the model rows: 'griffin-lim' or a vocoder directory.
      baseline_vocoders: further vocoders with a ground-truth ceiling row.
      sampler: diffusion sampler (ignored by the autoregressive model).
      seed: synthesis seed (segment i samples with ``segment_rng(seed, i)``).
      max_songs: evaluate the first N songs only.
      max_seconds: evaluate the first ``max_seconds`` of each song, rounded up to whole
        segments; the default is the original's 10-minute cap (§8.4: 600 s, cut at 604.16 s, the
        end of the segment holding minute 10); None = whole songs, however long.
      transcribe: compute the transcription F1 columns (basic-pitch).
      num_example_wavs: songs per row whose audio and spectrogram PNG are kept.
    """

    checkpoints: str = "all"
    embedders: tuple[str, ...] = ("musicnn",)
    vocoder: str = "griffin-lim"
    baseline_vocoders: tuple[str, ...] = ()
    sampler: SamplerConfig = FAST_SAMPLER
    seed: int = 0
    max_songs: int | None = None
    max_seconds: float | None = minutes_lib.PROTOCOL_MAX_SECONDS
    transcribe: bool = True
    num_example_wavs: int = 2

    def __post_init__(self):
        parse_checkpoint_selection(self.checkpoints)
        object.__setattr__(self, "embedders", tuple(self.embedders))
        object.__setattr__(self, "baseline_vocoders", tuple(self.baseline_vocoders))
        if self.max_songs is not None and self.max_songs < 1:
            raise EvaluationError(f"max_songs must be >= 1, got {self.max_songs}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise EvaluationError(f"max_seconds must be > 0, got {self.max_seconds}")

    @property
    def minutes(self) -> tuple[int, ...]:
        """The minutes whose 5.12-s chunk is scored on its own (``minutes.minutes_within``)."""
        return minutes_lib.minutes_within(self.max_seconds)

    def fingerprint(self, songs: Sequence[Song]) -> str:
        """Hash of everything that changes a row's numbers (not the checkpoint selection)."""
        payload = dataclasses.asdict(self)
        # Not here: the checkpoint choice and example count change no number; the vocoder is
        # part of each row's own fingerprint (``row_fingerprint``), so adding a baseline
        # vocoder does not recompute the model rows.
        for name in ("checkpoints", "num_example_wavs", "vocoder", "baseline_vocoders"):
            payload.pop(name)
        payload["songs"] = [s.id for s in songs]
        # The files' contents, not only their names: re-preparing a dataset (other audio or
        # MIDI under the same names) makes the stored rows stale.
        payload["song_files"] = [[_file_digest(s.midi_path), _file_digest(s.audio_path)]
                                 for s in songs]
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _file_digest(path: str) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB blocks), or 'missing'."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        return "missing"
    return digest.hexdigest()


def parse_checkpoint_selection(selection: str) -> str | tuple[int, ...]:
    """'all' | 'latest' | a tuple of steps from '0,1000'."""
    if selection in CHECKPOINT_CHOICES:
        return selection
    try:
        steps = tuple(int(s) for s in selection.split(",") if s.strip())
    except ValueError:
        steps = ()
    if not steps or min(steps) < 0:
        raise EvaluationError(f"checkpoints={selection!r}; valid values: 'all', 'latest', or "
                              "comma-separated steps such as '0,2000'")
    return steps


def select_checkpoints(model_dir: str, selection: str) -> list[int]:
    """Steps of ``model_dir``'s finished checkpoints that ``selection`` asks for, ascending."""
    from music_spectrogram_diffusion.training import checkpoints as ckpt_lib

    available = ckpt_lib.list_checkpoints(model_dir)
    if not available:
        raise EvaluationError(f"{model_dir}: no finished checkpoint_<step> directories")
    wanted = parse_checkpoint_selection(selection)
    if wanted == "all":
        return available
    if wanted == "latest":
        return available[-1:]
    missing = sorted(set(wanted) - set(available))
    if missing:
        raise EvaluationError(f"{model_dir}: no checkpoint for steps {missing}; available: "
                              f"{available}")
    return sorted(set(wanted))



def slugify(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


@dataclasses.dataclass(frozen=True)
class RowSpec:
    """One row of the table: a baseline or one checkpoint of one model."""

    key: str  # file name under rows/
    label: str  # what the table shows
    kind: str  # 'ground_truth' | 'vocoder' | 'model'
    vocoder: str | None = None
    model_dir: str | None = None
    model_label: str | None = None
    step: int | None = None


def plan_rows(models: dict[str, str], config: EvalConfig) -> list[RowSpec]:
    """Baseline rows first, then every selected checkpoint of every model (label -> dir)."""
    rows = [RowSpec("ground_truth", "Ground truth (real audio)", "ground_truth")]
    for vocoder in dict.fromkeys((config.vocoder, *config.baseline_vocoders)):
        name = vocoder_label(vocoder)
        rows.append(RowSpec(f"vocoder-{slugify(name)}", f"Ground truth -> {name}", "vocoder",
                            vocoder=vocoder))
    for label, model_dir in models.items():
        for step in select_checkpoints(model_dir, config.checkpoints):
            rows.append(RowSpec(f"{slugify(label)}-step_{step}", f"{label} @ {step}", "model",
                                vocoder=config.vocoder, model_dir=os.path.abspath(model_dir),
                                model_label=label, step=step))
    return rows


def row_fingerprint(row: RowSpec, config_fingerprint: str) -> str:
    """The config's fingerprint plus the state of the row's vocoder: a trained vocoder that
    gained checkpoints since a row was computed makes the row stale."""
    from music_spectrogram_diffusion.training import checkpoints as ckpt_lib

    state = str(row.vocoder)
    if row.vocoder is not None and os.path.isdir(row.vocoder):
        state = f"{os.path.abspath(row.vocoder)}:{ckpt_lib.list_checkpoints(row.vocoder)}"
    return hashlib.sha256(f"{config_fingerprint}|{state}".encode()).hexdigest()[:16]


def vocoder_label(spec: str) -> str:
    """'griffin-lim', or a vocoder directory's name with its kind: 'vocoder (vocos)'."""
    from music_spectrogram_diffusion.audio.vocoders import checkpoints as vocoder_checkpoints
    from music_spectrogram_diffusion.audio.vocoders.base import GRIFFIN_LIM

    if spec == GRIFFIN_LIM:
        return spec
    name = os.path.basename(os.path.normpath(spec))
    try:
        kind = vocoder_checkpoints.read_vocoder_config(spec)["generator_kind"]
    except vocoder_checkpoints.VocoderCheckpointError:
        return name
    return f"{name} ({kind})"


def vocode_reference(vocoder: Vocoder, log_mel: np.ndarray, features: FeatureConfig) -> np.ndarray:
    """The ground-truth log-mel through a vocoder, 256 frames at a time (one compile)."""
    from music_spectrogram_diffusion.audio.vocoders.evaluation import vocode_in_segments

    return vocode_in_segments(vocoder, log_mel, features.segment_frames)


def synthesize_references(synthesizer: Any, references: Sequence[Reference], *,
                          show_progress: bool = False) -> Iterator[tuple[Reference, Any]]:
    """Synthesizes each reference song (its first ``max_segments`` segments) with one
    ``inference.synthesis.Synthesizer``; yields (reference, ``SynthesisResult``) per song."""
    for reference in references:
        prepared = synthesizer.prepare(reference.song.midi_path, name=reference.song.id)
        if reference.max_segments is not None and len(prepared.segments) > reference.max_segments:
            prepared = dataclasses.replace(
                prepared, segments=prepared.segments[: reference.max_segments],
                total_seconds=reference.max_segments * synthesizer.features.segment_seconds)
        yield reference, synthesizer.synthesize_prepared(prepared, show_progress=show_progress)


def _model_songs(row: RowSpec, references: Sequence[Reference], vocoder: Vocoder,
                 config: EvalConfig, features: FeatureConfig, timing: dict[str, float],
                 show_progress: bool) -> Iterator[metrics_lib.SongEvaluation]:
    """Synthesizes every reference song with one checkpoint (see the module docstring)."""
    from music_spectrogram_diffusion.inference import loading, synthesis

    from music_spectrogram_diffusion.training import checkpoints as ckpt_lib

    loaded = loading.load_trained_model(ckpt_lib.checkpoint_path(row.model_dir, row.step))
    synthesizer = synthesis.Synthesizer(
        loaded.model, loaded.params, vocoder, features=features, vocab=loaded.vocab,
        config=synthesis.SynthesisConfig(sampler=config.sampler, seed=config.seed))
    first = True
    for reference, result in synthesize_references(synthesizer, references,
                                                   show_progress=show_progress):
        # Spec §7 timing: the first segment of a checkpoint includes compilation; left out.
        seconds = result.segment_seconds[1:] if first else result.segment_seconds
        timing["prediction_seconds"] += float(sum(seconds))
        timing["predicted_segments"] += len(seconds)
        timing["vocoder_seconds"] += result.vocoder_seconds
        timing["audio_seconds"] += result.audio_seconds
        first = False
        yield model_song_evaluation(reference, result)


def model_song_evaluation(reference: Reference, result: Any) -> metrics_lib.SongEvaluation:
    """A synthesized song (a ``SynthesisResult``) scored against its real audio and log-mel."""
    return metrics_lib.SongEvaluation(
        reference_audio=reference.audio, predicted_audio=result.audio,
        reference_notes=reference.notes, predicted_mel=result.log_mel,
        reference_mel=reference.log_mel, song_id=reference.song.id)


def _baseline_songs(row: RowSpec, references: Sequence[Reference], vocoders: dict[str, Vocoder],
                    features: FeatureConfig
                    ) -> Iterator[metrics_lib.SongEvaluation]:
    from music_spectrogram_diffusion.audio import spectrograms

    for reference in references:
        audio, mel = reference.audio, reference.log_mel
        if row.kind == "vocoder":
            audio = vocode_reference(vocoders[row.vocoder], reference.log_mel, features)
            # mel L1 of a vocoder row: the vocoded audio's log-mel against the real one.
            mel = spectrograms.compute_log_mel_numpy(audio, features)
        yield metrics_lib.SongEvaluation(
            reference_audio=reference.audio, predicted_audio=audio,
            reference_notes=reference.notes, predicted_mel=mel,
            reference_mel=reference.log_mel, song_id=reference.song.id)


def _save_examples(out_dir: str, row: RowSpec, song: metrics_lib.SongEvaluation,
                   features: FeatureConfig) -> str:
    """Writes <row>/<song>.wav and a labelled ground-truth-above-row spectrogram PNG; returns
    the PNG."""
    from music_spectrogram_diffusion.audio import audio_io
    from music_spectrogram_diffusion.evaluation import report
    from music_spectrogram_diffusion.inference import files

    base = os.path.join(out_dir, "examples", row.key, slugify(song.song_id))
    os.makedirs(os.path.dirname(base), exist_ok=True)
    audio_io.write_wav(base + ".wav", song.predicted_audio, features.sample_rate)
    png = files.figure_png(report.example_figure(
        song.reference_mel, song.predicted_mel, song_id=song.song_id, row_label=row.label,
        features=features))
    write_file_atomic(base + ".png", lambda f: f.write(png))
    return base + ".png"


def _evaluate_row(row: RowSpec, references: Sequence[Reference], vocoders: dict[str, Vocoder],
                  embedders: Sequence[Embedder], transcriber: CachedTranscriber | None,
                  config: EvalConfig, out_dir: str, features: FeatureConfig,
                  show_progress: bool) -> dict[str, Any]:
    """Metrics, timing and example files of one row."""
    timing = dict.fromkeys(("prediction_seconds", "predicted_segments", "vocoder_seconds",
                            "audio_seconds"), 0.0)
    if row.kind == "model":
        evaluations = _model_songs(row, references, vocoders[row.vocoder], config, features,
                                   timing, show_progress)
    else:
        evaluations = _baseline_songs(row, references, vocoders, features)
    examples: list[str] = []

    def songs() -> Iterator[metrics_lib.SongEvaluation]:
        for i, song in enumerate(evaluations):
            if i < config.num_example_wavs:
                examples.append(_save_examples(out_dir, row, song, features))
            yield song

    start = time.perf_counter()
    values = metrics_lib.evaluate_songs(songs(), embedders=embedders, transcriber=transcriber,
                                        sample_rate=features.sample_rate,
                                        minutes=minutes_lib.minutes_within(config.max_seconds,
                                                                           features),
                                        features=features)
    if row.kind == "model" and timing["audio_seconds"] > 0:
        # Per audio second of the predicted segments (the compile segment excluded).
        predicted_audio = timing["predicted_segments"] * features.segment_seconds
        if predicted_audio > 0:
            values["prediction_seconds_per_audio_second"] = (
                timing["prediction_seconds"] / predicted_audio)
        values["vocoder_seconds_per_audio_second"] = (
            timing["vocoder_seconds"] / timing["audio_seconds"])
    return {**dataclasses.asdict(row), "metrics": values, "timing": timing,
            "examples": [os.path.relpath(p, out_dir) for p in examples],
            "wall_seconds": time.perf_counter() - start}


@dataclasses.dataclass(frozen=True)
class EvaluationResult:
    rows: list[dict[str, Any]]  # in table order: baselines, then models by step
    out_dir: str
    report_paths: dict[str, str]


def run_evaluation(
    models: dict[str, str],
    songs: Sequence[Song],
    *,
    out_dir: str,
    config: EvalConfig = EvalConfig(),
    features: FeatureConfig = DEFAULT_FEATURES,
    show_progress: bool = True,
    footnotes: Sequence[str] = (),
) -> EvaluationResult:
    """Evaluates baselines and checkpoints on ``songs`` and writes the report (module docstring).

    Args:
      models: table label -> training MODEL_DIR (config.gin + checkpoint_<step>/).
      songs: ``list_songs(...)``; cut to ``config.max_songs``.
      out_dir: results directory; finished rows found there are reused (resume).
      config: what to compute.
      show_progress: a tqdm bar per song while synthesizing.
      footnotes: extra lines for the table (e.g. how the main job trained the models).

    Raises:
      EvaluationError: no songs or a model directory without checkpoints.
      inference.loading.CheckpointLoadError, vocoders.VocoderCheckpointError: unloadable inputs.
    """
    from music_spectrogram_diffusion.audio.vocoders.base import load_vocoder
    from music_spectrogram_diffusion.evaluation import report
    from music_spectrogram_diffusion.training import summaries

    songs = list(songs)[: config.max_songs]
    if not songs:
        raise EvaluationError("no songs to evaluate")
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    rows = plan_rows(models, config)
    fingerprints = {row.key: row_fingerprint(row, config.fingerprint(songs)) for row in rows}
    done: dict[str, dict[str, Any]] = {}
    for row in rows:
        path = os.path.join(out_dir, "rows", row.key + ".json")
        try:
            with open(path, encoding="utf-8") as f:
                stored = json.load(f)
        except (OSError, ValueError):
            continue
        if stored.get("fingerprint") == fingerprints[row.key]:
            done[row.key] = stored
        else:
            logger.warning("%s was computed with another evaluation config; recomputing", path)
    pending = [row for row in rows if row.key not in done]
    logger.info("evaluation: %d rows, %d already done in %s, %d songs", len(rows), len(done),
                out_dir, len(songs))
    if pending:
        references = load_references(songs, config.max_seconds, features)
        vocoders = {spec: load_vocoder(spec, features=features)
                    for spec in dict.fromkeys(r.vocoder for r in pending if r.vocoder)}
        embedders = open_embedders(config.embedders, os.path.join(out_dir, "cache"))
        transcriber = (CachedTranscriber(os.path.join(out_dir, "cache", "transcription"))
                       if config.transcribe else None)
        writers: dict[str, summaries.SummaryWriter] = {}
        start = time.monotonic()
        try:
            for i, row in enumerate(pending):
                logger.info("[%d/%d] evaluating %s", i + 1, len(pending), row.label)
                result = _evaluate_row(row, references, vocoders, embedders, transcriber,
                                       config, out_dir, features, show_progress)
                result["fingerprint"] = fingerprints[row.key]
                write_json_atomic(os.path.join(out_dir, "rows", row.key + ".json"), result)
                done[row.key] = result
                if row.kind == "model":
                    _log_tensorboard(writers, out_dir, row, result, features)
                elapsed = time.monotonic() - start
                logger.info("[%d/%d] %s done: mel L1 %.3f; %.0f s elapsed, ETA %.0f s",
                            i + 1, len(pending), row.label,
                            result["metrics"].get("mel_l1", float("nan")), elapsed,
                            elapsed / (i + 1) * (len(pending) - i - 1))
        finally:
            for embedder in embedders:
                embedder.close()
            for writer in writers.values():
                writer.close()
    ordered = [done[row.key] for row in rows]
    paths = report.write_report(out_dir, ordered, config=config, songs=songs,
                                footnotes=footnotes)
    return EvaluationResult(rows=ordered, out_dir=out_dir, report_paths=paths)


def _log_tensorboard(writers: dict, out_dir: str, row: RowSpec, result: dict[str, Any],
                     features: FeatureConfig) -> None:
    """Scalars (and the first example's spectrogram) at the checkpoint's step."""
    from music_spectrogram_diffusion.training import summaries

    name = slugify(row.model_label or row.label)
    if name not in writers:
        writers[name] = summaries.SummaryWriter(os.path.join(out_dir, "tensorboard", name))
    writer = writers[name]
    writer.scalars(row.step, {f"full_song/{k}": v for k, v in result["metrics"].items()})
    if result["examples"]:
        import matplotlib.image

        path = os.path.join(out_dir, result["examples"][0])
        with open(path, "rb") as f:
            png = f.read()
        height, width = matplotlib.image.imread(path).shape[:2]
        writer.image(row.step, "full_song/target_vs_synthesized", png, height, width)
    writer.flush()
