"""msd-export-weights: a MODEL_DIR's checkpoint -> the PyTorch port's (diffusers) folder.

    msd-export-weights --model_dir runs/diffusion_ctx [--checkpoint 20000] \\
                       --format diffusers --out exported/diffusion_ctx

Writes model_index.json, notes_encoder/, continuous_encoder/, decoder/ (config.json +
diffusion_pytorch_model.safetensors) and scheduler/ as diffusers 0.42's
SpectrogramDiffusionPipeline.save_pretrained does, all or nothing (``weights.transfer``). Load
it with each class's ``from_pretrained(OUT, subfolder=...)`` (diffusers 0.42's pipeline-level
``from_pretrained`` cannot read the model_index.json its own save_pretrained writes). Exits 1 with one message for a
bad MODEL_DIR or a model diffusers cannot hold, 2 for bad flags.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from music_spectrogram_diffusion.cli import flags as cli_flags

PROG = "msd-export-weights"


def _parser() -> argparse.ArgumentParser:
    from music_spectrogram_diffusion.weights.transfer import EXPORT_FORMATS

    parser = cli_flags.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--model_dir", "--model-dir", required=True, help="a training or imported MODEL_DIR")
    parser.add_argument("--checkpoint", type=int, metavar="STEP",
                        help="the checkpoint_<STEP> to export (default: the newest)")
    parser.add_argument("--format", default="diffusers", choices=EXPORT_FORMATS)
    parser.add_argument("--out", required=True, help="the folder to create (new or empty)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command; returns the exit status (0 ok, 2 bad flags or input)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"{PROG}: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)

    from music_spectrogram_diffusion.inference.loading import CheckpointLoadError
    from music_spectrogram_diffusion.weights.param_tree import WeightsError
    from music_spectrogram_diffusion.weights.transfer import export_weights

    try:
        out = export_weights(model_dir=args.model_dir, checkpoint=args.checkpoint,
                             format=args.format, out=args.out)
    except (WeightsError, CheckpointLoadError, OSError) as e:
        return cli_flags.fail(PROG, e)
    print(f"{out}: {args.format} folder written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
