"""The comparison table, results.json, the metric-vs-step plot and the labelled example figures
of an evaluation run.

The table has the paper's rows and columns (Hawthorne et al. 2022, Table 1): ground-truth
audio; the ground truth through each vocoder (the vocoder ceiling); then every model and
checkpoint. Columns: per embedder the mean frame embedding distance and the Frechet distance,
transcription F1 of the row's audio ("Model") and of the real audio ("GT", the ceiling), mel L1,
MR-STFT, and prediction seconds per audio second, and FD-inf where enough frames allow it. The
paper's embeddings (VGGish, TRILL) and transcriber (MT3) cannot be downloaded here; which ones
were used is stated in the footnotes.

When the rows hold per-minute values (``minutes.py``: an excerpt of at least two minutes' chunks,
e.g. the 10-minute protocol default) results.md also gets one table per metric of each row by
minute, and ``metrics_vs_minute.png`` plots them: the drift of the context chain.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from music_spectrogram_diffusion.evaluation.metrics import Column, table_columns
from music_spectrogram_diffusion.evaluation.minutes import PROTOCOL_MINUTES, minute_key
from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig


def _cell(value: Any, decimals: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    # + 0.0 turns -0.0 into 0.0; rounding tiny negatives (a Frechet distance of -1e-9 from
    # floating-point error) then prints 0.000, not -0.000.
    return f"{round(value, decimals) + 0.0:.{decimals}f}"


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column],
                 footnotes: Sequence[str] = ()) -> str:
    """A markdown table of ``rows`` (dicts as written under rows/), then numbered footnotes,
    then the ``timing`` columns in a table of their own for the rows that have them (wall
    clock varies from run to run; the metrics table above does not).

    An ``optional`` column that no row has a value for is left out."""
    columns = [c for c in columns
               if not c.optional or any(c.key in row["metrics"] for row in rows)]
    metrics = [c for c in columns if not c.timing]
    timing = [c for c in columns if c.timing]
    lines = _table_lines(rows, metrics)
    if footnotes:
        lines.append("")
        lines += [f"{i}. {note}" for i, note in enumerate(footnotes, 1)]
    timed = [row for row in rows if any(c.key in row["metrics"] for c in timing)]
    if timing and timed:
        lines += ["", "Wall-clock timing (varies with the machine and its load; "
                      + "; ".join(c.note for c in timing if c.note) + "):", ""]
        lines += _table_lines(timed, timing)
    return "\n".join(lines) + "\n"


def _table_lines(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> list[str]:
    header = ["Row"] + [c.header for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["label"]] + [_cell(row["metrics"].get(c.key), c.decimals) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def minutes_present(rows: Sequence[dict[str, Any]], column: Column) -> list[int]:
    """The protocol minutes for which some row has ``column``'s per-minute value."""
    if not column.per_minute:
        return []
    return [m for m in PROTOCOL_MINUTES
            if any(minute_key(column.key, m) in row["metrics"] for row in rows)]


def format_minute_tables(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """Per plotted per-minute column with at least two minutes: a table of rows by minute
    (the chunk of minute m, as the original's ``{task}_{m}minute``); '' when there is none."""
    parts = []
    for column in columns:
        present = minutes_present(rows, column) if column.plot else []
        if len(present) < 2:
            continue
        header = ["Row"] + [f"{m} min" for m in present]
        lines = [f"### {column.header} by minute", "",
                 "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows:
            cells = [_cell(row["metrics"].get(minute_key(column.key, m)), column.decimals)
                     for m in present]
            lines.append("| " + " | ".join([row["label"], *cells]) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def standard_footnotes(config: Any, songs: Sequence[Any],
                       rows: Sequence[dict[str, Any]] = ()) -> list[str]:
    """What every reader of the table needs to know to interpret it."""
    from music_spectrogram_diffusion.evaluation import minutes

    sampler = config.sampler
    if config.max_seconds is None:
        excerpt = "whole songs"
    elif config.max_seconds == minutes.PROTOCOL_MAX_SECONDS:
        excerpt = ("the first 10 minutes of each song (the original's cap: the end of the "
                   "5.12 s segment holding minute 10)")
    else:
        excerpt = f"the first {config.max_seconds:g} s of each song (whole 5.12 s segments)"
    extra = []
    if any(key.endswith("_frechet_inf") for row in rows for key in row["metrics"]):
        extra.append("FD-inf: the Frechet distance extrapolated to infinitely many frames (fit "
                     "FD = FD-inf + slope / n over 15 seeded random subsets of n frames per side, "
                     "Chong & Forsyth 2020); '-' where there are fewer than 4 x dim frames.")
    if any(key.endswith("_1minute") for row in rows for key in row["metrics"]):
        extra.append("By minute: the metrics of the 5.12 s segment holding minute m of each song "
                     "long enough (the original's per-minute keys), Frechet distances over those "
                     "segments only; metrics_vs_minute.png plots them.")
    return [
        f"{len(songs)} songs ({', '.join(s.id for s in songs[:6])}"
        f"{', ...' if len(songs) > 6 else ''}), {excerpt}; each song synthesized segment by "
        "segment, the previous prediction as context (spec §7), seed "
        f"{config.seed} (segment i samples with fold_in(key(seed), i)).",
        f"Diffusion sampler: {sampler.name}, {sampler.num_steps} steps ({sampler.time_grid} "
        f"time grid), guidance weight "
        f"{sampler.guidance_weight:g} (a fast CPU sampler; the paper used 1000-step DDPM).",
        f"Model rows are vocoded with {config.vocoder}. mel L1 (natural-log units, both sides "
        "clipped to [ln 1e-5, 4]) compares the model's predicted log-mel with the real audio's; "
        "for vocoder rows it compares the log-mel of the vocoded audio.",
        "Embeddings: " + ", ".join(config.embedders) + " (the paper's VGGish/TRILL need TF-Hub "
        "downloads); FD = Frechet distance over all frames of all songs.",
        "Transcription F1: basic-pitch + mir_eval onset+offset F1, program-agnostic (the paper "
        "used MT3 with programs); GT = transcription of the real audio, the ceiling."
        if config.transcribe else "Transcription F1 not computed (--no_transcription).",
        *extra,
    ]


_BASELINE_STYLES = [dict(color=c, linestyle=ls) for ls in ("--", ":")
                    for c in ("black", "tab:gray", "tab:brown", "tab:olive")]


def example_figure(
    reference_mel: np.ndarray,  # [frames, mels] unscaled log-mel of the real audio
    predicted_mel: np.ndarray,  # [frames, mels] unscaled log-mel of the row's audio
    *,
    song_id: str,
    row_label: str,
    features: FeatureConfig = DEFAULT_FEATURES,
):
    """The ground truth's log-mel above the row's, labelled (time in s, mel bins, ln mel): the
    Figure examples/<row>/<song>.png shows next to the row's WAV."""
    from music_spectrogram_diffusion.inference import files

    frames = min(len(reference_mel), len(predicted_mel))
    return files.spectrograms_figure(
        [("ground truth (real audio)", reference_mel[:frames]), (row_label, predicted_mel[:frames])],
        title=f"{song_id}: log-mel spectrograms", features=features)


def plot_metrics_vs_step(rows: Sequence[dict[str, Any]], keys: Sequence[tuple[str, str]],
                         path: str) -> str | None:
    """One panel per metric: a line per model over checkpoint steps, baselines dashed; one
    legend for the figure names every model and baseline."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    models: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["kind"] == "model":
            models.setdefault(row["model_label"], []).append(row)
    keys = [(title, key) for title, key in keys
            if any(key in row["metrics"] for row in rows)]
    if not models or not keys:
        return None
    cols = min(3, len(keys))
    rows_n = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.5 * cols, 3.2 * rows_n), squeeze=False)
    for ax, (title, key) in zip(axes.flat, keys):
        for label, model_rows in models.items():
            points = sorted((r["step"], r["metrics"][key]) for r in model_rows
                            if key in r["metrics"])
            if points:
                ax.plot(*zip(*points), marker="o", label=label)
        baselines = [row for row in rows if row["kind"] != "model" and key in row["metrics"]]
        for row, style in zip(baselines, _BASELINE_STYLES * len(baselines)):
            ax.axhline(row["metrics"][key], linewidth=1.2, label=row["label"], **style)
        ax.set_title(title)
        ax.set_xlabel("checkpoint step")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    return _finish_figure(fig, axes, len(keys),
                          "Metrics of each checkpoint (lines: models; dashed: baselines)", path)


def plot_metrics_vs_minute(rows: Sequence[dict[str, Any]], columns: Sequence[Column],
                           path: str) -> str | None:
    """The drift plot: one panel per per-minute metric, its value on the segment of minute m
    against m, a line per row (models solid, baselines dashed); None when no metric has two
    minutes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = [(c, minutes_present(rows, c)) for c in columns if c.plot]
    panels = [(c, present) for c, present in panels if len(present) >= 2]
    if not panels:
        return None
    cols = min(3, len(panels))
    rows_n = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.5 * cols, 3.2 * rows_n), squeeze=False)
    baseline_styles = iter(_BASELINE_STYLES * len(rows))
    styles = {row["label"]: (dict(marker="o") if row["kind"] == "model" else
                             dict(marker=".", **next(baseline_styles))) for row in rows}
    for ax, (column, present) in zip(axes.flat, panels):
        for row in rows:
            points = [(m, row["metrics"][minute_key(column.key, m)]) for m in present
                      if minute_key(column.key, m) in row["metrics"]]
            if points:
                ax.plot(*zip(*points), label=row["label"], **styles[row["label"]])
        ax.set_title(column.header)
        ax.set_xlabel("minute of the song")
        ax.set_ylabel(column.header)
        ax.grid(alpha=0.3)
    return _finish_figure(fig, axes, len(panels),
                          "Metrics of the 5.12 s segment at each minute (drift along the song)",
                          path)


def _finish_figure(fig, axes, used: int, title: str, path: str) -> str:
    """Hides the unused panels, adds one legend below them and ``title``, writes the PNG."""
    import matplotlib.pyplot as plt

    from music_spectrogram_diffusion.file_io import write_file_atomic

    for ax in list(axes.flat)[used:]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=9,
               frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.04 + 0.03 * (len(labels) // 4), 1, 0.95))
    write_file_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return path


def write_report(out_dir: str, rows: Sequence[dict[str, Any]], *, config: Any,
                 songs: Sequence[Any], footnotes: Sequence[str] = ()) -> dict[str, str]:
    """Writes results.json, results.md, metrics_vs_step.png and, with per-minute values,
    metrics_vs_minute.png; returns their paths."""
    from music_spectrogram_diffusion.file_io import write_file_atomic, write_json_atomic

    notes = [*footnotes, *standard_footnotes(config, songs, rows)]
    columns = table_columns(config.embedders, transcribe=config.transcribe)
    table = format_table(rows, columns, notes)
    by_minute = format_minute_tables(rows, columns)
    paths = {"json": os.path.join(out_dir, "results.json"),
             "markdown": os.path.join(out_dir, "results.md")}
    config_json = dataclasses.asdict(config)
    write_json_atomic(paths["json"], {"config": config_json, "songs": [s.id for s in songs],
                                      "rows": list(rows), "table": table})
    markdown = "# Evaluation results\n\n" + table
    if by_minute:
        markdown += "\n## By minute of the song\n\n" + by_minute
    write_file_atomic(paths["markdown"], lambda f: f.write(markdown), mode="w")
    plot_keys = [(c.header, c.key) for c in columns if c.plot]
    plot = plot_metrics_vs_step(rows, plot_keys, os.path.join(out_dir, "metrics_vs_step.png"))
    if plot:
        paths["plot"] = plot
    drift = plot_metrics_vs_minute(rows, columns, os.path.join(out_dir, "metrics_vs_minute.png"))
    if drift:
        paths["drift_plot"] = drift
    return paths
