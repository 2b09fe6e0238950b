"""MIDI -> audio with sampled instruments (tinysoundfont), for datasets and tests.

The default soundfont is TimGM6mb, which ships inside the pretty_midi wheel, so rendering needs
no system packages; any General MIDI .sf2 (for example Debian's FluidR3_GM) can be passed instead.
Rendering is a deterministic function of the MIDI file, soundfont and sample rate.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from music_spectrogram_diffusion.features import DEFAULT_FEATURES

# RMS level that rendered audio is normalized to (about -20 dBFS), then peak-limited below 1.
TARGET_RMS = 0.1
MAX_PEAK = 0.99


class RenderError(ValueError):
    """A MIDI file or soundfont that cannot be rendered."""


def default_soundfont_path() -> str:
    """Path of the TimGM6mb General MIDI soundfont inside the pretty_midi package."""
    import pretty_midi

    path = os.path.join(os.path.dirname(pretty_midi.__file__), "TimGM6mb.sf2")
    if not os.path.exists(path):
        raise RenderError(f"{path}: pretty_midi's TimGM6mb.sf2 soundfont is missing")
    return path


def normalize_loudness(samples: np.ndarray) -> np.ndarray:
    """Scales to TARGET_RMS, then lowers the gain if the peak would exceed MAX_PEAK."""
    samples = np.asarray(samples, np.float32)
    rms = float(np.sqrt(np.mean(np.square(samples)))) if samples.size else 0.0
    if rms < 1e-8:
        return samples
    gain = TARGET_RMS / rms
    peak = float(np.max(np.abs(samples))) * gain
    if peak > MAX_PEAK:
        gain *= MAX_PEAK / peak
    return (samples * gain).astype(np.float32)


def render_midi(
    midi: str | bytes,
    *,
    sample_rate: int = DEFAULT_FEATURES.sample_rate,
    soundfont: str | None = None,
    tail_seconds: float = 1.0,
    normalize: bool = True,
) -> np.ndarray:
    """Renders a MIDI file (path or bytes) to mono float32 audio.

    Args:
      midi: path of a Standard MIDI File, or its bytes.
      sample_rate: output rate in Hz.
      soundfont: path of a .sf2 file; defaults to TimGM6mb from pretty_midi.
      tail_seconds: rendered time after the last note-off, for release and reverb.
      normalize: scale to a fixed RMS loudness (see normalize_loudness).

    Returns:
      [num_samples] float32, num_samples = round((end_time + tail_seconds) * sample_rate).
    """
    import pretty_midi

    from music_spectrogram_diffusion import dependencies

    try:
        tinysoundfont = dependencies.require("tinysoundfont")
    except dependencies.MissingDependencyError as e:
        raise RenderError(str(e)) from e
    soundfont = soundfont or default_soundfont_path()
    if not os.path.isfile(soundfont):
        raise RenderError(f"{soundfont}: soundfont file not found")
    name = "<bytes>" if isinstance(midi, bytes) else midi
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(midi, bytes):
            path = os.path.join(tmp, "input.mid")
            with open(path, "wb") as f:
                f.write(midi)
        else:
            path = midi
        try:
            end_time = pretty_midi.PrettyMIDI(path).get_end_time()
        except Exception as e:  # pretty_midi raises many types for corrupt files.
            raise RenderError(f"{name}: not a readable MIDI file ({e})") from e
        synth = tinysoundfont.Synth(samplerate=sample_rate)
        try:
            synth.sfload(soundfont)
        except Exception as e:
            raise RenderError(f"{soundfont}: not a readable soundfont ({e})") from e
        sequencer = tinysoundfont.Sequencer(synth)
        sequencer.midi_load(path)
        num_samples = int(round((end_time + tail_seconds) * sample_rate))
        stereo = np.frombuffer(synth.generate(num_samples), dtype=np.float32)
    mono = stereo.reshape(-1, 2).mean(axis=1)
    return normalize_loudness(mono) if normalize else mono.astype(np.float32)
