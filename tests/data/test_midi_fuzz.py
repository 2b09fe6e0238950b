"""Mutation fuzzing of real MIDI bytes: every mutant tokenizes or raises the project's own error.

The mutants are what damaged downloads look like: flipped bits, a truncated tail, inserted
random bytes, a duplicated run and a zeroed run, seeded so that a failure names a case that
reproduces. Before read_midi caught every parser failure, 23 of 10,000 mutants escaped as
mido's KeySignatureError (a key-signature byte out of range), which derives from Exception only.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from music_spectrogram_diffusion.data import midi_io, note_sequences, tokenizer
from music_spectrogram_diffusion.testing import midi_fixtures

PROJECT_ERRORS = (midi_io.MidiError, note_sequences.NoteSequenceError,
                  tokenizer.TokenOverflowError)
MUTATIONS = ("flip", "truncate", "insert", "duplicate", "zero")


@functools.cache
def _seed_files() -> tuple[bytes, ...]:
    # The chorale has key and time signatures, tempo and text meta events; the band has drums,
    # five programs and notes tied across segment boundaries.
    return (midi_fixtures.bach_chorale_midi_bytes(), midi_fixtures.multi_instrument_midi_bytes(12.0))


def mutate(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """``data`` with one mutation of ``kind`` (1-8 bytes or bits) at a random position."""
    out = bytearray(data)
    count = int(rng.integers(1, 9))
    position = int(rng.integers(len(out)))
    if kind == "flip":
        for where in rng.integers(len(out), size=count):
            out[where] ^= 1 << int(rng.integers(8))
    elif kind == "truncate":
        del out[position:]
    elif kind == "insert":
        out[position:position] = rng.integers(0, 256, size=count, dtype=np.uint8).tobytes()
    elif kind == "duplicate":
        out[position:position] = out[position:position + count]
    elif kind == "zero":
        end = min(len(out), position + count)
        out[position:end] = bytes(end - position)
    else:
        raise ValueError(f"mutation {kind!r}; valid values: {list(MUTATIONS)}")
    return bytes(out)


def _check_case(case: int, rng: np.random.Generator) -> str | None:
    """None if mutant ``case`` tokenizes within 2048 tokens a segment or raises a project error
    naming it in one line; otherwise what went wrong."""
    seeds = _seed_files()
    kind = MUTATIONS[case % len(MUTATIONS)]
    data = mutate(seeds[(case // len(MUTATIONS)) % len(seeds)], kind, rng)
    name = f"mutant_{case}.mid"
    try:
        segments = tokenizer.tokenize_midi(data, name=name)
    except PROJECT_ERRORS as e:
        message = str(e)
        if not message.startswith(name) or "\n" in message:
            return f"case {case} ({kind}): message does not name the file in one line: {e!r}"
        return None
    except Exception as e:  # what the test is looking for
        return f"case {case} ({kind}): uncaught {type(e).__module__}.{type(e).__name__}: {e}"
    too_long = [len(s.tokens) for s in segments if len(s.tokens) > 2048]
    if too_long:
        return f"case {case} ({kind}): segments of {too_long} tokens"
    return None


@pytest.mark.parametrize("num_cases", [1000, pytest.param(10_000, marks=pytest.mark.slow)])
def test_mutated_midi_tokenizes_or_raises_project_error(num_cases):
    rng = np.random.default_rng(20240515)
    failures = [f for f in (_check_case(case, rng) for case in range(num_cases)) if f]
    assert not failures, f"{len(failures)} of {num_cases} mutants failed:\n" + "\n".join(
        failures[:20])


@pytest.mark.parametrize("kind", MUTATIONS)
def test_each_mutation_changes_the_file(kind):
    data = _seed_files()[1]
    rng = np.random.default_rng(0)
    assert any(mutate(data, kind, rng) != data for _ in range(5))


def test_key_signature_out_of_range_is_a_midi_error():
    """mido raises KeySignatureError (an Exception, not a ValueError) for key byte 8 sharps."""
    import io

    import mido

    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack([mido.MetaMessage("key_signature", key="C", time=0)])
    midi.tracks.append(track)
    buffer = io.BytesIO()
    midi.save(file=buffer)
    data = buffer.getvalue()
    meta = bytes([0xFF, 0x59, 0x02])
    at = data.index(meta) + len(meta)
    broken = data[:at] + bytes([8, 0]) + data[at + 2:]  # 8 sharps: no such key
    with pytest.raises(midi_io.MidiError, match=r"^keys\.mid: corrupt or unsupported MIDI data "
                                                r"\(KeySignatureError"):
        midi_io.read_midi(broken, name="keys.mid")
