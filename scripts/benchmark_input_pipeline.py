#!/usr/bin/env python
"""Benchmarks the input pipeline: loader examples/s (in process and with N Grain workers), and
peak RSS and start-up of a 5-step tiny training run on a small and a large embedded dataset.

Usage (the datasets are built once; 320 pieces take ~5 min to render plus ~2 min for the store
on 2 cores):
  msd-make-dataset --num-pieces 3 --out /tmp/ds3
  msd-make-dataset --num-pieces 320 --out /tmp/ds320
  .venv/bin/python scripts/benchmark_input_pipeline.py --small /tmp/ds3 --large /tmp/ds320 \\
      --out /tmp/pipeline_bench.json [--baseline-pythonpath /path/to/main/checkout]

Prints a markdown table and writes the JSON. All logic lives in
music_spectrogram_diffusion/data/pipeline_benchmark.py.
"""

import argparse
import sys

from music_spectrogram_diffusion import file_io
from music_spectrogram_diffusion.data import pipeline_benchmark


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", required=True, help="small embedded dataset (3 pieces)")
    parser.add_argument("--large", required=True, help="large embedded dataset (320 pieces)")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="worker counts to time besides in-process")
    parser.add_argument("--batch-size", type=int, default=128, help="loader batch size")
    parser.add_argument("--steps", type=int, default=10, help="timed loader batches per repeat")
    parser.add_argument("--baseline-pythonpath", default=None,
                        help="also measure start-up and memory with this checkout's package")
    args = parser.parse_args(argv)

    result = pipeline_benchmark.run_benchmark(
        args.small, args.large, workers=args.workers, batch_size=args.batch_size,
        steps=args.steps, baseline_pythonpath=args.baseline_pythonpath,
        log=lambda m: print(m, file=sys.stderr, flush=True))
    print(pipeline_benchmark.format_table(result))
    file_io.write_json_atomic(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
