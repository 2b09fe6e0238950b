"""msd-evaluate: the paper's comparison table for trained checkpoints (spec §8).

    msd-evaluate --model_dir runs/diffusion_ctx [--model_dir runs/ar ...] \\
        [--task synthesis_with_context_full_embedded_notes_ties_melgan_vb1_test] \\
        [--data_dir data/embedded] [--checkpoints all|latest|0,2000] \\
        [--embedders musicnn,logmel] [--vocoder griffin-lim|VOCODER_DIR] \\
        [--sampler dpm++ --time_grid quadratic_t --steps 20 --guidance 2.0] \\
        [--max_songs N] [--max_seconds 600|S|none] \\
        --out results/eval

``--model_dir`` takes DIR or LABEL=DIR (the label names the table row). ``--task`` is a full-song
task of any dataset (``synthesis[_with_context]_full_<dataset>_..._<split>``, e.g.
``synthesis_full_maestrov3_notes_ties_melgan_vb1_test`` on a folder made by msd-prepare-dataset);
``--split test`` evaluates a split of the embedded dataset instead. With neither, the runs' own
test task (TEST_TASK and DATA_DIR of MODEL_DIR/config.gin) is evaluated. Songs are synthesized
through the context chain (``inference.synthesis``) up to the original's 10-minute cap
(``--max_seconds 600``, the default; ``none`` for whole songs); with at least two minutes, each
minute's 5.12 s segment is also scored on its own (``*_1minute`` ... in results.json, the drift
plot metrics_vs_minute.png). Re-running the same command skips rows
already in ``--out``. Writes results.json, results.md, metrics_vs_step.png, examples/ and
tensorboard/ under ``--out``. Exits 2 with one message on bad input.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from music_spectrogram_diffusion.cli import flags
from music_spectrogram_diffusion.diffusion.samplers import SAMPLER_NAMES, SamplerConfig
from music_spectrogram_diffusion.diffusion.time_grids import TIME_GRID_NAMES
from music_spectrogram_diffusion.evaluation import runner
from music_spectrogram_diffusion.evaluation.minutes import PROTOCOL_MAX_SECONDS

PROG = "msd-evaluate"
DEFAULT_DATA_DIR = os.path.join("data", "embedded")
# Library fields the messages may name, and the flag that sets each.
FLAG_NAMES = {"num_steps": "--steps", "guidance_weight": "--guidance",
              "max_seconds": "--max_seconds", "max_songs": "--max_songs"}


def max_seconds(text: str) -> float | None:
    """--max_seconds: a number of seconds, or 'none' (whole songs, no cap)."""
    if text.strip().lower() in ("none", "full"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a number of seconds nor 'none'") from None


def _parser() -> argparse.ArgumentParser:
    fast = runner.FAST_SAMPLER
    parser = flags.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--model_dir", "--model-dir", action="append", default=[], required=True,
                        help="training MODEL_DIR or LABEL=MODEL_DIR (repeatable)")
    parser.add_argument("--checkpoints", default="all", help="'all', 'latest' or steps '0,2000'")
    parser.add_argument("--task", help="a full-song task of any dataset, e.g. "
                        "synthesis_full_maestrov3_notes_ties_melgan_vb1_test (default: the "
                        "runs' TEST_TASK)")
    parser.add_argument("--data_dir", "--data-dir", default=None,
                        help=f"the task's dataset folder (default: the runs' DATA_DIR, or "
                             f"{DEFAULT_DATA_DIR} with --split)")
    parser.add_argument("--split", help="a split of the embedded dataset (train, validation, "
                        "test) instead of --task")
    parser.add_argument("--embedders", default="musicnn",
                        help="comma-separated: musicnn, logmel, vggish=SAVED_MODEL_DIR, trill=...")
    parser.add_argument("--vocoder", default="griffin-lim", help="griffin-lim, a trained vocoder dir, a SoundStream "
                        "SavedModel dir or a melgan folder (model.onnx)")
    parser.add_argument("--baseline_vocoders", "--baseline-vocoders", default="",
                        help="comma-separated extra vocoders with a ground-truth ceiling row")
    parser.add_argument("--sampler", default=fast.name, choices=SAMPLER_NAMES,
                        help=f"diffusion sampler (default {fast.name}: few steps on a CPU; "
                             "ddpm is the original's 1000-step sampler)")
    parser.add_argument("--steps", type=int, default=fast.num_steps,
                        help=f"sampler steps (default {fast.num_steps})")
    parser.add_argument("--time_grid", "--time-grid", default=fast.time_grid,
                        choices=TIME_GRID_NAMES,
                        help=f"where the sampler's steps go in t (default {fast.time_grid})")
    parser.add_argument("--guidance", type=float, default=fast.guidance_weight,
                        help=f"classifier-free guidance weight (default "
                             f"{fast.guidance_weight:g}; 1 = no guidance, half the cost)")
    parser.add_argument("--seed", type=int, default=0,
                        help="sampling seed; the same seed gives the same table")
    parser.add_argument("--max_songs", "--max-songs", type=int, help="evaluate the first N songs")
    parser.add_argument("--max_seconds", "--max-seconds", type=max_seconds,
                        default=PROTOCOL_MAX_SECONDS,
                        help=f"evaluate each song's first S seconds, rounded up to whole 5.12 s "
                             f"segments (default {PROTOCOL_MAX_SECONDS:g}: the original's "
                             "10-minute cap); 'none' for whole songs")
    parser.add_argument("--no_transcription", "--no-transcription", action="store_true",
                        help="skip the transcription F1 columns")
    parser.add_argument("--out", required=True, help="results directory (resumable)")
    return parser


def model_dirs(specs: list[str]) -> dict[str, str]:
    """['LABEL=DIR' | 'DIR', ...] -> {label: dir}; a bare DIR is labelled by its base name."""
    models: dict[str, str] = {}
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep:
            label, path = os.path.basename(os.path.normpath(spec)), spec
        if label in models:
            raise runner.EvaluationError(f"two --model_dir entries are labelled {label!r}; "
                                         "name them with LABEL=DIR")
        models[label] = path
    return models


def songs_to_evaluate(args: argparse.Namespace, models: dict[str, str]) -> list[runner.Song]:
    """The songs of --task or --split, or of the runs' own test task when neither is given."""
    task, data_dir = args.task, args.data_dir
    if task is None and args.split is None:
        named = {runner.run_test_task(path) for path in models.values()}
        if len(named) > 1:
            raise runner.EvaluationError(
                f"the runs name different test tasks ({', '.join(sorted(t for t, _ in named))});"
                " give --task")
        task, run_data_dir = named.pop()
        data_dir = data_dir or run_data_dir
    return runner.list_songs(data_dir=data_dir or DEFAULT_DATA_DIR, task=task, split=args.split,
                             max_songs=args.max_songs)


def main(argv: list[str] | None = None) -> int:
    from music_spectrogram_diffusion.audio.vocoders.checkpoints import VocoderCheckpointError
    from music_spectrogram_diffusion.dependencies import MissingDependencyError
    from music_spectrogram_diffusion.data.embedded_dataset import DatasetError
    from music_spectrogram_diffusion.data.midi_io import MidiError
    from music_spectrogram_diffusion.evaluation.embedders import EmbedderError
    from music_spectrogram_diffusion.inference.loading import CheckpointLoadError
    from music_spectrogram_diffusion.inference.synthesis import SynthesisError

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        sampler = SamplerConfig(name=args.sampler, num_steps=args.steps,
                                guidance_weight=args.guidance, time_grid=args.time_grid)
        config = runner.EvalConfig(
            checkpoints=args.checkpoints,
            embedders=tuple(e for e in args.embedders.split(",") if e),
            vocoder=args.vocoder,
            baseline_vocoders=tuple(v for v in args.baseline_vocoders.split(",") if v),
            sampler=sampler,
            seed=args.seed, max_songs=args.max_songs, max_seconds=args.max_seconds,
            transcribe=not args.no_transcription)
    except ValueError as e:  # the configs' own checks (EvaluationError is a ValueError)
        return flags.fail(PROG, e, FLAG_NAMES)
    try:
        models = model_dirs(args.model_dir)
        songs = songs_to_evaluate(args, models)
        result = runner.run_evaluation(models, songs, out_dir=args.out, config=config)
    except (runner.EvaluationError, DatasetError, CheckpointLoadError, VocoderCheckpointError,
            EmbedderError, SynthesisError, MidiError, MissingDependencyError) as e:
        return flags.fail(PROG, e, FLAG_NAMES)
    with open(result.report_paths["markdown"], encoding="utf-8") as f:
        print(f.read())
    print("Wrote " + ", ".join(result.report_paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
