"""Event codec (spec §1.1 and the original's event_codec_test, §10)."""

import pytest

from music_spectrogram_diffusion.data.event_codec import Codec, Event, EventRange


def _pitch_codec() -> Codec:
    # The original's test codec: shift 0..100, then pitch 0..127.
    return Codec(max_shift_steps=100, steps_per_second=100,
                 event_ranges=[EventRange("pitch", 0, 127)])


def test_encode_decode_round_trip():
    codec = _pitch_codec()
    assert codec.num_classes == 101 + 128
    assert codec.encode_event(Event("pitch", 60)) == 161
    assert codec.decode_event_index(161) == Event("pitch", 60)
    for index in range(codec.num_classes):
        assert codec.encode_event(codec.decode_event_index(index)) == index


def test_shift_range_membership():
    codec = _pitch_codec()
    assert codec.max_shift_steps == 100
    assert codec.is_shift_event_index(0) and codec.is_shift_event_index(100)
    assert not codec.is_shift_event_index(101)
    assert codec.encode_event(Event("shift", 37)) == 37


def test_ranges_with_nonzero_minimum_and_type_ranges():
    codec = Codec(10, 100, [EventRange("a", 5, 7), EventRange("b", -2, 2)])
    assert codec.encode_event(Event("a", 5)) == 11
    assert codec.encode_event(Event("b", -2)) == 14
    assert codec.event_type_range("a") == (11, 13)
    assert codec.event_type_range("b") == (14, 18)
    assert codec.decode_event_index(18) == Event("b", 2)


@pytest.mark.parametrize("event, message", [
    (Event("pitch", 128), "outside"),
    (Event("velocity", 1), "unknown event type"),
])
def test_encode_rejects_bad_events(event, message):
    with pytest.raises(ValueError, match=message):
        _pitch_codec().encode_event(event)


def test_decode_rejects_out_of_range_ids():
    codec = _pitch_codec()
    for index in (-1, codec.num_classes):
        with pytest.raises(ValueError, match="outside"):
            codec.decode_event_index(index)


def test_duplicate_types_rejected():
    with pytest.raises(ValueError, match="unique"):
        Codec(10, 100, [EventRange("pitch", 0, 1), EventRange("pitch", 0, 1)])
    with pytest.raises(ValueError, match="max_value"):
        EventRange("x", 3, 2)
