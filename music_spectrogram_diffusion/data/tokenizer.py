"""MIDI / NoteSequence -> note tokens per segment: the entry points later stages call.

The pipeline of spec §1.3-1.5:

    read_midi -> preprocess_note_sequence -> index_note_sequence (one EventIndex per piece)
              -> segment_tokens(index, frame_start, frame_end) for any run of 50 Hz frames

``segment_tokens`` returns the ids the model sees: the tie section (notes sounding at the
segment start, then ``tie``), the segment's events with cumulative shifts, then EOS = 1; it
does not pad (``pad_tokens`` does). ``tokenize_note_sequence`` and ``tokenize_midi`` cut a
whole piece into consecutive 256-frame segments, as inference and evaluation do (spec §2.4).

Worked example of spec §1.5 (one velocity bin, a piano note 0.10-0.50 s and a drum hit at
0.10 s): ``[1134, 13, 1135, 1133, 1064, 1299, 53, 1132, 1064, 1]``.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

from music_spectrogram_diffusion.data import midi_io, note_sequences, run_length_encoding
from music_spectrogram_diffusion.data import vocabularies
from music_spectrogram_diffusion.data.event_codec import Codec, Event
from music_spectrogram_diffusion.data.vocabularies import DEFAULT_VOCABULARY, VocabularyConfig
from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig

_LOGGER = logging.getLogger(__name__)

OVERFLOW_CHOICES = ("truncate", "skip", "error")
# Token types after which a truncated sequence is still well formed (a whole note event or
# the end of the tie section); cutting elsewhere would split a program/velocity/pitch group.
_EVENT_END_TYPES = ("pitch", "drum", "tie")
# Velocity and program tokens repeating the previous value are dropped (spec §1.5 step 3).
_STATE_CHANGE_TYPES = ("velocity", "program")


class TokenOverflowError(ValueError):
    """A segment with more note tokens than fit into the model's input."""


@dataclasses.dataclass(frozen=True, eq=False)
class EventIndex:
    """A whole piece as one event stream indexed to 50 Hz frames (spec §1.4).

    Frame i owns ``events[event_start_indices[i]:event_end_indices[i]]`` (the events at codec
    steps 2i and 2i+1, with single-step shifts between them); a segment starting at frame i
    begins with ``state_events[state_event_indices[i]:]`` up to and including the first tie.
    """

    events: np.ndarray  # [num_events] int32 codec ids
    event_start_indices: np.ndarray  # [num_frames] int32
    event_end_indices: np.ndarray  # [num_frames] int32
    state_events: np.ndarray  # [num_state_events] int32 codec ids
    state_event_indices: np.ndarray  # [num_frames] int32
    num_frames: int


@dataclasses.dataclass(frozen=True, eq=False)
class Segment:
    """Note tokens of frames [start_frame, start_frame + num_frames)."""

    start_seconds: float
    start_frame: int
    num_frames: int
    tokens: np.ndarray  # [num_tokens] int32 token ids ending with EOS, unpadded


def num_frames_for_duration(seconds: float, features: FeatureConfig = DEFAULT_FEATURES) -> int:
    """Frames of ``seconds`` of audio by the original's ``_audio_to_frames`` rule (spec §1.4).

    int(seconds * sample_rate) samples are zero-padded to the next multiple of the hop, and a
    whole extra frame is added when the length is already a multiple, so this is always >= 1.
    """
    num_samples = int(seconds * features.sample_rate)
    return num_samples // features.hop_length + 1


def index_note_sequence(
    ns: note_sequences.NoteSequence,
    num_frames: int | None = None,
    *,
    vocab: VocabularyConfig = DEFAULT_VOCABULARY,
    features: FeatureConfig = DEFAULT_FEATURES,
) -> EventIndex:
    """Encodes a preprocessed NoteSequence and indexes it by frame (spec §1.3-1.4, ties on).

    Args:
      ns: notes, normally from preprocess_note_sequence. It is validated, and same-pitch
        overlaps are trimmed again (a no-op on preprocessed input) because they would corrupt
        the tie state.
      num_frames: frames of the piece's audio; default num_frames_for_duration(ns.total_time).
        Note events at or after the end of the last frame are dropped (the original appended
        them all to the last frame).
      vocab: codec layout and velocity bins.
      features: frame rate and sample rate.
    """
    note_sequences.validate_note_sequence(ns)
    ns = note_sequences.trim_overlapping_notes(ns, steps_per_second=vocab.steps_per_second)
    if num_frames is None:
        total_time = max([ns.total_time] + [note.end_time for note in ns.notes])
        num_frames = num_frames_for_duration(total_time, features)
    if num_frames < 1:
        raise ValueError(f"index_note_sequence: num_frames must be >= 1, got {num_frames}")
    codec = vocabularies.build_codec(vocab)
    times, values = note_sequences.note_sequence_to_onsets_and_offsets_and_programs(ns)
    # Step s belongs to a frame iff s / steps_per_second < num_frames * hop / sample_rate.
    step_limit = num_frames * features.hop_length * vocab.steps_per_second
    keep = [round(t * vocab.steps_per_second) * features.sample_rate < step_limit for t in times]
    if not all(keep):
        _LOGGER.info("%s: %d note events after frame %d dropped",
                     ns.filename or "<NoteSequence>", keep.count(False), num_frames)
        times = [t for t, k in zip(times, keep) if k]
        values = [v for v, k in zip(values, keep) if k]
    indexed = run_length_encoding.encode_and_index_events(
        state=note_sequences.NoteEncodingState(),
        event_times=times,
        event_values=values,
        encode_event_fn=note_sequences.note_event_data_to_events,
        codec=codec,
        frame_times=np.arange(num_frames) / features.frames_per_second,
        encoding_state_to_events_fn=note_sequences.note_encoding_state_to_events,
    )
    return EventIndex(
        events=indexed.events,
        event_start_indices=indexed.event_start_indices,
        event_end_indices=indexed.event_end_indices,
        state_events=indexed.state_events,
        state_event_indices=indexed.state_event_indices,
        num_frames=num_frames,
    )


def _event_boundary_cut(codec_ids: np.ndarray, limit: int, codec: Codec) -> int:
    """Largest k <= limit such that codec_ids[:k] ends with a whole event (0 if none)."""
    end_ranges = [codec.event_type_range(t) for t in _EVENT_END_TYPES]
    for k in range(limit, 0, -1):
        if any(first <= codec_ids[k - 1] <= last for first, last in end_ranges):
            return k
    return 0


def segment_tokens(
    index: EventIndex,
    frame_start: int,
    frame_end: int,
    *,
    vocab: VocabularyConfig = DEFAULT_VOCABULARY,
    max_tokens: int = DEFAULT_FEATURES.max_note_tokens,
    overflow: str = "truncate",
) -> np.ndarray | None:
    """Token ids of frames [frame_start, frame_end) of a piece (spec §1.5).

    Args:
      index: the piece, from index_note_sequence (with the same ``vocab``).
      frame_start, frame_end: 0 <= frame_start < frame_end <= index.num_frames.
      vocab: velocity bins and program granularity.
      max_tokens: the model's input length, EOS included (2048).
      overflow: what to do with more than max_tokens - 1 tokens before EOS. 'truncate' drops
        trailing events at a whole-event boundary and logs how many tokens went; 'skip'
        returns None; 'error' raises TokenOverflowError. (The original crashed, spec §11.6.)

    Returns:
      [num_tokens] int32: codec ids + 3, ending with EOS = 1, not padded; or None ('skip').
    """
    if overflow not in OVERFLOW_CHOICES:
        raise ValueError(f"overflow={overflow!r}; valid values: {list(OVERFLOW_CHOICES)}")
    if not 0 <= frame_start < frame_end <= index.num_frames:
        raise ValueError(
            f"segment frames [{frame_start}, {frame_end}) are not a non-empty range inside "
            f"the piece's {index.num_frames} frames"
        )
    codec = vocabularies.build_codec(vocab)
    tie_id = codec.encode_event(Event("tie", 0))
    codec_ids = run_length_encoding.extract_sequence_with_indices(
        index.events,
        int(index.event_start_indices[frame_start]),
        int(index.event_end_indices[frame_end - 1]),
        state_events=index.state_events,
        state_event_index=int(index.state_event_indices[frame_start]),
        state_events_end_token=tie_id,
    )
    codec_ids = vocabularies.program_granularity(vocab).tokens_map_fn(codec_ids, codec)
    codec_ids = run_length_encoding.run_length_encode_shifts(codec_ids, codec, _STATE_CHANGE_TYPES)

    limit = max_tokens - 1  # room for EOS
    if len(codec_ids) > limit:
        where = f"frames [{frame_start}, {frame_end})"
        message = f"{where}: {len(codec_ids)} note tokens exceed the limit of {limit} (+ EOS)"
        if overflow == "skip":
            _LOGGER.warning("%s; segment skipped", message)
            return None
        if overflow == "error":
            raise TokenOverflowError(message)
        cut = _event_boundary_cut(codec_ids, limit, codec)
        tie_position = int(np.flatnonzero(codec_ids == tie_id)[0])
        if cut <= tie_position:
            raise TokenOverflowError(f"{message}, and its tie section alone does not fit")
        _LOGGER.warning("%s; dropped the last %d tokens", message, len(codec_ids) - cut)
        codec_ids = codec_ids[:cut]
    tokens = vocabularies.codec_ids_to_token_ids(codec_ids.astype(np.int32), vocab)
    return np.append(tokens, np.int32(vocabularies.EOS_ID)).astype(np.int32)


def pad_tokens(tokens: np.ndarray, length: int = DEFAULT_FEATURES.max_note_tokens) -> np.ndarray:
    """[length] int32: ``tokens`` followed by PAD = 0; ValueError if it is longer."""
    tokens = np.asarray(tokens, dtype=np.int32)
    if tokens.ndim != 1 or len(tokens) > length:
        raise ValueError(f"pad_tokens: {tokens.shape[0] if tokens.ndim else 0} tokens "
                         f"(shape {tokens.shape}) do not fit into {length}")
    padded = np.full(length, vocabularies.PAD_ID, np.int32)  # np.pad costs 10x more per call
    padded[: len(tokens)] = tokens
    return padded


def tokenize_note_sequence(
    ns: note_sequences.NoteSequence,
    *,
    vocab: VocabularyConfig = DEFAULT_VOCABULARY,
    segment_frames: int = DEFAULT_FEATURES.segment_frames,
    overflow: str = "truncate",
    num_frames: int | None = None,
    features: FeatureConfig = DEFAULT_FEATURES,
) -> list[Segment]:
    """Consecutive ``segment_frames``-frame segments of a preprocessed NoteSequence.

    The last segment may be shorter. With overflow='skip', segments that do not fit are left
    out of the list (their start_frame shows which remain).
    """
    if segment_frames < 1:
        raise ValueError(f"segment_frames must be >= 1, got {segment_frames}")
    index = index_note_sequence(ns, num_frames, vocab=vocab, features=features)
    segments = []
    for start in range(0, index.num_frames, segment_frames):
        end = min(start + segment_frames, index.num_frames)
        tokens = segment_tokens(index, start, end, vocab=vocab,
                                max_tokens=features.max_note_tokens, overflow=overflow)
        if tokens is not None:
            segments.append(Segment(start / features.frames_per_second, start, end - start,
                                    tokens))
    return segments


def tokenize_midi(
    midi: str | os.PathLike | bytes,
    *,
    vocab: VocabularyConfig = DEFAULT_VOCABULARY,
    segment_frames: int = DEFAULT_FEATURES.segment_frames,
    overflow: str = "truncate",
    num_frames: int | None = None,
    features: FeatureConfig = DEFAULT_FEATURES,
    slakh_programs: bool = False,
    name: str | None = None,
) -> list[Segment]:
    """read_midi + preprocess_note_sequence + tokenize_note_sequence.

    ``slakh_programs`` maps programs onto the Slakh classes the released checkpoints know
    (spec §9.4). Raises midi_io.MidiError or note_sequences.NoteSequenceError for bad input,
    TokenOverflowError (overflow='error', or a tie section too long to truncate); each message
    starts with the file's name.
    """
    ns = midi_io.read_midi(midi, name=name)
    ns = note_sequences.preprocess_note_sequence(
        ns, steps_per_second=vocab.steps_per_second, slakh_programs=slakh_programs,
        name=ns.filename)
    try:
        return tokenize_note_sequence(ns, vocab=vocab, segment_frames=segment_frames,
                                      overflow=overflow, num_frames=num_frames, features=features)
    except TokenOverflowError as e:
        raise TokenOverflowError(f"{ns.filename}: {e}") from e


def decode_segments(
    segments: list[Segment], *, vocab: VocabularyConfig = DEFAULT_VOCABULARY
) -> note_sequences.DecodedNotes:
    """Notes back from tokenized segments (see note_sequences.decode_tokens_to_note_sequence)."""
    return note_sequences.decode_tokens_to_note_sequence(
        [(segment.start_seconds, segment.tokens) for segment in segments], vocab=vocab)
