"""msd-synthesize: MIDI -> WAV with a trained spectrogram model (spec §7).

    msd-synthesize --checkpoint MODEL_DIR --midi song.mid --out song.wav
    msd-synthesize --checkpoint MODEL_DIR/checkpoint_500000 --midi a.mid b.mid midi_dir/ \\
                   --out out_dir/ --sampler dpm++ --time_grid quadratic_t --steps 20 --guidance 2 \\
                   --seed 1 --save_mel --plot
    msd-synthesize --checkpoint MODEL_DIR --midi long.mid --out long.wav --stream

Each file is cut into 5.12 s segments; each segment is sampled with the previous one's
prediction as context, the log-mel is vocoded and trimmed to the notes plus a release tail.
Several inputs (or a directory) write OUT_DIR/<name>.wav and reuse the compiled model. All logic
lives in music_spectrogram_diffusion.inference (``files.synthesize_files``). ``--stream`` appends
each segment's audio to <name>.partial.wav as it is made; the final WAV is the same either way. Exits 2 with one
message naming the file or flag for bad input (corrupt, empty or over-long MIDI, unreadable
checkpoint, a vocoder built for other features, a bad flag value); no partial output is left.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from music_spectrogram_diffusion.cli import flags

PROG = "msd-synthesize"
# Library fields the messages may name, and the flag that sets each.
FLAG_NAMES = {"num_steps": "--steps", "guidance_weight": "--guidance",
              "release_seconds": "--release_seconds", "max_midi_seconds": "--max_seconds",
              "slakh_programs": "--slakh_programs"}


def _parser() -> argparse.ArgumentParser:
    from music_spectrogram_diffusion.diffusion.samplers import SAMPLER_NAMES, SAMPLERS, SamplerConfig
    from music_spectrogram_diffusion.diffusion.time_grids import TIME_GRID_NAMES
    from music_spectrogram_diffusion.inference.synthesis import SynthesisConfig

    sampler, synthesis = SamplerConfig(), SynthesisConfig()
    parser = flags.ArgumentParser(
        prog=PROG, description="Synthesize MIDI files with a trained spectrogram model.")
    parser.add_argument("--checkpoint", required=True,
                        help="training MODEL_DIR (newest checkpoint) or MODEL_DIR/checkpoint_<step>")
    parser.add_argument("--midi", required=True, nargs="+", metavar="MIDI",
                        help="MIDI files and/or directories of *.mid / *.midi files")
    parser.add_argument("--out", required=True,
                        help="output .wav (one MIDI file) or directory (OUT/<name>.wav)")
    parser.add_argument("--sampler", default=sampler.name, choices=SAMPLER_NAMES,
                        help=f"diffusion sampler (default {sampler.name} with 1000 steps, the "
                             "original's; 50x fewer network calls and within 1%% of its mel L1 "
                             "in the README's sampler benchmark: --sampler dpm++ --time-grid "
                             "quadratic_t --steps 20). " + "; ".join(
                                 f"{name}: {spec.description}" for name, spec in SAMPLERS.items()))
    parser.add_argument("--steps", type=int, default=sampler.num_steps,
                        help=f"sampler steps (default {sampler.num_steps}; 20 for dpm++)")
    parser.add_argument("--time_grid", "--time-grid", default=sampler.time_grid, choices=TIME_GRID_NAMES,
                        help=f"where the steps go in t (default {sampler.time_grid}, the original's)")
    parser.add_argument("--guidance", type=float, default=sampler.guidance_weight,
                        help=f"classifier-free guidance weight (default {sampler.guidance_weight:g};"
                             " 1 = no guidance, half the cost)")
    parser.add_argument("--seed", type=int, default=synthesis.seed,
                        help="sampling seed; the same seed gives the same audio")
    parser.add_argument("--vocoder", default="griffin-lim",
                        help="'griffin-lim' (default), a trained vocoder directory, the "
                             "SoundStream SavedModel directory, or the port's melgan folder "
                             "(model.onnx)")
    parser.add_argument("--release_seconds", "--release-seconds", type=float,
                        default=synthesis.release_seconds,
                        help="audio kept after the last note ends")
    parser.add_argument("--max_seconds", "--max-seconds", type=float,
                        default=synthesis.max_midi_seconds,
                        help="refuse MIDI files longer than this")
    parser.add_argument("--slakh_programs", "--slakh-programs", action="store_true",
                        help="map programs onto the Slakh classes (models trained on Slakh)")
    parser.add_argument("--save_mel", "--save-mel", action="store_true",
                        help="also write the log-mel as <name>.npy [frames, 128]")
    parser.add_argument("--plot", action="store_true",
                        help="also write a spectrogram picture <name>.png")
    parser.add_argument("--stream", action="store_true",
                        help="write each 5.12 s segment's audio to <name>.partial.wav as soon as "
                             "it is sampled (play it while a long song is generated); the final "
                             "<name>.wav is identical to a run without --stream")
    parser.add_argument("--no_progress", "--no-progress", action="store_true",
                        help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command; returns the exit status (0 ok, 2 bad input or flags)."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"{PROG}: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every file it reads

    from music_spectrogram_diffusion.audio.audio_io import AudioError
    from music_spectrogram_diffusion.audio.vocoders.checkpoints import VocoderCheckpointError
    from music_spectrogram_diffusion.data.midi_io import MidiError
    from music_spectrogram_diffusion.data.note_sequences import NoteSequenceError
    from music_spectrogram_diffusion.diffusion.samplers import SamplerConfig
    from music_spectrogram_diffusion.inference import files
    from music_spectrogram_diffusion.inference.loading import CheckpointLoadError
    from music_spectrogram_diffusion.inference.synthesis import SynthesisConfig, SynthesisError

    try:
        config = SynthesisConfig(
            sampler=SamplerConfig(name=args.sampler, num_steps=args.steps,
                                  guidance_weight=args.guidance, time_grid=args.time_grid),
            seed=args.seed, release_seconds=args.release_seconds,
            max_midi_seconds=args.max_seconds, slakh_programs=args.slakh_programs)
    except ValueError as e:
        return flags.fail(PROG, e, FLAG_NAMES)
    try:
        reports = files.synthesize_files(
            args.checkpoint, args.midi, args.out, config=config, vocoder=args.vocoder,
            save_mel=args.save_mel, plot=args.plot, show_progress=not args.no_progress,
            stream=args.stream)
    except (CheckpointLoadError, VocoderCheckpointError, SynthesisError, MidiError,
            NoteSequenceError, AudioError) as e:
        return flags.fail(PROG, e, FLAG_NAMES)
    for report in reports:
        result = report.result
        print(f"{report.paths.wav}: {result.audio_seconds:.2f} s, real-time factor "
              f"{result.real_time_factor:.3g} (model {result.spectrogram_seconds:.1f} s, "
              f"vocoder {result.vocoder_seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
