"""msd-train-vocoder: train (or resume) the GAN spectrogram inverter from gin files.

    msd-train-vocoder --gin_file=gin/vocoders/hifigan_small.gin \
        --gin.MODEL_DIR="'/path/model'" --gin.DATA_DIR="'/path/data'" --gin.TRAIN_STEPS=1000

t5x-style flags: ``--gin_file`` (repeatable) and ``--gin.NAME=VALUE`` bindings applied after the
files. Includes are resolved against the repository's ``gin/`` directory. The operative config
is written to MODEL_DIR/config.gin. Exits 2 with one message on a bad config or dataset.
"""

from __future__ import annotations

import argparse
import os
import sys

import gin

from music_spectrogram_diffusion.audio.vocoders.checkpoints import VocoderCheckpointError
from music_spectrogram_diffusion.training import checkpoints
from music_spectrogram_diffusion.training import vocoder_trainer

# <repo>/gin, so that 'include "vocoders/base.gin"' works from any working directory.
GIN_SEARCH_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "gin")


def parse_args(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """Returns (gin files, gin bindings) from t5x-style flags."""
    parser = argparse.ArgumentParser(prog="msd-train-vocoder", description=__doc__.split("\n")[0])
    parser.add_argument("--gin_file", action="append", default=[], required=True, help="gin config file")
    args, rest = parser.parse_known_args(argv)
    bindings = []
    for flag in rest:
        if not flag.startswith("--gin.") or "=" not in flag:
            parser.error(f"unrecognized argument {flag!r}; bindings are written --gin.NAME=VALUE")
        bindings.append(flag[len("--gin."):])
    return args.gin_file, bindings


def main(argv: list[str] | None = None) -> int:
    gin_files, bindings = parse_args(argv)
    for path in gin_files:
        if not os.path.isfile(path) and not os.path.isfile(os.path.join(GIN_SEARCH_PATH, path)):
            print(f"msd-train-vocoder: error: {path}: gin file not found", file=sys.stderr)
            return 2
    gin.add_config_file_search_path(GIN_SEARCH_PATH)
    gin.add_config_file_search_path(os.path.dirname(GIN_SEARCH_PATH))
    try:
        gin.parse_config_files_and_bindings(gin_files, bindings)
        model_dir = gin.query_parameter("%MODEL_DIR")
        train = gin.get_configurable(vocoder_trainer.train_vocoder)
        checkpoints.write_config(model_dir, gin.config_str())
        metrics = train()
    except (ValueError, FileNotFoundError, VocoderCheckpointError) as e:
        print(f"msd-train-vocoder: error: {e}", file=sys.stderr)
        return 2
    print("final metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
