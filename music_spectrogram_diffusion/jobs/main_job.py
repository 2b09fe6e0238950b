"""The README's main job: the paper's ablation at CPU size, end to end (``msd-main``).

Stages, each resumable (re-running the command continues where it stopped):

  1. **Dataset**: build (or reuse) the embedded dataset (``data/embedded_dataset.py``).
  2. **Training** through the real trainer and gin files, one run per model:
     the autoregressive baseline, diffusion without context, diffusion with context (tiny T5,
     ``gin/models/<kind>/tiny.gin`` + a task gin + ``gin/main/train_cpu.gin``). The trainer
     also saves the untrained state as checkpoint_0 (``save_initial_checkpoint``, bound in
     train_cpu.gin), so the initialisation is evaluated too.
  3. **Vocoder**: a small Vocos (``gin/vocoders/vocos_{tiny,small}.gin``), the kind that learns
     on a CPU (a HiFi-GAN is 100x costlier per step), for a few minutes.
  4. **Evaluation** (``runner.run_evaluation``) on the test split: ground truth, the ground
     truth through Griffin-Lim and through the trained vocoder, and every checkpoint of the
     three models, with a fast sampler (``runner.FAST_SAMPLER``: DPM-Solver++(2M), 20 steps on
     the quadratic time grid, first-order final step; within 1% of 1000-step DDPM's mel L1,
     see scripts/benchmark_samplers.py). Model rows are vocoded with Griffin-Lim: a vocoder
     trained for minutes on CPU is noisier (its ceiling row shows it).

Budget: ``MainJobConfig.for_budget`` sizes the runs for about ``budget_minutes`` on an idle
2-core CPU. Step counts are fixed by the config, so two runs give the same table (same seed,
same numbers). A per-run deadline (the trainers' ``max_seconds``, well above the planned time)
is only a safety net for a much slower machine; when it fires, the table's footnote says so and
where the run stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

from music_spectrogram_diffusion import file_io, gin_config
from music_spectrogram_diffusion.evaluation import runner

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ModelRun:
    """One model of the ablation: its table label, directory name and gin files.

    ``gin_files`` (model + task) are parsed before ``TRAIN_GIN``, ``overrides`` after it, so an
    override may rebind what gin/train.gin or gin/main/train_cpu.gin set.
    """

    label: str
    name: str
    gin_files: tuple[str, ...]
    overrides: tuple[str, ...] = ()


MODEL_RUNS = (
    ModelRun("Autoregressive", "autoregressive",
             ("gin/models/autoregressive/tiny.gin", "gin/tasks/embedded.gin"),
             ("gin/main/autoregressive_cpu.gin",)),
    ModelRun("Diffusion, no context", "diffusion",
             ("gin/models/diffusion/tiny.gin", "gin/tasks/embedded.gin"),
             ("gin/main/diffusion_cpu.gin",)),
    ModelRun("Diffusion with context", "diffusion_context",
             ("gin/models/diffusion_context/tiny.gin", "gin/tasks/context_embedded.gin"),
             ("gin/main/diffusion_cpu.gin",)),
)
TRAIN_GIN = "gin/main/train_cpu.gin"


@dataclasses.dataclass(frozen=True)
class MainJobConfig:
    """Sizes of the main job. ``for_budget`` gives the defaults; fields can be overridden.

    Attributes:
      num_pieces, max_piece_seconds: embedded dataset size and piece length cap.
      train_steps, batch_size, checkpoint_period: per model (checkpoint 0 is always saved).
      train_minutes: safety deadline per model run (far above the planned time; the step
        count, not this, decides where a run ends); None disables it.
      vocoder_gin, vocoder_steps: the vocoder run.
      vocoder_minutes: safety deadline of the vocoder run; None disables it.
      eval_songs, eval_seconds: test songs evaluated, and the excerpt length of each.
      embedders: embedders of the evaluation.
      seed: dataset, training and sampling seed.
    """

    num_pieces: int
    train_steps: int
    batch_size: int
    checkpoint_period: int
    train_minutes: float | None
    vocoder_gin: str
    vocoder_steps: int
    eval_songs: int
    eval_seconds: float | None
    embedders: tuple[str, ...] = ("musicnn",)
    vocoder_minutes: float | None = None
    max_piece_seconds: float = 120.0  # embedded_dataset.DEFAULT_MAX_PIECE_SECONDS
    seed: int = 0

    def __post_init__(self):
        for name in ("num_pieces", "train_steps", "batch_size", "checkpoint_period",
                     "vocoder_steps", "eval_songs"):
            if getattr(self, name) < 1:
                raise ValueError(f"MainJobConfig.{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def for_budget(cls, budget_minutes: float = 30.0, *, quick: bool = False) -> MainJobConfig:
        """About ``budget_minutes`` on an idle 2-core CPU (``quick``: a few minutes)."""
        from music_spectrogram_diffusion.data import embedded_dataset

        if not budget_minutes > 0:
            raise ValueError(f"budget_minutes must be > 0, got {budget_minutes}")
        if quick:
            return cls(num_pieces=embedded_dataset.QUICK_NUM_PIECES, train_steps=30,
                       batch_size=4, checkpoint_period=30, train_minutes=None,
                       vocoder_gin="gin/vocoders/vocos_tiny.gin", vocoder_steps=10,
                       eval_songs=1, eval_seconds=10.24)
        # Fixed step counts planned at about 1 s per tiny-model step at batch 4 on an idle
        # 2-core CPU (compilation included), so every run ends at its step count and two runs
        # give the same table; the deadlines are twice the plan, a safety net only.
        scale = budget_minutes / 30.0
        steps = max(20, int(round(200 * scale / 10)) * 10)
        return cls(num_pieces=embedded_dataset.DEFAULT_NUM_PIECES, train_steps=steps,
                   batch_size=4, checkpoint_period=max(10, steps // 2),
                   train_minutes=0.25 * budget_minutes,
                   vocoder_gin="gin/vocoders/vocos_small.gin",
                   vocoder_steps=max(10, int(400 * scale)), vocoder_minutes=0.2 * budget_minutes,
                   eval_songs=4, eval_seconds=20.48)


def _deadline_seconds(minutes: float | None) -> float | None:
    return None if minutes is None else minutes * 60.0


def train_model(run: ModelRun, *, model_dir: str, data_dir: str, config: MainJobConfig
                ) -> dict[str, Any]:
    """Trains one model with the real trainer (resuming if ``model_dir`` has checkpoints)."""
    import gin

    from music_spectrogram_diffusion.training import checkpoints as ckpt_lib
    from music_spectrogram_diffusion.training import trainer

    steps = ckpt_lib.list_checkpoints(model_dir)
    if steps and steps[-1] >= config.train_steps:
        logger.info("%s: already trained to step %d", run.label, steps[-1])
        return {"step": steps[-1], "stopped_early": False, "seconds": 0.0}
    bindings = [f"MODEL_DIR = '{model_dir}'", f"DATA_DIR = '{data_dir}'",
                f"TRAIN_STEPS = {config.train_steps}", f"BATCH_SIZE = {config.batch_size}",
                f"CHECKPOINT_PERIOD = {config.checkpoint_period}", f"SEED = {config.seed}"]
    text = gin_config.parse_gin([*run.gin_files, TRAIN_GIN, *run.overrides], bindings)
    try:
        start = time.perf_counter()
        result = gin.get_configurable(trainer.train)(
            config_text=text, max_seconds=_deadline_seconds(config.train_minutes))
        return {"step": result.step, "stopped_early": result.stop_reason is not None,
                "loss": result.metrics.get("loss"), "seconds": time.perf_counter() - start}
    finally:
        gin.clear_config()


def train_vocoder(*, model_dir: str, data_dir: str, config: MainJobConfig) -> dict[str, Any]:
    """Trains (or resumes) the vocoder from its gin file, its schedule fitted to vocoder_steps."""
    import gin

    from music_spectrogram_diffusion.training import checkpoints as ckpt_lib
    from music_spectrogram_diffusion.training import vocoder_trainer

    bindings = [f"MODEL_DIR = '{model_dir}'", f"DATA_DIR = '{data_dir}'",
                f"TRAIN_STEPS = {config.vocoder_steps}",
                f"vocoder_trainer.VocoderTrainConfig.checkpoint_every = {config.vocoder_steps}",
                # The 'cosine' schedule decays over the run (others ignore decay_steps).
                f"vocoder_trainer.VocoderTrainConfig.decay_steps = {config.vocoder_steps}"]
    text = gin_config.parse_gin([config.vocoder_gin], bindings)
    try:
        start = time.perf_counter()
        metrics = gin.get_configurable(vocoder_trainer.train_vocoder)(
            max_seconds=_deadline_seconds(config.vocoder_minutes),
            on_ready=lambda: ckpt_lib.write_config(model_dir, text))
        step = (ckpt_lib.list_checkpoints(model_dir) or [0])[-1]
        return {"metrics": metrics, "step": step, "stopped_early": step < config.vocoder_steps,
                "seconds": time.perf_counter() - start}
    finally:
        gin.clear_config()


def run_main_job(
    *,
    data_dir: str,
    out_dir: str,
    config: MainJobConfig,
    num_workers: int = 2,
    progress: bool = True,
) -> runner.EvaluationResult:
    """Dataset -> three models + vocoder -> evaluation; returns the evaluation (table in
    ``result.report_paths``). Models go to ``out_dir/models/<name>``; see the module docstring.
    """
    from music_spectrogram_diffusion.data import embedded_dataset

    out_dir = os.path.abspath(out_dir)
    data_dir = os.path.abspath(data_dir)
    models_dir = os.path.join(out_dir, "models")
    stages: dict[str, Any] = {"config": dataclasses.asdict(config)}
    job_start = time.perf_counter()

    def stage(name: str, start: float, **info: Any) -> None:
        stages[name] = {"seconds": round(time.perf_counter() - start, 1), **info}
        logger.info("main job: %s done in %.0f s (%.0f s in all)", name,
                    stages[name]["seconds"], time.perf_counter() - job_start)
        file_io.write_json_atomic(os.path.join(out_dir, "main_job.json"), stages)

    os.makedirs(out_dir, exist_ok=True)
    start = time.perf_counter()
    manifest = embedded_dataset.build_embedded_dataset(
        data_dir, num_pieces=config.num_pieces, seed=config.seed, num_workers=num_workers,
        progress=progress, max_piece_seconds=config.max_piece_seconds)
    print(manifest.summary(), flush=True)
    stage("dataset", start, pieces=len(manifest.pieces),
          train_hours=round(manifest.split_seconds("train") / 3600, 3))

    trained: dict[str, dict[str, Any]] = {}
    for run in MODEL_RUNS:
        start = time.perf_counter()
        logger.info("main job: training %s (%d steps)", run.label, config.train_steps)
        trained[run.label] = train_model(run, model_dir=os.path.join(models_dir, run.name),
                                         data_dir=data_dir, config=config)
        stage(f"train {run.name}", start, **trained[run.label])

    start = time.perf_counter()
    vocoder_dir = os.path.join(models_dir, "vocoder")
    vocoder = train_vocoder(model_dir=vocoder_dir, data_dir=data_dir, config=config)
    stage("train vocoder", start, metrics=vocoder["metrics"], step=vocoder["step"],
          stopped_early=vocoder["stopped_early"])

    start = time.perf_counter()
    eval_config = runner.EvalConfig(
        checkpoints="all", embedders=config.embedders, vocoder="griffin-lim",
        baseline_vocoders=(vocoder_dir,), sampler=runner.FAST_SAMPLER, seed=config.seed,
        max_songs=config.eval_songs, max_seconds=config.eval_seconds)
    songs = runner.list_songs(data_dir=data_dir, split="test", max_songs=config.eval_songs)
    footnotes = [
        training_footnote(config, manifest, trained),
        f"The trained vocoder ({config.vocoder_gin}) reached step {vocoder['step']} of "
        f"{config.vocoder_steps}"
        + (" (stopped early by the time guard)" if vocoder["stopped_early"] else "")
        + "; its row is its ceiling on ground-truth log-mel.",
    ]
    result = runner.run_evaluation(
        {run.label: os.path.join(models_dir, run.name) for run in MODEL_RUNS}, songs,
        out_dir=out_dir, config=eval_config, show_progress=progress, footnotes=footnotes)
    stage("evaluate", start, rows=len(result.rows))
    stages["total_seconds"] = round(time.perf_counter() - job_start, 1)
    file_io.write_json_atomic(os.path.join(out_dir, "main_job.json"), stages)
    return result


def training_footnote(config: MainJobConfig, manifest: Any, trained: dict[str, Any]) -> str:
    runs = "; ".join(
        f"{label}: step {info['step']}" + (" (stopped early by the time guard)"
                                           if info.get("stopped_early") else "")
        for label, info in trained.items())
    return (f"Tiny T5 models (d=32, 2+2 layers; gin/models/*/tiny.gin), planned for "
            f"{config.train_steps} steps at batch {config.batch_size} (AdamW, LR 3e-3, "
            "gin/main/adamw_cpu.gin; autoregressive: noisy teacher-forced inputs, "
            "gin/main/autoregressive_cpu.gin; diffusion: x0 prediction, gin/main/diffusion_cpu.gin) on "
            f"{manifest.split_seconds('train') / 3600:.2f} h of the embedded dataset "
            f"({len(manifest.split('train'))} train pieces); reached {runs}. '@ 0' rows are the "
            "untrained initialisations; the paper trained T5-small/base for 500k steps.")


def mel_l1_check(rows: list[dict[str, Any]]) -> list[str]:
    """One line per model: mel L1 at step 0 against the last checkpoint (the task's check)."""
    lines = []
    models: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["kind"] == "model":
            models.setdefault(row["model_label"], []).append(row)
    for label, model_rows in models.items():
        model_rows = sorted(model_rows, key=lambda r: r["step"])
        first, last = model_rows[0], model_rows[-1]
        a, b = first["metrics"]["mel_l1"], last["metrics"]["mel_l1"]
        verdict = "lower" if b < a else "NOT lower"
        lines.append(f"{label}: mel L1 {a:.3f} at step {first['step']} -> {b:.3f} at step "
                     f"{last['step']} ({verdict}, {100 * (b - a) / a:+.0f}%)")
    return lines
