"""Scores vocoders on GROUND-TRUTH spectrograms of real audio: mel L1 and multi-resolution STFT.

    python scripts/evaluate_vocoders.py --data_dir=data/embedded --vocoder=griffin-lim \
        --vocoder=/path/to/vocoder_model_dir [--split=test] [--output=results.json]

Prints a table and writes JSON (per-piece numbers included). The logic lives in
music_spectrogram_diffusion/audio/vocoders/evaluation.py. Exits 2 with one message on bad input.
"""

from __future__ import annotations

import argparse
import sys

from music_spectrogram_diffusion.audio.vocoders import evaluation
from music_spectrogram_diffusion.audio.vocoders.checkpoints import VocoderCheckpointError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", default="data/embedded", help="dataset directory with manifest.json")
    parser.add_argument("--vocoder", action="append", default=None,
                        help="'griffin-lim', a trained vocoder MODEL_DIR or a SoundStream SavedModel (repeatable)")
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"))
    parser.add_argument("--max_pieces", type=int, default=None)
    parser.add_argument("--output", default=None, help="JSON output path")
    args = parser.parse_args(argv)
    try:
        results = evaluation.evaluate_vocoders(
            args.data_dir, args.vocoder or ["griffin-lim"], split=args.split, max_pieces=args.max_pieces
        )
    except (FileNotFoundError, ValueError, VocoderCheckpointError) as e:
        print(f"evaluate_vocoders: error: {e}", file=sys.stderr)
        return 2
    print(evaluation.format_table(results))
    if args.output:
        evaluation.write_json(args.output, results)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
