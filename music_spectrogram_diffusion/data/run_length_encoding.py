"""Events in time -> one event stream indexed by frame, and the per-segment shift encoding.

Three steps of spec §1.4-1.5, each a pure function of arrays:

1. ``encode_and_index_events``: sorted timed events become codec ids separated by single-step
   shifts, with, for every audio frame, the slice of the stream that the frame owns and the
   "state snapshot" (notes sounding at the frame start) that a segment starting there needs.
2. ``extract_sequence_with_indices``: the stream of a run of frames, tie section first.
3. ``run_length_encode_shifts``: single shifts become *cumulative* shift tokens (steps since
   the segment start), and repeated velocity/program tokens are dropped.

``decode_events`` is the inverse of 3 for one segment, driving an event-decoding callback.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from music_spectrogram_diffusion.data.event_codec import Codec, Event

StateT = TypeVar("StateT")
ValueT = TypeVar("ValueT")


@dataclasses.dataclass(frozen=True, eq=False)
class IndexedEvents:
    """Output of encode_and_index_events (all int32 numpy arrays).

    Frame i owns ``events[event_start_indices[i]:event_end_indices[i]]``; a segment starting at
    frame i begins with the state snapshot at ``state_events[state_event_indices[i]:]`` up to
    and including the first end-of-state token (``tie``).
    """

    events: np.ndarray  # [num_events]
    event_start_indices: np.ndarray  # [num_frames]
    event_end_indices: np.ndarray  # [num_frames]
    state_events: np.ndarray  # [num_state_events]
    state_event_indices: np.ndarray  # [num_frames]


def encode_and_index_events(
    state: StateT | None,
    event_times: Sequence[float],
    event_values: Sequence[ValueT],
    encode_event_fn: Callable[[StateT | None, ValueT, Codec], Sequence[Event]],
    codec: Codec,
    frame_times: np.ndarray,  # [num_frames] seconds, increasing
    encoding_state_to_events_fn: Callable[[StateT], Sequence[Event]] | None = None,
) -> IndexedEvents:
    """Encodes timed events as one codec-id stream and indexes it by frame (spec §1.4).

    Events are stably sorted by time and quantised to ``round(time * steps_per_second)``
    (Python rounding, half to even, as the original). Between consecutive steps the stream
    holds one ``shift`` of value 1. ``encode_event_fn`` may update ``state``; when
    ``encoding_state_to_events_fn`` is given, a snapshot of the state is stored *before* each
    event, so a frame's snapshot describes what sounds when the frame starts.

    Differs from the original (spec §11.4): after the last event the original stopped
    advancing the state index, so frames after the last event group pointed at the snapshot
    taken *before* it (claiming that notes which had ended were still sounding), and with no
    events at all the index pointed past the end of ``state_events``. Here a snapshot of the
    final state is appended after the last event and every frame after it points there.
    """
    frame_times = np.asarray(frame_times, dtype=np.float64)
    num_frames = len(frame_times)
    order = np.argsort(np.asarray(event_times, dtype=np.float64), kind="stable")
    event_steps = [round(float(event_times[i]) * codec.steps_per_second) for i in order]
    sorted_values = [event_values[i] for i in order]
    shift_id = codec.encode_event(Event("shift", 1))

    events: list[int] = []
    state_events: list[int] = []
    event_start_indices: list[int] = []
    state_event_indices: list[int] = []
    cur_step = 0
    cur_event_idx = 0
    cur_state_event_idx = 0

    def fill_frames_to_cur_step():
        # A frame starts at the stream position reached when the step counter first passes
        # its start time (frame_time < cur_step / steps_per_second).
        while (len(event_start_indices) < num_frames
               and frame_times[len(event_start_indices)] < cur_step / codec.steps_per_second):
            event_start_indices.append(cur_event_idx)
            state_event_indices.append(cur_state_event_idx)

    for event_step, event_value in zip(event_steps, sorted_values):
        while event_step > cur_step:
            events.append(shift_id)
            cur_step += 1
            fill_frames_to_cur_step()
            cur_event_idx = len(events)
            cur_state_event_idx = len(state_events)
        if encoding_state_to_events_fn is not None:
            # The state *before* this event: what a segment starting here must be told.
            state_events.extend(codec.encode_event(e) for e in encoding_state_to_events_fn(state))
        events.extend(codec.encode_event(e) for e in encode_event_fn(state, event_value, codec))

    final_state_event_idx = len(state_events)
    if encoding_state_to_events_fn is not None:
        # Fix for spec §11.4: the state after the last event, for the frames that follow it.
        state_events.extend(codec.encode_event(e) for e in encoding_state_to_events_fn(state))

    # Keep shifting until every frame is indexed. The comparison is not strict: a step that
    # lines up exactly with the last frame's start needs one more shift to cover that frame.
    while num_frames and cur_step / codec.steps_per_second <= frame_times[-1]:
        events.append(shift_id)
        cur_step += 1
        fill_frames_to_cur_step()
        cur_event_idx = len(events)
        cur_state_event_idx = final_state_event_idx

    # Each frame's slice ends where the next one begins; the last one runs to the end.
    event_end_indices = event_start_indices[1:] + [len(events)]
    as_int32 = lambda values: np.asarray(values, dtype=np.int32)
    return IndexedEvents(
        events=as_int32(events),
        event_start_indices=as_int32(event_start_indices),
        event_end_indices=as_int32(event_end_indices[:num_frames]),
        state_events=as_int32(state_events),
        state_event_indices=as_int32(state_event_indices),
    )


def extract_sequence_with_indices(
    events: np.ndarray,  # [num_events]
    event_start_index: int,
    event_end_index: int,
    state_events: np.ndarray | None = None,  # [num_state_events]
    state_event_index: int | None = None,
    state_events_end_token: int | None = None,
) -> np.ndarray:
    """``events[start:end]``, preceded by the state snapshot when an end token is given.

    The snapshot is ``state_events[state_event_index:]`` up to and including the first
    ``state_events_end_token`` (the ``tie`` token): the tie section of spec §1.5 step 1.
    """
    body = np.asarray(events[event_start_index:event_end_index], dtype=np.int32)
    if state_events_end_token is None:
        return body
    if state_events is None or state_event_index is None:
        raise ValueError("state_events and state_event_index are needed for a tie section")
    # Search growing runs, not the whole rest of the piece: a snapshot is a few tokens per
    # sounding note, and the rest may be a long memory-mapped array (data/piece_store.py).
    length = 64
    while True:
        snapshot = np.asarray(state_events[state_event_index:state_event_index + length])
        ends = np.flatnonzero(snapshot == state_events_end_token)
        if ends.size:
            return np.concatenate([snapshot[: ends[0] + 1].astype(np.int32), body])
        if state_event_index + length >= len(state_events):
            raise ValueError(f"no end-of-state token {state_events_end_token} after state "
                             f"index {state_event_index}")
        length *= 4


def run_length_encode_shifts(
    codec_ids: np.ndarray,  # [num_events] single shifts and other events
    codec: Codec,
    state_change_event_types: Sequence[str] = (),
) -> np.ndarray:
    """Run-length encodes single shifts into cumulative shifts (spec §1.5 step 3).

    Shift tokens carry the *total* number of steps since the start of the sequence (split
    into tokens of at most ``max_shift_steps``), so a segment's times are absolute within it.
    A token of a type in ``state_change_event_types`` that repeats the last value of its type
    is dropped; the steps pending before it are kept for the next emitted token. Trailing
    shifts are dropped.

    Returns:
      [num_tokens] int32 codec ids.
    """
    # Vectorised (this runs once per training example): the same tokens as the loop
    # "count shifts; drop an event that repeats its type's last value; before each emitted
    # event after pending shifts, emit the total in tokens of at most max_shift_steps".
    codec_ids = np.asarray(codec_ids, dtype=np.int64)
    first_shift, last_shift = codec.event_type_range("shift")
    is_shift = (codec_ids >= first_shift) & (codec_ids <= last_shift)
    shifts_before = np.cumsum(is_shift)[~is_shift]  # [num_other] total steps before each event
    others = codec_ids[~is_shift]
    keep = np.ones(len(others), bool)
    for first, last in (codec.event_type_range(t) for t in state_change_event_types):
        # Codec id 0 is shift 0, never a state-change type, so the first value is always kept.
        in_range = np.flatnonzero((others >= first) & (others <= last))
        values = others[in_range]
        keep[in_range[1:]] &= values[1:] != values[:-1]
    events, totals = others[keep], shifts_before[keep]
    pending = np.diff(totals, prepend=0) > 0  # shifts since the previous emitted event
    max_shift = codec.max_shift_steps
    remainders = np.where(pending, totals % max_shift, 0)
    num_shift_tokens = np.where(pending, totals // max_shift + (remainders > 0), 0)
    event_positions = np.cumsum(num_shift_tokens + 1) - 1
    # shift k has codec id k (shift is the first range): full shifts, then the remainder.
    output = np.full(int(event_positions[-1]) + 1 if len(events) else 0, max_shift, np.int32)
    output[event_positions] = events
    last_shift_token = event_positions[remainders > 0] - 1
    output[last_shift_token] = remainders[remainders > 0]
    return output


def decode_events(
    state: Any,
    codec_ids: Sequence[int],
    start_time: float,
    max_time: float | None,
    codec: Codec,
    decode_event_fn: Callable[[Any, float, Event, Codec], None],
) -> tuple[int, int]:
    """Replays one segment's codec ids through ``decode_event_fn`` (inverse of the above).

    Shift tokens set the time to ``start_time + (sum of consecutive shifts) / steps_per_second``
    (they are cumulative, so consecutive shifts add and any other event restarts the sum).
    Events after ``max_time`` (normally the next segment's start) are dropped; an event exactly
    at ``max_time`` is kept.

    Returns:
      (number of invalid events, number of dropped tokens). An event is invalid when its id is
      not a codec id or ``decode_event_fn`` raises ValueError.
    """
    invalid_events = 0
    dropped_events = 0
    cur_steps = 0
    cur_time = start_time
    codec_ids = list(codec_ids)
    for token_idx, codec_id in enumerate(codec_ids):
        try:
            event = codec.decode_event_index(codec_id)
        except ValueError:
            invalid_events += 1
            continue
        if event.type == "shift":
            cur_steps += event.value
            cur_time = start_time + cur_steps / codec.steps_per_second
            if max_time is not None and cur_time > max_time:
                dropped_events = len(codec_ids) - token_idx
                break
        else:
            cur_steps = 0
            try:
                decode_event_fn(state, cur_time, event, codec)
            except ValueError:
                invalid_events += 1
    return invalid_events, dropped_events
