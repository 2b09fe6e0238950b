"""msd-prepare-dataset: turn a downloaded dataset release into the layout the tasks read.

    msd-prepare-dataset maestro --source ~/data/maestro-v3.0.0 --out data/maestrov3
    msd-prepare-dataset slakh --source ~/data/slakh2100_flac_redux --out data/slakh \\
        --num_workers 8
    msd-prepare-dataset musicnet --source ~/data/mt3_tfrecords/musicnet --out data/musicnet \\
        --source_format tfrecord
    msd-prepare-dataset folder --source ~/my_recordings --out data/my_recordings

``folder`` reads any folder of your own NAME.mid/.midi + NAME.wav/.flac pairs (nested folders,
optional splits.csv; see ``data/sources/folder.py``).

Re-running resumes: finished pieces are skipped. Pieces whose files are bad are listed with
their path and reason; the rest is prepared. Exit status: 0 when pieces were prepared, 2 on bad
input: bad arguments, an unusable release, no piece prepared, or (``--strict``) any piece failed.
See ``data/prepare.py`` (layout, Apache Beam recipe) and ``data/sources/`` (expected layouts).
"""

from __future__ import annotations

import argparse
import functools
import sys

from music_spectrogram_diffusion.cli import dataset_build, flags
from music_spectrogram_diffusion.data import prepare, sources
from music_spectrogram_diffusion.data.piece_store import StoreError
from music_spectrogram_diffusion.data.sources import folder

PROG = "msd-prepare-dataset"


def _parser() -> argparse.ArgumentParser:
    parser = flags.ArgumentParser(
        prog=PROG,
        description="Prepare a public dataset release (MAESTRO, Slakh2100, Cerberus4, GuitarSet, "
                    "MusicNet, URMP) or a folder of your own MIDI + audio pairs ('folder') "
                    "for training.")
    parser.add_argument("name", help=f"dataset: {', '.join(sources.DATASET_NAMES)} (or "
                                     f"{', '.join(sorted(sources.ALIASES))})")
    parser.add_argument("--source", required=True,
                        help="the unpacked release (or a folder of the original's TFRecords)")
    parser.add_argument("--out", required=True, help="prepared dataset folder (created)")
    parser.add_argument("--source_format", "--source-format", choices=sources.SOURCE_FORMATS,
                        default="raw",
                        help="'raw': the public release layout; 'tfrecord': the original "
                             "pipeline's TFRecords (spec §3.1)")
    parser.add_argument("--num_workers", "--num-workers", type=int, default=1,
                        help="parallel processes")
    parser.add_argument("--guitarset_audio", "--guitarset-audio", choices=("mic", "mix"),
                        default=None,
                        help="GuitarSet only: microphone (default) or pickup-mix audio")
    parser.add_argument("--length_tolerance", "--length-tolerance", type=float, default=None,
                        metavar="SECONDS",
                        help="folder only: how far a pair's audio and MIDI may disagree about "
                             f"where the music ends (default {folder.LENGTH_TOLERANCE_SECONDS:g} "
                             "s); pairs beyond it are listed as failed")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 2 if any piece failed")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    options = {}
    if args.guitarset_audio is not None:
        if args.source_format != "raw" or sources.ALIASES.get(args.name, args.name) != "guitarset":
            return flags.fail(PROG, "--guitarset_audio applies to raw GuitarSet only")
        options["audio"] = args.guitarset_audio
    if args.length_tolerance is not None:
        if args.source_format != "raw" or sources.ALIASES.get(args.name, args.name) != "folder":
            return flags.fail(PROG, "--length_tolerance applies to raw folder datasets only")
        options["length_tolerance_seconds"] = args.length_tolerance
    build = functools.partial(
        prepare.prepare_dataset, args.name, args.source, args.out,
        source_format=args.source_format, num_workers=args.num_workers, progress=not args.quiet,
        reader_options=options)
    manifest = dataset_build.build_and_report(PROG, build, (prepare.PrepareError, StoreError),
                                              {"num_workers": "--num_workers"})
    if manifest is None:
        return flags.EXIT_BAD_INPUT
    if not manifest.pieces:
        return flags.fail(PROG, f"no piece of {args.source} could be prepared (see the "
                                "failures above)")
    if args.strict and manifest.failures:
        return flags.fail(PROG, f"{len(manifest.failures)} piece(s) failed (--strict)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
