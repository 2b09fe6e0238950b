"""Feature converters: each field lands in the right place, padded with the right values."""

import numpy as np
import pytest

from music_spectrogram_diffusion.data import feature_converters
from music_spectrogram_diffusion.features import DEFAULT_FEATURES

SILENCE = DEFAULT_FEATURES.min_log_mel


def _example(offset: float, tokens: int, targets: int, context: int) -> dict:
    mels = DEFAULT_FEATURES.num_mels
    return {
        "note_tokens": np.arange(10, 10 + tokens, dtype=np.int32) + int(offset),
        "target_frames": 100.0 + offset + np.arange(targets * mels, dtype=np.float32).reshape(
            targets, mels) / 1000.0,
        "context_frames": -50.0 - offset - np.arange(context * mels, dtype=np.float32).reshape(
            context, mels) / 1000.0,
        "piece_id": "ignored",
    }


def test_distinct_values_land_in_place_with_context():
    convert = feature_converters.make_feature_converter(
        True, {"inputs": 2048, "targets": 256, "targets_context": 256})
    first, second = _example(0, 5, 3, 2), _example(1000, 7, 256, 256)
    batch = convert([first, second])
    assert sorted(batch) == sorted(feature_converters.MODEL_FEATURES)
    assert batch["note_tokens"].shape == (2, 2048) and batch["note_tokens"].dtype == np.int32
    np.testing.assert_array_equal(batch["note_tokens"][0, :5], first["note_tokens"])
    assert not batch["note_tokens"][0, 5:].any()
    np.testing.assert_array_equal(batch["note_tokens"][1, :7], second["note_tokens"])
    np.testing.assert_array_equal(batch["target_frames"][0, :3], first["target_frames"])
    assert np.all(batch["target_frames"][0, 3:] == np.float32(SILENCE))
    np.testing.assert_array_equal(batch["target_frames"][1], second["target_frames"])
    np.testing.assert_array_equal(batch["target_mask"][0], [1, 1, 1] + [0] * 253)
    assert batch["target_mask"][1].sum() == 256
    np.testing.assert_array_equal(batch["context_frames"][0, :2], first["context_frames"])
    assert not batch["context_frames"][0, 2:].any()
    np.testing.assert_array_equal(batch["context_mask"][0], [1, 1] + [0] * 254)
    np.testing.assert_array_equal(batch["context_frames"][1], second["context_frames"])


def test_existing_masks_are_kept_and_padded():
    convert = feature_converters.make_feature_converter(True)
    example = _example(0, 4, 10, 10)
    example["target_mask"] = np.array([0, 0] + [1] * 8, np.float32)
    example["context_mask"] = np.array([1] * 6 + [0] * 4, np.float32)
    batch = convert([example])
    np.testing.assert_array_equal(batch["target_mask"][0, :12], [0, 0] + [1] * 8 + [0, 0])
    np.testing.assert_array_equal(batch["context_mask"][0, :12], [1] * 6 + [0] * 6)


def test_no_context_converter_zeroes_and_masks_the_context():
    batch = feature_converters.make_feature_converter(False)([_example(0, 5, 3, 7)])
    assert batch["context_frames"].shape == (1, 256, 128)
    assert not batch["context_frames"].any() and not batch["context_mask"].any()
    assert batch["target_mask"][0].sum() == 3


def test_too_long_and_malformed_examples_raise_clear_errors():
    convert = feature_converters.make_feature_converter(False, {"inputs": 4, "targets": 256})
    with pytest.raises(feature_converters.FeatureConversionError, match="note_tokens has 5"):
        convert([_example(0, 5, 3, 0)])
    with pytest.raises(feature_converters.FeatureConversionError, match="lacks"):
        convert([{"note_tokens": np.ones(3, np.int32)}])
    with pytest.raises(ValueError, match="valid keys"):
        feature_converters.make_feature_converter(False, {"decoder_targets": 256})


def test_note_tokens_are_cut_to_the_smallest_bucket_holding_the_longest_example():
    buckets = feature_converters.DEFAULT_NOTE_TOKEN_BUCKETS
    convert = feature_converters.make_feature_converter(False)
    batch = convert([_example(0, 300, 4, 0), _example(1, 5, 4, 0)])
    cut = feature_converters.bucket_note_tokens(batch, buckets)
    assert cut["note_tokens"].shape == (2, 512)
    np.testing.assert_array_equal(cut["note_tokens"], batch["note_tokens"][:, :512])
    assert not np.any(batch["note_tokens"][:, 512:])
    for key in ("target_frames", "target_mask", "context_frames", "context_mask"):
        assert cut[key] is batch[key]
    # A longest prefix chosen elsewhere (the maximum over hosts) wins over this batch's own.
    assert feature_converters.bucket_note_tokens(batch, buckets, 1500)["note_tokens"].shape[1] == 2048
    assert feature_converters.bucket_note_tokens(batch, ())["note_tokens"].shape[1] == 2048
    assert feature_converters.bucket_length(0, buckets, 2048) == 256
    assert feature_converters.bucket_length(256, buckets, 2048) == 256
    assert feature_converters.bucket_length(257, buckets, 2048) == 512
    assert feature_converters.bucket_length(3000, buckets, 2048) == 2048
    assert feature_converters.bucket_length(10, (256,), 100) == 100  # never longer than padded
    assert feature_converters.longest_note_tokens(np.array([[0, 4, 0, 0], [3, 0, 5, 0]])) == 3
    with pytest.raises(ValueError, match="increasing positive ints"):
        feature_converters.check_buckets((512, 256))
