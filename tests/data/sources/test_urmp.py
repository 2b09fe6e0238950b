"""URMP reader: piece folders with AuMix_*.wav and Notes_<n>_<code>_*.txt per part."""

import pytest

from music_spectrogram_diffusion.data import prepare
from music_spectrogram_diffusion.data.sources import SourceError, base, fixtures, urmp


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("URMP")
    (root / "Supplementary_README.txt").write_text("not a piece")  # skipped by the listing
    return str(root), fixtures.write_urmp_release(str(root), bad=True)


@pytest.fixture(scope="module")
def prepared(release, tmp_path_factory):
    return prepare.prepare_dataset("urmp", release[0], str(tmp_path_factory.mktemp("urmp")),
                                   progress=False)


def test_program_table_is_the_spec_table():
    assert urmp.INSTRUMENT_PROGRAMS == {"vn": 40, "va": 41, "vc": 42, "db": 43, "tpt": 56,
                                        "tbn": 57, "tba": 58, "hn": 60, "sax": 64, "ob": 68,
                                        "bn": 70, "cl": 71, "fl": 73}


def test_frequencies_become_midi_pitches():
    assert base.hz_to_midi_pitch(440.0) == 69
    assert base.hz_to_midi_pitch(261.63) == 60
    assert base.hz_to_midi_pitch(440.0 * 2 ** (0.49 / 12)) == 69


def test_parts_and_splits(release):
    root, expected = release
    refs = urmp.list_pieces(root)
    assert {r.id: r.split for r in refs} == {k: e.split for k, e in expected.items()}
    piece = urmp.load_piece(refs[0])  # 01_Jupiter_vn_vc: violin 67, 71 and cello 43, 47
    notes = sorted(piece.note_sequence.notes, key=lambda n: (n.program, n.start_time))
    assert [(n.program, n.pitch) for n in notes] == [(40, 67), (40, 71), (42, 43), (42, 47)]
    assert notes[1].start_time == pytest.approx(0.45) and notes[1].end_time == pytest.approx(0.75)


def test_malformed_note_line_names_file_and_line(tmp_path):
    path = tmp_path / "Notes_1_vn_09_X.txt"
    path.write_text("0.5\t440.0\t0.2\n0.9 abc\n")
    with pytest.raises(SourceError, match=r"Notes_1_vn_09_X.txt: line 2: expected 'onset "):
        urmp.read_part_notes(str(path), base.NoteSequence(), 0)


def test_unknown_instrument_reported_and_the_rest_prepared(prepared):
    assert [f.id for f in prepared.failures] == ["05_Bad_xx_vn"]
    assert prepared.failures[0].path.endswith("Notes_1_xx_05_Bad.txt")
    assert "unknown instrument 'xx'" in prepared.failures[0].reason


def test_end_to_end_model_batches(prepared, release, check_end_to_end):
    check_end_to_end(prepared, release[1])
