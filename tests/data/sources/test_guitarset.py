"""GuitarSet reader: annotation/*.jams (note_midi per string) + audio_mono-mic/*_mic.wav."""

import json

import pytest

from music_spectrogram_diffusion.data import prepare
from music_spectrogram_diffusion.data.sources import SourceError, fixtures, guitarset


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("GuitarSet"))
    return root, fixtures.write_guitarset_release(root, bad=True)


@pytest.fixture(scope="module")
def prepared(release, tmp_path_factory):
    return prepare.prepare_dataset("guitarset", release[0],
                                   str(tmp_path_factory.mktemp("guitarset")), progress=False)


def test_player_05_is_validation(release):
    root, expected = release
    refs = guitarset.list_pieces(root)
    assert {r.id: r.split for r in refs} == {k: e.split for k, e in expected.items()}
    assert {r.split for r in refs if r.id.startswith("05_")} == {"validation"}


def test_notes_per_string_program_24_rounded_pitches(release):
    root, _ = release
    piece = guitarset.load_piece(guitarset.list_pieces(root)[0])
    notes = piece.note_sequence.notes
    assert {(n.program, n.is_drum) for n in notes} == {(24, False)}
    assert len({n.instrument for n in notes}) == 6  # one instrument per string
    # String s plays pitches 40 + 5 s and 45 + 5 s (annotated as +0.03 fractional pitches).
    assert sorted(n.pitch for n in notes) == sorted(
        p for s in range(6) for p in (40 + 5 * s, 45 + 5 * s))
    first = min(notes, key=lambda n: (n.start_time, n.pitch))
    assert first.start_time == pytest.approx(0.1) and first.pitch == 40


def test_column_form_jams_is_read(tmp_path):
    annotation = {"namespace": "note_midi",
                  "data": {"time": [0.5, 1.0], "duration": [0.25, 0.5], "value": [64.1, 66.9],
                           "confidence": [None, None]}}
    path = tmp_path / "x.jams"
    path.write_text(json.dumps({"annotations": [annotation]}))
    ns = guitarset.read_jams_notes(str(path))
    assert [(n.pitch, n.start_time, n.end_time) for n in ns.notes] == [(64, 0.5, 0.75),
                                                                     (67, 1.0, 1.5)]


def test_unreadable_jams_and_missing_audio_name_the_file(release, tmp_path):
    path = tmp_path / "bad.jams"
    path.write_text("{not json")
    with pytest.raises(SourceError, match=r"bad.jams: not a readable JAMS file"):
        guitarset.read_jams_notes(str(path))
    root, _ = release
    refs = guitarset.list_pieces(root, audio="mix")
    with pytest.raises(SourceError, match=r"audio_mono-pickup_mix/00_BN1.*_mix.wav: audio file "
                                          r"not found"):
        guitarset.load_piece(refs[0])
    with pytest.raises(ValueError, match="valid values"):
        guitarset.list_pieces(root, audio="hex")


def test_bad_piece_reported_and_the_rest_prepared(prepared, release):
    assert [f.id for f in prepared.failures] == ["01_Rock1-90-C#_comp"]
    assert prepared.failures[0].reason == "audio file not found"
    assert len(prepared.pieces) == 2


def test_end_to_end_model_batches(prepared, release, check_end_to_end):
    check_end_to_end(prepared, release[1])
