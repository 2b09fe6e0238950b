"""msd-synthesize end to end: a checkpoint trained by msd-train -> WAV files; bad input -> one
clear error, exit status 2, and no output file."""

import os
import sys

import numpy as np
import pytest
import soundfile

from music_spectrogram_diffusion.cli import synthesize
from music_spectrogram_diffusion.testing import midi_fixtures

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "inference"))
import trained_checkpoints  # noqa: E402

# One compiled sampler (and one token bucket) for every run in this file.
FAST = ["--sampler", "dpm++", "--steps", "3", "--no-progress"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return trained_checkpoints.shared_checkpoint(tmp_path_factory, "diffusion_context")


@pytest.fixture(scope="module")
def midi_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("midi")
    (directory / "melody.mid").write_bytes(trained_checkpoints.melody_midi_bytes(6.0))
    (directory / "short.MIDI").write_bytes(trained_checkpoints.melody_midi_bytes(2.0))
    (directory / "notes.txt").write_text("not a MIDI file, ignored in directories")
    return directory


def _run(argv, capsys):
    status = synthesize.main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _files(directory):
    return sorted(name for _, _, names in os.walk(directory) for name in names)


def test_one_midi_to_wav_with_mel_and_plot(model_dir, midi_dir, tmp_path, capsys):
    out = tmp_path / "song.wav"
    status, stdout, stderr = _run(["--checkpoint", model_dir, "--midi",
                                   str(midi_dir / "melody.mid"), "--out", str(out), "--seed", "4",
                                   "--save-mel", "--plot", *FAST], capsys)
    assert status == 0, stderr
    audio, rate = soundfile.read(out, dtype="float32")
    info = soundfile.info(out)
    assert (rate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert len(audio) == 7 * 16000  # 6 s of notes + 1 s release
    assert np.all(np.isfinite(audio)) and float(np.sqrt(np.mean(audio**2))) > 1e-4
    mel = np.load(tmp_path / "song.npy")
    assert mel.shape == (350, 128) and mel.dtype == np.float32
    assert (tmp_path / "song.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _files(tmp_path) == ["song.npy", "song.png", "song.wav"]  # no temporary files
    assert "song.wav: 7.00 s, real-time factor" in stdout


def test_directory_and_files_to_out_dir_same_seed_same_audio(model_dir, midi_dir, tmp_path,
                                                             capsys):
    out = tmp_path / "out"
    status, stdout, stderr = _run(["--checkpoint", os.path.join(model_dir, "checkpoint_2"),
                                   "--midi", str(midi_dir), "--out", str(out), "--seed", "4",
                                   *FAST], capsys)
    assert status == 0, stderr
    assert _files(out) == ["melody.wav", "short.wav"]
    short, _ = soundfile.read(out / "short.wav", dtype="float32")
    assert len(short) == 3 * 16000
    # The same seed as the single-file run above gives the same audio.
    single = tmp_path / "single.wav"
    assert _run(["--checkpoint", model_dir, "--midi", str(midi_dir / "melody.mid"), "--out",
                 str(single), "--seed", "4", *FAST], capsys)[0] == 0
    a, _ = soundfile.read(out / "melody.wav", dtype="int16")
    b, _ = soundfile.read(single, dtype="int16")
    np.testing.assert_array_equal(a, b)
    other = tmp_path / "other.wav"
    assert _run(["--checkpoint", model_dir, "--midi", str(midi_dir / "melody.mid"), "--out",
                 str(other), "--seed", "5", *FAST], capsys)[0] == 0
    c, _ = soundfile.read(other, dtype="int16")
    assert np.any(a != c)


def _assert_refused(argv, capsys, out_dir, *messages):
    status, _, stderr = _run(argv, capsys)
    assert status == 2
    lines = [line for line in stderr.strip().splitlines() if line.startswith("msd-synthesize")]
    assert len(lines) == 1 and lines[0].startswith("msd-synthesize: error: "), stderr
    for message in messages:
        assert message in lines[0], lines[0]
    assert not os.path.exists(out_dir) or _files(out_dir) == []


@pytest.mark.parametrize("name, data, message", [
    ("corrupt.mid", b"MThd\x00\x00\x00\x06\x00\x01\x00\x02", "corrupt or unsupported MIDI data"),
    ("empty.mid", b"", "empty file (0 bytes)"),
    ("silent.mid", midi_fixtures.make_midi_bytes([]), "contains no notes"),
    ("text.mid", b"hello", "not a Standard MIDI File"),
])
def test_bad_midi_is_refused(model_dir, tmp_path, capsys, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    out = tmp_path / "out"
    _assert_refused(["--checkpoint", model_dir, "--midi", str(path), "--out", str(out / "x.wav"),
                     *FAST], capsys, out, str(path), message)


def test_one_bad_file_among_many_writes_nothing(model_dir, midi_dir, tmp_path, capsys):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd")
    out = tmp_path / "out"
    _assert_refused(["--checkpoint", model_dir, "--midi", str(midi_dir), str(bad), "--out",
                     str(out), *FAST], capsys, out, str(bad))


def test_too_long_midi_is_refused(model_dir, midi_dir, tmp_path, capsys):
    out = tmp_path / "out"
    _assert_refused(["--checkpoint", model_dir, "--midi", str(midi_dir / "melody.mid"),
                     "--out", str(out / "x.wav"), "--max_seconds", "5", *FAST], capsys, out,
                    "melody.mid", "6.0 s long, over the limit of 5 s (raise --max_seconds")


def test_unreadable_checkpoints_are_refused(model_dir, midi_dir, tmp_path, capsys):
    midi = str(midi_dir / "melody.mid")
    out = tmp_path / "out"
    missing = str(tmp_path / "no_run")
    _assert_refused(["--checkpoint", missing, "--midi", midi, "--out", str(out / "x.wav")],
                    capsys, out, missing, "no such checkpoint directory")
    empty = tmp_path / "empty_run"
    empty.mkdir()
    _assert_refused(["--checkpoint", str(empty), "--midi", midi, "--out", str(out / "x.wav")],
                    capsys, out, str(empty), "no checkpoint here")
    broken = tmp_path / "broken_run"
    (broken / "checkpoint_1" / "state").mkdir(parents=True)
    (broken / "checkpoint_1" / "_CHECKPOINT_METADATA").write_text("{}")
    with open(os.path.join(model_dir, "config.gin")) as f:
        (broken / "config.gin").write_text(f.read())
    _assert_refused(["--checkpoint", str(broken), "--midi", midi, "--out", str(out / "x.wav")],
                    capsys, out, "broken_run/checkpoint_1: unreadable checkpoint")


def test_vocoder_for_other_features_is_refused(model_dir, midi_dir, tmp_path, capsys):
    from music_spectrogram_diffusion.audio.vocoders import checkpoints, hifigan
    from music_spectrogram_diffusion.features import FeatureConfig

    vocoder_dir = str(tmp_path / "vocoder")
    checkpoints.write_vocoder_config(vocoder_dir, features=FeatureConfig(hop_length=256),
                                     configs={"generator": hifigan.GeneratorConfig()})
    out = tmp_path / "out"
    _assert_refused(["--checkpoint", model_dir, "--midi", str(midi_dir / "melody.mid"),
                     "--out", str(out / "x.wav"), "--vocoder", vocoder_dir, *FAST], capsys, out,
                    vocoder_dir, "trained for other features", "hop_length")


def test_output_conflicts_are_refused(model_dir, midi_dir, tmp_path, capsys):
    out = tmp_path / "out"
    _assert_refused(["--checkpoint", model_dir, "--midi", str(midi_dir), "--out",
                     str(out / "one.wav"), *FAST], capsys, out, "one .wav output for 2 MIDI files")
    twin = tmp_path / "twin"
    twin.mkdir()
    (twin / "melody.mid").write_bytes(trained_checkpoints.melody_midi_bytes(2.0))
    _assert_refused(["--checkpoint", model_dir, "--midi", str(midi_dir / "melody.mid"),
                     str(twin / "melody.mid"), "--out", str(out), *FAST], capsys, out,
                    "would both write melody.wav")


def test_bad_flags_exit_2(model_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        synthesize.main(["--checkpoint", model_dir, "--midi", "a.mid", "--out", "a.wav",
                         "--sampler", "euler"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'euler'" in err
    assert err.count("\n") == 1 and err.endswith("(see msd-synthesize --help)\n")
    # Values the library refuses are named by their flags, not the config fields.
    for typed, value, named in [("--steps", "0", "--steps"), ("--max_seconds", "-1", "--max_seconds"),
                                ("--release-seconds", "-2", "--release_seconds")]:
        assert synthesize.main(["--checkpoint", model_dir, "--midi", "a.mid", "--out", "a.wav",
                                typed, value]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"msd-synthesize: error: {named} must be"), err
        assert err.count("\n") == 1
        assert "num_steps" not in err and "max_midi_seconds" not in err


def test_stream_writes_segments_as_they_are_made_and_the_same_final_wav(
        model_dir, midi_dir, tmp_path, capsys, monkeypatch):
    from music_spectrogram_diffusion.inference import synthesis

    out = tmp_path / "streamed.wav"
    partial = tmp_path / "streamed.partial.wav"
    sizes = []  # frames in the partial WAV each time a segment starts sampling
    original = synthesis.Synthesizer.segment_batch

    def recording_segment_batch(self, *args, **kwargs):
        sizes.append(soundfile.info(partial).frames if partial.exists() else None)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(synthesis.Synthesizer, "segment_batch", recording_segment_batch)
    status, stdout, stderr = _run(["--checkpoint", model_dir, "--midi",
                                   str(midi_dir / "melody.mid"), "--out", str(out), "--seed", "4",
                                   "--stream", *FAST], capsys)
    assert status == 0, stderr
    # Segment 0's audio (less the vocoder overlap) was on disk before segment 1 was sampled.
    assert sizes == [0, (256 - synthesis.STREAM_CONTEXT_FRAMES) * 320]
    assert _files(tmp_path) == ["streamed.wav"]  # the partial file is gone
    plain = tmp_path / "plain.wav"
    assert _run(["--checkpoint", model_dir, "--midi", str(midi_dir / "melody.mid"), "--out",
                 str(plain), "--seed", "4", *FAST], capsys)[0] == 0
    assert out.read_bytes() == plain.read_bytes()


def test_stream_failure_leaves_nothing(model_dir, midi_dir, tmp_path, capsys, monkeypatch):
    from music_spectrogram_diffusion.inference import synthesis

    calls = []
    original = synthesis.Synthesizer.segment_batch

    def failing_segment_batch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C during segment 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(synthesis.Synthesizer, "segment_batch", failing_segment_batch)
    with pytest.raises(KeyboardInterrupt):
        synthesize.main(["--checkpoint", model_dir, "--midi", str(midi_dir / "melody.mid"),
                         "--out", str(tmp_path / "x.wav"), "--stream", *FAST])
    assert _files(tmp_path) == []


def test_a_127_bin_model_synthesizes_with_its_own_vocabulary(tmp_path_factory, tmp_path, capsys):
    """msd-train records the tasks' vocabulary in model.json; msd-synthesize tokenizes with it,
    so the velocity of the MIDI notes reaches a 127-velocity-bin model."""
    import json

    from music_spectrogram_diffusion.inference import loading

    model_dir = trained_checkpoints.shared_checkpoint(tmp_path_factory, "diffusion_velocity127")
    saved = json.loads((tmp_path_factory.getbasetemp() / "msd_shared" / "diffusion_velocity127"
                        / "model.json").read_text())
    assert saved["vocabulary"]["num_velocity_bins"] == 127
    assert loading.load_vocabulary(model_dir).num_velocity_bins == 127
    midi = {}
    for velocity in (30, 110):
        midi[velocity] = tmp_path / f"v{velocity}.mid"
        midi[velocity].write_bytes(midi_fixtures.make_midi_bytes(
            [(0, False, pitch, 0.0, 2.0, velocity) for pitch in (60, 64, 67)]))
    audio = {}
    for velocity, path in midi.items():
        out = tmp_path / f"v{velocity}.wav"
        status, _, stderr = _run(["--checkpoint", model_dir, "--midi", str(path), "--out",
                                  str(out), "--seed", "4", *FAST], capsys)
        assert status == 0, stderr
        audio[velocity], _ = soundfile.read(out, dtype="int16")
    # The same notes and seed, only the velocity differs: different tokens, different audio.
    assert np.any(audio[30] != audio[110])
