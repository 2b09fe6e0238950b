"""msd-import-weights: released weights -> a MODEL_DIR every other command reads.

    msd-import-weights --format t5x --source base_with_context/checkpoint_500000 \\
                       --size base --out models/base_with_context
    msd-import-weights --format diffusers --source music-spectrogram-diffusion \\
                       --out models/base_with_context

``t5x``: the original's checkpoint (a checkpoint_<step> directory, its ``checkpoint`` file, or
the folder holding checkpoint_<step> directories); only the parameters are read, and
``--size`` names the T5 size (t5x checkpoints do not record it). ``diffusers``: the PyTorch
port's pipeline folder (google/music-spectrogram-diffusion); its config files give the size.
Writes OUT/model.json and OUT/checkpoint_<step>, all or nothing (``weights.transfer``). Exits 1
with one message naming the file and tensor for bad input, 2 for bad flags.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from music_spectrogram_diffusion.cli import flags as cli_flags

PROG = "msd-import-weights"


def _parser() -> argparse.ArgumentParser:
    from music_spectrogram_diffusion.models.config import NAMED_SIZES
    from music_spectrogram_diffusion.weights.transfer import FORMATS

    parser = cli_flags.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--format", required=True, choices=FORMATS, help="the source's format")
    parser.add_argument("--source", required=True, help="t5x checkpoint or diffusers folder")
    parser.add_argument("--out", required=True, help="the MODEL_DIR to create (new or empty)")
    parser.add_argument("--size", choices=NAMED_SIZES,
                        help="t5x only: the T5 size of the checkpoint (base_with_context: base, "
                             "small_with_context: small)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command; returns the exit status (0 ok, 2 bad flags or input)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"{PROG}: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every file it writes

    from music_spectrogram_diffusion.weights.param_tree import WeightsError
    from music_spectrogram_diffusion.weights.transfer import import_weights

    try:
        result = import_weights(format=args.format, source=args.source, out=args.out,
                                size=args.size)
    except (WeightsError, OSError) as e:
        return cli_flags.fail(PROG, e)
    kind = "with" if result.model.with_context else "without"
    print(f"{result.model_dir}: diffusion model {kind} context, {result.num_tensors} tensors, "
          f"step {result.step} ({result.checkpoint_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
