"""Tests for data/embedded_dataset.py: a real 3-piece build (music21 -> MIDI -> tinysoundfont)."""

import dataclasses
import json
import os

import pretty_midi
import pytest
import soundfile

from music_spectrogram_diffusion.data import embedded_dataset as ed
from music_spectrogram_diffusion.data import instrumentation

# Seed 6 starts with two chorales and a short Palestrina movement: cheap to parse. Pieces are
# cut at 12 s so that rendering is quick too.
SEED = 6
OPTIONS = dict(seed=SEED, num_workers=1, progress=False, max_piece_seconds=12.0)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("embedded")
    return ed.build_embedded_dataset(out, num_pieces=3, **OPTIONS)


def _file_times(manifest):
    paths = [manifest.midi_file(p) for p in manifest.pieces]
    paths += [manifest.audio_file(p) for p in manifest.pieces]
    return {path: os.stat(path).st_mtime_ns for path in paths}


def test_files_exist_and_durations_match_the_audio(built):
    assert len(built.pieces) == 3
    for piece in built.pieces:
        assert os.path.isfile(built.midi_file(piece))
        info = soundfile.info(built.audio_file(piece))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert piece.duration_seconds == pytest.approx(info.frames / 16000, abs=1e-9)
        # 12 s of music at most, plus render_midi's 1 s release tail.
        assert 1.0 < piece.duration_seconds <= 13.0 + 1e-3
        samples, _ = soundfile.read(built.audio_file(piece))
        assert 0.01 < float((samples**2).mean()) ** 0.5 < 0.5  # real, loudness-normalized audio


def test_programs_in_the_manifest_are_the_midi_files_programs(built):
    for piece in built.pieces:
        midi = pretty_midi.PrettyMIDI(built.midi_file(piece))
        assert piece.programs == tuple(sorted({i.program for i in midi.instruments
                                               if not i.is_drum}))
        assert piece.has_drums == any(i.is_drum for i in midi.instruments)
        assert [(p.program, p.is_drum, p.num_notes) for p in piece.parts] == [
            (i.program, i.is_drum, len(i.notes)) for i in midi.instruments]
        assert len(piece.parts) >= 2 and all(p.num_notes > 0 for p in piece.parts)
        assert piece.source.startswith(piece.collection.replace("classical", "")) or (
            piece.collection == "classical")


def test_splits_are_by_piece(built):
    assert [p.split for p in built.pieces] == ["train", "validation", "test"]
    ids = [p.id for p in built.pieces]
    assert len(set(ids)) == 3
    assert sorted(ids) == sorted(p.id for s in ed.SPLITS for p in built.split(s))
    assert [ed.split_for_position(k) for k in range(100)].count("train") == 80
    assert [ed.split_for_position(k) for k in range(100)].count("test") == 10
    with pytest.raises(ValueError, match="valid splits: train, validation, test"):
        built.split("dev")


def test_manifest_round_trip_and_fields(built):
    loaded = ed.load_manifest(built.data_dir)
    assert loaded == built
    with open(os.path.join(built.data_dir, "manifest.json")) as f:
        data = json.load(f)
    assert (data["seed"], data["soundfont"], data["sample_rate"], data["version"]) == (
        SEED, "TimGM6mb.sf2", 16000, ed.DATASET_VERSION)
    assert data["splits"]["train"]["pieces"] == 1
    assert data["splits"]["test"]["seconds"] == pytest.approx(built.split_seconds("test"),
                                                               abs=1e-3)
    entry = data["pieces"][0]
    assert {"id", "split", "midi_path", "audio_path", "duration_seconds", "programs"} <= set(entry)
    assert not os.path.isabs(entry["midi_path"]) and not os.path.isabs(entry["audio_path"])


def test_summary_lists_splits_and_instruments(built):
    text = built.summary()
    for piece in built.pieces:
        for part in piece.parts:
            assert part.instrument in text
    assert "train" in text and "validation" in text and "3 pieces" in text


def test_the_same_seed_gives_the_same_files_with_two_workers(built, tmp_path):
    other = ed.build_embedded_dataset(tmp_path, num_pieces=3, **{**OPTIONS, "num_workers": 2})
    assert dataclasses.replace(other, data_dir=built.data_dir) == built
    for a, b in zip(built.pieces, other.pieces):
        for path in ("midi_path", "audio_path"):
            with open(os.path.join(built.data_dir, getattr(a, path)), "rb") as f:
                first = f.read()
            with open(os.path.join(other.data_dir, getattr(b, path)), "rb") as f:
                assert f.read() == first


def test_rerun_reuses_files_and_remakes_a_damaged_piece(built):
    before = _file_times(built)
    again = ed.build_embedded_dataset(built.data_dir, num_pieces=3, **OPTIONS)
    assert again == built
    assert _file_times(again) == before
    damaged = built.pieces[1]
    os.remove(built.audio_file(damaged))
    remade = ed.build_embedded_dataset(built.data_dir, num_pieces=3, **OPTIONS)
    assert remade == built
    after = _file_times(remade)
    assert after[built.audio_file(damaged)] != before[built.audio_file(damaged)]
    assert after[built.midi_file(built.pieces[0])] == before[built.midi_file(built.pieces[0])]


def test_growing_keeps_the_earlier_pieces_and_splits(built, tmp_path):
    candidates = instrumentation.list_candidates(SEED)
    assert [p.source for p in built.pieces] == [c.source for c in candidates[:3]]
    # Pieces depend only on (seed, id): a 1-piece build is the first piece of the 3-piece one.
    one = ed.build_embedded_dataset(tmp_path, num_pieces=1, **OPTIONS)
    assert one.pieces == built.pieces[:1]


def test_a_different_seed_in_an_existing_directory_is_an_error(built):
    before = _file_times(built)
    with pytest.raises(ed.DatasetError, match=r"manifest.json: .*seed=6 \(asked for 7\)"):
        ed.build_embedded_dataset(built.data_dir, num_pieces=3, **{**OPTIONS, "seed": 7})
    assert _file_times(built) == before
    assert ed.load_manifest(built.data_dir) == built


def test_bad_soundfont_paths_are_clear_errors_and_write_nothing(tmp_path):
    out = tmp_path / "never"
    missing = str(tmp_path / "missing.sf2")
    with pytest.raises(ed.DatasetError, match="missing.sf2: soundfont file not found"):
        ed.build_embedded_dataset(out, num_pieces=1, soundfont=missing, **OPTIONS)
    not_a_soundfont = tmp_path / "text.sf2"
    not_a_soundfont.write_text("not a soundfont")
    with pytest.raises(ed.DatasetError, match="text.sf2: not a readable SoundFont"):
        ed.build_embedded_dataset(out, num_pieces=1, soundfont=str(not_a_soundfont), **OPTIONS)
    assert not out.exists()


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ed.DatasetError, match="num_pieces must be a positive integer"):
        ed.build_embedded_dataset(tmp_path, num_pieces=0, **OPTIONS)
    with pytest.raises(ed.DatasetError, match="drum_probability must be in"):
        ed.build_embedded_dataset(tmp_path, num_pieces=1, drum_probability=1.5,
                                  **{k: v for k, v in OPTIONS.items()})


def test_load_manifest_errors_name_the_file(tmp_path):
    with pytest.raises(ed.DatasetError, match="manifest.json: no dataset manifest here"):
        ed.load_manifest(tmp_path)
    path = tmp_path / "manifest.json"
    path.write_text("{not json")
    with pytest.raises(ed.DatasetError, match="manifest.json: unreadable manifest"):
        ed.load_manifest(tmp_path)
    path.write_text(json.dumps({"version": 999}))
    with pytest.raises(ed.DatasetError, match="dataset version 999"):
        ed.load_manifest(tmp_path)
    path.write_text(json.dumps({"version": ed.DATASET_VERSION, "seed": 0}))
    with pytest.raises(ed.DatasetError, match="manifest.json: malformed manifest"):
        ed.load_manifest(tmp_path)
