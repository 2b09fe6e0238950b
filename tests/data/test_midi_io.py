"""read_midi on real MIDI bytes and files, and one clear MidiError for each kind of bad file."""

import io

import mido
import pytest

from music_spectrogram_diffusion.data import midi_io
from music_spectrogram_diffusion.testing import midi_fixtures


def _notes(ns):
    return sorted((n.program, n.is_drum, n.pitch, round(n.start_time, 6), round(n.end_time, 6),
                   n.velocity) for n in ns.notes)


def test_reads_bytes_and_paths(tmp_path):
    notes = [(0, False, 60, 0.1, 0.5, 90), (33, False, 36, 0.0, 1.25, 70),
             (0, True, 38, 0.5, 0.6, 110)]
    data = midi_fixtures.make_midi_bytes(notes)
    path = tmp_path / "song.mid"
    path.write_bytes(data)
    from_bytes = midi_io.read_midi(data)
    from_path = midi_io.read_midi(path)
    assert _notes(from_bytes) == _notes(from_path) == sorted(notes)
    assert from_path.filename == str(path)
    assert from_bytes.filename == "<bytes>"
    assert midi_io.read_midi(data, name="upload.mid").filename == "upload.mid"


def test_keeps_control_changes_and_drum_flags():
    data = midi_fixtures.make_midi_bytes(notes=[(0, True, 36, 0.0, 0.1), (5, False, 60, 0, 1)],
                                         sustain=[(5, False, 0.2, 127)])
    ns = midi_io.read_midi(data)
    assert sorted((n.is_drum, n.pitch, n.program) for n in ns.notes) == [
        (False, 60, 5), (True, 36, 0)]
    assert [(c.control_number, c.control_value, c.program) for c in ns.control_changes] == [
        (64, 127, 5)]


def test_file_without_notes_reads_as_empty_sequence():
    """A valid MIDI file with no notes is not an error: an empty NoteSequence."""
    ns = midi_io.read_midi(midi_fixtures.make_midi_bytes([]))
    assert len(ns.notes) == 0 and ns.total_time == 0


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("make, problem", [
    (lambda tmp: str(tmp / "missing.mid"), "missing.mid: no such file"),
    (lambda tmp: str(tmp), "is a directory, not a MIDI file"),
    (lambda tmp: _write(tmp, "empty.mid", b""), r"empty.mid: empty file \(0 bytes\)"),
    (lambda tmp: _write(tmp, "notes.txt", b"C D E F G"),
     r"notes.txt: not a Standard MIDI File \(starts with b'C D '"),
    (lambda tmp: _write(tmp, "song.rmi", b"RIFF\x00\x00\x00\x00RMIDdata"), "RIFF-wrapped MIDI"),
    (lambda tmp: _write(tmp, "cut.mid", midi_fixtures.make_midi_bytes([(0, False, 60, 0, 1)])[:30]),
     "cut.mid: corrupt or unsupported MIDI data .*truncated"),
    (lambda tmp: _write(tmp, "bad_track.mid", _broken_track_header()),
     "bad_track.mid: corrupt or unsupported MIDI data .*MTrk"),
])
def test_bad_files_raise_one_clear_error(tmp_path, make, problem):
    path = make(tmp_path)
    with pytest.raises(midi_io.MidiError, match=problem) as info:
        midi_io.read_midi(path)
    assert str(info.value).startswith(path)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def _broken_track_header() -> bytes:
    data = midi_fixtures.make_midi_bytes([(0, False, 60, 0, 1)])
    return data[:14] + b"XXXX" + data[18:]


def test_corrupt_bytes_are_named_bytes():
    with pytest.raises(midi_io.MidiError, match=r"^<bytes>: empty file"):
        midi_io.read_midi(b"")


def test_zero_length_note_is_dropped_by_the_parser():
    """pretty_midi drops a note whose on and off share a tick; the other notes are read."""
    midi = mido.MidiFile(ticks_per_beat=1000)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=1_000_000, time=0))
    track.append(mido.Message("note_on", note=60, velocity=100, time=100))
    track.append(mido.Message("note_off", note=60, velocity=0, time=0))
    track.append(mido.Message("note_on", note=64, velocity=100, time=100))
    track.append(mido.Message("note_off", note=64, velocity=0, time=100))
    buffer = io.BytesIO()
    midi.save(file=buffer)
    assert _notes(midi_io.read_midi(buffer.getvalue())) == [(0, False, 64, 0.2, 0.3, 100)]
