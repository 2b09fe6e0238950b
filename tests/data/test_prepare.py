"""msd-prepare-dataset's library side: resumable, atomic, per-file failures, Beam path."""

import json
import os
import shutil

import numpy as np
import pytest

from music_spectrogram_diffusion.audio.audio_io import load_audio
from music_spectrogram_diffusion.data import midi_io, prepare
from music_spectrogram_diffusion.data.sources import fixtures, get_reader


def _mtimes(out: str) -> dict[str, int]:
    return {name: os.stat(os.path.join(out, "audio", name)).st_mtime_ns
            for name in os.listdir(os.path.join(out, "audio"))}


@pytest.fixture()
def urmp_release(tmp_path):
    root = str(tmp_path / "URMP")
    return root, fixtures.write_urmp_release(root, bad=True)


def test_prepared_files_hold_the_piece(urmp_release, tmp_path):
    root, _ = urmp_release
    out = str(tmp_path / "out")
    manifest = prepare.prepare_dataset("urmp", root, out, progress=False)
    assert manifest == prepare.load_prepared_manifest(out)
    piece = manifest.pieces[0]
    assert (piece.id, piece.split, piece.programs, piece.has_drums, piece.num_notes) == (
        "01_Jupiter_vn_vc", "validation", (40, 42), False, 4)
    loaded = get_reader("urmp").load_piece(get_reader("urmp").list_pieces(root)[0])
    audio = load_audio(manifest.audio_file(piece))  # 16-bit WAV of the 16 kHz samples
    assert len(audio) == len(loaded.samples)
    np.testing.assert_allclose(audio, loaded.samples, atol=1 / 32768 + 1e-6)
    midi = midi_io.read_midi(manifest.midi_file(piece))
    got = sorted((n.program, n.pitch, round(n.start_time, 2)) for n in midi.notes)
    want = sorted((n.program, n.pitch, round(n.start_time, 2)) for n in loaded.note_sequence.notes)
    assert got == want
    with open(os.path.join(out, "manifest.json")) as f:
        data = json.load(f)
    assert data["splits"]["validation"]["pieces"] == 1 and data["format"] == "msd-prepared"
    assert not [n for _, _, names in os.walk(out) for n in names if n.endswith(".tmp")]


def test_rerun_skips_finished_pieces_and_redoes_changed_and_fixed_ones(urmp_release, tmp_path):
    root, _ = urmp_release
    out = str(tmp_path / "out")
    first = prepare.prepare_dataset("urmp", root, out, progress=False)
    assert [f.id for f in first.failures] == ["05_Bad_xx_vn"]
    before = _mtimes(out)
    again = prepare.prepare_dataset("urmp", root, out, progress=False)
    assert again == first and _mtimes(out) == before  # nothing rewritten

    # Edit one annotation: that piece alone is prepared again.
    notes = os.path.join(root, "03_Dance_fl_cl", "Notes_2_cl_03_Dance.txt")
    with open(notes, "a") as f:
        f.write("1.2000\t440.000\t0.2000\n")
    # Fix the bad piece: its first part was a viola all along.
    bad = os.path.join(root, "05_Bad_xx_vn")
    os.rename(os.path.join(bad, "Notes_1_xx_05_Bad.txt"),
              os.path.join(bad, "Notes_1_va_05_Bad.txt"))
    third = prepare.prepare_dataset("urmp", root, out, progress=False)
    after = _mtimes(out)
    assert after["01_Jupiter_vn_vc.wav"] == before["01_Jupiter_vn_vc.wav"]
    assert after["03_Dance_fl_cl.wav"] != before["03_Dance_fl_cl.wav"]
    counts = {p.id: p.num_notes for p in third.pieces}
    assert counts["03_Dance_fl_cl"] == 6 and counts["05_Bad_xx_vn"] == 2
    assert not third.failures


def test_damaged_output_is_prepared_again(urmp_release, tmp_path):
    root, _ = urmp_release
    out = str(tmp_path / "out")
    prepare.prepare_dataset("urmp", root, out, progress=False)
    wav = os.path.join(out, "audio", "01_Jupiter_vn_vc.wav")
    with open(wav, "r+b") as f:
        f.truncate(100)  # as if the disk filled up
    manifest = prepare.prepare_dataset("urmp", root, out, progress=False)
    assert len(load_audio(wav)) == round(manifest.pieces[0].duration_seconds * 16000)


def test_another_dataset_in_the_output_folder_is_refused(urmp_release, tmp_path):
    root, _ = urmp_release
    out = str(tmp_path / "out")
    prepare.prepare_dataset("urmp", root, out, progress=False)
    with pytest.raises(prepare.PrepareError, match=r"manifest.json: this folder holds urmp"):
        prepare.prepare_dataset("guitarset", root, out, progress=False)


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "lakh"}, r"unknown dataset 'lakh'; valid names: maestrov3, slakh"),
    ({"source_format": "hdf5"}, r"unknown source format 'hdf5'; valid values: raw, tfrecord"),
    ({"num_workers": 0}, r"num_workers must be a positive integer"),
])
def test_bad_arguments_are_one_clear_error(tmp_path, kwargs, message):
    args = {"name": "urmp", "source_format": "raw", "num_workers": 1, **kwargs}
    with pytest.raises(prepare.PrepareError, match=message):
        prepare.prepare_dataset(args["name"], str(tmp_path), str(tmp_path / "out"),
                                source_format=args["source_format"],
                                num_workers=args["num_workers"], progress=False)
    assert not os.path.exists(tmp_path / "out")


def test_unusable_release_writes_nothing(tmp_path):
    with pytest.raises(prepare.PrepareError, match=r"no URMP piece folders"):
        prepare.prepare_dataset("urmp", str(tmp_path), str(tmp_path / "out"), progress=False)
    assert not os.path.exists(tmp_path / "out")


def test_manifest_errors_name_the_file(tmp_path):
    with pytest.raises(prepare.PrepareError, match=r"no prepared dataset here; prepare one"):
        prepare.load_prepared_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "msd-prepared", "version": 0}))
    with pytest.raises(prepare.PrepareError, match=r"manifest.json: format .* version 0"):
        prepare.load_prepared_manifest(str(tmp_path))


def test_beam_style_pieces_then_manifest_match_prepare_dataset(urmp_release, tmp_path):
    root, _ = urmp_release
    refs = get_reader("urmp").list_pieces(root)
    beam_out = str(tmp_path / "beam")
    for ref in reversed(refs):  # any order, as Beam workers would
        prepare.prepare_piece("urmp", "raw", ref, beam_out)
    from_beam = prepare.write_manifest("urmp", "raw", refs, beam_out)
    local = prepare.prepare_dataset("urmp", root, str(tmp_path / "local"), progress=False)
    strip = lambda m: [dict(vars(p)) for p in m.pieces]  # noqa: E731 (data_dir differs)
    assert strip(from_beam) == strip(local)
    assert [(f.id, f.reason) for f in from_beam.failures] == [
        (f.id, f.reason) for f in local.failures]


@pytest.mark.slow
def test_parallel_workers_give_the_same_dataset(urmp_release, tmp_path):
    root, _ = urmp_release
    serial = prepare.prepare_dataset("urmp", root, str(tmp_path / "serial"), progress=False)
    parallel = prepare.prepare_dataset("urmp", root, str(tmp_path / "parallel"),
                                       num_workers=2, progress=False)
    assert [vars(p) for p in serial.pieces] == [vars(p) for p in parallel.pieces]
    assert serial.failures == parallel.failures
    for piece in serial.pieces:
        with open(serial.audio_file(piece), "rb") as a, \
                open(parallel.audio_file(piece), "rb") as b:
            assert a.read() == b.read()


def test_copied_prepared_folder_still_reads(urmp_release, tmp_path):
    root, _ = urmp_release
    out = str(tmp_path / "out")
    prepare.prepare_dataset("urmp", root, out, progress=False)
    moved = str(tmp_path / "moved")
    shutil.copytree(out, moved)
    manifest = prepare.load_prepared_manifest(moved)
    assert all(os.path.isfile(manifest.audio_file(p)) for p in manifest.pieces)
