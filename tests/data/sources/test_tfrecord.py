"""Reading the original pipeline's TFRecords (spec §3.1) for every dataset."""

import os

import pytest

from music_spectrogram_diffusion.data import prepare
from music_spectrogram_diffusion.data.sources import SourceError, fixtures, get_reader, tfrecord

DATASETS = ("maestrov3", "guitarset", "urmp", "musicnet", "slakh", "cerberus4")


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    pytest.importorskip("tensorflow", reason="writing TFRecord fixtures needs TensorFlow")
    root = tmp_path_factory.mktemp("tfrecords")
    return {name: (str(root / name), fixtures.write_tfrecord_release(str(root / name), name))
            for name in DATASETS}


@pytest.mark.parametrize("name, split", [
    ("maestro-v3.0.0_ns_wav_train.tfrecord-00003-of-00025", "train"),
    ("maestro-v3.0.0_ns_wav_validation.tfrecord-00000-of-00025", "validation"),
    ("maestro-v3.0.0_ns_wav_validation_subset.tfrecord-00000-of-00025", None),
    ("musicnet-test.tfrecord-00000-of-00003", "test"),
    ("slakh_multi_full_subsets_10_train_all_inst.tfrecord-00001-of-02307", "train"),
    ("slakh_multi_cerberus_valid_bass:drums:guitar:piano.tfrecord-00000-of-00212", "validation"),
    ("readme.txt", None),
])
def test_split_from_file_name(name, split):
    assert tfrecord.split_of_file(name) == split


@pytest.mark.parametrize("dataset", DATASETS)
def test_pieces_have_the_spec_programs(releases, dataset):
    root, expected = releases[dataset]
    reader = get_reader(dataset, "tfrecord")
    refs = reader.list_pieces(root)
    assert {r.id: r.split for r in refs} == {k: e.split for k, e in expected.items()}
    for ref in refs:
        piece = reader.load_piece(ref)
        notes = piece.note_sequence.notes
        assert tuple(sorted({n.program for n in notes if not n.is_drum})) == \
            expected[ref.id].programs
        assert any(n.is_drum for n in notes) == expected[ref.id].has_drums
        assert not piece.note_sequence.control_changes
        assert 1.0 < len(piece.samples) / 16000 < 2.5


def test_truncated_file_and_wrong_features_are_clear_errors(releases, tmp_path):
    root, _ = releases["maestrov3"]
    name = "maestrov3-train.tfrecord-00000-of-00001"
    data = open(os.path.join(root, name), "rb").read()
    bad = tmp_path / "x-train.tfrecord"
    bad.write_bytes(data[:-10])
    with pytest.raises(SourceError, match=r"x-train.tfrecord: truncated TFRecord"):
        tfrecord.list_pieces(str(tmp_path), "maestrov3")
    # MAESTRO records read as MusicNet lack MusicNet's float audio and sample rate.
    ref = tfrecord.list_pieces(root, "musicnet")[0]
    with pytest.raises(SourceError, match=r"\(record 0\): record lacks the feature 'audio'|"
                                          r"single-number feature 'sample_rate'"):
        tfrecord.load_piece(ref)


def test_prepared_from_tfrecords_end_to_end(releases, tmp_path, check_end_to_end):
    root, expected = releases["slakh"]
    manifest = prepare.prepare_dataset("slakh", root, str(tmp_path), source_format="tfrecord",
                                       progress=False)
    assert manifest.source_format == "tfrecord" and not manifest.failures
    check_end_to_end(manifest, expected)
