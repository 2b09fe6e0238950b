"""inference/files.py without a model: input discovery, output planning, all-or-nothing writes."""

import os

import numpy as np
import pytest
import soundfile

from music_spectrogram_diffusion.audio.audio_io import AudioError
from music_spectrogram_diffusion.inference import files
from music_spectrogram_diffusion.inference.synthesis import SynthesisError, SynthesisResult


def _result(seconds=1.0, value=0.25):
    samples = int(seconds * 16000)
    t = np.arange(samples) / 16000
    return SynthesisResult(
        audio=(value * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
        log_mel=np.full((samples // 320, 128), -5.0, np.float32), sample_rate=16000,
        midi_seconds=seconds, segment_seconds=(0.5,), vocoder_seconds=0.1)


def test_collect_midi_files_expands_directories_sorted(tmp_path):
    for name in ("b.mid", "a.MIDI", "c.txt"):
        (tmp_path / name).write_bytes(b"MThd")
    (tmp_path / "sub.mid").mkdir()  # a directory named like a MIDI file is skipped
    single = tmp_path / "x.mid"
    single.write_bytes(b"MThd")
    found = files.collect_midi_files([str(tmp_path), str(single)])
    assert [os.path.basename(p) for p in found] == ["a.MIDI", "b.mid", "x.mid", "x.mid"]
    with pytest.raises(SynthesisError, match="nope.mid: no such MIDI file"):
        files.collect_midi_files([str(tmp_path / "nope.mid")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SynthesisError, match="empty: directory has no MIDI files"):
        files.collect_midi_files([str(empty)])


def test_plan_outputs(tmp_path):
    one = files.plan_outputs(["a/song.mid"], ["a/song.mid"], str(tmp_path / "x.wav"))
    assert one == [files.OutputPaths("a/song.mid", str(tmp_path / "x.wav"))]
    assert one[0].mel == str(tmp_path / "x.npy") and one[0].png == str(tmp_path / "x.png")
    many = files.plan_outputs(["d"], ["d/a.mid", "d/b.midi"], str(tmp_path / "out"))
    assert [p.wav for p in many] == [str(tmp_path / "out" / "a.wav"),
                                     str(tmp_path / "out" / "b.wav")]
    # One MIDI file and an existing directory: the file goes inside it.
    inside = files.plan_outputs(["a/song.mid"], ["a/song.mid"], str(tmp_path))
    assert inside[0].wav == str(tmp_path / "song.wav")
    existing = tmp_path / "file"
    existing.write_text("")
    with pytest.raises(SynthesisError, match="exists and is not a directory"):
        files.plan_outputs(["d"], ["d/a.mid"], str(existing))


def test_write_outputs_writes_wav_mel_and_png(tmp_path):
    paths = files.OutputPaths("song.mid", str(tmp_path / "new_dir" / "song.wav"))
    result = _result()
    written = files.write_outputs(result, paths, save_mel=True, plot=True)
    assert sorted(written) == sorted([paths.wav, paths.mel, paths.png])
    audio, rate = soundfile.read(paths.wav, dtype="float32")
    assert rate == 16000
    np.testing.assert_allclose(audio, result.audio, atol=1 / 32767)
    np.testing.assert_array_equal(np.load(paths.mel), result.log_mel)
    assert sorted(os.listdir(tmp_path / "new_dir")) == ["song.npy", "song.png", "song.wav"]
    assert all(os.stat(path).st_mode & 0o777 == 0o644 for path in written)


def test_write_outputs_is_all_or_nothing(tmp_path):
    paths = files.OutputPaths("song.mid", str(tmp_path / "song.wav"))
    with pytest.raises(SynthesisError, match="song.mid: the model produced non-finite audio"):
        files.write_outputs(_result(value=np.nan), paths)
    assert os.listdir(tmp_path) == []
    # The picture fails after the WAV was written to its temporary name: nothing remains.
    (tmp_path / "song.png").mkdir()  # os.replace cannot put a file over a directory
    with pytest.raises(AudioError, match="song.png: cannot write output"):
        files.write_outputs(_result(), paths, plot=True)
    assert sorted(os.listdir(tmp_path)) == ["song.png"]
    assert not os.path.exists(paths.wav)


def test_spectrogram_png_is_a_png():
    png = files.spectrogram_png(np.zeros((300, 128), np.float32), title="t")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
