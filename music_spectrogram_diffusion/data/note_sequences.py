"""NoteSequences: preprocessing for synthesis, notes -> timed events, tokens -> notes.

* ``preprocess_note_sequence`` (spec §1.2, with the §11.5 fix): validate, apply the sustain
  pedal, delete control changes, trim overlapping same-pitch notes and drop notes that are
  empty at the codec's 10 ms resolution. Used for every source, not only Slakh.
* ``note_sequence_to_onsets_and_offsets_and_programs`` and ``note_event_data_to_events``
  (spec §1.3): the event order and the codec events of each note event, updating the tie
  state that ``note_encoding_state_to_events`` snapshots.
* ``decode_tokens_to_note_sequence``: the tie-aware inverse, segment by segment.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import warnings
from collections.abc import Iterable, Sequence

import numpy as np

with warnings.catch_warnings():
    # note_seq imports pydub, which warns that ffmpeg is missing; no audio is decoded here.
    warnings.simplefilter("ignore", RuntimeWarning)
    import note_seq
    from note_seq.protobuf import music_pb2

from music_spectrogram_diffusion.data import run_length_encoding, vocabularies
from music_spectrogram_diffusion.data.event_codec import Codec, Event

_LOGGER = logging.getLogger(__name__)

NoteSequence = music_pb2.NoteSequence

DEFAULT_VELOCITY = 100  # decoding before any velocity token
DEFAULT_NOTE_DURATION = 0.01  # decoded drum hits (drums have no offsets)
MIN_NOTE_DURATION = 0.01  # notes still sounding when decoding ends
DRUM_INSTRUMENT = 9

# Program of each Slakh instrument class (spec §1.2). The released checkpoints were trained on
# these programs only; map_to_slakh_programs moves any other program onto the nearest one
# below it, as the diffusers port does (spec §9.4).
SLAKH_CLASS_PROGRAMS = (0, 4, 8, 16, 24, 26, 29, 32, 33, 40, 41, 42, 43, 46, 47, 48, 50, 52, 55,
                        56, 57, 58, 60, 61, 64, 66, 67, 68, 69, 70, 71, 73, 80, 88)


class NoteSequenceError(ValueError):
    """A NoteSequence that cannot be tokenized (bad pitch, velocity, program or times)."""


# ---------------------------------------------------------------------------------------------
# Preprocessing (spec §1.2).


def validate_note_sequence(ns: NoteSequence, *, name: str | None = None) -> None:
    """Raises NoteSequenceError naming the source and the first bad note.

    Start == end is allowed here (such notes are dropped by trim_overlapping_notes); start >
    end, negative or non-finite times, and pitch/velocity/program outside MIDI's ranges fail.
    """
    source = name or ns.filename or ns.id or "<NoteSequence>"
    for i, note in enumerate(ns.notes):
        problem = None
        if not (math.isfinite(note.start_time) and math.isfinite(note.end_time)):
            problem = "non-finite time"
        elif note.start_time < 0:
            problem = "negative start time"
        elif note.end_time < note.start_time:
            problem = "end time before start time"
        elif not 0 <= note.pitch <= vocabularies.MAX_MIDI_PITCH:
            problem = "pitch outside 0..127"
        elif not 1 <= note.velocity <= vocabularies.MAX_MIDI_VELOCITY:
            problem = "velocity outside 1..127"
        elif not 0 <= note.program <= vocabularies.MAX_MIDI_PROGRAM:
            problem = "program outside 0..127"
        if problem:
            raise NoteSequenceError(
                f"{source}: note {i} has {problem} (pitch {note.pitch}, velocity "
                f"{note.velocity}, program {note.program}, {note.start_time:.4f}-"
                f"{note.end_time:.4f} s)"
            )


def trim_overlapping_notes(ns: NoteSequence, *, steps_per_second: int | None = None
                           ) -> NoteSequence:
    """Returns a copy where same-(pitch, program) notes never overlap (spec §1.2).

    A note's end is cut to the next note's start, then empty non-drum notes are dropped. With
    ``steps_per_second``, "empty" means start and end round to the same codec step: such a note
    would encode its offset before its own onset and leave a note stuck on in the tie state.
    Drum notes only contribute onsets, so they are neither trimmed nor dropped.
    """
    trimmed = copy.deepcopy(ns)
    by_channel: dict[tuple[int, int], list] = {}
    for note in trimmed.notes:
        if not note.is_drum:
            by_channel.setdefault((note.pitch, note.program), []).append(note)
    for notes in by_channel.values():
        notes.sort(key=lambda n: n.start_time)
        for previous, following in zip(notes, notes[1:]):
            if previous.end_time > following.start_time:
                previous.end_time = following.start_time

    def is_empty(note) -> bool:
        if note.is_drum:
            return False
        if steps_per_second is None:
            return note.start_time >= note.end_time
        return (round(note.start_time * steps_per_second)
                >= round(note.end_time * steps_per_second))

    kept = [note for note in trimmed.notes if not is_empty(note)]
    del trimmed.notes[:]
    trimmed.notes.extend(kept)
    return trimmed


def program_to_slakh_program(program: int) -> int:
    """The largest Slakh class program <= program (e.g. 3 -> 0, 25 -> 24, 100 -> 88)."""
    return max(p for p in SLAKH_CLASS_PROGRAMS if p <= program)


def map_to_slakh_programs(ns: NoteSequence) -> NoteSequence:
    """Copy with every non-drum program replaced by program_to_slakh_program (spec §9.4)."""
    mapped = copy.deepcopy(ns)
    for note in mapped.notes:
        if not note.is_drum:
            note.program = program_to_slakh_program(note.program)
    return mapped


def preprocess_note_sequence(
    ns: NoteSequence,
    *,
    steps_per_second: int = vocabularies.DEFAULT_VOCABULARY.steps_per_second,
    slakh_programs: bool = False,
    name: str | None = None,
) -> NoteSequence:
    """Validated, sustained, trimmed copy of ``ns`` ready for tokenization (spec §1.2).

    Sustain (CC64) extends notes per instrument, then all control changes are deleted. Programs
    and drum flags come from each note (one MIDI track/channel each). Overlapping same-pitch
    notes are trimmed for *every* source; the original did this only for Slakh and Cerberus4
    (spec §11.5), leaving inconsistent ties and offsets elsewhere. ``total_time`` is the last
    note end. Pitch bends are ignored.
    """
    validate_note_sequence(ns, name=name)
    sustained = note_seq.apply_sustain_control_changes(ns)
    del sustained.control_changes[:]
    if slakh_programs:
        sustained = map_to_slakh_programs(sustained)
    result = trim_overlapping_notes(sustained, steps_per_second=steps_per_second)
    dropped = len(sustained.notes) - len(result.notes)
    if dropped:
        _LOGGER.info("%s: dropped %d empty or fully overlapped notes",
                     name or ns.filename or "<NoteSequence>", dropped)
    result.total_time = max((note.end_time for note in result.notes), default=0.0)
    return result


# ---------------------------------------------------------------------------------------------
# Notes -> events (spec §1.3).


@dataclasses.dataclass(frozen=True)
class NoteEventData:
    """One onset or offset. velocity None: onsets only; program None: no programs."""

    pitch: int
    velocity: int | None = None
    program: int | None = None
    is_drum: bool | None = None


@dataclasses.dataclass
class NoteEncodingState:
    """Velocity bin of each sounding (pitch, program); bin 0 means it has ended."""

    active_pitches: dict[tuple[int, int], int] = dataclasses.field(default_factory=dict)


def note_sequence_to_onsets(ns: NoteSequence) -> tuple[list[float], list[NoteEventData]]:
    """Onset times and pitches, sorted by pitch (for onsets-only vocabularies)."""
    notes = sorted(ns.notes, key=lambda note: note.pitch)
    return [n.start_time for n in notes], [NoteEventData(pitch=n.pitch) for n in notes]


def note_sequence_to_onsets_and_offsets(ns: NoteSequence
                                        ) -> tuple[list[float], list[NoteEventData]]:
    """Offsets (velocity 0) then onsets, each sorted by pitch; no programs."""
    notes = sorted(ns.notes, key=lambda note: note.pitch)
    times = [n.end_time for n in notes] + [n.start_time for n in notes]
    values = ([NoteEventData(pitch=n.pitch, velocity=0) for n in notes]
              + [NoteEventData(pitch=n.pitch, velocity=n.velocity) for n in notes])
    return times, values


def note_sequence_to_onsets_and_offsets_and_programs(
        ns: NoteSequence) -> tuple[list[float], list[NoteEventData]]:
    """Event times and data in the order of spec §1.3.

    Notes are sorted by (is_drum, program, pitch); offsets of non-drum notes come first, then
    onsets of all notes. The encoder's stable sort by time keeps this order within a step:
    offsets before onsets, non-drums before drums.
    """
    notes = sorted(ns.notes, key=lambda n: (n.is_drum, n.program, n.pitch))
    times = [n.end_time for n in notes if not n.is_drum] + [n.start_time for n in notes]
    values = ([NoteEventData(n.pitch, 0, n.program, False) for n in notes if not n.is_drum]
              + [NoteEventData(n.pitch, n.velocity, n.program, n.is_drum) for n in notes])
    return times, values


def note_event_data_to_events(state: NoteEncodingState | None, value: NoteEventData,
                              codec: Codec) -> list[Event]:
    """Codec events of one note event; updates the tie state for non-drum notes."""
    if value.velocity is None:
        return [Event("pitch", value.pitch)]
    velocity_bin = vocabularies.velocity_to_bin(
        value.velocity, vocabularies.num_velocity_bins_from_codec(codec))
    if value.program is None:
        if state is not None:
            state.active_pitches[(value.pitch, 0)] = velocity_bin
        return [Event("velocity", velocity_bin), Event("pitch", value.pitch)]
    if value.is_drum:
        return [Event("velocity", velocity_bin), Event("drum", value.pitch)]
    if state is not None:
        state.active_pitches[(value.pitch, value.program)] = velocity_bin
    return [Event("program", value.program), Event("velocity", velocity_bin),
            Event("pitch", value.pitch)]


def note_encoding_state_to_events(state: NoteEncodingState) -> list[Event]:
    """The tie-section snapshot: (program, pitch) of each sounding note, then ``tie``."""
    events = []
    for pitch, program in sorted(state.active_pitches, key=lambda key: (key[1], key[0])):
        if state.active_pitches[(pitch, program)]:
            events += [Event("program", program), Event("pitch", pitch)]
    return events + [Event("tie", 0)]


# ---------------------------------------------------------------------------------------------
# Tokens -> notes.


@dataclasses.dataclass
class NoteDecodingState:
    """Mutable state while decoding consecutive segments."""

    current_time: float = 0.0
    current_velocity: int = DEFAULT_VELOCITY
    current_program: int = 0
    # (pitch, program) -> (onset time, velocity)
    active_pitches: dict[tuple[int, int], tuple[float, int]] = dataclasses.field(
        default_factory=dict)
    tied_pitches: set[tuple[int, int]] = dataclasses.field(default_factory=set)
    is_tie_section: bool = False
    note_sequence: NoteSequence = dataclasses.field(
        default_factory=lambda: NoteSequence(ticks_per_quarter=220))


def _add_note(state: NoteDecodingState, start: float, end: float, pitch: int, velocity: int,
              program: int = 0, is_drum: bool = False) -> None:
    state.note_sequence.notes.add(start_time=start, end_time=end, pitch=pitch,
                                  velocity=velocity, program=program, is_drum=is_drum)
    state.note_sequence.total_time = max(state.note_sequence.total_time, end)


def begin_tied_pitches_section(state: NoteDecodingState) -> None:
    """Call at each segment start: the segment's first events declare the sounding notes."""
    state.tied_pitches = set()
    state.is_tie_section = True


def decode_note_event(state: NoteDecodingState, time: float, event: Event, codec: Codec) -> None:
    """Applies one event at ``time``; ValueError for an event inconsistent with the state."""
    if time < state.current_time:
        raise ValueError(f"event time {time} < current time {state.current_time}")
    state.current_time = time
    key = (event.value, state.current_program)
    if event.type == "pitch":
        if state.is_tie_section:
            if key not in state.active_pitches:
                raise ValueError(f"inactive pitch/program in tie section: {key}")
            if key in state.tied_pitches:
                raise ValueError(f"pitch/program is already tied: {key}")
            state.tied_pitches.add(key)
        elif state.current_velocity == 0:
            if key not in state.active_pitches:
                raise ValueError(f"note-off for inactive pitch/program: {key}")
            onset, velocity = state.active_pitches.pop(key)
            _add_note(state, onset, time, event.value, velocity, state.current_program)
        else:
            if key in state.active_pitches:
                # A re-onset of a sounding note ends it and starts a new one.
                onset, velocity = state.active_pitches.pop(key)
                _add_note(state, onset, time, event.value, velocity, state.current_program)
            state.active_pitches[key] = (time, state.current_velocity)
    elif event.type == "drum":
        if state.current_velocity == 0:
            raise ValueError("velocity cannot be zero for a drum event")
        _add_note(state, time, time + DEFAULT_NOTE_DURATION, event.value,
                  state.current_velocity, is_drum=True)
    elif event.type == "velocity":
        state.current_velocity = vocabularies.bin_to_velocity(
            event.value, vocabularies.num_velocity_bins_from_codec(codec))
    elif event.type == "program":
        state.current_program = event.value
    elif event.type == "tie":
        if not state.is_tie_section:
            raise ValueError("tie section end event when not in tie section")
        # Notes that the new segment does not declare as sounding ended at its start.
        for pitch_program in list(state.active_pitches):
            if pitch_program not in state.tied_pitches:
                onset, velocity = state.active_pitches.pop(pitch_program)
                _add_note(state, onset, state.current_time, pitch_program[0], velocity,
                          pitch_program[1])
        state.is_tie_section = False
    else:
        raise ValueError(f"unexpected event type: {event.type}")


def assign_instruments(ns: NoteSequence) -> None:
    """One instrument number per program, in order of appearance; drums on instrument 9."""
    instruments: dict[int, int] = {}
    for note in ns.notes:
        if not note.is_drum and note.program not in instruments:
            count = len(instruments)
            instruments[note.program] = count if count < DRUM_INSTRUMENT else count + 1
    for note in ns.notes:
        note.instrument = DRUM_INSTRUMENT if note.is_drum else instruments[note.program]


def flush_note_decoding_state(state: NoteDecodingState) -> NoteSequence:
    """Ends every still-sounding note (at least MIN_NOTE_DURATION long) and returns the notes."""
    for onset, _ in state.active_pitches.values():
        state.current_time = max(state.current_time, onset + MIN_NOTE_DURATION)
    for (pitch, program), (onset, velocity) in list(state.active_pitches.items()):
        _add_note(state, onset, state.current_time, pitch, velocity, program)
    state.active_pitches.clear()
    assign_instruments(state.note_sequence)
    return state.note_sequence


@dataclasses.dataclass(frozen=True)
class DecodedNotes:
    """The decoded notes and how many tokens could not be used."""

    note_sequence: NoteSequence
    num_invalid_events: int  # ids that are no codec id, or events inconsistent with the state
    num_dropped_events: int  # tokens timed after the next segment's start


def decode_tokens_to_note_sequence(
    segments: Iterable[tuple[float, Sequence[int]]],
    *,
    vocab: vocabularies.VocabularyConfig = vocabularies.DEFAULT_VOCABULARY,
) -> DecodedNotes:
    """Decodes (start_seconds, token ids) segments back to one NoteSequence.

    Token ids are what the model sees (codec id + 3); each segment is read up to its first
    EOS, and PAD is ignored. Segments are decoded in start order; each one's events after the
    next segment's start are dropped, and its tie section closes the notes it does not carry
    on. Programs are those of ``vocab.program_granularity`` ('flat' decodes as program 0).
    """
    codec = vocabularies.build_codec(vocab)
    segments = sorted(((float(start), np.asarray(tokens)) for start, tokens in segments),
                      key=lambda segment: segment[0])
    state = NoteDecodingState()
    invalid = dropped = 0
    for i, (start, tokens) in enumerate(segments):
        eos_positions = np.flatnonzero(tokens == vocabularies.EOS_ID)
        if eos_positions.size:
            tokens = tokens[: eos_positions[0]]
        codec_ids = vocabularies.token_ids_to_codec_ids(tokens, vocab)
        is_valid = codec_ids >= 0
        # PAD is padding, not an error; UNK and extra ids are invalid events.
        invalid += int(np.sum(~is_valid & (tokens != vocabularies.PAD_ID)))
        codec_ids = codec_ids[is_valid]
        max_time = segments[i + 1][0] if i + 1 < len(segments) else None
        begin_tied_pitches_section(state)
        segment_invalid, segment_dropped = run_length_encoding.decode_events(
            state, codec_ids.tolist(), start, max_time, codec, decode_note_event)
        invalid += segment_invalid
        dropped += segment_dropped
    return DecodedNotes(flush_note_decoding_state(state), invalid, dropped)
