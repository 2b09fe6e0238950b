#!/usr/bin/env python
"""Times spectrogram sampling (encoders, decoder step, FLOPs, real-time factors) with random weights.

Usage:
  .venv/bin/python scripts/benchmark_sampling.py --config small --out results/bench_small.json
  .venv/bin/python scripts/benchmark_sampling.py --config tiny --out /tmp/bench.json --quick

--quick times a few decoder steps and extrapolates every real-time factor (a smoke run: 3 min
for tiny and 9 min for small on the shared, heavily loaded 2-core CPU, mostly compilation and
the untrimmed 2048-token encoder); without it the 20- and 50-step DPM-Solver++ segments are
also timed end to end. All logic lives in music_spectrogram_diffusion/models/sampling_benchmark.py.
"""

import argparse
import sys

from music_spectrogram_diffusion import file_io
from music_spectrogram_diffusion.models import sampling_benchmark


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sampling_benchmark.BENCHMARK_SIZES, default="small")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--quick", action="store_true", help="time a few steps and extrapolate")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    result = sampling_benchmark.run_benchmark(
        args.config, quick=args.quick, seed=args.seed, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(sampling_benchmark.format_table(result))
    file_io.write_json_atomic(args.out, result)  # an interrupted run leaves no half-written JSON
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
