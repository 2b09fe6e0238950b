"""msd-main: the README's main job.

    msd-main [--data-dir data/embedded] [--quick]

Stage one builds (or reuses) the embedded dataset and prints its summary. Later stages (train,
evaluate) belong in the library function this script calls (``embedded_dataset.run_main_job``
today); the script only parses flags. ``--quick`` builds a small dataset for a smoke run.
Exits 2 with one message on bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from music_spectrogram_diffusion.data import embedded_dataset
from music_spectrogram_diffusion.data.rendering import RenderError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="msd-main", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=embedded_dataset.DEFAULT_DATA_DIR,
                        help="embedded dataset directory (built if missing)")
    parser.add_argument(
        "--quick", action="store_true",
        help=f"smoke run: {embedded_dataset.QUICK_NUM_PIECES} pieces instead of "
             f"{embedded_dataset.DEFAULT_NUM_PIECES}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=2)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    try:
        manifest = embedded_dataset.run_main_job(
            args.data_dir, quick=args.quick, seed=args.seed, num_workers=args.num_workers)
    except (embedded_dataset.DatasetError, RenderError) as e:
        print(f"msd-main: error: {e}", file=sys.stderr)
        return 2
    print(manifest.summary())
    print(f"Done in {time.perf_counter() - start:.1f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
