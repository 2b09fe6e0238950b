"""msd-train-vocoder: train (or resume) the spectrogram inverter from gin files.

    msd-train-vocoder --gin_file=gin/vocoders/vocos_small.gin \
        --gin.MODEL_DIR="'/path/model'" --gin.DATA_DIR="'/path/data'" --gin.TRAIN_STEPS=1000

The same t5x-style gin flags as msd-train (``cli/gin_flags.py``): ``--gin_file`` (repeatable),
``--gin_search_paths``, and ``--gin.NAME=VALUE`` (or ``--gin.NAME VALUE``) bindings applied after
the files. The operative config is written to MODEL_DIR/config.gin once the dataset has been
checked. Exits 2 with one message on a bad config or dataset.
"""

from __future__ import annotations

import argparse
import sys

from music_spectrogram_diffusion import gin_config
from music_spectrogram_diffusion.cli import flags as cli_flags
from music_spectrogram_diffusion.cli import gin_flags

PROG = "msd-train-vocoder"


def _parser() -> argparse.ArgumentParser:
    parser = cli_flags.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    gin_flags.add_gin_flags(parser, required_macros=("MODEL_DIR", "DATA_DIR"))
    return parser


def main(argv: list[str] | None = None) -> int:
    import gin

    from music_spectrogram_diffusion.audio.vocoders.checkpoints import VocoderCheckpointError
    from music_spectrogram_diffusion.data.embedded_dataset import DatasetError
    from music_spectrogram_diffusion.training import checkpoints, vocoder_trainer

    flags, bindings = gin_flags.parse_flags(_parser(), sys.argv[1:] if argv is None else argv)
    try:
        config_text = gin_flags.parse_gin_flags(flags, bindings)
        model_dir = gin.query_parameter("%MODEL_DIR")
        train = gin.get_configurable(vocoder_trainer.train_vocoder)
        metrics = train(on_ready=lambda: checkpoints.write_config(model_dir, config_text))
    except (gin_config.GinConfigError, ValueError, FileNotFoundError, VocoderCheckpointError,
            DatasetError) as e:
        return cli_flags.fail(PROG, e)
    print("final metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
