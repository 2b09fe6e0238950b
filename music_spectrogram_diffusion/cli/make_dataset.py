"""msd-make-dataset: build the embedded multi-instrument MIDI + audio dataset.

    msd-make-dataset --out data/embedded [--num_pieces N] [--seed S] [--soundfont FluidR3_GM.sf2]

Arranges scores from music21's corpus for General MIDI instruments, renders them at 16 kHz and
writes manifest.json (see ``data/embedded_dataset.py``); re-running reuses finished pieces.
Prints the dataset summary; exits 2 with one message on bad input.
"""

from __future__ import annotations

import argparse
import functools
import sys

from music_spectrogram_diffusion.cli import dataset_build, flags
from music_spectrogram_diffusion.data import embedded_dataset
from music_spectrogram_diffusion.data.piece_store import StoreError
from music_spectrogram_diffusion.data.rendering import RenderError

FLAG_NAMES = {name: f"--{name}" for name in ("num_pieces", "num_workers", "drum_probability",
                                             "max_piece_seconds")}


def _parser() -> argparse.ArgumentParser:
    parser = flags.ArgumentParser(
        prog="msd-make-dataset",
        description="Build the embedded multi-instrument MIDI + audio dataset (no downloads).",
    )
    parser.add_argument("--out", required=True, help="dataset directory (created if needed)")
    parser.add_argument(
        "--num_pieces", "--num-pieces", type=int, default=None,
        help=f"pieces to build (default {embedded_dataset.DEFAULT_NUM_PIECES}: over 1 h of "
             "training audio)")
    parser.add_argument("--seed", type=int, default=0, help="selects pieces, splits, instruments")
    parser.add_argument("--soundfont", default=None,
                        help="General MIDI .sf2 file (default: TimGM6mb from pretty_midi)")
    parser.add_argument("--num_workers", "--num-workers", type=int, default=2,
                        help="parallel processes")
    parser.add_argument(
        "--drum_probability", "--drum-probability", type=float,
        default=embedded_dataset.DEFAULT_DRUM_PROBABILITY,
        help="chance that a piece gets a generated drum part")
    parser.add_argument(
        "--max_piece_seconds", "--max-piece-seconds", type=float,
        default=embedded_dataset.DEFAULT_MAX_PIECE_SECONDS,
        help="cut each piece after this much music")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    build = functools.partial(
        embedded_dataset.build_embedded_dataset,
        args.out,
        num_pieces=args.num_pieces,
        seed=args.seed,
        soundfont=args.soundfont,
        num_workers=args.num_workers,
        progress=not args.quiet,
        drum_probability=args.drum_probability,
        max_piece_seconds=args.max_piece_seconds,
    )
    manifest = dataset_build.build_and_report(
        "msd-make-dataset", build, (embedded_dataset.DatasetError, RenderError, StoreError), FLAG_NAMES)
    return 2 if manifest is None else 0


if __name__ == "__main__":
    sys.exit(main())
