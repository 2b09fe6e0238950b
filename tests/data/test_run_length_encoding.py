"""Event indexing and shift run-length encoding (spec §1.4-1.5, §11.4; original tests §10)."""

import numpy as np
import pytest

from music_spectrogram_diffusion.data import run_length_encoding as rle
from music_spectrogram_diffusion.data.event_codec import Codec, Event, EventRange

# The original tests' layout: shift 0..100 (id = steps), pitch p = 101 + p, then the rest.
CODEC = Codec(max_shift_steps=100, steps_per_second=100, event_ranges=[
    EventRange("pitch", 0, 127), EventRange("velocity", 0, 1), EventRange("tie", 0, 0),
    EventRange("program", 0, 127)])
VEL0, VEL1 = CODEC.encode_event(Event("velocity", 0)), CODEC.encode_event(Event("velocity", 1))
TIE = CODEC.encode_event(Event("tie", 0))
PROG = lambda p: CODEC.encode_event(Event("program", p))


def test_run_length_encoding_is_cumulative():
    events = [1, 1, 1, 161, 1, 1, 1, 162, 1, 1, 1, 163, 1, 1]
    np.testing.assert_array_equal(rle.run_length_encode_shifts(events, CODEC),
                                  [3, 161, 6, 162, 9, 163])


def test_run_length_encoding_splits_long_shifts():
    events = [1] * 202 + [161]
    np.testing.assert_array_equal(rle.run_length_encode_shifts(events, CODEC), [100, 100, 2, 161])


def test_run_length_encoding_simultaneous_events():
    events = [161, 162, 1, 1, 163, 164, 1]
    np.testing.assert_array_equal(rle.run_length_encode_shifts(events, CODEC),
                                  [161, 162, 2, 163, 164])


def test_run_length_encoding_drops_redundant_state_and_keeps_pending_shifts():
    events = [VEL1, 161, 1, VEL1, 1, 162, 1, VEL0, 161, PROG(3), 1, PROG(3), VEL0, 163]
    encoded = rle.run_length_encode_shifts(events, CODEC, ("velocity", "program"))
    # The second VEL1 is dropped; its pending shift carries over to pitch 61 (total 2).
    # The repeated PROG(3) and VEL0 are dropped after the shift; the shift is kept (total 4).
    np.testing.assert_array_equal(encoded, [VEL1, 161, 2, 162, 3, VEL0, 161, PROG(3), 4, 163])
    # Without state types nothing is dropped.
    np.testing.assert_array_equal(rle.run_length_encode_shifts(events, CODEC), [
        VEL1, 161, 1, VEL1, 2, 162, 3, VEL0, 161, PROG(3), 4, PROG(3), VEL0, 163])


class _Counter:
    def __init__(self):
        self.n = 0


def _count_event(state, value, codec):
    state.n += 1
    return [Event("pitch", value)]


def _count_snapshot(state):
    return [Event("pitch", state.n), Event("tie", 0)]


def test_encode_and_index_events_exact():
    """Pitch 60 at 0 s, pitch 61 at 0.03 s, frames at 50 Hz (worked by hand)."""
    indexed = rle.encode_and_index_events(
        state=_Counter(), event_times=[0.03, 0.0], event_values=[61, 60],
        encode_event_fn=_count_event, codec=CODEC, frame_times=np.arange(5) / 50,
        encoding_state_to_events_fn=_count_snapshot)
    # Shifts continue until the step passes the last frame's start (0.08 s): step 9.
    np.testing.assert_array_equal(indexed.events, [161, 1, 1, 1, 162, 1, 1, 1, 1, 1, 1])
    # Frame i owns the events at steps 2i and 2i+1 plus the shift to step 2i+2.
    np.testing.assert_array_equal(indexed.event_start_indices, [0, 3, 6, 8, 10])
    np.testing.assert_array_equal(indexed.event_end_indices, [3, 6, 8, 10, 11])
    np.testing.assert_array_equal(indexed.state_events, [101, TIE, 102, TIE, 103, TIE])
    # Frame 0: before any event; frame 1: one event so far; frames 2-4: after the last event.
    np.testing.assert_array_equal(indexed.state_event_indices, [0, 2, 4, 4, 4])
    segment = rle.extract_sequence_with_indices(
        indexed.events, indexed.event_start_indices[1], indexed.event_end_indices[2],
        indexed.state_events, indexed.state_event_indices[1], TIE)
    np.testing.assert_array_equal(segment, [102, TIE, 1, 162, 1, 1, 1])
    np.testing.assert_array_equal(rle.run_length_encode_shifts(segment, CODEC), [102, TIE, 1, 162])


def test_no_stale_state_after_last_event():
    """§11.4: the original pointed frames after the last event at the state before it."""
    indexed = rle.encode_and_index_events(
        state=_Counter(), event_times=[0.0, 0.0, 0.5], event_values=[60, 61, 62],
        encode_event_fn=_count_event, codec=CODEC, frame_times=np.arange(60) / 50,
        encoding_state_to_events_fn=_count_snapshot)
    snapshot = lambda frame: indexed.state_events[indexed.state_event_indices[frame]]
    assert snapshot(0) == 101  # nothing played yet
    assert snapshot(20) == 103  # both step-0 events done, the one at step 50 not yet
    assert snapshot(25) == 103  # frame 25 starts at step 50, before its event
    assert all(snapshot(frame) == 104 for frame in range(26, 60))  # all three done


def test_empty_events_give_valid_state_for_every_frame():
    """§11.4: with no events the original indexed past the end of state_events."""
    indexed = rle.encode_and_index_events(
        state=_Counter(), event_times=[], event_values=[], encode_event_fn=_count_event,
        codec=CODEC, frame_times=np.arange(3) / 50, encoding_state_to_events_fn=_count_snapshot)
    np.testing.assert_array_equal(indexed.state_events, [101, TIE])
    np.testing.assert_array_equal(indexed.state_event_indices, [0, 0, 0])
    np.testing.assert_array_equal(indexed.events, [1] * 5)
    segment = rle.extract_sequence_with_indices(
        indexed.events, indexed.event_start_indices[0], indexed.event_end_indices[-1],
        indexed.state_events, indexed.state_event_indices[0], TIE)
    np.testing.assert_array_equal(rle.run_length_encode_shifts(segment, CODEC), [101, TIE])


def test_extract_without_end_token_fails_clearly():
    with pytest.raises(ValueError, match="no end-of-state token"):
        rle.extract_sequence_with_indices(np.array([1]), 0, 1, np.array([101]), 0, TIE)


def _recorder():
    seen = []

    def decode_fn(state, time, event, codec):
        if event.type == "tie":
            raise ValueError("unexpected tie")
        seen.append((round(time, 6), event.type, event.value))
    return seen, decode_fn


def test_decode_events_times_are_cumulative_within_segment():
    seen, decode_fn = _recorder()
    invalid, dropped = rle.decode_events(
        None, [161, 3, 162, 6, 163, 100, 100, 2, 164], 1.0, None, CODEC, decode_fn)
    assert (invalid, dropped) == (0, 0)
    assert seen == [(1.0, "pitch", 60), (1.03, "pitch", 61), (1.06, "pitch", 62),
                    (3.02, "pitch", 63)]


def test_decode_events_max_time_and_invalid_events():
    seen, decode_fn = _recorder()
    tokens = [5000, 3, 161, 6, 162, TIE, 7, 163, 164]
    invalid, dropped = rle.decode_events(None, tokens, 1.0, 1.0 + 6 / 100, CODEC, decode_fn)
    # 5000 is no codec id and the tie raises: 2 invalid. The event exactly at max_time is
    # kept; from the shift past max_time on, 3 tokens are dropped.
    assert (invalid, dropped) == (2, 3)
    assert seen == [(1.03, "pitch", 60), (1.06, "pitch", 61)]


def _run_length_encode_loop(codec_ids, codec, state_change_event_types=()):
    """The loop that the vectorised run_length_encode_shifts replaced (the original's)."""
    state_ranges = [codec.event_type_range(t) for t in state_change_event_types]
    current_state = [0] * len(state_ranges)
    output, shift_steps, total_shift_steps = [], 0, 0
    for event in codec_ids:
        if codec.is_shift_event_index(event):
            shift_steps += 1
            total_shift_steps += 1
            continue
        is_redundant = False
        for i, (first, last) in enumerate(state_ranges):
            if first <= event <= last:
                is_redundant = current_state[i] == event
                current_state[i] = event
        if is_redundant:
            continue
        if shift_steps > 0:
            remaining = total_shift_steps
            while remaining > 0:
                step = min(codec.max_shift_steps, remaining)
                output.append(step)
                remaining -= step
            shift_steps = 0
        output.append(event)
    return output


def test_vectorised_run_length_encoding_matches_the_loop_on_random_streams():
    rng = np.random.default_rng(0)
    velocity, program = CODEC.event_type_range("velocity"), CODEC.event_type_range("program")
    others = np.r_[np.arange(velocity[0], velocity[0] + 3), np.arange(program[0], program[0] + 3),
                   np.arange(160, 170)]
    for trial in range(300):
        length = int(rng.integers(0, 400))
        # Mostly single shifts (id 1), with runs long enough to need several shift tokens.
        ids = np.where(rng.random(length) < rng.uniform(0.3, 0.995), 1,
                       rng.choice(others, size=length))
        for types in ((), ("velocity", "program"), ("program",)):
            expected = _run_length_encode_loop(ids.tolist(), CODEC, types)
            got = rle.run_length_encode_shifts(ids, CODEC, types)
            assert got.dtype == np.int32
            np.testing.assert_array_equal(got, expected, err_msg=f"trial {trial} {types}")
