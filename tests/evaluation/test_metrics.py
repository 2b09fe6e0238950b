"""The metric aggregator over songs and the prediction timer."""

import numpy as np
import pytest

from music_spectrogram_diffusion.audio import spectrograms
from music_spectrogram_diffusion.evaluation import embedders
from music_spectrogram_diffusion.evaluation import metrics
from music_spectrogram_diffusion.evaluation import transcription


def _song(seed: int, seconds: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.2 * np.sin(2 * np.pi * rng.uniform(200, 800) * t)).astype(np.float32)


def test_identical_predictions_score_zero_and_columns_are_present():
    references = [_song(0), _song(1), _song(2)]
    songs = [
        metrics.SongEvaluation(
            reference_audio=audio,
            # A generated tail beyond the real audio is cut off before scoring (spec §11.9).
            predicted_audio=np.r_[audio, np.ones(8000, np.float32)],
            predicted_mel=spectrograms.compute_log_mel_numpy(audio),
            reference_mel=spectrograms.compute_log_mel_numpy(audio),
            song_id=str(i),
        )
        for i, audio in enumerate(references)
    ]
    with embedders.get_embedder("logmel") as embedder:
        results = metrics.evaluate_songs(songs, embedders=[embedder])
    assert results["examples_count"] == 3
    assert results["logmel_distance"] == 0.0
    # 6 frames of 128 dims give a singular covariance; sqrtm is then accurate to ~1e-5.
    assert results["logmel_frechet"] == pytest.approx(0.0, abs=1e-3)
    assert results["mel_l1"] == 0.0 and results["mel_l2"] == 0.0
    assert results["mr_stft"] == 0.0
    assert not any("onset" in key for key in results)  # no transcriber given


def test_worse_predictions_score_worse():
    references = [_song(i) for i in range(4)]

    def score(noise: float) -> dict:
        rng = np.random.default_rng(7)
        songs = (
            metrics.SongEvaluation(audio, audio + rng.normal(size=audio.shape).astype(np.float32) * noise)
            for audio in references
        )
        with embedders.get_embedder("logmel") as embedder:
            return metrics.evaluate_songs(songs, embedders=[embedder])

    quiet, loud = score(0.001), score(0.05)
    for key in ("logmel_distance", "logmel_frechet", "mr_stft"):
        assert loud[key] > quiet[key] > 0.0, key
    assert "mel_l1" not in quiet  # no mels given


def test_transcription_rows_with_reference_notes():
    notes = transcription.NoteArrays([[0.1, 0.6]], [69])
    t = np.arange(16000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * ((t > 0.1) & (t < 0.6))).astype(np.float32)
    song = metrics.SongEvaluation(tone, np.zeros_like(tone), reference_notes=notes)
    results = metrics.evaluate_songs([song], transcriber=transcription.BasicPitchTranscriber())
    assert results["Model onset F1"] == 0.0  # silence
    assert results["GT onset F1"] == 1.0  # one clean A4 is transcribed exactly


def test_prediction_timer():
    timer = metrics.PredictionTimer()
    with timer.measure(audio_seconds=5.12):
        pass
    result = timer.call(lambda x: np.asarray(x) * 2, np.ones(3), audio_seconds=5.12)
    np.testing.assert_array_equal(result, 2 * np.ones(3))
    summary = timer.summary()
    assert timer.chunks == 2 and timer.audio_seconds == pytest.approx(10.24)
    assert summary["prediction_seconds_per_audio_second"] == pytest.approx(timer.seconds / 10.24)
    assert summary["prediction_seconds_per_chunk"] == pytest.approx(timer.seconds / 2)
    with pytest.raises(ValueError, match="measured nothing"):
        metrics.PredictionTimer().summary()
