"""Folder reader: your own NAME.mid + NAME.wav/.flac pairs, nested, split by hash or splits.csv.

Every file is real and made here: MIDI bytes from pretty_midi, WAV and FLAC audio written by
soundfile, rendered from the MIDI with the soundfont (or a sine for the bad cases).
"""

import dataclasses
import glob
import os

import gin
import numpy as np
import pytest
import soundfile

from music_spectrogram_diffusion.cli import prepare_dataset as prepare_cli
from music_spectrogram_diffusion.data import prepare, tasks
from music_spectrogram_diffusion.data.rendering import render_midi
from music_spectrogram_diffusion.data.sources import SourceError, fixtures, folder, registry
from music_spectrogram_diffusion.testing.midi_fixtures import make_midi_bytes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
PIANO, VIOLIN, BASS = 0, 40, 33


def _notes(program, pitches, *, start=0.2, step=0.4, is_drum=False):
    return [(program, is_drum, p, start + i * step, start + i * step + 0.35)
            for i, p in enumerate(pitches)]


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _write_audio(path, samples, sample_rate, channels=1):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = np.stack([samples] * channels, axis=1) if channels > 1 else samples
    soundfile.write(path, data, sample_rate, subtype="PCM_16")


def _sine(seconds, sample_rate, level=0.3):
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (level * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _write_pair(root, name, notes, *, sample_rate=44100, channels=1, extension=".wav",
                midi_extension=".mid", audio=None):
    midi = make_midi_bytes(notes)
    _write(os.path.join(root, name + midi_extension), midi)
    if audio is None:
        audio = render_midi(midi, sample_rate=sample_rate, tail_seconds=0.5)
    _write_audio(os.path.join(root, name + extension), audio, sample_rate, channels)


# Good pairs: name -> (programs, has_drums). Nested, .mid/.midi, .wav/.flac, 44.1/22.05/16 kHz.
# By the hash rule evening is validation, nocturne test, the others train.
GOOD = {"evening": ((PIANO,), False), "live/take_2": ((VIOLIN,), False),
        "live/sets/duo": ((PIANO, BASS), True), "nocturne": ((PIANO,), False)}
# Bad files: piece id -> (file whose path the failure names, phrase of its reason).
BAD = {
    "short": ("short.mid", "length mismatch with short.wav: a note starts at 3.80 s but the "
                           "audio lasts 1.00 s"),
    "tail": ("tail.wav", "length mismatch with tail.mid: the audio sounds until 8.00 s but the "
                         "last note ends at 1.35 s"),
    "quiet": ("quiet.wav", "silent audio: peak -inf dBFS, below -80 dBFS"),
    "empty": ("empty.mid", "MIDI file holds no notes"),
    "lonely": ("lonely.mid", "MIDI file without audio"),
    "orphan": ("orphan.flac", "audio file without MIDI"),
    "twice": ("twice.mid", "several audio files for one piece: twice.flac, twice.wav"),
    "garbled": ("garbled.mid", "not a Standard MIDI File"),
    "broken": ("broken.wav", "not a readable audio file"),
}


def write_recordings(root, *, bad=True):
    """The good pairs (and, with ``bad``, one of each bad case) under ``root``."""
    _write_pair(root, "evening", _notes(PIANO, [60, 64, 67, 72]))
    _write_pair(root, "nocturne", _notes(PIANO, [57, 60]), sample_rate=48000, extension=".flac")
    _write_pair(root, "live/take_2", _notes(VIOLIN, [67, 71, 74]), sample_rate=22050,
                channels=2, extension=".flac", midi_extension=".midi")
    _write_pair(root, "live/sets/duo", _notes(PIANO, [60, 65]) + _notes(BASS, [36, 41])
                + _notes(0, [36, 38], is_drum=True), sample_rate=16000, extension=".WAV")
    if not bad:
        return
    _write_pair(root, "short", _notes(PIANO, list(range(60, 70))), audio=_sine(1.0, 44100))
    _write_pair(root, "tail", _notes(PIANO, [60, 62, 64]), audio=_sine(8.0, 44100))
    _write_pair(root, "quiet", _notes(PIANO, [60]), audio=np.zeros(44100, np.float32))
    _write(os.path.join(root, "empty.mid"), make_midi_bytes([]))
    _write_audio(os.path.join(root, "empty.wav"), _sine(1.0, 16000), 16000)
    _write(os.path.join(root, "lonely.mid"), make_midi_bytes(_notes(PIANO, [60])))
    _write_audio(os.path.join(root, "orphan.flac"), _sine(1.0, 16000), 16000)
    _write_pair(root, "twice", _notes(PIANO, [60]), extension=".wav")
    _write_audio(os.path.join(root, "twice.flac"), _sine(1.0, 16000), 16000)
    _write(os.path.join(root, "garbled.mid"), b"this is not MIDI at all")
    _write_audio(os.path.join(root, "garbled.wav"), _sine(1.0, 16000), 16000)
    _write(os.path.join(root, "broken.mid"), make_midi_bytes(_notes(PIANO, [60])))
    _write(os.path.join(root, "broken.wav"), b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
    _write(os.path.join(root, "notes.txt"), b"ignored: neither MIDI nor audio")
    _write(os.path.join(root, ".hidden", "x.mid"), b"ignored: hidden folder")


def _id(name):
    return name.replace("/", "__")


def expected_pieces(root):
    """Piece id -> fixtures.Expected of the good pairs (split as the reader's hash rule gives)."""
    splits = {name: folder.hash_split(name) for name in GOOD}
    assert sorted(splits.values()) == ["test", "train", "train", "validation"]
    return {_id(name): fixtures.Expected(splits[name], programs, drums)
            for name, (programs, drums) in GOOD.items()}


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("recordings"))
    write_recordings(root)
    return root


@pytest.fixture(scope="module")
def prepared(recordings, tmp_path_factory):
    return prepare.prepare_dataset("folder", recordings,
                                   str(tmp_path_factory.mktemp("folder_prepared")),
                                   progress=False)


def test_pairs_matched_by_relative_stem_in_nested_folders(recordings):
    refs = {ref.id: ref for ref in folder.list_pieces(recordings)}
    assert set(refs) == {_id(n) for n in GOOD} | set(BAD)
    take = refs["live__take_2"]
    assert take.files == {"midi": os.path.join(recordings, "live", "take_2.midi"),
                          "audio": os.path.join(recordings, "live", "take_2.flac")}
    assert refs["live__sets__duo"].files["audio"].endswith("duo.WAV")
    assert {ref.id: ref.split for ref in refs.values() if ref.id in expected_pieces(recordings)} \
        == {k: e.split for k, e in expected_pieces(recordings).items()}


def test_hash_split_is_per_name_and_follows_the_documented_fractions():
    names = [f"take_{i}" for i in range(2000)]
    splits = [folder.hash_split(n) for n in names]
    assert splits == [folder.hash_split(n) for n in names]  # deterministic
    share = {s: splits.count(s) / len(splits) for s in ("train", "validation", "test")}
    assert share["train"] == pytest.approx(0.8, abs=0.03)
    assert share["validation"] == pytest.approx(0.1, abs=0.02)
    assert share["test"] == pytest.approx(0.1, abs=0.02)
    # A few pieces still get a train and a validation piece, each the one nearest that band.
    names = ["a", "b"]
    filled = folder._fill_empty_splits({n: "test" for n in names})
    assert sorted(filled.values()) == ["train", "validation"]
    assert folder._fill_empty_splits({"a": "validation"}) == {"a": "train"}


def test_bad_files_are_listed_with_reasons_and_the_rest_prepared(prepared, recordings,
                                                                  check_end_to_end):
    failures = {f.id: f for f in prepared.failures}
    assert set(failures) == set(BAD)
    for piece_id, (file_name, phrase) in BAD.items():
        assert failures[piece_id].path == os.path.join(recordings, file_name), piece_id
        assert phrase in failures[piece_id].reason, (piece_id, failures[piece_id].reason)
    # The good pairs, resampled to 16 kHz mono, read through every task kind.
    for piece in prepared.pieces:
        info = soundfile.info(prepared.audio_file(piece))
        assert (info.samplerate, info.channels) == (16000, 1)
        assert info.frames == round(piece.duration_seconds * 16000)
    check_end_to_end(prepared, expected_pieces(recordings))


def test_rerun_resumes_and_retries_only_the_failures(prepared, recordings, monkeypatch):
    stamps = {p.id: os.stat(prepared.audio_file(p)).st_mtime_ns for p in prepared.pieces}
    loaded = []
    load = folder.load_piece
    monkeypatch.setattr(folder, "READER", dataclasses.replace(
        folder.READER, load_piece=lambda ref: loaded.append(ref.id) or load(ref)))
    again = prepare.prepare_dataset("folder", recordings, prepared.data_dir, progress=False)
    assert [p.id for p in again.pieces] == [p.id for p in prepared.pieces]
    assert {p.id: os.stat(again.audio_file(p)).st_mtime_ns for p in again.pieces} == stamps
    assert sorted(loaded) == sorted(BAD)  # failures are tried again (they may have been fixed)


def test_splits_csv_decides_and_unlisted_pairs_are_reported(tmp_path):
    root = str(tmp_path / "rec")
    write_recordings(root, bad=False)
    with open(os.path.join(root, "splits.csv"), "w", encoding="utf-8") as f:
        f.write("name,split\nevening.mid,test\nlive/take_2,val\nghost,train\n")
    refs = {ref.id: ref for ref in folder.list_pieces(root)}
    assert refs["evening"].split == "test" and refs["live__take_2"].split == "validation"
    manifest = prepare.prepare_dataset("folder", root, str(tmp_path / "out"), progress=False)
    assert {p.id: p.split for p in manifest.pieces} == {"evening": "test",
                                                        "live__take_2": "validation"}
    reasons = {f.id: f.reason for f in manifest.failures}
    assert reasons["nocturne"] == "not listed in splits.csv (add a row 'nocturne,<split>')"
    assert reasons["live__sets__duo"] == ("not listed in splits.csv (add a row "
                                          "'live/sets/duo,<split>')")
    assert reasons["ghost"].startswith("line 4: no MIDI or audio file named 'ghost'")
    # An unknown split stops the run before anything is written.
    with open(os.path.join(root, "splits.csv"), "w", encoding="utf-8") as f:
        f.write("name,split\nsolo,holdout\n")
    with pytest.raises(prepare.PrepareError, match=r"splits.csv: line 2: unknown split "
                                                    r"'holdout'; valid splits: train"):
        prepare.prepare_dataset("folder", root, str(tmp_path / "never"), progress=False)
    assert not os.path.exists(tmp_path / "never")


def test_length_tolerance_is_a_reader_option(recordings):
    ref = next(r for r in folder.list_pieces(recordings, length_tolerance_seconds=7.0)
               if r.id == "tail")
    assert folder.load_piece(ref).duration_seconds == pytest.approx(8.0)
    with pytest.raises(SourceError, match="length tolerance must be a non-negative"):
        folder.list_pieces(recordings, length_tolerance_seconds=-1)


def test_all_bad_exits_2_with_nothing_half_written(tmp_path, capsys):
    root = tmp_path / "bad"
    _write(str(root / "empty.mid"), make_midi_bytes([]))
    _write_audio(str(root / "empty.wav"), _sine(1.0, 16000), 16000)
    _write(str(root / "lonely.mid"), make_midi_bytes(_notes(PIANO, [60])))
    out = tmp_path / "out"
    assert prepare_cli.main(["folder", "--source", str(root), "--out", str(out), "--quiet"]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines()[-1] == (
        f"msd-prepare-dataset: error: no piece of {root} could be prepared (see the failures "
        "above)")
    assert f"{root / 'empty.mid'}: MIDI file holds no notes" in captured.out
    # The manifest lists the failures only; no audio, MIDI, store or temporary file exists.
    manifest = prepare.load_prepared_manifest(str(out))
    assert not manifest.pieces and len(manifest.failures) == 2
    assert not glob.glob(str(out / "audio" / "*")) and not glob.glob(str(out / "midi" / "*"))
    assert not os.path.exists(out / "store")
    assert not [p for p in glob.glob(str(out / "**" / "*"), recursive=True)
                if p.endswith(".tmp") or os.path.basename(p).startswith(".")]


@pytest.mark.parametrize("make, message", [
    (lambda root: None, "{root}: recordings folder not found (is --source the dataset's root "
                        "folder?)"),
    (lambda root: _write(os.path.join(root, "readme.txt"), b"x"),
     "{root}: no .mid/.midi/.wav/.flac files in this folder or below it"),
])
def test_bad_source_is_one_line_and_exit_2(tmp_path, capsys, make, message):
    root = str(tmp_path / "src")
    make(root)
    out = tmp_path / "out"
    assert prepare_cli.main(["folder", "--source", root, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == f"msd-prepare-dataset: error: {message.format(root=root)}\n"
    assert not os.path.exists(out)


def test_length_tolerance_flag_is_for_folders_only(tmp_path, capsys):
    assert prepare_cli.main(["urmp", "--source", str(tmp_path), "--out", str(tmp_path / "o"),
                             "--length_tolerance", "3"]) == 2
    assert "--length_tolerance applies to raw folder datasets only" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["folder.gin", "context_folder.gin"])
def test_folder_task_gin_files_build_batches(prepared, name):
    gin.clear_config()
    gin.add_config_file_search_path(REPO)
    try:
        gin.parse_config_files_and_bindings([os.path.join(REPO, "gin", "tasks", name)],
                                            [f"DATA_DIR = '{prepared.data_dir}'"])
        task = gin.query_parameter("%MIXTURE_OR_TASK_NAME")
        test_task = gin.query_parameter("%TEST_TASK")
        train_data = gin.query_parameter("%TRAIN_DATA").scoped_configurable_fn()
        eval_data = gin.query_parameter("%TRAIN_EVAL_DATA").scoped_configurable_fn()
    finally:
        gin.clear_config()
    names = tasks.task_names(registry.DATASET_SPECS["folder"])
    assert task in names and test_task in names
    assert ("with_context" in task) == (name == "context_folder.gin")
    assert train_data.get_batch(0, 2, seed=0)["target_frames"].shape == (2, 256, 128)
    assert eval_data.examples.task.splits["eval"] == "validation"


def test_folder_mixes_with_a_public_dataset(prepared, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    os.symlink(prepared.data_dir, root / "folder", target_is_directory=True)
    fixtures.write_urmp_release(str(tmp_path / "urmp_release"))
    prepare.prepare_dataset("urmp", str(tmp_path / "urmp_release"), str(root / "urmp"),
                            progress=False)
    source = registry.get_batch_source(registry.mixture_name(True, "train"), data_dir=str(root),
                                       mega_datasets=("folder", "urmp"))
    assert source.names == ["folder", "urmp"]
    batch = source.get_batch(0, 2, seed=0)
    assert batch["context_frames"].shape == (2, 256, 128)
    picks = {source.example(0, i)["dataset"] for i in range(40)}
    assert picks == {"folder", "urmp"}


def test_length_tolerance_flag_lets_a_long_tail_in(tmp_path, capsys):
    root = str(tmp_path / "rec")
    _write_pair(root, "tail", _notes(PIANO, [60, 62, 64]), audio=_sine(8.0, 44100))
    argv = ["folder", "--source", root, "--out", str(tmp_path / "out"), "--quiet"]
    assert prepare_cli.main(argv) == 2
    assert "the audio sounds until 8.00 s" in capsys.readouterr().out
    assert prepare_cli.main(argv + ["--length_tolerance", "7"]) == 0
    manifest = prepare.load_prepared_manifest(str(tmp_path / "out"))
    assert [p.id for p in manifest.pieces] == ["tail"] and not manifest.failures
    assert manifest.pieces[0].duration_seconds == pytest.approx(8.0)
