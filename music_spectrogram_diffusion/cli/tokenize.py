"""msd-tokenize: print the note tokens of a MIDI file, one entry per 5.12 s segment.

    msd-tokenize song.mid [--velocity_bins 1|127] [--program_granularity full|midi_class|flat]

prints ``{"segments": [{"start_seconds": 0.0, "tokens": [1134, 13, ..., 1]}, ...]}``: token ids
as the model sees them (codec id + 3), each list ending with EOS = 1, without padding.
All logic lives in music_spectrogram_diffusion.data.tokenizer. Exits 2 with one message naming
the file for bad input (missing, not MIDI, corrupt, too many notes with --overflow error).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from music_spectrogram_diffusion.cli import flags


def _parser() -> argparse.ArgumentParser:
    from music_spectrogram_diffusion.data import tokenizer, vocabularies

    parser = flags.ArgumentParser(
        prog="msd-tokenize",
        description="Tokenize a MIDI file into per-segment note tokens (JSON on stdout).")
    parser.add_argument("midi_file", help="path of a Standard MIDI File")
    parser.add_argument("--velocity_bins", "--velocity-bins", type=int, default=1,
                        choices=vocabularies.VELOCITY_BIN_CHOICES,
                        help="velocity bins: 1 (released models) or 127")
    parser.add_argument("--program_granularity", "--program-granularity", default="full",
                        choices=vocabularies.PROGRAM_GRANULARITY_CHOICES,
                        help="keep programs (full), map to GM classes, or drop them (flat)")
    parser.add_argument("--overflow", default="truncate", choices=tokenizer.OVERFLOW_CHOICES,
                        help="segments with more than 2047 tokens: truncate, skip or error")
    parser.add_argument("--slakh_programs", "--slakh-programs", action="store_true",
                        help="map programs onto the Slakh classes of the released checkpoints")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command; returns the exit status (0 on success, 2 for bad input)."""
    import logging

    from music_spectrogram_diffusion.data import midi_io, note_sequences, tokenizer, vocabularies

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="msd-tokenize: %(message)s")
    vocab = vocabularies.VocabularyConfig(num_velocity_bins=args.velocity_bins,
                                          program_granularity=args.program_granularity)
    try:
        segments = tokenizer.tokenize_midi(args.midi_file, vocab=vocab, overflow=args.overflow,
                                           slakh_programs=args.slakh_programs)
    except (midi_io.MidiError, note_sequences.NoteSequenceError,
            tokenizer.TokenOverflowError) as e:
        return flags.fail("msd-tokenize", e)
    result = {"segments": [{"start_seconds": segment.start_seconds,
                            "tokens": segment.tokens.tolist()} for segment in segments]}
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
