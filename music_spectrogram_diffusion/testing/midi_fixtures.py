"""Real Standard MIDI File bytes for tests: hand-written notes, a band, a Bach chorale.

Everything here writes genuine MIDI through pretty_midi (or music21 for the chorale), so the
tests exercise the same parser as real data. Files use 1000 ticks per quarter at 60 bpm, i.e.
exactly 1 ms per tick, so note times on a millisecond grid survive the round trip exactly.
"""

from __future__ import annotations

import dataclasses
import io
import os
import tempfile
from collections.abc import Iterable, Sequence

TICKS_PER_QUARTER = 1000
TEMPO_BPM = 60.0  # with 1000 ticks per quarter: 1 tick = 1 ms


@dataclasses.dataclass(frozen=True)
class NoteSpec:
    """One note: (program, is_drum, pitch, start, end, velocity), times in seconds."""

    program: int
    is_drum: bool
    pitch: int
    start: float
    end: float
    velocity: int = 100


@dataclasses.dataclass(frozen=True)
class ControlSpec:
    """A control change (default CC64, the sustain pedal) on the track of (program, is_drum)."""

    program: int
    is_drum: bool
    time: float
    value: int
    number: int = 64


def make_midi_bytes(
    notes: Iterable[Sequence] = (),
    sustain: Iterable[Sequence] = (),
) -> bytes:
    """MIDI bytes with one track per (program, is_drum).

    Args:
      notes: NoteSpec or tuples (program, is_drum, pitch, start, end[, velocity]).
      sustain: ControlSpec or tuples (program, is_drum, time, value[, number]); value >= 64
        presses the pedal, < 64 releases it.
    """
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(resolution=TICKS_PER_QUARTER, initial_tempo=TEMPO_BPM)
    instruments: dict[tuple[int, bool], pretty_midi.Instrument] = {}

    def track(program: int, is_drum: bool) -> pretty_midi.Instrument:
        key = (int(program), bool(is_drum))
        if key not in instruments:
            instruments[key] = pretty_midi.Instrument(program=key[0], is_drum=key[1])
            pm.instruments.append(instruments[key])
        return instruments[key]

    for spec in notes:
        spec = spec if isinstance(spec, NoteSpec) else NoteSpec(*spec)
        track(spec.program, spec.is_drum).notes.append(
            pretty_midi.Note(velocity=spec.velocity, pitch=spec.pitch, start=spec.start,
                             end=spec.end))
    for spec in sustain:
        spec = spec if isinstance(spec, ControlSpec) else ControlSpec(*spec)
        track(spec.program, spec.is_drum).control_changes.append(
            pretty_midi.ControlChange(number=spec.number, value=spec.value, time=spec.time))
    buffer = io.BytesIO()
    pm.write(buffer)
    return buffer.getvalue()


def worked_example_notes() -> list[NoteSpec]:
    """Spec §1.5: piano pitch 60 from 0.10 to 0.50 s and a drum hit (36) at 0.10 s."""
    return [NoteSpec(0, False, 60, 0.10, 0.50, 100), NoteSpec(0, True, 36, 0.10, 0.20, 100)]


def multi_instrument_notes(seconds: float = 12.0) -> list[NoteSpec]:
    """A deterministic band over ``seconds``: piano chords, bass, strings, flute and drums.

    Several notes sound across the 5.12 s and 10.24 s segment boundaries, so tokenizing it
    exercises the tie sections; some repeat a pitch immediately (offset and onset at one step).
    """
    notes = []
    # Piano (0): a chord every 0.8 s, each 0.7 s long.
    t = 0.0
    while t + 0.7 <= seconds:
        root = 60 + int(round(t / 0.8)) % 5
        for pitch in (root, root + 4, root + 7):
            notes.append(NoteSpec(0, False, pitch, round(t, 3), round(t + 0.7, 3), 90))
        t += 0.8
    # Bass (33): 1 s notes back to back, same pitch repeated (offset == next onset).
    for i in range(int(seconds)):
        notes.append(NoteSpec(33, False, 36 + (i // 2) % 3, float(i), float(i + 1), 80))
    # Strings (48): long notes that cross both segment boundaries.
    notes.append(NoteSpec(48, False, 67, 3.5, 7.25, 70))
    notes.append(NoteSpec(48, False, 71, 4.0, 11.0, 70))
    notes.append(NoteSpec(48, False, 74, 10.0, seconds, 70))
    # Flute (73): a melody of 0.25 s notes starting at 2 s.
    for i in range(int((seconds - 3.0) / 0.5)):
        start = 2.0 + 0.5 * i
        notes.append(NoteSpec(73, False, 72 + (3 * i) % 12, start, start + 0.25, 100))
    # Drums: kick on the beat, snare on the off-beat.
    for i in range(int(seconds * 2)):
        notes.append(NoteSpec(0, True, 36 if i % 2 == 0 else 38, 0.5 * i, 0.5 * i + 0.1, 110))
    return notes


def multi_instrument_midi_bytes(seconds: float = 12.0) -> bytes:
    """MIDI bytes of multi_instrument_notes."""
    return make_midi_bytes(multi_instrument_notes(seconds))


def melody_midi_bytes(seconds: float = 6.0) -> bytes:
    """A flute melody over a held string chord: few tokens per segment.

    6 s of notes + a 1 s release tail = two 5.12 s segments, each under 256 note tokens, so a
    diffusion model compiles for one token bucket only.
    """
    notes = [NoteSpec(48, False, pitch, 0.0, seconds, 70) for pitch in (55, 59, 62)]
    for i in range(int(seconds / 0.5)):
        start = round(0.5 * i, 3)
        notes.append(NoteSpec(73, False, 72 + (5 * i) % 12, start, round(start + 0.4, 3), 100))
    return make_midi_bytes(notes)


def dense_midi_bytes(seconds: float = 5.0, notes_per_chord: int = 4) -> bytes:
    """A piano playing a new 10 ms chord every 20 ms: several thousand tokens per segment."""
    notes = []
    for i in range(int(seconds * 50)):
        start = 0.02 * i
        for j in range(notes_per_chord):
            notes.append(NoteSpec(0, False, 40 + (i + 7 * j) % 60, round(start, 3),
                                  round(start + 0.01, 3), 100))
    return make_midi_bytes(notes)


def bach_chorale_midi_bytes(name: str = "bach/bwv66.6",
                            programs: Sequence[int] = (40, 41, 42, 43)) -> bytes:
    """A chorale from music21's bundled corpus as MIDI bytes, part i on ``programs[i]``."""
    import music21

    score = music21.corpus.parse(name)
    for part, program in zip(score.parts, programs):
        instrument = music21.instrument.Instrument()
        instrument.midiProgram = program
        part.insert(0, instrument)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "chorale.mid")
        score.write("midi", fp=path)
        with open(path, "rb") as f:
            return f.read()
