"""MAESTRO reader: the release layout (CSV or JSON metadata + year folders) -> pieces."""

import dataclasses
import os
import shutil

import numpy as np
import pytest

from music_spectrogram_diffusion.data import prepare
from music_spectrogram_diffusion.data.sources import SourceError, fixtures, get_reader, maestro


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("maestro"))
    return root, fixtures.write_maestro_release(root, bad=True)


@pytest.fixture(scope="module")
def prepared(release, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("maestrov3"))
    return prepare.prepare_dataset("maestro", release[0], out, progress=False)


def test_lists_pieces_with_the_release_splits(release):
    root, expected = release
    refs = maestro.list_pieces(root)
    assert [r.id for r in refs] == list(expected)
    assert {r.id: r.split for r in refs} == {k: e.split for k, e in expected.items()}
    assert refs[0].files["midi"] == os.path.join(root, "2018",
                                                 "MIDI-Unprocessed_00_R1_2018_wav--1.midi")


def test_json_metadata_lists_the_same_pieces(tmp_path):
    expected = fixtures.write_maestro_release(str(tmp_path), metadata="json")
    refs = maestro.list_pieces(str(tmp_path))
    assert {r.id: r.split for r in refs} == {k: e.split for k, e in expected.items()}


def test_piece_is_piano_with_sustain_applied_and_mono_16k_audio(release):
    root, _ = release
    piece = maestro.load_piece(maestro.list_pieces(root)[0])
    ns = piece.note_sequence
    assert {(n.program, n.is_drum) for n in ns.notes} == {(0, False)}
    assert not ns.control_changes
    # Notes 0.1-0.4, 0.45-0.75, 0.8-1.1, 1.15-1.45 s; the pedal is down from 0.05 to 1.0 s.
    ends = sorted(n.end_time for n in ns.notes)
    np.testing.assert_allclose(ends, [1.0, 1.0, 1.1, 1.45], atol=3e-3)
    assert piece.samples.ndim == 1 and piece.samples.dtype == np.float32
    # The 44.1 kHz stereo render of 1.45 s of notes + 0.5 s tail, at 16 kHz.
    assert abs(len(piece.samples) - 1.95 * 16000) <= 2


def test_bad_pieces_are_reported_with_file_and_reason(prepared, release):
    root, expected = release
    failures = {f.id: f for f in prepared.failures}
    assert set(failures) == {k for k, e in expected.items() if e.error}
    for piece_id, failure in failures.items():
        assert expected[piece_id].error in failure.reason
        assert failure.path.startswith(os.path.join(root, "2018"))
    assert len(prepared.pieces) == 3


def test_missing_metadata_is_one_clear_error(tmp_path):
    with pytest.raises(SourceError, match="no maestro-v.*csv"):
        maestro.list_pieces(str(tmp_path))
    (tmp_path / "maestro-v3.0.0.csv").write_text("split,midi_filename\ntrain,a.midi\n")
    with pytest.raises(SourceError, match=r"row 0 lacks the columns \['audio_filename'\]"):
        maestro.list_pieces(str(tmp_path))


def test_corrupt_midi_and_audio_are_errors_naming_the_file(release, tmp_path):
    root, _ = release
    ref = maestro.list_pieces(root)[0]
    midi, wav = tmp_path / "a.midi", tmp_path / "a.wav"
    shutil.copy(ref.files["midi"], midi)
    wav.write_bytes(b"RIFF\x00\x00garbage")
    bad_audio = dataclasses.replace(ref, files={"midi": str(midi), "audio": str(wav)})
    with pytest.raises(SourceError, match=r"a.wav: not a readable audio file"):
        maestro.load_piece(bad_audio)
    midi.write_bytes(b"MThd\x00\x00\x00\x06\x00")
    with pytest.raises(SourceError, match=r"a.midi: corrupt or unsupported MIDI data"):
        maestro.load_piece(bad_audio)


def test_reader_is_found_by_its_alias():
    assert get_reader("maestro") is maestro.READER


def test_end_to_end_model_batches(prepared, release, check_end_to_end):
    check_end_to_end(prepared, release[1])
