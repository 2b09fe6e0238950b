"""The note-token vocabulary: codec layout, velocity bins, program granularity, token ids.

Spec §1.1. Codec ids become token ids by adding ``NUM_SPECIAL_IDS`` = 3 (PAD 0, EOS 1, UNK 2);
after the codec ids come ``NUM_EXTRA_IDS`` = 100 ids that are never produced but size the
embedding table. With one velocity bin (all released models) the vocabulary has 1491 ids and
``num_embeddings`` = 1536 rows; with 127 bins, 1617 and 1664.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import numpy as np

from music_spectrogram_diffusion.data import event_codec

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2
NUM_SPECIAL_IDS = 3
NUM_EXTRA_IDS = 100  # t5.data.DEFAULT_EXTRA_IDS
EMBEDDING_ROW_MULTIPLE = 128

# What decoding maps token ids to, besides codec ids (spec §1.1).
DECODED_EOS_ID = -1
DECODED_INVALID_ID = -2

MIN_MIDI_PITCH = 0
MAX_MIDI_PITCH = 127
MIN_MIDI_PROGRAM = 0
MAX_MIDI_PROGRAM = 127
MAX_MIDI_VELOCITY = 127

VELOCITY_BIN_CHOICES = (1, 127)
PROGRAM_GRANULARITY_CHOICES = ("full", "midi_class", "flat")


@dataclasses.dataclass(frozen=True)
class VocabularyConfig:
    """How notes become tokens.

    Attributes:
      steps_per_second: time resolution of shift events (100: 10 ms steps).
      max_shift_seconds: the largest single shift token (10 s = 1000 steps).
      num_velocity_bins: 1 (all released models: note-on/note-off only) or 127 (every MIDI
        velocity, the ISMIR2021 piano setting).
      program_granularity: 'full' (keep programs), 'midi_class' (first program of the General
        MIDI class, 8 * (p // 8)) or 'flat' (no program tokens).
    """

    steps_per_second: int = 100
    max_shift_seconds: int = 10
    num_velocity_bins: int = 1
    program_granularity: str = "full"

    def __post_init__(self):
        if self.num_velocity_bins not in VELOCITY_BIN_CHOICES:
            raise ValueError(
                f"VocabularyConfig.num_velocity_bins={self.num_velocity_bins!r}; valid values: "
                f"{list(VELOCITY_BIN_CHOICES)}"
            )
        if self.program_granularity not in PROGRAM_GRANULARITY_CHOICES:
            raise ValueError(
                f"VocabularyConfig.program_granularity={self.program_granularity!r}; valid values: "
                f"{list(PROGRAM_GRANULARITY_CHOICES)}"
            )
        if self.steps_per_second <= 0 or self.max_shift_seconds <= 0:
            raise ValueError(
                "VocabularyConfig.steps_per_second and max_shift_seconds must be positive, got "
                f"{self.steps_per_second} and {self.max_shift_seconds}"
            )

    @property
    def max_shift_steps(self) -> int:
        return self.steps_per_second * self.max_shift_seconds


DEFAULT_VOCABULARY = VocabularyConfig()


@functools.lru_cache(maxsize=None)
def build_codec(config: VocabularyConfig = DEFAULT_VOCABULARY) -> event_codec.Codec:
    """The codec of spec §1.1: shift, pitch, velocity, tie, program, drum (in this order)."""
    return event_codec.Codec(
        max_shift_steps=config.max_shift_steps,
        steps_per_second=config.steps_per_second,
        event_ranges=[
            event_codec.EventRange("pitch", MIN_MIDI_PITCH, MAX_MIDI_PITCH),
            # bin 0 is note-off
            event_codec.EventRange("velocity", 0, config.num_velocity_bins),
            event_codec.EventRange("tie", 0, 0),
            event_codec.EventRange("program", MIN_MIDI_PROGRAM, MAX_MIDI_PROGRAM),
            event_codec.EventRange("drum", MIN_MIDI_PITCH, MAX_MIDI_PITCH),
        ],
    )


def vocab_size(config: VocabularyConfig = DEFAULT_VOCABULARY) -> int:
    """Special ids + codec ids + extra ids (1491 for one velocity bin)."""
    return NUM_SPECIAL_IDS + build_codec(config).num_classes + NUM_EXTRA_IDS


def num_embeddings(config: VocabularyConfig = DEFAULT_VOCABULARY) -> int:
    """Rows of the token embedding table: vocab_size rounded up to a multiple of 128."""
    return EMBEDDING_ROW_MULTIPLE * math.ceil(vocab_size(config) / EMBEDDING_ROW_MULTIPLE)


def num_velocity_bins_from_codec(codec: event_codec.Codec) -> int:
    first, last = codec.event_type_range("velocity")
    return last - first


def velocity_to_bin(velocity: int, num_velocity_bins: int) -> int:
    """0 for velocity 0 (note-off), else ceil(bins * velocity / 127)."""
    if velocity == 0:
        return 0
    return math.ceil(num_velocity_bins * velocity / MAX_MIDI_VELOCITY)


def bin_to_velocity(velocity_bin: int, num_velocity_bins: int) -> int:
    """int(127 * bin / bins): the largest velocity of the bin (127 for the single bin)."""
    return int(MAX_MIDI_VELOCITY * velocity_bin / num_velocity_bins)


# ---------------------------------------------------------------------------------------------
# Program granularity (spec §1.1). Token maps act on codec ids, before run-length encoding.


def keep_programs(codec_ids: np.ndarray, codec: event_codec.Codec) -> np.ndarray:
    """'full': the identity."""
    del codec
    return codec_ids


def programs_to_midi_classes(codec_ids: np.ndarray, codec: event_codec.Codec) -> np.ndarray:
    """'midi_class': program token p becomes 8 * (p // 8), the first program of its GM class."""
    first, last = codec.event_type_range("program")
    is_program = (codec_ids >= first) & (codec_ids <= last)
    return np.where(is_program, first + 8 * ((codec_ids - first) // 8), codec_ids).astype(
        codec_ids.dtype
    )


def drop_programs(codec_ids: np.ndarray, codec: event_codec.Codec) -> np.ndarray:
    """'flat': program tokens are deleted."""
    first, last = codec.event_type_range("program")
    return codec_ids[(codec_ids < first) | (codec_ids > last)]


@dataclasses.dataclass(frozen=True)
class ProgramGranularity:
    """A token map (applied to codec-id sequences) and the matching map of MIDI programs."""

    tokens_map_fn: Callable[[np.ndarray, event_codec.Codec], np.ndarray]
    program_map_fn: Callable[[int], int]


PROGRAM_GRANULARITIES: dict[str, ProgramGranularity] = {
    "full": ProgramGranularity(keep_programs, lambda program: program),
    "midi_class": ProgramGranularity(programs_to_midi_classes, lambda program: 8 * (program // 8)),
    "flat": ProgramGranularity(drop_programs, lambda program: 0),
}


def program_granularity(config: VocabularyConfig) -> ProgramGranularity:
    return PROGRAM_GRANULARITIES[config.program_granularity]


# ---------------------------------------------------------------------------------------------
# Token ids (what the model sees) <-> codec ids.


def codec_ids_to_token_ids(
    codec_ids: np.ndarray, config: VocabularyConfig = DEFAULT_VOCABULARY
) -> np.ndarray:
    """Adds NUM_SPECIAL_IDS; ValueError for ids outside [0, num_classes). Keeps the dtype."""
    codec_ids = np.asarray(codec_ids)
    num_classes = build_codec(config).num_classes
    bad = (codec_ids < 0) | (codec_ids >= num_classes)
    if np.any(bad):
        raise ValueError(
            f"codec ids {np.unique(codec_ids[bad]).tolist()} are outside [0, {num_classes})"
        )
    return (codec_ids + NUM_SPECIAL_IDS).astype(codec_ids.dtype)


def token_ids_to_codec_ids(
    token_ids: np.ndarray, config: VocabularyConfig = DEFAULT_VOCABULARY
) -> np.ndarray:
    """Inverse of codec_ids_to_token_ids for a 1-D sequence; keeps the dtype.

    As the original's Python vocabulary: the sequence is cut after its first EOS, which
    decodes to DECODED_EOS_ID (-1); PAD, UNK and extra ids decode to DECODED_INVALID_ID (-2).
    """
    token_ids = np.asarray(token_ids)
    if token_ids.ndim != 1:
        raise ValueError(f"token_ids must be 1-D, got shape {token_ids.shape}")
    eos_positions = np.flatnonzero(token_ids == EOS_ID)
    if eos_positions.size:
        token_ids = token_ids[: eos_positions[0] + 1]
    base_size = NUM_SPECIAL_IDS + build_codec(config).num_classes
    decoded = token_ids.astype(np.int64) - NUM_SPECIAL_IDS
    decoded = np.where((token_ids < NUM_SPECIAL_IDS) | (token_ids >= base_size),
                       DECODED_INVALID_ID, decoded)
    decoded = np.where(token_ids == EOS_ID, DECODED_EOS_ID, decoded)
    return decoded.astype(token_ids.dtype)
