"""msd-evaluate: the paper's comparison table for trained checkpoints (spec §8).

    msd-evaluate --model_dir runs/diffusion_ctx [--model_dir runs/ar ...] \\
        --task synthesis_with_context_full_embedded_notes_ties_melgan_vb1_test \\
        --data_dir data/embedded [--checkpoints all|latest|0,2000] \\
        [--embedders musicnn,logmel] [--vocoder griffin-lim|VOCODER_DIR] \\
        [--sampler dpm++ --time_grid quadratic_t --steps 20 --guidance 2.0] \\
        [--max_songs N] [--max_seconds S] \\
        --out results/eval

``--model_dir`` takes DIR or LABEL=DIR (the label names the table row). Instead of ``--task``,
``--split test`` evaluates a split of the embedded dataset in ``--data_dir``. Songs are
synthesized whole through the context chain (``inference.synthesis``). Re-running the same
command skips rows already in ``--out``. Writes results.json, results.md, metrics_vs_step.png,
examples/ and tensorboard/ under ``--out``. Exits 2 with one message on bad input.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from music_spectrogram_diffusion.diffusion.samplers import SAMPLER_NAMES, SamplerConfig
from music_spectrogram_diffusion.diffusion.time_grids import TIME_GRID_NAMES
from music_spectrogram_diffusion.evaluation import runner


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="msd-evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--model_dir", action="append", default=[], required=True,
                        help="training MODEL_DIR or LABEL=MODEL_DIR (repeatable)")
    parser.add_argument("--checkpoints", default="all", help="'all', 'latest' or steps '0,2000'")
    parser.add_argument("--task", help="a full-song eval task, e.g. "
                        "synthesis_with_context_full_embedded_notes_ties_melgan_vb1_test")
    parser.add_argument("--data_dir", default=os.path.join("data", "embedded"),
                        help="embedded dataset directory")
    parser.add_argument("--split", help="embedded dataset split (instead of --task)")
    parser.add_argument("--embedders", default="musicnn",
                        help="comma-separated: musicnn, logmel, vggish=SAVED_MODEL_DIR, trill=...")
    parser.add_argument("--vocoder", default="griffin-lim", help="griffin-lim or a vocoder dir")
    parser.add_argument("--baseline_vocoders", default="",
                        help="comma-separated extra vocoders with a ground-truth ceiling row")
    parser.add_argument("--sampler", default=runner.FAST_SAMPLER.name, choices=SAMPLER_NAMES)
    parser.add_argument("--steps", type=int, default=runner.FAST_SAMPLER.num_steps)
    parser.add_argument("--time_grid", default=runner.FAST_SAMPLER.time_grid,
                        choices=TIME_GRID_NAMES, help="where the sampler's steps go in t")
    parser.add_argument("--guidance", type=float, default=runner.FAST_SAMPLER.guidance_weight)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_songs", type=int)
    parser.add_argument("--max_seconds", type=float, help="evaluate only each song's start")
    parser.add_argument("--no_transcription", action="store_true",
                        help="skip the transcription F1 columns")
    parser.add_argument("--out", required=True, help="results directory (resumable)")
    return parser.parse_args(argv)


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


def main(argv: list[str] | None = None) -> int:
    from music_spectrogram_diffusion.audio.vocoders.checkpoints import VocoderCheckpointError
    from music_spectrogram_diffusion.data.embedded_dataset import DatasetError
    from music_spectrogram_diffusion.data.midi_io import MidiError
    from music_spectrogram_diffusion.evaluation.embedders import EmbedderError
    from music_spectrogram_diffusion.inference.loading import CheckpointLoadError
    from music_spectrogram_diffusion.inference.synthesis import SynthesisError

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        sampler = SamplerConfig(name=args.sampler, num_steps=args.steps,
                                guidance_weight=args.guidance, time_grid=args.time_grid)
    except ValueError as e:
        print(f"msd-evaluate: error: {e}", file=sys.stderr)
        return 2
    try:
        config = runner.EvalConfig(
            checkpoints=args.checkpoints,
            embedders=tuple(e for e in args.embedders.split(",") if e),
            vocoder=args.vocoder,
            baseline_vocoders=tuple(v for v in args.baseline_vocoders.split(",") if v),
            sampler=sampler,
            seed=args.seed, max_songs=args.max_songs, max_seconds=args.max_seconds,
            transcribe=not args.no_transcription)
        songs = runner.list_songs(data_dir=args.data_dir, task=args.task, split=args.split,
                                  max_songs=args.max_songs)
        result = runner.run_evaluation(model_dirs(args.model_dir), songs, out_dir=args.out,
                                       config=config)
    except (runner.EvaluationError, DatasetError, CheckpointLoadError, VocoderCheckpointError,
            EmbedderError, SynthesisError, MidiError) as e:
        print(f"msd-evaluate: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    with open(result.report_paths["markdown"], encoding="utf-8") as f:
        print(f.read())
    print("Wrote " + ", ".join(result.report_paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
