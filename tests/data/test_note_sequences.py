"""Preprocessing, note -> event encoding and tie-aware decoding (spec §1.2-1.5, §10, §11.5)."""

import numpy as np
import pytest

from music_spectrogram_diffusion.data import midi_io, note_sequences as nseq
from music_spectrogram_diffusion.data import run_length_encoding as rle
from music_spectrogram_diffusion.data import vocabularies
from music_spectrogram_diffusion.data.event_codec import Event
from music_spectrogram_diffusion.data.vocabularies import VocabularyConfig
from music_spectrogram_diffusion.testing import midi_fixtures

CODEC = vocabularies.build_codec(VocabularyConfig(num_velocity_bins=1))
CODEC_127 = vocabularies.build_codec(VocabularyConfig(num_velocity_bins=127))
# Codec ids of the one-bin layout: pitch p = 1001 + p, velocity 1129/1130, tie 1131,
# program g = 1132 + g, drum d = 1260 + d.
PITCH = lambda p: 1001 + p
VEL0, VEL1, TIE = 1129, 1130, 1131
PROG = lambda g: 1132 + g
DRUM = lambda d: 1260 + d


def _ns(*notes, total_time=None):
    """NoteSequence from (pitch, start, end[, velocity, program, is_drum]) tuples."""
    ns = nseq.NoteSequence()
    for pitch, start, end, *rest in notes:
        velocity, program, is_drum = (rest + [100, 0, False][len(rest):])[:3]
        ns.notes.add(pitch=pitch, start_time=start, end_time=end, velocity=velocity,
                     program=program, is_drum=is_drum)
    ns.total_time = total_time if total_time is not None else max(
        [n.end_time for n in ns.notes], default=0.0)
    return ns


def test_event_codec_ids_match_spec_table():
    assert [CODEC.encode_event(e) for e in (
        Event("pitch", 0), Event("velocity", 0), Event("tie", 0), Event("program", 0),
        Event("drum", 0))] == [PITCH(0), VEL0, TIE, PROG(0), DRUM(0)]


def test_encode_and_index_onsets_only():
    """Three onsets a second apart, 1 ms frames (the original's first note_sequences test)."""
    ns = _ns((61, 1.0, 1.1), (62, 2.0, 2.1), (63, 3.0, 3.1))
    frame_times = np.arange(4000) / 1000
    times, values = nseq.note_sequence_to_onsets(ns)
    indexed = rle.encode_and_index_events(None, times, values, nseq.note_event_data_to_events,
                                          CODEC, frame_times)
    expected = [1] * 100 + [PITCH(61)] + [1] * 100 + [PITCH(62)] + [1] * 100 + [PITCH(63)]
    np.testing.assert_array_equal(indexed.events, expected + [1] * 100)
    assert len(indexed.event_start_indices) == len(indexed.event_end_indices) == 4000
    assert indexed.event_start_indices[0] == indexed.event_end_indices[0] == 0
    # Frames 1.000..1.009 s all start at the pitch-61 onset (step 100); the last of them
    # owns it together with the shift to step 101.
    assert indexed.event_start_indices[1000] == indexed.event_end_indices[1000] == 100
    assert indexed.event_start_indices[1009] == 100
    assert indexed.event_end_indices[1009] == 102
    np.testing.assert_array_equal(indexed.event_end_indices[:-1], indexed.event_start_indices[1:])
    assert indexed.event_end_indices[-1] == len(indexed.events)


def test_encode_and_index_onsets_offsets_velocity():
    ns = _ns((61, 0.0, 0.02, 100), (62, 0.01, 0.03, 50))
    times, values = nseq.note_sequence_to_onsets_and_offsets(ns)
    indexed = rle.encode_and_index_events(None, times, values, nseq.note_event_data_to_events,
                                          CODEC_127, np.arange(2) / 50)
    vel = lambda v: 1129 + v
    np.testing.assert_array_equal(indexed.events, [
        vel(100), PITCH(61), 1, vel(50), PITCH(62), 1, vel(0), PITCH(61), 1, vel(0), PITCH(62)])
    np.testing.assert_array_equal(indexed.event_start_indices, [0, 6])
    np.testing.assert_array_equal(indexed.event_end_indices, [6, 11])
    np.testing.assert_array_equal(
        rle.run_length_encode_shifts(indexed.events, CODEC_127, ("velocity", "program")),
        [vel(100), PITCH(61), 1, vel(50), PITCH(62), 2, vel(0), PITCH(61), 3, PITCH(62)])


def test_encode_and_index_multitrack_with_ties():
    """Piano and violin on pitch 60 plus a drum hit; every array worked out by hand."""
    ns = _ns((60, 0.0, 0.04, 100, 0), (60, 0.02, 0.06, 100, 40), (36, 0.02, 0.03, 100, 0, True))
    times, values = nseq.note_sequence_to_onsets_and_offsets_and_programs(ns)
    indexed = rle.encode_and_index_events(
        nseq.NoteEncodingState(), times, values, nseq.note_event_data_to_events, CODEC,
        np.arange(4) / 50, nseq.note_encoding_state_to_events)
    np.testing.assert_array_equal(indexed.events, [
        PROG(0), VEL1, PITCH(60), 1, 1, PROG(40), VEL1, PITCH(60), VEL1, DRUM(36), 1, 1,
        PROG(0), VEL0, PITCH(60), 1, 1, PROG(40), VEL0, PITCH(60), 1])
    np.testing.assert_array_equal(indexed.event_start_indices, [0, 5, 12, 17])
    np.testing.assert_array_equal(indexed.event_end_indices, [5, 12, 17, 21])
    np.testing.assert_array_equal(indexed.state_events, [
        TIE,
        PROG(0), PITCH(60), TIE,
        PROG(0), PITCH(60), PROG(40), PITCH(60), TIE,
        PROG(0), PITCH(60), PROG(40), PITCH(60), TIE,
        PROG(40), PITCH(60), TIE,
        TIE])  # the state after the last event (§11.4 fix)
    np.testing.assert_array_equal(indexed.state_event_indices, [0, 1, 9, 14])
    segment = rle.extract_sequence_with_indices(
        indexed.events, indexed.event_start_indices[1], indexed.event_end_indices[2],
        indexed.state_events, indexed.state_event_indices[1], TIE)
    np.testing.assert_array_equal(
        rle.run_length_encode_shifts(segment, CODEC, ("velocity", "program")),
        [PROG(0), PITCH(60), TIE, PROG(40), VEL1, PITCH(60), DRUM(36), 2, PROG(0), VEL0,
         PITCH(60)])


def test_last_frame_alignment():
    """An offset exactly at the last frame's start is covered by one more shift."""
    times, values = nseq.note_sequence_to_onsets_and_offsets_and_programs(_ns((60, 0.0, 0.04)))
    indexed = rle.encode_and_index_events(
        nseq.NoteEncodingState(), times, values, nseq.note_event_data_to_events, CODEC,
        np.arange(3) / 50, nseq.note_encoding_state_to_events)
    last = indexed.events[indexed.event_start_indices[2]:indexed.event_end_indices[2]]
    np.testing.assert_array_equal(last, [PROG(0), VEL0, PITCH(60), 1])
    assert indexed.event_end_indices[-1] == len(indexed.events)


def test_preprocess_applies_sustain_and_deletes_control_changes():
    """Real MIDI bytes: CC64 from 0.2 s to 1.5 s extends the piano notes, not the drum."""
    midi = midi_fixtures.make_midi_bytes(
        notes=[(0, False, 60, 0.0, 0.5), (0, False, 62, 0.6, 0.8), (0, True, 36, 0.3, 0.4)],
        sustain=[(0, False, 0.2, 127), (0, False, 1.5, 0)])
    ns = midi_io.read_midi(midi)
    assert len(ns.control_changes) == 2
    out = nseq.preprocess_note_sequence(ns)
    assert len(out.control_changes) == 0
    ends = {(n.pitch, n.is_drum): round(n.end_time, 6) for n in out.notes}
    assert ends == {(60, False): 1.5, (62, False): 1.5, (36, True): 0.4}
    assert out.total_time == pytest.approx(1.5)
    assert len(ns.control_changes) == 2  # the input is not modified


def test_trim_overlapping_notes_for_every_source():
    """§11.5: overlaps are trimmed per (pitch, program); drums and other programs untouched."""
    ns = _ns((60, 0.0, 1.0), (60, 0.5, 1.5), (60, 0.2, 0.9, 100, 40), (36, 0.0, 0.5, 100, 0, True),
             (36, 0.1, 0.2, 100, 0, True))
    out = nseq.preprocess_note_sequence(ns)
    spans = sorted((n.program, n.is_drum, n.start_time, n.end_time) for n in out.notes)
    assert spans == [(0, False, 0.0, 0.5), (0, False, 0.5, 1.5), (0, True, 0.0, 0.5),
                     (0, True, 0.1, 0.2), (40, False, 0.2, 0.9)]


def test_notes_empty_at_10ms_resolution_are_dropped():
    """Start and end in one 10 ms step would put the offset before the onset: dropped."""
    ns = _ns((60, 0.100, 0.104), (61, 0.100, 0.106), (62, 0.3, 0.3), (36, 0.5, 0.5, 90, 0, True),
             (64, 1.0, 2.0), (64, 1.0, 1.5))
    out = nseq.preprocess_note_sequence(ns)
    kept = sorted((n.pitch, round(n.start_time, 3), round(n.end_time, 3)) for n in out.notes)
    # 61 rounds to steps 10..11; the drum has no offset; of the two 64s starting together the
    # first is cut to zero length by the second.
    assert kept == [(36, 0.5, 0.5), (61, 0.1, 0.106), (64, 1.0, 1.5)]


@pytest.mark.parametrize("note, problem", [
    ((60, 0.5, 0.4), "end time before start time"),
    ((60, -0.1, 0.4), "negative start time"),
    ((60, 0.0, float("nan")), "non-finite time"),
    ((60, 0.0, 0.4, 0), "velocity outside 1..127"),
    ((60, 0.0, 0.4, 100, 128), "program outside 0..127"),
    ((200, 0.0, 0.4), "pitch outside 0..127"),
])
def test_validation_errors_name_source_and_note(note, problem):
    with pytest.raises(nseq.NoteSequenceError, match=f"song.mid: note 1 has {problem}"):
        nseq.preprocess_note_sequence(_ns((50, 0.0, 0.1), note), name="song.mid")


def test_slakh_program_mapping():
    assert [nseq.program_to_slakh_program(p) for p in (0, 3, 25, 30, 47, 100, 127)] == [
        0, 0, 24, 29, 47, 88, 88]
    out = nseq.map_to_slakh_programs(_ns((60, 0, 1, 100, 3), (36, 0, 1, 100, 5, True)))
    assert [(n.program, n.is_drum) for n in out.notes] == [(0, False), (5, True)]


# --- decoding ------------------------------------------------------------------------------

T = lambda codec_id: codec_id + 3  # token id
S = lambda steps: steps + 3  # shift token


def _notes(decoded):
    return sorted((n.program, n.is_drum, n.pitch, round(n.start_time, 6), round(n.end_time, 6),
                   n.velocity) for n in decoded.note_sequence.notes)


def test_decode_worked_example():
    tokens = [1134, 13, 1135, 1133, 1064, 1299, 53, 1132, 1064, 1, 0, 0]
    decoded = nseq.decode_tokens_to_note_sequence([(0.0, tokens)])
    assert _notes(decoded) == [(0, False, 60, 0.1, 0.5, 127), (0, True, 36, 0.1, 0.11, 127)]
    assert (decoded.num_invalid_events, decoded.num_dropped_events) == (0, 0)
    instruments = {(n.is_drum, n.instrument) for n in decoded.note_sequence.notes}
    assert instruments == {(False, 0), (True, 9)}


def test_decode_velocity_with_127_bins():
    vocab = VocabularyConfig(num_velocity_bins=127)
    vel = lambda v: 1129 + v
    tokens = [T(1257), S(10), T(vel(100)), T(PITCH(60)), S(20), T(vel(0)), T(PITCH(60)), 1]
    # With 127 bins the tie id is 1257 and pitches are unchanged.
    assert vocabularies.build_codec(vocab).encode_event(Event("tie", 0)) == 1257
    decoded = nseq.decode_tokens_to_note_sequence([(1.0, tokens)], vocab=vocab)
    assert _notes(decoded) == [(0, False, 60, 1.1, 1.2, 100)]


def test_decode_missing_offset_reonset_closes_note():
    tokens = [T(TIE), S(10), T(VEL1), T(PITCH(60)), S(30), T(PITCH(60)), S(50), T(VEL0),
              T(PITCH(60)), 1]
    assert _notes(nseq.decode_tokens_to_note_sequence([(0.0, tokens)])) == [
        (0, False, 60, 0.1, 0.3, 127), (0, False, 60, 0.3, 0.5, 127)]


def test_decode_multitrack_and_ties_across_segments():
    first = [T(TIE), S(10), T(PROG(0)), T(VEL1), T(PITCH(60)), T(PROG(40)), T(PITCH(64)),
             T(DRUM(38)), 1]
    # The next segment says program 40 / pitch 64 still sounds; piano 60 ended at its start.
    second = [T(PROG(40)), T(PITCH(64)), T(TIE), S(88), T(VEL0), T(PITCH(64)), 1]
    decoded = nseq.decode_tokens_to_note_sequence([(5.12, second), (0.0, first)])
    assert _notes(decoded) == [(0, False, 60, 0.1, 5.12, 127), (0, True, 38, 0.1, 0.11, 127),
                               (40, False, 64, 0.1, 6.0, 127)]
    programs = {n.program: n.instrument for n in decoded.note_sequence.notes if not n.is_drum}
    assert programs == {0: 0, 40: 1}


def test_decode_counts_invalid_events():
    tokens = [2, T(TIE), T(TIE), 1400, S(10), T(VEL0), T(PITCH(61)), T(PROG(0)), T(VEL1),
              T(PITCH(60)), S(20), T(VEL0), T(PITCH(60)), 1, 2]
    decoded = nseq.decode_tokens_to_note_sequence([(0.0, tokens)])
    # UNK, a second tie, extra id 1400 and a note-off for a silent pitch; after EOS ignored.
    assert decoded.num_invalid_events == 4
    assert _notes(decoded) == [(0, False, 60, 0.1, 0.2, 127)]


def test_decode_event_exactly_at_next_segment_start_kept_later_dropped():
    first = [T(TIE), S(10), T(VEL1), T(PITCH(60)), S(512), T(VEL0), T(PITCH(60)), S(514),
             T(VEL1), T(PITCH(62)), 1]
    second = [T(TIE), 1]
    decoded = nseq.decode_tokens_to_note_sequence([(0.0, first), (5.12, second)])
    assert _notes(decoded) == [(0, False, 60, 0.1, 5.12, 127)]
    assert decoded.num_dropped_events == 3  # S(514) and the two tokens after it


def test_decode_unclosed_note_is_flushed_with_minimum_duration():
    tokens = [T(TIE), S(10), T(VEL1), T(PITCH(60)), 1]
    decoded = nseq.decode_tokens_to_note_sequence([(0.0, tokens)])
    assert _notes(decoded) == [(0, False, 60, 0.1, 0.11, 127)]
