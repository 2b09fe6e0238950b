"""MIDI rendering with tinysoundfont: real MIDI bytes in, real audio out."""

import io

import numpy as np
import pretty_midi
import pytest

from music_spectrogram_diffusion.data import rendering


def _piano_midi_bytes(end: float = 1.0) -> bytes:
    midi = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    piano.notes.append(pretty_midi.Note(velocity=100, pitch=60, start=0.0, end=end))
    midi.instruments.append(piano)
    buffer = io.BytesIO()
    midi.write(buffer)
    return buffer.getvalue()


def test_render_length_loudness_and_determinism(tmp_path):
    midi_bytes = _piano_midi_bytes(end=1.0)
    audio = rendering.render_midi(midi_bytes, tail_seconds=0.5)
    assert audio.dtype == np.float32
    assert audio.shape == (int(round(1.5 * 16000)),)
    np.testing.assert_allclose(np.sqrt(np.mean(audio**2)), rendering.TARGET_RMS, rtol=1e-3)
    assert np.max(np.abs(audio)) <= rendering.MAX_PEAK + 1e-6
    path = tmp_path / "piano.mid"
    path.write_bytes(midi_bytes)
    np.testing.assert_array_equal(rendering.render_midi(str(path), tail_seconds=0.5), audio)
    # The note sounds in the first second and has died away long after its release.
    assert np.abs(audio[:16000]).max() > 0.1


def test_render_errors_name_the_file(tmp_path):
    bad = tmp_path / "corrupt.mid"
    bad.write_bytes(b"not a midi file")
    with pytest.raises(rendering.RenderError, match="corrupt.mid"):
        rendering.render_midi(str(bad))
    with pytest.raises(rendering.RenderError, match="missing.sf2"):
        rendering.render_midi(_piano_midi_bytes(), soundfont=str(tmp_path / "missing.sf2"))


def test_normalize_loudness_keeps_silence():
    np.testing.assert_array_equal(rendering.normalize_loudness(np.zeros(10)), np.zeros(10))
