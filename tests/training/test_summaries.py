"""Eval-time summaries people look at and listen to: spectrogram images and Griffin-Lim audio."""

import os

import numpy as np

from music_spectrogram_diffusion.audio import spectrograms
from music_spectrogram_diffusion.features import DEFAULT_FEATURES
from music_spectrogram_diffusion.training import summaries


def _log_mel_of_sine(frequency: float, frames: int = 64) -> np.ndarray:
    seconds = frames * DEFAULT_FEATURES.hop_length / DEFAULT_FEATURES.sample_rate
    t = np.arange(int(seconds * DEFAULT_FEATURES.sample_rate)) / DEFAULT_FEATURES.sample_rate
    audio = (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
    return spectrograms.compute_log_mel_numpy(audio, DEFAULT_FEATURES)[:frames]


def _dominant_hz(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * DEFAULT_FEATURES.sample_rate / len(audio))


def test_sampled_audio_summaries_and_wavs(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator

    target, sampled = _log_mel_of_sine(440.0), _log_mel_of_sine(880.0)
    writer = summaries.SummaryWriter(str(tmp_path / "eval"))
    clips = summaries.write_sampled_audio(writer, 7, target, sampled, str(tmp_path / "eval"))
    writer.close()

    samples = len(target) * DEFAULT_FEATURES.hop_length
    assert {k: v.shape for k, v in clips.items()} == {"target": (samples,), "sampled": (samples,)}
    # Griffin-Lim gives back the pitch the log-mel holds (within one mel band at 440/880 Hz).
    assert abs(_dominant_hz(clips["target"]) - 440.0) < 25
    assert abs(_dominant_hz(clips["sampled"]) - 880.0) < 40

    accumulator = event_accumulator.EventAccumulator(
        str(tmp_path / "eval"), size_guidance={event_accumulator.AUDIO: 0})
    accumulator.Reload()
    assert sorted(accumulator.Tags()[event_accumulator.AUDIO]) == ["audio/sampled", "audio/target"]
    event = accumulator.Audio("audio/sampled")[0]
    assert (event.step, event.sample_rate, event.length_frames) == (7, 16000, samples)
    assert event.encoded_audio_string[:4] == b"RIFF" and event.content_type == "audio/wav"
    for name in ("target", "sampled"):
        path = tmp_path / "eval" / f"audio_step_7_{name}.wav"
        assert os.path.getsize(path) == 44 + 2 * samples  # 16-bit mono WAV
