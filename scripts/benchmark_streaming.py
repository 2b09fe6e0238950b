#!/usr/bin/env python
"""Streaming synthesis against one-pass synthesis on a long MIDI file (issue #16).

Usage:
  .venv/bin/python scripts/benchmark_streaming.py --checkpoint results/models/diffusion_context
  .venv/bin/python scripts/benchmark_streaming.py --checkpoint DIR --seconds 120 --vocoder DIR

Synthesizes one generated MIDI file (a melody over a held chord, ``--seconds`` long) twice with
the same seed: once with ``Synthesizer.synthesize_prepared`` and once with
``Synthesizer.stream_prepared`` (what ``msd-synthesize --stream`` runs). Reports the time to the
first audio, the total wall time and real-time factor of each, whether the final audio is
identical, and how far the streamed chunks are from it. Writes OUT/streaming.json and prints a
table. The first segment of each pass compiles; a warm-up pass on a short file runs first.
"""

import argparse
import os
import sys
import time

import numpy as np

from music_spectrogram_diffusion import file_io
from music_spectrogram_diffusion.audio.vocoders.base import load_vocoder
from music_spectrogram_diffusion.diffusion.samplers import SamplerConfig
from music_spectrogram_diffusion.inference import loading, synthesis
from music_spectrogram_diffusion.testing import midi_fixtures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="MODEL_DIR or checkpoint_<step>")
    parser.add_argument("--vocoder", default="griffin-lim")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the MIDI file")
    parser.add_argument("--sampler", default="dpm++")
    parser.add_argument("--time_grid", default="quadratic_t")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/streaming_benchmark")
    args = parser.parse_args(argv)

    loaded = loading.load_trained_model(args.checkpoint)
    config = synthesis.SynthesisConfig(
        sampler=SamplerConfig(name=args.sampler, num_steps=args.steps, time_grid=args.time_grid),
        seed=args.seed)
    synthesizer = synthesis.Synthesizer(loaded.model, loaded.params, load_vocoder(args.vocoder),
                                        config=config)
    prepared = synthesizer.prepare(midi_fixtures.melody_midi_bytes(args.seconds), name="melody")
    warm = synthesizer.prepare(midi_fixtures.melody_midi_bytes(6.0), name="warm-up")
    synthesizer.synthesize_prepared(warm)
    for _ in synthesizer.stream_prepared(warm):
        pass

    start = time.perf_counter()
    plain = synthesizer.synthesize_prepared(prepared)
    plain_seconds = time.perf_counter() - start

    start = time.perf_counter()
    first_audio, chunks, final = None, [], None
    for chunk in synthesizer.stream_prepared(prepared):
        if first_audio is None and len(chunk.audio):
            first_audio = time.perf_counter() - start
        chunks.append(chunk.audio)
        final = chunk.result
    stream_seconds = time.perf_counter() - start
    streamed = np.concatenate(chunks)
    reference_rms = float(np.sqrt(np.mean(plain.audio ** 2)))
    report = {
        "checkpoint": args.checkpoint, "vocoder": args.vocoder, "midi_seconds": args.seconds,
        "audio_seconds": plain.audio_seconds, "segments": len(prepared.segments),
        "sampler": f"{args.sampler} {args.time_grid} {args.steps} steps",
        "plain": {"first_audio_s": plain_seconds, "total_s": plain_seconds,
                  "real_time_factor": plain.audio_seconds / plain_seconds},
        "stream": {"first_audio_s": first_audio, "total_s": stream_seconds,
                   "real_time_factor": plain.audio_seconds / stream_seconds},
        "final_identical": bool(np.array_equal(final.audio, plain.audio)),
        "streamed_vs_final_rms_over_signal_rms": float(
            np.sqrt(np.mean((streamed - final.audio) ** 2))) / max(reference_rms, 1e-12),
        "machine": f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
    }
    os.makedirs(args.out, exist_ok=True)
    file_io.write_json_atomic(os.path.join(args.out, "streaming.json"), report)
    print(f"{report['audio_seconds']:.1f} s of audio ({report['segments']} segments), "
          f"{report['sampler']}, vocoder {args.vocoder}")
    print("| mode | first audio (s) | total (s) | real-time factor |")
    print("|---|---|---|---|")
    for mode in ("plain", "stream"):
        row = report[mode]
        print(f"| {mode} | {row['first_audio_s']:.2f} | {row['total_s']:.2f} | "
              f"{row['real_time_factor']:.3g} |")
    print(f"final audio identical: {report['final_identical']}; streamed chunks vs final: "
          f"RMS error / signal RMS = {report['streamed_vs_final_rms_over_signal_rms']:.3g}")
    return 0 if report["final_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
