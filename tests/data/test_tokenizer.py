"""MIDI bytes -> per-segment note tokens -> notes, on real MIDI (spec §1.3-1.5, §11.4, §11.6)."""

import collections
import logging

import numpy as np
import pytest

from music_spectrogram_diffusion.data import midi_io, note_sequences, tokenizer, vocabularies
from music_spectrogram_diffusion.data.vocabularies import VocabularyConfig
from music_spectrogram_diffusion.testing import midi_fixtures

WORKED_EXAMPLE = [1134, 13, 1135, 1133, 1064, 1299, 53, 1132, 1064, 1]
GRANULARITY_VOCABS = [VocabularyConfig(num_velocity_bins=b, program_granularity=g)
                      for b in (1, 127) for g in ("full", "midi_class", "flat")]


def test_worked_example_token_for_token():
    """Spec §1.5: piano 60 from 0.10 to 0.50 s and a drum 36 at 0.10 s, from real MIDI bytes."""
    segments = tokenizer.tokenize_midi(midi_fixtures.make_midi_bytes(
        midi_fixtures.worked_example_notes()))
    assert len(segments) == 1
    segment = segments[0]
    assert (segment.start_seconds, segment.start_frame) == (0.0, 0)
    assert segment.tokens.dtype == np.int32
    assert segment.tokens.tolist() == WORKED_EXAMPLE
    padded = tokenizer.pad_tokens(segment.tokens)
    assert padded.shape == (2048,) and padded.dtype == np.int32
    assert padded[:10].tolist() == WORKED_EXAMPLE and not padded[10:].any()


def test_next_segment_starts_with_tie_prefix():
    """The piano note held past 5.12 s is declared in the next segment's tie section."""
    notes = [(0, False, 60, 0.10, 6.0), (0, True, 36, 0.10, 0.2)]
    segments = tokenizer.tokenize_midi(midi_fixtures.make_midi_bytes(notes))
    assert [s.start_frame for s in segments] == [0, 256]
    assert segments[0].tokens.tolist() == [1134, 13, 1135, 1133, 1064, 1299, 1]
    # tie prefix (program 0, pitch 60, tie), then the offset at 0.88 s: the repeated
    # program token is dropped because the tie section already set program 0.
    assert segments[1].tokens.tolist() == [1135, 1064, 1134, 91, 1132, 1064, 1]
    assert segments[1].start_seconds == pytest.approx(5.12)
    assert segments[1].num_frames == tokenizer.num_frames_for_duration(6.0) - 256


def test_default_num_frames_follows_audio_to_frames_rule():
    assert tokenizer.num_frames_for_duration(0.0) == 1
    assert tokenizer.num_frames_for_duration(5.12) == 257  # a multiple of 320 gets one more
    assert tokenizer.num_frames_for_duration(5.13) == 257
    ns = midi_io.read_midi(midi_fixtures.make_midi_bytes([(0, False, 60, 0.0, 5.12)]))
    segments = tokenizer.tokenize_note_sequence(ns)
    assert [(s.start_frame, s.num_frames) for s in segments] == [(0, 256), (256, 1)]
    assert segments[1].tokens.tolist() == [1135, 1064, 1134, 1132, 1064, 1]


def _by_channel(ns, program_map=lambda p: p):
    channels = collections.defaultdict(list)
    for n in ns.notes:
        key = (0 if n.is_drum else program_map(n.program), n.is_drum, n.pitch)
        channels[key].append((n.start_time, n.end_time, n.velocity))
    return {key: sorted(spans) for key, spans in channels.items()}


def _assert_round_trip(ns, decoded, vocab, *, tolerance=0.010):
    granularity = vocabularies.program_granularity(vocab)
    expected = _by_channel(ns, granularity.program_map_fn)
    got = _by_channel(decoded.note_sequence)
    assert sorted(got) == sorted(expected)
    for key, spans in expected.items():
        assert len(got[key]) == len(spans), key
        for (start, end, velocity), (dec_start, dec_end, dec_velocity) in zip(spans, got[key]):
            assert abs(dec_start - start) <= tolerance, (key, start, dec_start)
            if not key[1]:  # drums have no offsets
                assert abs(dec_end - end) <= tolerance, (key, end, dec_end)
            expected_velocity = 127 if vocab.num_velocity_bins == 1 else velocity
            assert dec_velocity == expected_velocity
    assert decoded.num_invalid_events == 0 and decoded.num_dropped_events == 0


@pytest.mark.parametrize("vocab", [VocabularyConfig(num_velocity_bins=1),
                                   VocabularyConfig(num_velocity_bins=127)])
def test_multi_instrument_round_trip_across_segments(vocab):
    """12 s of piano, bass, strings, flute and drums: 3 segments with ties at both boundaries."""
    midi = midi_fixtures.multi_instrument_midi_bytes(12.0)
    ns = note_sequences.preprocess_note_sequence(midi_io.read_midi(midi))
    segments = tokenizer.tokenize_midi(midi, vocab=vocab)
    assert [s.start_frame for s in segments] == [0, 256, 512]
    tie_id = 1134 if vocab.num_velocity_bins == 1 else 1260
    # notes sounding at 5.12 s and 10.24 s make non-empty tie sections
    for segment in segments[1:]:
        assert list(segment.tokens).index(tie_id) > 0
    _assert_round_trip(ns, tokenizer.decode_segments(segments, vocab=vocab), vocab)


@pytest.mark.parametrize("vocab", GRANULARITY_VOCABS, ids=lambda v: f"{v.num_velocity_bins}-"
                         f"{v.program_granularity}")
def test_bach_chorale_round_trip_every_setting(bach_midi, vocab):
    """A real chorale (music21 corpus, 4 string parts, 22.5 s) for every vocabulary setting."""
    ns = note_sequences.preprocess_note_sequence(midi_io.read_midi(bach_midi))
    segments = tokenizer.tokenize_midi(bach_midi, vocab=vocab)
    assert len(segments) == 5
    codec = vocabularies.build_codec(vocab)
    first, last = codec.event_type_range("program")
    programs = {int(t) - 3 - first for s in segments for t in s.tokens if first <= t - 3 <= last}
    expected_programs = {"full": {40, 41, 42, 43}, "midi_class": {40}, "flat": set()}
    assert programs == expected_programs[vocab.program_granularity]
    decoded = tokenizer.decode_segments(segments, vocab=vocab)
    if vocab.program_granularity == "full":
        _assert_round_trip(ns, decoded, vocab)
    else:
        # Parts collapse onto one program, so unisons between parts become one note; the
        # onsets of every (pitch) still all come back.
        onsets = lambda seq: {(n.pitch, round(n.start_time, 2)) for n in seq.notes}
        assert onsets(decoded.note_sequence) == onsets(ns)
        assert {n.program for n in decoded.note_sequence.notes} == (
            {40} if vocab.program_granularity == "midi_class" else {0})


@pytest.fixture(scope="module")
def bach_midi():
    return midi_fixtures.bach_chorale_midi_bytes("bach/bwv66.6")


def test_drum_only_midi_gives_correct_tokens():
    """Drum-only MIDI is valid: velocity + drum tokens, no programs, no offsets."""
    midi = midi_fixtures.make_midi_bytes([(0, True, 36, 0.0, 0.1), (0, True, 38, 0.5, 0.6),
                                          (0, True, 42, 0.5, 0.55)])
    segments = tokenizer.tokenize_midi(midi)
    assert [s.tokens.tolist() for s in segments] == [
        [1134, 1133, 1299, 53, 1301, 1305, 1]]


def test_midi_without_notes_gives_eos_only_segment():
    """A valid MIDI file with no notes: one 1-frame segment holding the empty tie section."""
    segments = tokenizer.tokenize_midi(midi_fixtures.make_midi_bytes([]))
    assert [(s.num_frames, s.tokens.tolist()) for s in segments] == [(1, [1134, 1])]


def test_empty_note_sequence_gives_tie_only_segments():
    """§11.4: the original read past the end of the state events here."""
    segments = tokenizer.tokenize_note_sequence(note_sequences.NoteSequence(), num_frames=600)
    assert [(s.start_frame, s.num_frames) for s in segments] == [(0, 256), (256, 256), (512, 88)]
    assert all(s.tokens.tolist() == [1134, 1] for s in segments)


def test_no_stale_tie_state_after_last_event():
    """§11.4: a segment after the last note has an empty tie section.

    The original gave frames after the last event group the state from before it, here
    (program 0, pitch 64), i.e. claiming the note that ended at 4.0 s still sounds.
    """
    ns = note_sequences.preprocess_note_sequence(midi_io.read_midi(midi_fixtures.make_midi_bytes(
        [(0, False, 60, 0.0, 3.0), (0, False, 64, 0.0, 4.0)])))
    index = tokenizer.index_note_sequence(ns, num_frames=400)
    assert tokenizer.segment_tokens(index, 250, 300).tolist() == [1134, 1]
    # Inside the notes the tie section is right: at 3.5 s only pitch 64 sounds.
    assert tokenizer.segment_tokens(index, 175, 250).tolist() == [
        1135, 1068, 1134, 53, 1132, 1068, 1]
    segments = tokenizer.tokenize_note_sequence(ns, num_frames=600)
    assert [s.tokens.tolist() for s in segments[1:]] == [[1134, 1], [1134, 1]]


def test_zero_length_and_tiny_notes_are_dropped():
    """A 3 ms note (both ends in one 10 ms step) is dropped; the next note is tokenized."""
    midi = midi_fixtures.make_midi_bytes([(0, False, 62, 0.2, 0.203), (0, False, 64, 0.3, 0.4)])
    assert [s.tokens.tolist() for s in tokenizer.tokenize_midi(midi)] == [
        [1134, 33, 1135, 1133, 1068, 43, 1132, 1068, 1]]


def test_events_after_the_last_frame_are_dropped():
    ns = midi_io.read_midi(midi_fixtures.make_midi_bytes([(0, False, 60, 0.0, 1.0),
                                                          (0, False, 62, 3.0, 4.0)]))
    index = tokenizer.index_note_sequence(ns, num_frames=100)  # 2 s of audio
    assert index.num_frames == 100 and index.event_end_indices[-1] == len(index.events)
    assert tokenizer.segment_tokens(index, 0, 100).tolist() == [
        1134, 1135, 1133, 1064, 103, 1132, 1064, 1]


@pytest.fixture(scope="module")
def dense_index():
    ns = note_sequences.preprocess_note_sequence(midi_io.read_midi(
        midi_fixtures.dense_midi_bytes(5.0)))
    return tokenizer.index_note_sequence(ns)


def _full_length(index):
    return len(tokenizer.segment_tokens(index, 0, index.num_frames, max_tokens=100_000))


def test_dense_segment_has_more_than_2047_tokens(dense_index):
    assert _full_length(dense_index) > 2047


def test_overflow_truncate_keeps_well_formed_prefix(dense_index, caplog):
    full = tokenizer.segment_tokens(dense_index, 0, dense_index.num_frames, max_tokens=100_000)
    with caplog.at_level(logging.WARNING):
        tokens = tokenizer.segment_tokens(dense_index, 0, dense_index.num_frames)
    assert 2040 <= len(tokens) <= 2048 and tokens[-1] == 1
    np.testing.assert_array_equal(tokens[:-1], full[: len(tokens) - 1])
    assert 1004 <= tokens[-2] <= 1131  # the cut follows a pitch: no half-written note event
    dropped = len(full) - len(tokens)
    assert f"dropped the last {dropped} tokens" in caplog.text
    decoded = note_sequences.decode_tokens_to_note_sequence([(0.0, tokens)])
    assert decoded.num_invalid_events == 0 and len(decoded.note_sequence.notes) > 100
    # truncation is deterministic
    np.testing.assert_array_equal(tokenizer.segment_tokens(dense_index, 0, dense_index.num_frames),
                                  tokens)


def test_overflow_truncate_never_splits_a_note_group(dense_index):
    """For every limit, the cut lands after a pitch, drum or tie token."""
    for max_tokens in range(3, 40):
        tokens = tokenizer.segment_tokens(dense_index, 0, dense_index.num_frames,
                                          max_tokens=max_tokens)
        assert len(tokens) <= max_tokens and tokens[-1] == 1
        assert tokens[-2] == 1134 or 1004 <= tokens[-2] <= 1131


def test_overflow_skip_and_error(dense_index, caplog):
    with caplog.at_level(logging.WARNING):
        assert tokenizer.segment_tokens(dense_index, 0, 250, overflow="skip") is None
    assert "segment skipped" in caplog.text
    with pytest.raises(tokenizer.TokenOverflowError, match=r"frames \[0, 250\): \d+ note tokens"):
        tokenizer.segment_tokens(dense_index, 0, 250, overflow="error")
    # a short range that fits is returned under every policy
    for policy in tokenizer.OVERFLOW_CHOICES:
        assert tokenizer.segment_tokens(dense_index, 0, 5, overflow=policy)[-1] == 1


def test_overflow_skip_leaves_segment_out_of_list():
    midi = midi_fixtures.dense_midi_bytes(7.0)  # the first segment overflows, the second fits
    ns = note_sequences.preprocess_note_sequence(midi_io.read_midi(midi))
    assert [s.start_frame for s in tokenizer.tokenize_note_sequence(ns)] == [0, 256]
    assert [s.start_frame for s in tokenizer.tokenize_note_sequence(ns, overflow="skip")] == [256]
    with pytest.raises(tokenizer.TokenOverflowError):
        tokenizer.tokenize_note_sequence(ns, overflow="error")


def test_tie_section_too_long_to_truncate():
    notes = [(0, False, p, 0.0, 2.0) for p in range(40, 60)]
    ns = note_sequences.preprocess_note_sequence(midi_io.read_midi(
        midi_fixtures.make_midi_bytes(notes)))
    index = tokenizer.index_note_sequence(ns)
    with pytest.raises(tokenizer.TokenOverflowError, match="tie section alone does not fit"):
        tokenizer.segment_tokens(index, 50, 60, max_tokens=10)


def test_argument_errors():
    index = tokenizer.index_note_sequence(note_sequences.NoteSequence(), num_frames=10)
    with pytest.raises(ValueError, match=r"valid values: \['truncate', 'skip', 'error'\]"):
        tokenizer.segment_tokens(index, 0, 10, overflow="drop")
    for start, end in ((0, 11), (5, 5), (-1, 3)):
        with pytest.raises(ValueError, match="inside the piece's 10 frames"):
            tokenizer.segment_tokens(index, start, end)
    with pytest.raises(ValueError, match="do not fit into 4"):
        tokenizer.pad_tokens(np.arange(5), length=4)
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        tokenizer.index_note_sequence(note_sequences.NoteSequence(), num_frames=0)
    with pytest.raises(midi_io.MidiError, match="x.mid: no such file"):
        tokenizer.tokenize_midi("x.mid")


def test_midi_class_and_flat_tokens():
    notes = [(41, False, 60, 0.1, 0.2), (0, True, 36, 0.1, 0.2)]
    midi = midi_fixtures.make_midi_bytes(notes)
    tokens = lambda g: tokenizer.tokenize_midi(
        midi, vocab=VocabularyConfig(program_granularity=g))[0].tokens.tolist()
    assert tokens("full") == [1134, 13, 1176, 1133, 1064, 1299, 23, 1132, 1064, 1]
    assert tokens("midi_class") == [1134, 13, 1175, 1133, 1064, 1299, 23, 1132, 1064, 1]
    assert tokens("flat") == [1134, 13, 1133, 1064, 1299, 23, 1132, 1064, 1]


def test_slakh_program_option():
    midi = midi_fixtures.make_midi_bytes([(3, False, 60, 0.1, 0.2)])
    assert tokenizer.tokenize_midi(midi, slakh_programs=True)[0].tokens[2] == 1135  # 3 -> 0
    assert tokenizer.tokenize_midi(midi)[0].tokens[2] == 1138
