"""msd-build-store: build (or bring up to date) the piece store of dataset folders.

    msd-build-store data/embedded [data/maestrov3 ...] [--num_workers N] [--rebuild]

msd-make-dataset and msd-prepare-dataset build the store themselves; run this for a folder made
before the store existed (training would otherwise build it on first use), after editing a
folder's files by hand, or when training reports a damaged store. Pieces whose MIDI and audio
files are unchanged are copied from the previous store; ``--rebuild`` computes every piece
again. See ``data/piece_store.py``. Exit status 2 with one message on bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from music_spectrogram_diffusion.cli import flags

PROG = "msd-build-store"


def _parser() -> argparse.ArgumentParser:
    parser = flags.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("data_dirs", nargs="+", metavar="DATA_DIR",
                        help="a folder made by msd-make-dataset or msd-prepare-dataset")
    parser.add_argument("--num_workers", "--num-workers", type=int, default=1,
                        help="parallel processes")
    parser.add_argument("--rebuild", action="store_true",
                        help="compute every piece again instead of reusing unchanged ones")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    from music_spectrogram_diffusion.data import embedded_dataset, piece_store, prepare

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.num_workers < 1:
        return flags.fail(PROG, "--num_workers must be at least 1")
    for data_dir in args.data_dirs:
        start = time.perf_counter()
        try:
            dataset = piece_store.folder_dataset(data_dir)
            store = piece_store.build_store(data_dir, dataset, num_workers=args.num_workers,
                                            progress=not args.quiet, reuse=not args.rebuild)
        except (piece_store.StoreError, embedded_dataset.DatasetError, prepare.PrepareError) as e:
            return flags.fail(PROG, e)
        frames = int(store.column("num_frames").sum())
        print(f"{store.path}: {len(store.ids)} pieces, {frames} frames "
              f"({frames / 50 / 3600:.2f} h), {len(store.shards)} shards; "
              f"{time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
