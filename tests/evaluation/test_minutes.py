"""The original's protocol over time: the 10-minute cap, per-minute chunks, FD-inf in the rows.

Songs are real files written here (WAV audio, MIDI notes) and go through the real metrics (log-mel
embedder, mel distances, MR-STFT); only the transcriber is a stub, so that F1 depends on the
notes of each chunk alone.
"""

import json
import logging
import os

import numpy as np
import pytest

from music_spectrogram_diffusion.audio import audio_io, spectrograms
from music_spectrogram_diffusion.cli import evaluate as evaluate_cli
from music_spectrogram_diffusion.data import midi_io
from music_spectrogram_diffusion.evaluation import (embedders, frechet, metrics, minutes,
                                                    references, report, runner,
                                                    spectral_metrics, transcription)
from music_spectrogram_diffusion.evaluation.embedders import InProcessEmbedder
from music_spectrogram_diffusion.features import DEFAULT_FEATURES
from music_spectrogram_diffusion.testing.midi_fixtures import make_midi_bytes

RATE = DEFAULT_FEATURES.sample_rate
# One STFT resolution keeps the MR-STFT of two minutes of audio fast on a CPU.
STFT_RESOLUTIONS = ((1024, 256, 1024),)


def _audio(seconds: float, seed: int) -> np.ndarray:
    """A sine whose pitch steps every 5 s, plus noise: every chunk sounds different."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    freq = 220.0 * 2 ** (np.floor(t / 5.0) % 12 / 12)
    tone = 0.3 * np.sin(2 * np.pi * np.cumsum(freq) / RATE)
    return (tone + 0.01 * rng.normal(size=t.shape)).astype(np.float32)


def _write_song(folder, name: str, seconds: float, seed: int) -> references.Song:
    """NAME.wav and NAME.mid: one C4 0.5 s into each 5.12 s chunk of an even index."""
    audio_path = os.path.join(folder, name + ".wav")
    midi_path = os.path.join(folder, name + ".mid")
    audio_io.write_wav(audio_path, _audio(seconds, seed), RATE)
    chunk = DEFAULT_FEATURES.segment_seconds
    notes = [(0, False, 60, i * chunk + 0.5, i * chunk + 1.0)
             for i in range(0, int(seconds / chunk), 2)]
    with open(midi_path, "wb") as f:
        f.write(make_midi_bytes(notes))
    return references.Song(name, midi_path, audio_path)


class _StubTranscriber:
    """Always hears one C4 from 0.5 to 1.0 s: F1 is 1 where the reference notes agree."""

    def transcribe(self, audio, sample_rate=RATE):
        return transcription.NoteArrays([[0.5, 1.0]], [60])


def test_minute_chunks_are_the_originals():
    # floor(m * 60 * 50 / 256) for m = 0, 1, 10 (spec §8.4): chunks 0, 11, 117.
    assert [(c.start_frame, c.end_frame) for c in map(minutes.minute_chunk, (0, 1, 10))] == [
        (0, 256), (2816, 3072), (29952, 30208)]
    chunk = minutes.minute_chunk(2)
    assert (chunk.start_seconds, chunk.end_seconds) == pytest.approx((117.76, 122.88))
    assert minutes.minutes_within(600.0) == tuple(range(11))  # minute 10 ends at the cap
    assert minutes.minutes_within(None) == tuple(range(11))
    assert minutes.minutes_within(61.44) == (0, 1)
    assert minutes.minutes_within(61.0) == (0, 1)  # rounded up to whole segments: 61.44 s
    assert minutes.minutes_within(20.48) == ()  # the main job's excerpt: one chunk, no drift
    with pytest.raises(ValueError, match="whole number >= 0"):
        minutes.minute_chunk(-1)


def test_slice_notes_is_extract_subsequence():
    notes = transcription.NoteArrays([[0.5, 2.5], [2.2, 2.4], [2.9, 4.0], [4.0, 4.5]],
                                     [60, 61, 62, 63])
    sliced = minutes.slice_notes(notes, 2.0, 4.0)
    # Started before the span: dropped; crosses its end: clipped; starts at its end: dropped.
    np.testing.assert_allclose(sliced.intervals, [[0.2, 0.4], [0.9, 2.0]])
    assert sliced.pitches.tolist() == [61, 62]
    with pytest.raises(ValueError, match="empty time span"):
        minutes.slice_notes(notes, 3.0, 3.0)


def _song_evaluation(song: references.Song, noise: float, seed: int) -> metrics.SongEvaluation:
    """A song read back from its files, "synthesized" as the real audio plus noise."""
    reference = audio_io.load_audio(song.audio_path, RATE)
    rng = np.random.default_rng(seed)
    predicted = reference + noise * rng.normal(size=reference.shape).astype(np.float32)
    return metrics.SongEvaluation(
        reference_audio=reference, predicted_audio=predicted,
        reference_notes=midi_io.read_midi(song.midi_path),
        predicted_mel=spectrograms.compute_log_mel_numpy(predicted),
        reference_mel=spectrograms.compute_log_mel_numpy(reference), song_id=song.id)


def test_per_minute_columns_equal_the_metrics_of_each_chunk(tmp_path):
    # Minute 2's chunk ends at 122.88 s, minute 1's at 61.44 s.
    songs = [_song_evaluation(_write_song(tmp_path, "long", 123.0, 0), 0.05, 1),
             _song_evaluation(_write_song(tmp_path, "short", 62.0, 2), 0.02, 3)]
    with embedders.get_embedder("logmel") as embedder:
        results = metrics.evaluate_songs(songs, embedders=[embedder],
                                         transcriber=_StubTranscriber(), minutes=(0, 1, 2, 3),
                                         stft_resolutions=STFT_RESOLUTIONS)
        assert results["examples_count"] == 2
        # Minute 2 (117.76-122.88 s) is in the 123-s song only; minute 3 in neither.
        assert [results[minutes.minute_key("examples_count", m)] for m in (0, 1, 2)] == [2, 2, 1]
        assert not any(key.endswith("_3minute") for key in results)
        for minute, covering in ((1, songs), (2, songs[:1])):
            chunk = minutes.minute_chunk(minute)
            parts = [minutes.slice_song(song, chunk) for song in covering]
            assert all(len(p.reference_audio) == 256 * 320 for p in parts)
            mel = [spectral_metrics.mel_distances(p.predicted_mel, p.reference_mel) for p in parts]
            stft = [spectral_metrics.multi_resolution_stft(p.predicted_audio, p.reference_audio,
                                                           STFT_RESOLUTIONS) for p in parts]
            frames = [(embedder.embed(p.reference_audio), embedder.embed(p.predicted_audio))
                      for p in parts]
            first, second = frechet.StreamingGaussian(128), frechet.StreamingGaussian(128)
            for target, predicted in frames:
                first.update(target)
                second.update(predicted)
            expected = {
                "mel_l1": np.mean([m["mel_l1"] for m in mel]),
                "mel_l2": np.mean([m["mel_l2"] for m in mel]),
                "mr_stft": np.mean(stft),
                "logmel_distance": np.mean([frechet.mean_frame_distance(*f) for f in frames]),
                "logmel_frechet": frechet.gaussian_frechet_distance(first, second),
            }
            for key, value in expected.items():
                assert results[minutes.minute_key(key, minute)] == pytest.approx(value, rel=1e-6)
        assert results["mel_l1_2minute"] != pytest.approx(results["mel_l1_1minute"])
    # The C4 sits at 0.5 s of every even chunk: minute 0 (chunk 0) and minute 2 (chunk 23, odd)
    # give F1 1 and 0; minute 1 is chunk 11 (odd) in both songs.
    f1 = "Model onset + offset F1"
    assert [results[minutes.minute_key(f1, m)] for m in (0, 1, 2)] == [1.0, 0.0, 0.0]
    assert results[minutes.minute_key("GT onset F1", 0)] == 1.0
    # Too few frames for FD-inf in 200 s of 1-s frames of 128 dims: left out, not a number.
    assert "logmel_frechet_inf" not in results


class _TinyBackend:
    """4 summary features per 0.1 s: enough frames for FD-inf from a minute of audio."""

    dim = 4

    def embed(self, audio):
        frames = audio[: len(audio) // 1600 * 1600].reshape(-1, 1600)
        return np.stack([frames.mean(1), frames.std(1), np.abs(frames).max(1),
                         np.abs(np.diff(frames, axis=1)).mean(1)], axis=1).astype(np.float32)


def test_fd_inf_is_reported_with_enough_frames_and_explained_without(caplog):
    rng = np.random.default_rng(0)
    songs = [metrics.SongEvaluation(audio, audio + 0.05 * rng.normal(size=audio.shape)
                                    .astype(np.float32))
             for audio in (_audio(30.0, 5), _audio(30.0, 6))]
    embedder = InProcessEmbedder("tiny", _TinyBackend())
    results = metrics.evaluate_songs(songs, embedders=[embedder],
                                     stft_resolutions=STFT_RESOLUTIONS)
    # 600 frames per side of 4 dims: FD-inf is fitted and lands near the plain FD.
    assert results["tiny_frechet_inf"] == pytest.approx(results["tiny_frechet"], rel=0.5)
    assert results == metrics.evaluate_songs(songs, embedders=[embedder],  # seeded subsets
                                             stft_resolutions=STFT_RESOLUTIONS)
    with caplog.at_level(logging.WARNING):
        short = metrics.evaluate_songs([metrics.SongEvaluation(songs[0].reference_audio[:16000],
                                                               songs[0].predicted_audio[:16000])],
                                       embedders=[embedder], stft_resolutions=STFT_RESOLUTIONS)
    assert "tiny_frechet_inf" not in short and np.isfinite(short["tiny_frechet"])
    assert "too few vectors for FD-inf" in caplog.text


def test_ten_minute_cap_truncates_an_eleven_minute_song(tmp_path):
    song = _write_song(tmp_path, "eleven", 660.0, 0)
    config = runner.EvalConfig()
    assert config.max_seconds == minutes.PROTOCOL_MAX_SECONDS
    [capped] = references.load_references([song], config.max_seconds)
    # The end of the segment holding minute 10: 118 segments of 5.12 s = 604.16 s.
    assert capped.max_segments == 118
    assert len(capped.audio) == 118 * 256 * 320 == int(604.16 * RATE)
    assert abs(len(capped.log_mel) - 118 * 256) <= 1
    assert minutes.slice_notes(capped.notes, 0.0, 604.16).intervals[-1, 0] < 604.16
    full = audio_io.load_audio(song.audio_path, RATE)
    assert len(full) == 660 * RATE
    np.testing.assert_array_equal(capped.audio, full[: len(capped.audio)])


def test_cli_max_seconds_defaults_to_the_cap_and_takes_none(tmp_path, capsys):
    parse = evaluate_cli._parser().parse_args
    base = ["--model_dir", "m", "--out", "o"]
    assert parse(base).max_seconds == 600.0
    assert parse(base + ["--max_seconds", "none"]).max_seconds is None
    assert parse(base + ["--max_seconds", "20.48"]).max_seconds == 20.48
    with pytest.raises(SystemExit) as exit_info:
        parse(base + ["--max_seconds", "ten"])
    assert exit_info.value.code == 2
    assert "'ten' is neither a number of seconds nor 'none'" in capsys.readouterr().err
    code = evaluate_cli.main([*base, "--max_seconds", "0", "--split", "test",
                              "--data_dir", str(tmp_path)])
    assert code == 2 and "--max_seconds must be > 0" in capsys.readouterr().err


def test_fingerprint_follows_minutes_and_the_song_files(tmp_path):
    midi, audio = tmp_path / "a.mid", tmp_path / "a.wav"
    midi.write_bytes(b"MThd-1")
    audio.write_bytes(b"RIFF-1")
    songs = [references.Song("a", str(midi), str(audio))]
    short, full = runner.EvalConfig(max_seconds=20.48), runner.EvalConfig()
    # The main job's 20.48 s has no per-minute chunks; the 10-minute protocol has 11.
    assert short.minutes == () and full.minutes == tuple(range(11))
    assert short.fingerprint(songs) == short.fingerprint(songs) != full.fingerprint(songs)
    # Other audio under the same name (a re-prepared dataset) makes stored rows stale.
    before = short.fingerprint(songs)
    audio.write_bytes(b"RIFF-2")
    assert short.fingerprint(songs) != before


def _row(label, kind, values, step=None):
    return {"label": label, "kind": kind, "model_label": "ctx" if kind == "model" else None,
            "step": step, "metrics": values}


def test_report_tabulates_and_plots_minutes_and_shows_fd_inf(tmp_path):
    per_minute = {f"mel_l1_{m}minute": 0.1 * (m + 1) for m in range(3)}
    rows = [_row("Ground truth (real audio)", "ground_truth",
                 {"mel_l1": 0.0, **{k: 0.0 for k in per_minute}}),
            _row("ctx @ 5", "model", {"mel_l1": 0.3, "logmel_frechet": 2.0,
                                      "logmel_frechet_inf": 1.5, **per_minute}, step=5)]
    config = runner.EvalConfig(embedders=("logmel",), transcribe=False)
    paths = report.write_report(str(tmp_path), rows, config=config, songs=[])
    with open(paths["markdown"]) as f:
        markdown = f.read()
    assert "| Row | logmel dist. | logmel FD | logmel FD-inf | mel L1 |" in markdown
    assert "| ctx @ 5 | - | 2.000 | 1.500 | 0.300 |" in markdown
    assert "### mel L1 by minute" in markdown
    assert "| Row | 0 min | 1 min | 2 min |" in markdown
    assert "| ctx @ 5 | 0.100 | 0.200 | 0.300 |" in markdown
    assert "the first 10 minutes of each song" in markdown and "FD-inf: the Frechet" in markdown
    assert os.path.basename(paths["drift_plot"]) == "metrics_vs_minute.png"
    assert os.path.getsize(paths["drift_plot"]) > 0
    with open(paths["json"]) as f:
        assert json.load(f)["rows"][1]["metrics"]["mel_l1_2minute"] == pytest.approx(0.3)


def test_an_evaluation_of_a_long_song_writes_minutes_and_the_drift_plot(tmp_path):
    song = _write_song(tmp_path, "long", 123.0, 0)
    config = runner.EvalConfig(embedders=("logmel",), transcribe=False, num_example_wavs=0)
    result = runner.run_evaluation({}, [song], out_dir=str(tmp_path / "eval"), config=config,
                                   show_progress=False)
    vocoded = result.rows[1]["metrics"]
    assert result.rows[1]["label"] == "Ground truth -> griffin-lim"
    assert [vocoded[minutes.minute_key("examples_count", m)] for m in (0, 1, 2)] == [1, 1, 1]
    assert vocoded["mel_l1_1minute"] > 0 and result.rows[0]["metrics"]["mel_l1_1minute"] == 0
    assert not any(key.endswith("_3minute") for key in vocoded)
    assert os.path.getsize(result.report_paths["drift_plot"]) > 0
    with open(result.report_paths["markdown"]) as f:
        assert "### MR-STFT by minute" in f.read()
