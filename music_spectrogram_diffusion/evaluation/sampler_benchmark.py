"""Sampler quality against step count on a trained checkpoint (``scripts/benchmark_samplers.py``).

For every sampler variant (a sampler of ``diffusion.samplers.SAMPLERS`` on a time grid, the
multistep solvers also without their first-order final step) at each step count, the test songs
are synthesized whole (segments chained through the context encoder, Griffin-Lim vocoder, as the
main job's model rows) and scored twice with ``metrics.evaluate_songs``:

- against the real audio: mel L1, MR-STFT and the musicnn distance, the main job's columns;
- against the 1000-step DDPM synthesis of the same songs with the same seed (the original
  sampler, spec §5.4): how far a fast sampler is from what the paper's sampler would give.
  A second 1000-step DDPM draw with another seed ("DDPM floor") shows how far two samples of
  the paper's sampler are from each other, i.e. the smallest distance a different sampler can
  be expected to reach.

Wall time per segment is the median over the segments of a row, the first one left out (it
includes compilation). Rows are stored under ``out_dir/rows`` and the DDPM reference audio under
``out_dir/reference``, keyed by a fingerprint of checkpoint, songs and settings, so a rerun only
computes what is missing. ``prepare_checkpoint`` trains the checkpoint when none is given: the
main job's tiny context diffusion model (same trainer and gin files) for a fixed step count.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from music_spectrogram_diffusion.diffusion.samplers import SamplerConfig
from music_spectrogram_diffusion.evaluation import metrics as metrics_lib
from music_spectrogram_diffusion.evaluation import report, runner
from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig
from music_spectrogram_diffusion.file_io import write_file_atomic, write_json_atomic

logger = logging.getLogger(__name__)

DEFAULT_STEPS = (4, 8, 10, 20, 50)
# "sampler[:time_grid][:no-lof]"; the first dpm++ row is the sampler before issue #13.
DEFAULT_VARIANTS = (
    "ddpm", "ddim", "ddim:quadratic_t", "ddim:uniform_lambda",
    "dpm++:uniform_t:no-lof", "dpm++", "dpm++:quadratic_t", "dpm++:uniform_lambda",
    "dpm++3m", "dpm++3m:quadratic_t", "dpm++3m:uniform_lambda",
    "unipc", "unipc:quadratic_t", "unipc:uniform_lambda",
)
REFERENCE_SUFFIX = "_vs_ddpm"


def parse_variant(spec: str, *, num_steps: int = 20, guidance_weight: float = 2.0) -> SamplerConfig:
    """'dpm++:uniform_lambda' or 'dpm++:uniform_t:no-lof' -> a SamplerConfig (ValueError if bad)."""
    name, *rest = spec.split(":")
    lower_order_final = "no-lof" not in rest
    grids = [part for part in rest if part != "no-lof"]
    if len(grids) > 1:
        raise ValueError(f"sampler variant {spec!r}: expected 'sampler[:time_grid][:no-lof]'")
    return SamplerConfig(name=name, num_steps=num_steps, guidance_weight=guidance_weight,
                         time_grid=grids[0] if grids else "uniform_t",
                         lower_order_final=lower_order_final)


@dataclasses.dataclass(frozen=True)
class SamplerBenchmarkConfig:
    """What the benchmark runs.

    Attributes:
      variants: sampler variants, 'sampler[:time_grid][:no-lof]' (see ``parse_variant``).
      steps: step counts of every variant.
      reference_steps: steps of the DDPM reference (the paper's 1000).
      guidance_weight: classifier-free guidance weight of every sampler.
      max_songs, max_seconds: test songs and the excerpt of each (the main job's 4 x 20.48 s).
      embedders: embedders of the distance columns.
      seed: synthesis seed of every row; ``floor_seed`` is the second DDPM draw (None: none).
    """

    variants: tuple[str, ...] = DEFAULT_VARIANTS
    steps: tuple[int, ...] = DEFAULT_STEPS
    reference_steps: int = 1000
    guidance_weight: float = runner.FAST_SAMPLER.guidance_weight
    max_songs: int = 4
    max_seconds: float = 20.48
    embedders: tuple[str, ...] = ("musicnn",)
    seed: int = 0
    floor_seed: int | None = 1

    def __post_init__(self):
        for name in ("variants", "steps", "embedders"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.variants or not self.steps or min(self.steps) < 1:
            raise ValueError(f"need at least one variant and step counts >= 1, got "
                             f"{self.variants} and {self.steps}")
        self.samplers()  # raises for a bad variant
        if self.floor_seed == self.seed:
            raise ValueError("floor_seed must differ from seed (it is a second, independent draw)")

    @property
    def reference(self) -> SamplerConfig:
        return SamplerConfig(name="ddpm", num_steps=self.reference_steps,
                             guidance_weight=self.guidance_weight)

    def samplers(self) -> list[SamplerConfig]:
        return [parse_variant(v, num_steps=n, guidance_weight=self.guidance_weight)
                for v in self.variants for n in self.steps]


def prepare_checkpoint(cache_dir: str, *, data_dir: str, train_steps: int, seed: int = 0,
                       num_workers: int = 1, progress: bool = True) -> str:
    """Builds (or reuses) the embedded dataset in ``data_dir`` and trains (or reuses) the main
    job's tiny context diffusion model for ``train_steps`` in ``cache_dir/model``.

    Same dataset size, trainer, gin files and batch as ``msd-main``; no deadline, so the model
    always ends at ``train_steps`` (a run that was cut off resumes). Returns the model dir.
    """
    from music_spectrogram_diffusion.data import embedded_dataset
    from music_spectrogram_diffusion.jobs import main_job

    embedded_dataset.build_embedded_dataset(
        data_dir, num_pieces=embedded_dataset.DEFAULT_NUM_PIECES, seed=seed,
        num_workers=num_workers, progress=progress)
    run = next(r for r in main_job.MODEL_RUNS if r.name == "diffusion_context")
    config = dataclasses.replace(main_job.MainJobConfig.for_budget(), train_steps=train_steps,
                                 checkpoint_period=train_steps, train_minutes=None, seed=seed)
    model_dir = os.path.join(os.path.abspath(cache_dir), "model")
    logger.info("benchmark checkpoint: %s (%s, %d steps)", model_dir, run.label, train_steps)
    main_job.train_model(run, model_dir=model_dir, data_dir=os.path.abspath(data_dir),
                         config=config)
    return model_dir


def _fingerprint(checkpoint: str, songs: Sequence[runner.Song], config: SamplerBenchmarkConfig,
                 sampler: SamplerConfig, seed: int) -> str:
    payload = {"checkpoint": os.path.abspath(checkpoint), "songs": [s.id for s in songs],
               "max_seconds": config.max_seconds, "embedders": config.embedders,
               "sampler": dataclasses.asdict(sampler), "seed": seed,
               # The 'vs DDPM' columns depend on the reference too.
               "reference": [config.reference_steps, config.seed]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


class _Benchmark:
    """One checkpoint, its songs and open embedders; computes (or reloads) one row at a time."""

    def __init__(self, checkpoint: str, songs: Sequence[runner.Song], out_dir: str,
                 config: SamplerBenchmarkConfig, features: FeatureConfig, show_progress: bool):
        self.checkpoint, self.songs, self.out_dir = checkpoint, list(songs), out_dir
        self.config, self.features, self.show_progress = config, features, show_progress
        self._loaded = self._vocoder = self._references = None
        self.embedders = runner.open_embedders(config.embedders, os.path.join(out_dir, "cache"))

    def close(self) -> None:
        for embedder in self.embedders:
            embedder.close()

    def references(self) -> list[runner.Reference]:
        if self._references is None:
            self._references = runner.load_references(self.songs, self.config.max_seconds,
                                                      self.features)
        return self._references

    def _synthesizer(self, sampler: SamplerConfig, seed: int) -> Any:
        from music_spectrogram_diffusion.audio.vocoders.base import load_vocoder
        from music_spectrogram_diffusion.inference import loading, synthesis

        if self._loaded is None:
            self._loaded = loading.load_trained_model(self.checkpoint)
            self._vocoder = load_vocoder("griffin-lim", features=self.features)
        return synthesis.Synthesizer(
            self._loaded.model, self._loaded.params, self._vocoder, features=self.features,
            vocab=self._loaded.vocab, config=synthesis.SynthesisConfig(sampler=sampler, seed=seed))

    def _row_path(self, label: str, seed: int) -> str:
        return os.path.join(self.out_dir, "rows", f"{runner.slugify(label)}-seed_{seed}.json")

    def row(self, sampler: SamplerConfig, seed: int, *, kind: str, label: str,
            against: Sequence[metrics_lib.SongEvaluation] | None = None
            ) -> tuple[dict[str, Any], list[metrics_lib.SongEvaluation]]:
        """The row of ``sampler`` (stored, or computed and stored) and its synthesized songs
        (only when computed, or for the reference, whose audio is kept on disk)."""
        fingerprint = _fingerprint(self.checkpoint, self.songs, self.config, sampler, seed)
        path = self._row_path(label, seed)
        stored = _read_json(path)
        if stored is not None and stored.get("fingerprint") == fingerprint:
            if kind != "reference":
                return stored, []
            songs = self._load_reference_songs(fingerprint)
            if songs is not None:
                return stored, songs
        start = time.perf_counter()
        synthesizer = self._synthesizer(sampler, seed)
        songs, seconds = [], []
        for reference, result in runner.synthesize_references(
                synthesizer, self.references(), show_progress=self.show_progress):
            songs.append(runner.model_song_evaluation(reference, result))
            seconds += result.segment_seconds
        values = metrics_lib.evaluate_songs(songs, embedders=self.embedders,
                                            sample_rate=self.features.sample_rate)
        if against is not None:
            versus = [dataclasses.replace(song, reference_audio=ref.predicted_audio,
                                          reference_mel=ref.predicted_mel)
                      for song, ref in zip(songs, against)]
            values.update({key + REFERENCE_SUFFIX: value for key, value in metrics_lib.evaluate_songs(
                versus, embedders=self.embedders, sample_rate=self.features.sample_rate).items()
                if key != "examples_count"})
        # The first segment compiles the sampler; the median of the others is its cost.
        values["seconds_per_segment"] = statistics.median(seconds[1:] or seconds)
        row = {"label": label, "kind": kind, "sampler": dataclasses.asdict(sampler),
               "seed": seed, "metrics": values, "fingerprint": fingerprint,
               "wall_seconds": time.perf_counter() - start}
        if kind == "reference":
            self._save_reference_songs(fingerprint, songs)
        write_json_atomic(path, row)
        return row, songs

    def _reference_path(self, fingerprint: str, song_id: str) -> str:
        return os.path.join(self.out_dir, "reference", fingerprint, runner.slugify(song_id) + ".npz")

    def _save_reference_songs(self, fingerprint: str, songs: list[metrics_lib.SongEvaluation]) -> None:
        for song in songs:
            write_file_atomic(self._reference_path(fingerprint, song.song_id), lambda f, s=song:
                              np.savez(f, audio=s.predicted_audio, log_mel=s.predicted_mel))

    def _load_reference_songs(self, fingerprint: str) -> list[metrics_lib.SongEvaluation] | None:
        songs = []
        for reference in self.references():
            path = self._reference_path(fingerprint, reference.song.id)
            if not os.path.exists(path):
                return None
            with np.load(path) as data:
                songs.append(metrics_lib.SongEvaluation(
                    reference_audio=reference.audio, predicted_audio=data["audio"],
                    reference_notes=reference.notes, predicted_mel=data["log_mel"],
                    reference_mel=reference.log_mel, song_id=reference.song.id))
        return songs


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_sampler_benchmark(
    checkpoint: str,
    songs: Sequence[runner.Song],
    *,
    out_dir: str,
    config: SamplerBenchmarkConfig = SamplerBenchmarkConfig(),
    features: FeatureConfig = DEFAULT_FEATURES,
    show_progress: bool = False,
    log: Callable[[str], None] = logger.info,
) -> dict[str, Any]:
    """Runs the benchmark (module docstring) on ``checkpoint`` (a checkpoint_<step> directory).

    Returns the JSON-able result: ``reference`` (DDPM), ``floor`` (DDPM, other seed, or None),
    ``rows`` (one per sampler variant and step count) and the settings.
    """
    import platform

    songs = list(songs)[: config.max_songs]
    if not songs:
        raise runner.EvaluationError("no songs to benchmark")
    out_dir = os.path.abspath(out_dir)
    bench = _Benchmark(checkpoint, songs, out_dir, config, features, show_progress)
    samplers = config.samplers()
    start = time.monotonic()
    try:
        log(f"DDPM reference ({config.reference_steps} steps) on {len(songs)} songs")
        reference, reference_songs = bench.row(config.reference, config.seed, kind="reference",
                                               label=f"DDPM {config.reference_steps} (reference)")
        floor = None
        if config.floor_seed is not None:
            log(f"DDPM floor: a second draw, seed {config.floor_seed}")
            floor, _ = bench.row(config.reference, config.floor_seed, kind="floor",
                                 label=f"DDPM {config.reference_steps}, seed {config.floor_seed}",
                                 against=reference_songs)
        rows = []
        for i, sampler in enumerate(samplers):
            row, _ = bench.row(sampler, config.seed, kind="sampler", label=sampler.label,
                               against=reference_songs)
            rows.append(row)
            elapsed = time.monotonic() - start
            log(f"[{i + 1}/{len(samplers)}] {sampler.label}: mel L1 "
                f"{row['metrics']['mel_l1']:.3f}, vs DDPM {row['metrics']['mel_l1' + REFERENCE_SUFFIX]:.3f}, "
                f"{row['metrics']['seconds_per_segment']:.2f} s/segment; {elapsed:.0f} s elapsed, "
                f"ETA {elapsed / (i + 1) * (len(samplers) - i - 1):.0f} s")
    finally:
        bench.close()
    return {"checkpoint": os.path.abspath(checkpoint), "songs": [s.id for s in songs],
            "config": dataclasses.asdict(config), "reference": reference, "floor": floor,
            "rows": rows, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "date": time.strftime("%Y-%m-%d")}


def _columns(embedders: Sequence[str]) -> list[metrics_lib.Column]:
    names = [spec.partition("=")[0] for spec in embedders]
    columns = [metrics_lib.Column("mel L1", "mel_l1"), metrics_lib.Column("MR-STFT", "mr_stft")]
    columns += [metrics_lib.Column(f"{n} dist.", f"{n}_distance") for n in names]
    columns += [metrics_lib.Column(f"{c.header} vs DDPM", c.key + REFERENCE_SUFFIX)
                for c in list(columns)]
    return columns + [metrics_lib.Column("s / segment", "seconds_per_segment", 2)]


def best_rows(result: dict[str, Any], key: str = "mel_l1" + REFERENCE_SUFFIX
              ) -> dict[int, dict[str, Any]]:
    """Per step count, the row with the lowest ``key``: by default the one closest to DDPM."""
    best: dict[int, dict[str, Any]] = {}
    for row in result["rows"]:
        steps = row["sampler"]["num_steps"]
        if steps not in best or row["metrics"][key] < best[steps]["metrics"][key]:
            best[steps] = row
    return best


def _percent(value: float, reference: float) -> str:
    return f"{100 * (value / reference - 1):+.1f}%"


def summary_lines(result: dict[str, Any]) -> list[str]:
    """Per step count: the variant closest to DDPM, and its metrics against the real audio in
    per cent of DDPM's; then the spread of all first-order-final variants against the real audio."""
    reference = result["reference"]["metrics"]
    names = [spec.partition("=")[0] for spec in result["config"]["embedders"]]
    floor = result["floor"]["metrics"] if result["floor"] else None
    lines = []
    for steps, row in sorted(best_rows(result).items()):
        m = row["metrics"]
        text = (f"closest to DDPM at {steps} steps: {row['label']}: mel L1 vs DDPM "
                f"{m['mel_l1' + REFERENCE_SUFFIX]:.3f}"
                + (f" (floor {floor['mel_l1' + REFERENCE_SUFFIX]:.3f})" if floor else "")
                + f"; vs real: mel L1 {m['mel_l1']:.3f} ({_percent(m['mel_l1'], reference['mel_l1'])})")
        for name in names:
            key = f"{name}_distance"
            text += f", {name} {m[key]:.3f} ({_percent(m[key], reference[key])})"
        lines.append(text)
    fixed = [row["metrics"]["mel_l1"] for row in result["rows"]
             if row["sampler"].get("lower_order_final", True)]
    lines.append(f"DDPM {result['config']['reference_steps']}: mel L1 {reference['mel_l1']:.3f}"
                 + (f" (seed {result['floor']['seed']}: {floor['mel_l1']:.3f})" if floor else "")
                 + f"; every variant with a first-order final step: {min(fixed):.3f} .. {max(fixed):.3f}")
    return lines


def format_table(result: dict[str, Any]) -> str:
    """The markdown table: reference, floor, then every variant and step count."""
    rows = [r for r in (result["reference"], result["floor"]) if r is not None] + result["rows"]
    config = result["config"]
    notes = [
        f"{len(result['songs'])} test songs of the embedded dataset, first {config['max_seconds']:g} s "
        f"each, guidance weight {config['guidance_weight']:g}, seed {config['seed']}, Griffin-Lim; "
        f"checkpoint {result['checkpoint']}.",
        "mel L1 / MR-STFT / distances: against the real audio; 'vs DDPM': against the "
        f"{config['reference_steps']}-step DDPM synthesis with the same seed (its second draw "
        "with another seed is the floor).",
        "no-lof: the multistep rule all the way (no first-order final step); s / segment: median "
        f"wall seconds per 5.12 s segment, compilation excluded ({result['machine']}).",
    ]
    return report.format_table(rows, _columns(config["embedders"]), notes)


_GRID_STYLES = {"uniform_t": "-", "quadratic_t": "--", "uniform_lambda": ":"}


def plot_quality_vs_steps(result: dict[str, Any], path: str) -> str:
    """Panels of each metric against steps (log x), vs real audio and vs DDPM; writes a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    columns = [c for c in _columns(result["config"]["embedders"]) if c.key != "seconds_per_segment"]
    half = len(columns) // 2
    fig, axes = plt.subplots(2, half, figsize=(4.8 * half, 7.5), squeeze=False)
    colors = dict(zip(dict.fromkeys(r["sampler"]["name"] for r in result["rows"]),
                      plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, column in zip(axes.flat, columns):
        variants: dict[str, list[tuple[int, float]]] = {}
        for row in result["rows"]:
            variants.setdefault(row["label"].rsplit(" ", 1)[0], []).append(
                (row["sampler"]["num_steps"], row["metrics"][column.key]))
        for label, points in variants.items():
            sampler = next(r["sampler"] for r in result["rows"] if r["label"].startswith(label + " "))
            ax.plot(*zip(*sorted(points)), label=label, color=colors[sampler["name"]],
                    linestyle=_GRID_STYLES[sampler["time_grid"]],
                    marker="x" if not sampler["lower_order_final"] else "o", markersize=4)
        # The no-lof rows can be far off; the axis fits the others and says what is above.
        values = [row["metrics"][column.key] for row in result["rows"]
                  if row["sampler"]["lower_order_final"]]
        above = [row["metrics"][column.key] for row in result["rows"]
                 if row["metrics"][column.key] > max(values)]
        if values and above:
            ax.set_ylim(top=max(values) + 0.15 * (max(values) - min(values) + 1e-9))
            ax.text(0.02, 0.96, f"off scale: no-lof up to {max(above):.3g}", transform=ax.transAxes,
                    fontsize=8, va="top")
        baseline = result["floor"] if column.key.endswith(REFERENCE_SUFFIX) else result["reference"]
        if baseline is not None and column.key in baseline["metrics"]:
            floor = baseline is result["floor"]
            ax.axhline(baseline["metrics"][column.key], color="black", linewidth=1.2,
                       linestyle="--" if floor else "-", label=baseline["label"])
        ax.set_xscale("log")
        ax.set_xticks(result["config"]["steps"], [str(s) for s in result["config"]["steps"]])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(column.header)
        ax.set_xlabel("sampler steps")
        ax.grid(alpha=0.3)
    legend: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    labels = list(legend)
    fig.legend(list(legend.values()), labels, loc="lower center", ncol=4, fontsize=8,
               frameon=False)
    fig.suptitle("Sampler quality against steps (top: vs real audio; bottom: vs 1000-step DDPM)")
    fig.tight_layout(rect=(0, 0.03 + 0.025 * (len(labels) // 4 + 1), 1, 0.96))
    write_file_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return path
