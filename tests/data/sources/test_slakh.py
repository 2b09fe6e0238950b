"""Slakh2100 and Cerberus4 readers: track folders with metadata.yaml, MIDI/ and stems/."""

import os

import numpy as np
import pytest

from music_spectrogram_diffusion.data import prepare
from music_spectrogram_diffusion.data.sources import SourceError, fixtures, slakh
from music_spectrogram_diffusion.data.sources.base import load_audio


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("slakh2100_flac_redux"))
    return root, fixtures.write_slakh_release(root, bad=True)


@pytest.fixture(scope="module")
def prepared(release, tmp_path_factory):
    return prepare.prepare_dataset("slakh", release[0], str(tmp_path_factory.mktemp("slakh")),
                                   progress=False)


@pytest.fixture(scope="module")
def prepared_cerberus4(release, tmp_path_factory):
    return prepare.prepare_dataset("cerberus4", release[0],
                                   str(tmp_path_factory.mktemp("cerberus4")), progress=False)


def test_class_table_matches_the_spec():
    # Every class program of spec §1.2 is reachable, and programs map within their GM family.
    assert set(slakh.SLAKH_CLASS_PROGRAMS.values()) == {
        0, 4, 8, 16, 24, 26, 29, 32, 33, 40, 41, 42, 43, 46, 47, 48, 50, 52, 55, 56, 57, 58,
        60, 61, 64, 66, 67, 68, 69, 70, 71, 73, 80, 88}
    assert set(slakh.PROGRAM_CLASSES.values()) == set(slakh.SLAKH_CLASS_PROGRAMS)
    for program, name in slakh.PROGRAM_CLASSES.items():
        assert slakh.SLAKH_CLASS_PROGRAMS[name] // 8 == program // 8 or name == "String Ensemble"
    stem = {"inst_class": "Guitar", "program_num": 30, "is_drum": False}
    assert slakh.slakh_class_of_stem(stem, "S00", "m.yaml") == "Distorted Electric Guitar"
    fine = {"inst_class": "Guitar", "slakh_class": "Acoustic Guitar", "program_num": 30}
    assert slakh.slakh_class_of_stem(fine, "S00", "m.yaml") == "Acoustic Guitar"
    assert slakh.slakh_class_of_stem({"is_drum": True, "program_num": 0}, "S0", "m") == "Drums"


def test_splits_come_from_the_folders_and_omitted_is_skipped(release):
    root, expected = release
    refs = slakh.list_pieces(root)
    assert {r.id: r.split for r in refs} == {k: e.split for k, e in expected.items()}
    assert "Track00004" not in {r.id for r in refs}


def test_programs_from_the_class_table_drums_and_unrendered_stems(release):
    root, _ = release
    ref = next(r for r in slakh.list_pieces(root) if r.id == "Track00001")
    piece = slakh.load_piece(ref)
    notes = piece.note_sequence.notes
    # piano 0 -> 0, clean guitar 27 -> 26, electric bass 34 -> 33, drums; the unrendered
    # program-120 stem is not in the mix and is ignored.
    assert {(n.program, n.is_drum) for n in notes} == {(0, False), (26, False), (33, False),
                                                       (0, True)}
    assert len({n.instrument for n in notes}) == 4
    assert sorted(n.pitch for n in notes if n.is_drum) == [36, 36, 38, 42]


def test_unknown_instrument_is_a_clear_error(release):
    root, _ = release
    ref = next(r for r in slakh.list_pieces(root) if r.id == "Track00005")
    with pytest.raises(SourceError, match=r"metadata.yaml: unknown instrument: stem S01 .*104"):
        slakh.load_piece(ref)


def test_bad_track_reported_and_the_rest_prepared(prepared):
    assert [f.id for f in prepared.failures] == ["Track00005"]
    assert "unknown instrument" in prepared.failures[0].reason
    assert prepared.failures[0].path.endswith(os.path.join("Track00005", "metadata.yaml"))
    assert [p.id for p in prepared.pieces] == ["Track00001", "Track00002", "Track00003"]


def test_cerberus4_keeps_four_stems_with_fixed_programs(release):
    root, expected = release
    refs = slakh.list_cerberus4_pieces(root)
    assert {r.id: r.split for r in refs} == {
        k: e.split for k, e in fixtures.expected_cerberus4(expected).items()}
    piece = slakh.load_cerberus4_piece(refs[1])  # Track00002: its violin is not a role
    assert {(n.program, n.is_drum) for n in piece.note_sequence.notes} == {
        (0, False), (24, False), (32, False), (0, True)}


def test_cerberus4_audio_is_the_sum_of_its_four_stems(release):
    root, _ = release
    piece = slakh.load_cerberus4_piece(slakh.list_cerberus4_pieces(root)[0])
    # Track00001's mix.flac is the sum of the same four rendered stems.
    mix = load_audio(os.path.join(root, "train", "Track00001", "mix.flac"))
    assert piece.samples.shape == mix.shape
    np.testing.assert_allclose(piece.samples, mix, atol=5e-4)
    assert np.abs(mix).max() > 0.05


def test_end_to_end_model_batches(prepared, release, check_end_to_end):
    check_end_to_end(prepared, release[1])


def test_cerberus4_end_to_end_model_batches(prepared_cerberus4, release, check_end_to_end):
    check_end_to_end(prepared_cerberus4, fixtures.expected_cerberus4(release[1]))
