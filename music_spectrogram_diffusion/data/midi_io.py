"""Reading MIDI files into NoteSequences, with one clear error per bad file.

``read_midi`` accepts a path or the file's bytes. Every failure (missing file, directory,
empty file, not a Standard MIDI File, corrupt data, unsupported contents) raises
``MidiError`` whose message starts with the file name and says what is wrong, so callers
and command-line tools can print it as is.
"""

from __future__ import annotations

import io
import os
import warnings

with warnings.catch_warnings():
    # note_seq imports pydub, which warns that ffmpeg is missing; no audio is decoded here.
    warnings.simplefilter("ignore", RuntimeWarning)
    import note_seq
    from note_seq.protobuf import music_pb2

MIDI_HEADER = b"MThd"
RIFF_HEADER = b"RIFF"
# pretty_midi allocates a float64 per tick up to the file's last event. note_seq raises
# pretty_midi's own limit (1e7) to 1e10, so one corrupt delta time could ask for 80 GB; we keep
# pretty_midi's 1e7 (80 MB; 2.8 hours at 1000 ticks per second).
MAX_TICKS = 10_000_000


class MidiError(ValueError):
    """A MIDI file that cannot be read; the message names the file and the problem."""


def _read_bytes(path: str) -> bytes:
    if not os.path.exists(path):
        raise MidiError(f"{path}: no such file")
    if os.path.isdir(path):
        raise MidiError(f"{path}: is a directory, not a MIDI file")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise MidiError(f"{path}: cannot be read ({e.strerror or e})") from e


def _check_header(data: bytes, name: str) -> None:
    if not data:
        raise MidiError(f"{name}: empty file (0 bytes), not a MIDI file")
    if data.startswith(RIFF_HEADER):
        raise MidiError(
            f"{name}: RIFF-wrapped MIDI (.rmi) is not supported; extract the 'MThd' data first"
        )
    if not data.startswith(MIDI_HEADER):
        raise MidiError(
            f"{name}: not a Standard MIDI File (starts with {data[:4]!r}, expected {MIDI_HEADER!r})"
        )


def _check_last_tick(midi_file, name: str) -> None:
    """MidiError if an event lies beyond MAX_TICKS (a corrupt delta time, as a rule)."""
    for number, track in enumerate(midi_file.tracks):
        tick = 0
        for message in track:
            tick += message.time
            if tick > MAX_TICKS:
                raise MidiError(
                    f"{name}: corrupt or unsupported MIDI data (track {number} has a "
                    f"{message.type} event at tick {tick:,}, after the {MAX_TICKS:,}-tick limit;"
                    f" a corrupt delta time?)")


def _describe(error: Exception) -> str:
    """One line saying what the parser found wrong."""
    if isinstance(error, EOFError):
        return "the data ends in the middle of a MIDI chunk; the file is truncated"
    detail = " ".join(str(error).split()) or "no details"
    return f"{type(error).__name__}: {detail}"


def read_midi(midi: str | os.PathLike | bytes, *, name: str | None = None
              ) -> music_pb2.NoteSequence:
    """Parses a Standard MIDI File into a NoteSequence (no preprocessing).

    Args:
      midi: a path, or the bytes of a MIDI file.
      name: how to refer to the file in errors and in ``ns.filename`` (default: the path, or
        "<bytes>").

    Returns:
      The NoteSequence of note_seq.midi_to_note_sequence: notes carry program, is_drum and
      instrument (one per track/channel); control changes and pitch bends are kept.

    Raises:
      MidiError: the file is missing, empty, not MIDI, or corrupt.
    """
    import mido
    import pretty_midi

    if isinstance(midi, (bytes, bytearray, memoryview)):
        data = bytes(midi)
        name = name or "<bytes>"
    else:
        path = os.fspath(midi)
        name = name or path
        data = _read_bytes(path)
    _check_header(data, name)
    try:
        with warnings.catch_warnings():
            # pretty_midi warns about tempo/key events on non-zero tracks: harmless here.
            warnings.simplefilter("ignore", RuntimeWarning)
            midi_file = mido.MidiFile(file=io.BytesIO(data), charset="latin1")
            _check_last_tick(midi_file, name)
            pm = pretty_midi.PrettyMIDI(mido_object=midi_file)
            ns = note_seq.midi_to_note_sequence(pm)
    except MidiError:
        raise
    except Exception as e:
        # mido, pretty_midi and note_seq raise a dozen types for corrupt data, some of them
        # plain Exception subclasses (mido's KeySignatureError for a key byte out of range).
        # Whatever fails while parsing these bytes is a bad file, not a bug of the caller.
        raise MidiError(f"{name}: corrupt or unsupported MIDI data ({_describe(e)})") from e
    ns.filename = name
    return ns
