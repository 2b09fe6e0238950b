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
            pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
            ns = note_seq.midi_to_note_sequence(pm)
    except (EOFError, OSError, ValueError, IndexError, KeyError, TypeError,
            note_seq.MIDIConversionError) as e:
        # mido and pretty_midi raise many exception types for corrupt data.
        if isinstance(e, EOFError):
            detail = "the data ends in the middle of a MIDI chunk; the file is truncated"
        else:
            detail = str(e) or type(e).__name__
        raise MidiError(f"{name}: corrupt or unsupported MIDI data ({detail})") from e
    ns.filename = name
    return ns
