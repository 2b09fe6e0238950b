"""MusicNet reader: {train,test}_labels/*.csv (44.1 kHz sample times) + {train,test}_data."""

import pytest

from music_spectrogram_diffusion.data import prepare
from music_spectrogram_diffusion.data.sources import SourceError, fixtures, musicnet


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("musicnet"))
    return root, fixtures.write_musicnet_release(root, bad=True)


@pytest.fixture(scope="module")
def prepared(release, tmp_path_factory):
    return prepare.prepare_dataset("musicnet", release[0],
                                   str(tmp_path_factory.mktemp("musicnet_prepared")),
                                   progress=False)


def test_splits_test_folder_and_mt3_validation_ids(release):
    root, expected = release
    refs = musicnet.list_pieces(root)
    assert {r.id: r.split for r in refs} == {k: e.split for k, e in expected.items()}
    assert {r.id: r.split for r in refs}["1733"] == "validation"
    assert len(musicnet.VALIDATION_IDS) == 15


def test_instrument_numbers_are_gm_programs_plus_one():
    assert musicnet.INSTRUMENT_PROGRAMS[1] == 0  # Acoustic Grand Piano
    assert musicnet.INSTRUMENT_PROGRAMS[41] == 40  # Violin
    assert musicnet.INSTRUMENT_PROGRAMS[74] == 73  # Flute


def test_label_times_are_44k_samples(release):
    root, _ = release
    ns = musicnet.read_labels(f"{root}/train_labels/1727.csv")
    violin = sorted((n for n in ns.notes if n.program == 40), key=lambda n: n.start_time)
    assert [n.pitch for n in violin] == [67, 71, 74]
    # The CSV holds int(seconds * 44100): sample 19844 is 0.449977 s.
    assert violin[1].start_time * 44100 == pytest.approx(19844)
    assert violin[1].end_time * 44100 == pytest.approx(33075)
    assert {n.program for n in ns.notes} == {40, 42}


def test_bad_labels_are_clear_errors(tmp_path):
    path = tmp_path / "1.csv"
    path.write_text("start_time,end_time,instrument\n0,10,1\n")
    with pytest.raises(SourceError, match=r"1.csv: missing columns \['note'\]"):
        musicnet.read_labels(str(path))
    path.write_text("start_time,end_time,instrument,note\n0,ten,1,60\n")
    with pytest.raises(SourceError, match=r"1.csv: line 2: not a number"):
        musicnet.read_labels(str(path))


def test_unknown_instrument_reported_and_the_rest_prepared(prepared):
    assert [f.id for f in prepared.failures] == ["2000"]
    assert prepared.failures[0].path.endswith("train_labels/2000.csv")
    assert "line 2: unknown instrument 99" in prepared.failures[0].reason
    assert sorted(p.id for p in prepared.pieces) == ["1727", "1733", "1759"]


def test_end_to_end_model_batches(prepared, release, check_end_to_end):
    check_end_to_end(prepared, release[1])
