#!/usr/bin/env python
"""Sampler quality against steps on a trained checkpoint: every sampler and time grid at 4, 8, 10,
20 and 50 steps against the real audio and against 1000-step DDPM (issue #13).

Usage:
  .venv/bin/python scripts/benchmark_samplers.py                     # train (cached), then run
  .venv/bin/python scripts/benchmark_samplers.py --checkpoint runs/ctx/checkpoint_500
  .venv/bin/python scripts/benchmark_samplers.py --variants dpm++ unipc:uniform_lambda --steps 8 20

Without --checkpoint it trains the main job's tiny context diffusion model (msd-main's trainer,
gin files and embedded dataset) for --train_steps in CACHE_DIR/model, once; reruns reuse it, and
every finished row (CACHE_DIR/rows) too. Writes CACHE_DIR/benchmark.json, benchmark.md and
quality_vs_steps.png, and prints the table. Measured on the 2-core CPU shared with three other
jobs: 19 minutes of training, then 40 minutes for the default 14 variants x 5 step counts on 4
songs x 20.48 s (two 1000-step DDPM draws of 3.5 minutes each, then about 30 s a row, mostly
Griffin-Lim and musicnn); the README's "Samplers" section has the table. All logic lives in
music_spectrogram_diffusion/evaluation/sampler_benchmark.py.
"""

import argparse
import logging
import os
import sys

from music_spectrogram_diffusion import file_io
from music_spectrogram_diffusion.evaluation import runner, sampler_benchmark as bench


def main(argv=None) -> int:
    defaults = bench.SamplerBenchmarkConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache_dir", default="results/sampler_benchmark")
    parser.add_argument("--data_dir", default="data/embedded", help="embedded dataset (built if missing)")
    parser.add_argument("--checkpoint", help="a checkpoint_<step> directory or MODEL_DIR (newest); "
                        "default: train one in CACHE_DIR/model")
    parser.add_argument("--train_steps", type=int, default=200, help="steps of the trained checkpoint")
    parser.add_argument("--variants", nargs="+", default=list(defaults.variants),
                        help="sampler[:time_grid][:no-lof] ...")
    parser.add_argument("--steps", nargs="+", type=int, default=list(defaults.steps))
    parser.add_argument("--reference_steps", type=int, default=defaults.reference_steps)
    parser.add_argument("--max_songs", type=int, default=defaults.max_songs)
    parser.add_argument("--max_seconds", type=float, default=defaults.max_seconds)
    parser.add_argument("--embedders", default=",".join(defaults.embedders))
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--floor_seed", type=int, default=defaults.floor_seed,
                        help="seed of the second DDPM draw (the floor)")
    parser.add_argument("--no_floor", action="store_true", help="skip the second DDPM draw")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    logging.getLogger("absl").setLevel(logging.WARNING)

    from music_spectrogram_diffusion.data.embedded_dataset import DatasetError
    from music_spectrogram_diffusion.evaluation.embedders import EmbedderError
    from music_spectrogram_diffusion.inference.loading import CheckpointLoadError, resolve_checkpoint

    try:
        config = bench.SamplerBenchmarkConfig(
            variants=args.variants, steps=args.steps, reference_steps=args.reference_steps,
            max_songs=args.max_songs, max_seconds=args.max_seconds, seed=args.seed,
            floor_seed=None if args.no_floor else args.floor_seed,
            embedders=tuple(e for e in args.embedders.split(",") if e))
    except ValueError as e:
        parser.error(str(e))
    try:
        checkpoint = args.checkpoint or bench.prepare_checkpoint(
            args.cache_dir, data_dir=args.data_dir, train_steps=args.train_steps, seed=args.seed)
        _, checkpoint, _ = resolve_checkpoint(checkpoint)
        songs = runner.list_songs(data_dir=args.data_dir, split="test", max_songs=config.max_songs)
        result = bench.run_sampler_benchmark(checkpoint, songs, out_dir=args.cache_dir,
                                             config=config, log=print)
    except (CheckpointLoadError, DatasetError, EmbedderError, runner.EvaluationError) as e:
        print(f"benchmark_samplers: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    table = bench.format_table(result)
    summary = "\n".join(bench.summary_lines(result))
    print(table)
    print(summary)
    file_io.write_json_atomic(os.path.join(args.cache_dir, "benchmark.json"), result)
    file_io.write_file_atomic(os.path.join(args.cache_dir, "benchmark.md"),
                              lambda f: f.write(table + "\n" + summary + "\n"), mode="w")
    plot = bench.plot_quality_vs_steps(result, os.path.join(args.cache_dir, "quality_vs_steps.png"))
    print(f"wrote {args.cache_dir}/benchmark.json, benchmark.md and {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
