"""Reading real audio files of various rates, channel counts and formats; atomic WAV writing."""

import os

import numpy as np
import pytest
import soundfile

from music_spectrogram_diffusion.audio import audio_io
from music_spectrogram_diffusion.audio.audio_io import AudioError


def _sine(frequency: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def _dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.shape[0])))
    return float(np.argmax(spectrum) * rate / samples.shape[0])


def test_44k_stereo_wav_becomes_16k_mono(tmp_path):
    left = _sine(440.0, 1.0, 44100, amplitude=0.6)
    right = _sine(440.0, 1.0, 44100, amplitude=0.2)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), 44100, subtype="PCM_16")
    audio = audio_io.load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.shape[0] - 16000) <= 1
    assert _dominant_hz(audio, 16000) == pytest.approx(440.0, abs=2.0)
    # Mono is the channel mean: amplitude (0.6 + 0.2) / 2, away from the resampler's edges.
    middle = audio[2000:-2000]
    assert np.max(np.abs(middle)) == pytest.approx(0.4, abs=0.01)


def test_16k_mono_wav_is_read_unchanged(tmp_path):
    sine = _sine(1000.0, 0.5, 16000)
    path = tmp_path / "mono.wav"
    soundfile.write(path, sine, 16000, subtype="PCM_16")
    audio = audio_io.load_audio(str(path))
    assert audio.shape == sine.shape and audio.dtype == np.float32
    np.testing.assert_allclose(audio, sine, atol=1.0 / 32768)


@pytest.mark.parametrize("fmt, rate", [("FLAC", 22050), ("FLAC", 16000), ("OGG", 48000)])
def test_flac_and_ogg_are_read_as_16k_mono(tmp_path, fmt, rate):
    sine = _sine(500.0, 1.0, rate)
    path = tmp_path / f"tone.{fmt.lower()}"
    soundfile.write(path, np.stack([sine, sine], axis=1), rate, format=fmt)
    audio = audio_io.load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.shape[0] - 16000) <= 1
    assert _dominant_hz(audio, 16000) == pytest.approx(500.0, abs=2.0)
    assert np.max(np.abs(audio[2000:-2000])) == pytest.approx(0.5, abs=0.03)


def test_other_target_rates(tmp_path):
    path = tmp_path / "tone.wav"
    soundfile.write(path, _sine(300.0, 1.0, 16000), 16000)
    assert audio_io.load_audio(path, sample_rate=8000).shape == (8000,)


def test_missing_corrupt_and_empty_files_raise_one_clear_error(tmp_path):
    with pytest.raises(AudioError, match=r"missing\.wav: audio file not found"):
        audio_io.load_audio(tmp_path / "missing.wav")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(200)))
    with pytest.raises(AudioError, match=r"corrupt\.wav: not a readable audio file"):
        audio_io.load_audio(corrupt)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.wav: audio file is empty"):
        audio_io.load_audio(empty)
    no_samples = tmp_path / "no_samples.wav"
    soundfile.write(no_samples, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match=r"no_samples\.wav: audio file holds no samples"):
        audio_io.load_audio(no_samples)
    with pytest.raises(AudioError, match="not a regular file"):
        audio_io.load_audio(tmp_path)
    assert issubclass(AudioError, ValueError)


def test_resampler_failure_names_the_file(tmp_path, monkeypatch):
    import librosa

    path = tmp_path / "odd_rate.wav"
    soundfile.write(path, _sine(300.0, 0.1, 22050), 22050)

    def fail(*args, **kwargs):
        raise RuntimeError("soxr: invalid ratio")

    monkeypatch.setattr(librosa, "resample", fail)
    with pytest.raises(AudioError, match=r"odd_rate\.wav: cannot resample from 22050 Hz to "
                                         r"16000 Hz \(RuntimeError: soxr: invalid ratio\)"):
        audio_io.load_audio(path)


def test_write_wav_round_trip_16_bit(tmp_path):
    samples = _sine(440.0, 0.25, 16000, amplitude=0.9)
    samples[:3] = [1.5, -2.0, 0.0]  # clipped to the 16-bit range
    path = tmp_path / "out.wav"
    audio_io.write_wav(path, samples)
    info = soundfile.info(path)
    assert (info.samplerate, info.channels, info.subtype, info.format) == (
        16000, 1, "PCM_16", "WAV")
    read, _ = soundfile.read(path, dtype="float32")
    expected = np.clip(samples, -1.0, 1.0)
    np.testing.assert_allclose(read, expected, atol=1.0 / 32768 + 1e-7)
    assert os.listdir(tmp_path) == ["out.wav"]
    assert os.stat(path).st_mode & 0o777 == 0o644
    np.testing.assert_allclose(audio_io.load_audio(path), read)


def test_write_wav_leaves_nothing_half_written(tmp_path, monkeypatch):
    path = tmp_path / "song.wav"
    audio_io.write_wav(path, np.zeros(100, np.float32))
    before = path.read_bytes()

    bad = np.zeros(100, np.float32)
    bad[5] = np.nan
    with pytest.raises(AudioError, match=r"song\.wav: samples must be finite"):
        audio_io.write_wav(path, bad)
    with pytest.raises(AudioError, match=r"new\.wav: expected samples of shape"):
        audio_io.write_wav(tmp_path / "new.wav", np.zeros((2, 3, 4)))
    with pytest.raises(AudioError, match="sample rate must be a positive integer"):
        audio_io.write_wav(tmp_path / "new.wav", np.zeros(10), sample_rate=0)
    with pytest.raises(AudioError, match="samples must be floats in"):
        audio_io.write_wav(tmp_path / "new.wav", np.zeros(10, np.int16))
    with pytest.raises(AudioError, match="does not exist"):
        audio_io.write_wav(tmp_path / "no_dir" / "x.wav", np.zeros(10))

    # A failure in the middle of writing: some bytes are out, then the writer dies.
    def failing_write(file, data, *args, **kwargs):
        file.write(b"RIFF partial")
        raise OSError("disk full")

    monkeypatch.setattr(soundfile, "write", failing_write)
    with pytest.raises(AudioError, match=r"song\.wav: could not write WAV file \(disk full\)"):
        audio_io.write_wav(path, np.ones(100, np.float32) * 0.5)
    with pytest.raises(AudioError, match=r"fresh\.wav: could not write"):
        audio_io.write_wav(tmp_path / "fresh.wav", np.zeros(10))
    assert sorted(os.listdir(tmp_path)) == ["song.wav"]  # no temp files, no fresh.wav
    assert path.read_bytes() == before  # the previous file is intact
