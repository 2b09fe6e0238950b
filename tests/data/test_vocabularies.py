"""Vocabulary: codec layout, token-id table of spec §1.1, velocity bins, programs, ids."""

import numpy as np
import pytest

from music_spectrogram_diffusion.data import vocabularies
from music_spectrogram_diffusion.data.event_codec import Event
from music_spectrogram_diffusion.data.vocabularies import VocabularyConfig

ONE_BIN = VocabularyConfig(num_velocity_bins=1)
ALL_BINS = VocabularyConfig(num_velocity_bins=127)


def _token(vocab, event_type, value):
    return vocabularies.build_codec(vocab).encode_event(Event(event_type, value)) + 3


@pytest.mark.parametrize("vocab, table", [
    # (type, value) -> token id, straight from the table of spec §1.1.
    (ONE_BIN, {("shift", 0): 3, ("shift", 1000): 1003, ("pitch", 0): 1004,
               ("pitch", 127): 1131, ("velocity", 0): 1132, ("velocity", 1): 1133,
               ("tie", 0): 1134, ("program", 0): 1135, ("program", 127): 1262,
               ("drum", 0): 1263, ("drum", 127): 1390}),
    (ALL_BINS, {("pitch", 127): 1131, ("velocity", 0): 1132, ("velocity", 127): 1259,
                ("tie", 0): 1260, ("program", 0): 1261, ("program", 127): 1388,
                ("drum", 0): 1389, ("drum", 127): 1516}),
])
def test_token_id_table(vocab, table):
    for (event_type, value), token in table.items():
        assert _token(vocab, event_type, value) == token, (event_type, value)


def test_sizes():
    assert vocabularies.build_codec(ONE_BIN).num_classes == 1388
    assert vocabularies.vocab_size(ONE_BIN) == 1491
    assert vocabularies.num_embeddings(ONE_BIN) == 1536
    assert vocabularies.vocab_size(ALL_BINS) == 1617
    assert vocabularies.num_embeddings(ALL_BINS) == 1664
    assert vocabularies.num_velocity_bins_from_codec(vocabularies.build_codec(ALL_BINS)) == 127


def test_config_validation_lists_valid_values():
    with pytest.raises(ValueError, match=r"valid values: \[1, 127\]"):
        VocabularyConfig(num_velocity_bins=16)
    with pytest.raises(ValueError, match="'full', 'midi_class', 'flat'"):
        VocabularyConfig(program_granularity="coarse")


def test_velocity_bins_one():
    assert vocabularies.velocity_to_bin(0, 1) == 0
    assert all(vocabularies.velocity_to_bin(v, 1) == 1 for v in range(1, 128))
    assert vocabularies.bin_to_velocity(1, 1) == 127
    assert vocabularies.bin_to_velocity(0, 1) == 0


def test_velocity_bins_127_round_trip():
    for velocity in range(128):
        velocity_bin = vocabularies.velocity_to_bin(velocity, 127)
        assert velocity_bin == velocity
        assert vocabularies.bin_to_velocity(velocity_bin, 127) == velocity


def test_velocity_bins_closed_form_for_other_counts():
    # ceil(bins * v / 127) and int(127 * bin / bins): bin b covers (127(b-1)/bins, 127b/bins].
    assert [vocabularies.velocity_to_bin(v, 4) for v in (1, 31, 32, 63, 64, 127)] == [
        1, 1, 2, 2, 3, 4]
    assert [vocabularies.bin_to_velocity(b, 4) for b in range(5)] == [0, 31, 63, 95, 127]


def test_codec_ids_to_token_ids_adds_three_and_keeps_dtype():
    for dtype in (np.int32, np.int64):
        ids = np.array([0, 1, 1387], dtype)
        tokens = vocabularies.codec_ids_to_token_ids(ids, ONE_BIN)
        assert tokens.dtype == dtype
        np.testing.assert_array_equal(tokens, [3, 4, 1390])


@pytest.mark.parametrize("bad", [-1, 1388])
def test_codec_ids_out_of_range_raise(bad):
    with pytest.raises(ValueError, match="outside"):
        vocabularies.codec_ids_to_token_ids(np.array([5, bad]), ONE_BIN)


def test_decode_invalid_ids_and_eos():
    # PAD, UNK and extra ids (>= 1391) decode to -2; decoding stops after the first EOS (-1).
    tokens = np.array([3, 0, 2, 1390, 1391, 1490, 1, 5, 6], np.int32)
    decoded = vocabularies.token_ids_to_codec_ids(tokens, ONE_BIN)
    assert decoded.dtype == np.int32
    np.testing.assert_array_equal(decoded, [0, -2, -2, 1387, -2, -2, -1])
    np.testing.assert_array_equal(vocabularies.token_ids_to_codec_ids([4, 5], ONE_BIN), [1, 2])


def test_program_granularities_on_codec_ids():
    codec = vocabularies.build_codec(ONE_BIN)
    program = lambda p: codec.encode_event(Event("program", p))
    pitch60 = codec.encode_event(Event("pitch", 60))
    ids = np.array([10, program(0), pitch60, program(13), pitch60, program(127)], np.int32)
    np.testing.assert_array_equal(
        vocabularies.PROGRAM_GRANULARITIES["full"].tokens_map_fn(ids, codec), ids)
    np.testing.assert_array_equal(
        vocabularies.PROGRAM_GRANULARITIES["midi_class"].tokens_map_fn(ids, codec),
        [10, program(0), pitch60, program(8), pitch60, program(120)])
    np.testing.assert_array_equal(
        vocabularies.PROGRAM_GRANULARITIES["flat"].tokens_map_fn(ids, codec),
        [10, pitch60, pitch60])
    assert [vocabularies.PROGRAM_GRANULARITIES[g].program_map_fn(13)
            for g in ("full", "midi_class", "flat")] == [13, 8, 0]
