"""Benchmarks one training step of the small context diffusion model on this machine.

    python scripts/benchmark_training.py [--quick] [--batch_size 2] [--steps 3] [--out FILE]

Prints a table and writes JSON (to --out, default benchmark_training.json): steps/s,
examples/s and achieved FLOP/s from XLA's cost analysis. --quick uses the tiny model and one
timed step (a smoke run, seconds); the default small model (102.7 M trainable parameters,
spec §4.6) takes minutes on a CPU. Synthetic batches: the input pipeline is not timed.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from music_spectrogram_diffusion import file_io


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, one step")
    parser.add_argument("--size", default=None, help="model size: tiny, small, base, large")
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default="benchmark_training.json")
    args = parser.parse_args(argv)

    from music_spectrogram_diffusion.models.config import T5Config
    from music_spectrogram_diffusion.models.diffusion_model import DiffusionModel
    from music_spectrogram_diffusion.training.benchmark import benchmark_training

    size = args.size or ("tiny" if args.quick else "small")
    model = DiffusionModel(network_config=T5Config.named(size), with_context=True)
    result = benchmark_training(model, name=f"diffusion_context/{size}",
                                batch_size=args.batch_size, steps=1 if args.quick else args.steps)
    rows = dataclasses.asdict(result)
    width = max(len(k) for k in rows)
    for key, value in rows.items():
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {text}")
    file_io.write_json_atomic(args.out, rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
