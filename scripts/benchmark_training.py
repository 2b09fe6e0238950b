"""Benchmarks training steps of the context diffusion model on embedded-dataset batches.

    python scripts/benchmark_training.py --data_dir data/embedded [--sizes tiny,small]
        [--batch_sizes 2,4] [--steps 3] [--out benchmark_training.json]

For each size (tiny, small) and setting (padded = today's 2048-token padding in float32, at
the first batch size only: the small model's needs ~9 GB at batch 2; buckets; buckets +
bfloat16) it times the trainer's jitted step on train batches of the
embedded dataset (build one with ``msd-make-dataset --out data/embedded``) and prints a
markdown table: s/step, examples/s, speed-up over 'padded', XLA's FLOPs per step, "real"
FLOPs (every example cut to its own note tokens), and both as a fraction of a float32
matmul probe of the model's MLP shape timed around every step (``training/benchmark.py``).
Writes every number to --out as JSON. About 15 minutes on an idle 2-core CPU, mostly the
small model's padded step and its compilations; --sizes tiny is a smoke run of a minute.
"""

from __future__ import annotations

import argparse
import os
import sys

from music_spectrogram_diffusion import file_io


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", default=os.path.join("data", "embedded"),
                        help="embedded dataset directory (msd-make-dataset)")
    parser.add_argument("--sizes", default="tiny,small", help="comma-separated model sizes")
    parser.add_argument("--batch_sizes", default="2,4", help="comma-separated batch sizes")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting")
    parser.add_argument("--out", default="benchmark_training.json")
    args = parser.parse_args(argv)
    if not os.path.exists(os.path.join(args.data_dir, "manifest.json")):
        print(f"{args.data_dir}: no embedded dataset (manifest.json); build one with "
              f"msd-make-dataset --out {args.data_dir}", file=sys.stderr)
        return 2

    from music_spectrogram_diffusion.training import benchmark

    load = os.getloadavg()
    rows = benchmark.run_training_benchmarks(
        data_dir=args.data_dir, sizes=args.sizes.split(","),
        batch_sizes=[int(b) for b in args.batch_sizes.split(",")], steps=args.steps,
        progress=lambda line: print(line, flush=True))
    print(benchmark.format_table(rows))
    print(f"load average (1/5/15 min) before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          "after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    file_io.write_json_atomic(args.out, {"rows": rows, "load_average_before": load,
                                         "load_average_after": os.getloadavg()})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
