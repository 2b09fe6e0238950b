"""msd-prepare-dataset: turn a downloaded dataset release into the layout the tasks read.

    msd-prepare-dataset maestro --source ~/data/maestro-v3.0.0 --out data/maestrov3
    msd-prepare-dataset slakh --source ~/data/slakh2100_flac_redux --out data/slakh \\
        --num-workers 8
    msd-prepare-dataset musicnet --source ~/data/mt3_tfrecords/musicnet --out data/musicnet \\
        --source-format tfrecord

Re-running resumes: finished pieces are skipped. Pieces whose files are bad are listed with
their path and reason; the rest is prepared. Exit status: 0 when pieces were prepared (1 with
``--strict`` if any failed), 1 when none could be, 2 on bad arguments or an unusable release.
See ``data/prepare.py`` (layout, Apache Beam recipe) and ``data/sources/`` (expected layouts).
"""

from __future__ import annotations

import argparse
import functools
import sys

from music_spectrogram_diffusion.cli import dataset_build
from music_spectrogram_diffusion.data import prepare, sources
from music_spectrogram_diffusion.data.piece_store import StoreError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="msd-prepare-dataset",
        description="Prepare a public dataset release (MAESTRO, Slakh2100, Cerberus4, GuitarSet, "
                    "MusicNet, URMP) for training.")
    parser.add_argument("name", help=f"dataset: {', '.join(sources.DATASET_NAMES)} (or "
                                     f"{', '.join(sorted(sources.ALIASES))})")
    parser.add_argument("--source", required=True,
                        help="the unpacked release (or a folder of the original's TFRecords)")
    parser.add_argument("--out", required=True, help="prepared dataset folder (created)")
    parser.add_argument("--source-format", choices=sources.SOURCE_FORMATS, default="raw",
                        help="'raw': the public release layout; 'tfrecord': the original "
                             "pipeline's TFRecords (spec §3.1)")
    parser.add_argument("--num-workers", type=int, default=1, help="parallel processes")
    parser.add_argument("--guitarset-audio", choices=("mic", "mix"), default=None,
                        help="GuitarSet only: microphone (default) or pickup-mix audio")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 if any piece failed")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = {}
    if args.guitarset_audio is not None:
        if args.source_format != "raw" or sources.ALIASES.get(args.name, args.name) != "guitarset":
            print("msd-prepare-dataset: error: --guitarset-audio applies to raw GuitarSet only",
                  file=sys.stderr)
            return 2
        options["audio"] = args.guitarset_audio
    build = functools.partial(
        prepare.prepare_dataset, args.name, args.source, args.out,
        source_format=args.source_format, num_workers=args.num_workers, progress=not args.quiet,
        reader_options=options)
    manifest = dataset_build.build_and_report("msd-prepare-dataset", build,
                                          (prepare.PrepareError, StoreError))
    if manifest is None:
        return 2
    if not manifest.pieces:
        print("msd-prepare-dataset: error: no piece could be prepared", file=sys.stderr)
        return 1
    return 1 if args.strict and manifest.failures else 0


if __name__ == "__main__":
    sys.exit(main())
