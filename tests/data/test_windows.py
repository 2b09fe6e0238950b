"""Cutting a piece into model examples, with the real tokenizer on real MIDI bytes."""

import io
import math

import numpy as np
import pretty_midi
import pytest

from music_spectrogram_diffusion.audio import spectrograms
from music_spectrogram_diffusion.data import midi_io, note_sequences, rendering, tokenizer, windows

SILENCE = np.float32(math.log(1e-5))
SEGMENT = 256


def _midi_bytes(seconds: float) -> bytes:
    """Piano, bass and drums with notes all through the piece and a chord sounding across 5.12 s."""
    midi = pretty_midi.PrettyMIDI(initial_tempo=120)
    piano = pretty_midi.Instrument(program=0)
    bass = pretty_midi.Instrument(program=33)
    drums = pretty_midi.Instrument(program=0, is_drum=True)
    t, i = 0.0, 0
    while t < seconds - 0.5:
        piano.notes.append(pretty_midi.Note(90, 60 + (i * 7) % 24, t, t + 0.3))
        bass.notes.append(pretty_midi.Note(100, 36 + i % 12, t, t + 0.45))
        drums.notes.append(pretty_midi.Note(110, 36 if i % 2 else 38, t + 0.1, t + 0.2))
        t, i = t + 0.5, i + 1
    piano.notes.append(pretty_midi.Note(80, 84, 4.0, 7.0))  # tied across the 5.12 s boundary
    midi.instruments.extend([piano, bass, drums])
    buffer = io.BytesIO()
    midi.write(buffer)
    return buffer.getvalue()


def _notes(seconds: float) -> note_sequences.NoteSequence:
    ns = midi_io.read_midi(_midi_bytes(seconds), name="windows-test.mid")
    return note_sequences.preprocess_note_sequence(ns)


def _labelled_log_mel(num_frames: int) -> np.ndarray:
    """[frames, 128]: value 1 + frame + mel / 1000, so every value names its song frame."""
    return (1.0 + np.arange(num_frames)[:, None] + np.arange(128)[None, :] / 1000).astype(
        np.float32)


def _frame_ids(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Song frame numbers of the masked-in rows of labelled frames (checks every mel column)."""
    real = frames[mask == 1]
    ids = np.round(real[:, 0] - 1.0).astype(int)
    np.testing.assert_allclose(real, _labelled_log_mel(ids.max() + 1)[ids] if ids.size else real)
    return ids


@pytest.fixture(scope="module")
def piece():
    ns = _notes(14.0)
    num_frames = 700  # 14 s of audio; the index covers exactly the log-mel frames
    index = tokenizer.index_note_sequence(ns, num_frames=num_frames)
    return ns, index, _labelled_log_mel(num_frames)


def _check_example(example, index, log_mel, *, with_context):
    assert set(example) == set(windows.EXAMPLE_KEYS)
    assert example["note_tokens"].shape == (2048,) and example["note_tokens"].dtype == np.int32
    for key in ("target_frames", "context_frames"):
        assert example[key].shape == (SEGMENT, 128) and example[key].dtype == np.float32
    for key in ("target_mask", "context_mask"):
        assert example[key].shape == (SEGMENT,) and example[key].dtype == np.float32
    target_mask = example["target_mask"]
    length = int(target_mask.sum())
    np.testing.assert_array_equal(target_mask, np.arange(SEGMENT) < length)  # a prefix
    target_ids = _frame_ids(example["target_frames"], target_mask)
    start, end = int(target_ids[0]), int(target_ids[0]) + length
    np.testing.assert_array_equal(target_ids, np.arange(start, end))
    assert end == min(start + SEGMENT, log_mel.shape[0]) or start == 0
    np.testing.assert_array_equal(example["target_frames"][length:], SILENCE)
    context_mask = example["context_mask"]
    expected_context = min(start, SEGMENT) if with_context else 0
    np.testing.assert_array_equal(context_mask, np.arange(SEGMENT) < expected_context)
    context_ids = _frame_ids(example["context_frames"], context_mask)
    # The context is exactly the frames before the target: never a target frame (§11.1).
    np.testing.assert_array_equal(context_ids, np.arange(start - expected_context, start))
    np.testing.assert_array_equal(example["context_frames"][expected_context:], 0.0)
    expected_tokens = tokenizer.pad_tokens(tokenizer.segment_tokens(index, start, end))
    np.testing.assert_array_equal(example["note_tokens"], expected_tokens)
    return start, end


def test_short_context_never_contains_target_frames(piece):
    _, index, log_mel = piece
    example = windows.window_example(log_mel, index, 10, 266, with_context=True)
    np.testing.assert_array_equal(example["context_mask"], np.arange(SEGMENT) < 10)
    np.testing.assert_array_equal(_frame_ids(example["context_frames"],
                                             example["context_mask"]), np.arange(10))
    np.testing.assert_array_equal(example["context_frames"][10:], 0.0)
    np.testing.assert_array_equal(_frame_ids(example["target_frames"],
                                             example["target_mask"]), np.arange(10, 266))
    _check_example(example, index, log_mel, with_context=True)


def test_full_context_is_aligned_with_the_target(piece):
    _, index, log_mel = piece
    start = 300
    example = windows.window_example(log_mel, index, start, start + SEGMENT, with_context=True)
    np.testing.assert_array_equal(example["context_mask"], 1.0)
    for j in (0, 100, 255):  # context frame j is song frame start - 256 + j
        np.testing.assert_array_equal(example["context_frames"][j], log_mel[start - SEGMENT + j])
    np.testing.assert_array_equal(example["target_frames"][0], log_mel[start])
    _check_example(example, index, log_mel, with_context=True)


def test_tokens_follow_the_window(piece):
    _, index, log_mel = piece
    early = windows.window_example(log_mel, index, 0, 256, with_context=False)
    late = windows.window_example(log_mel, index, 256, 512, with_context=False)
    assert not np.array_equal(early["note_tokens"], late["note_tokens"])
    # The held piano note (4.0-7.0 s) sounds when frame 256 (5.12 s) starts: the tie section
    # of the later window names it (program 0 = 1135, pitch 84 = 1088, then tie = 1134).
    late_tokens = late["note_tokens"][: int(np.sum(late["note_tokens"] > 0))]
    tie_end = int(np.flatnonzero(late_tokens == 1134)[0])
    assert 1088 in late_tokens[:tie_end]
    assert (early["note_tokens"] > 0).sum() > 50  # plenty of real note tokens


@pytest.mark.parametrize("with_context", [False, True])
def test_training_examples_are_well_formed_and_deterministic(piece, with_context):
    _, index, log_mel = piece
    rng = np.random.default_rng(1234)
    starts = [
        _check_example(windows.training_example(log_mel, index, rng, with_context=with_context),
                       index, log_mel, with_context=with_context)[0]
        for _ in range(12)
    ]
    assert len(set(starts)) > 6
    again = np.random.default_rng(1234)
    first = windows.training_example(log_mel, index, np.random.default_rng(1234),
                                     with_context=with_context)
    repeat = windows.training_example(log_mel, index, again, with_context=with_context)
    for key in windows.EXAMPLE_KEYS:
        np.testing.assert_array_equal(first[key], repeat[key])


def test_window_draws_cover_every_frame_and_tiny_songs():
    rng = np.random.default_rng(0)
    n = 300
    draws = np.array([windows.draw_target_window(n, rng, with_context=False)
                      for _ in range(20000)])
    starts, ends = draws[:, 0], draws[:, 1]
    assert starts.min() == 0 and starts.max() == n - 1 and ends.max() == n
    assert ends.min() == 1  # windows "starting before the song" are short song openings
    # Every frame lies in F of the n + F - 1 windows: uniform coverage (§2.3).
    coverage = np.zeros(n)
    for start, end in draws:
        coverage[start:end] += 1
    expected = len(draws) * SEGMENT / (n + SEGMENT - 1)
    assert np.all(np.abs(coverage / expected - 1) < 0.06)
    context_starts = [windows.draw_target_window(3, rng, with_context=True)[0]
                      for _ in range(200)]
    assert set(context_starts) == {0, 1, 2}  # the last frame is reachable (§11.3)
    for with_context in (False, True):  # a 1-frame song works (the original crashed)
        assert windows.draw_target_window(1, rng, with_context=with_context) == (0, 1)
    with pytest.raises(ValueError, match="0 frames"):
        windows.draw_target_window(0, rng, with_context=True)


def test_one_frame_song():
    ns = _notes(2.0)
    index = tokenizer.index_note_sequence(ns, num_frames=1)
    log_mel = _labelled_log_mel(1)
    for with_context in (False, True):
        example = windows.training_example(log_mel, index, np.random.default_rng(0),
                                           with_context=with_context)
        _check_example(example, index, log_mel, with_context=with_context)
        assert example["target_mask"].sum() == 1


def test_full_song_segments_cover_the_song_exactly(piece):
    ns, index, log_mel = piece
    segments = windows.full_song_segments(log_mel, index)
    assert len(segments) == 3  # ceil(700 / 256)
    ids = []
    for k, segment in enumerate(segments):
        start, end = _check_example(segment, index, log_mel, with_context=False)
        assert start == SEGMENT * k
        ids.extend(range(start, end))
    np.testing.assert_array_equal(ids, np.arange(700))
    np.testing.assert_array_equal(segments[-1]["target_mask"], np.arange(SEGMENT) < 700 - 512)
    # The same tokens as the tokenizer's own full-song split.
    reference = tokenizer.tokenize_note_sequence(ns, num_frames=700)
    for segment, expected in zip(segments, reference, strict=True):
        np.testing.assert_array_equal(segment["note_tokens"], tokenizer.pad_tokens(expected.tokens))
    batch = windows.stack_examples(segments)
    assert batch["target_frames"].shape == (3, SEGMENT, 128)
    assert batch["note_tokens"].shape == (3, 2048)


def test_rendered_piece_end_to_end():
    """Real audio: render, log-mel the whole song once, cut, and reassemble it."""
    midi = _midi_bytes(6.0)
    audio = rendering.render_midi(midi, tail_seconds=1.0)
    log_mel = spectrograms.compute_log_mel_numpy(audio)
    ns = note_sequences.preprocess_note_sequence(midi_io.read_midi(midi))
    index = tokenizer.index_note_sequence(ns, num_frames=log_mel.shape[0])
    segments = windows.full_song_segments(log_mel, index)
    batch = windows.stack_examples(segments)
    frames = batch["target_frames"].reshape(-1, 128)
    mask = batch["target_mask"].reshape(-1)
    np.testing.assert_array_equal(frames[mask == 1], log_mel)
    np.testing.assert_array_equal(frames[mask == 0], SILENCE)
    assert log_mel.max() > 0.0 and np.mean(log_mel > SILENCE + 1.0) > 0.5  # real music
    for seed in range(5):
        example = windows.training_example(log_mel, index, np.random.default_rng(seed),
                                           with_context=True)
        start, end = windows.draw_target_window(log_mel.shape[0], np.random.default_rng(seed),
                                                with_context=True)
        np.testing.assert_array_equal(example["target_frames"][: end - start], log_mel[start:end])
        length = min(start, SEGMENT)
        np.testing.assert_array_equal(example["context_mask"], np.arange(SEGMENT) < length)
        np.testing.assert_array_equal(example["context_frames"][:length],
                                      log_mel[start - length:start])


def test_bad_inputs_raise_clear_errors(piece):
    _, index, log_mel = piece
    short_index = tokenizer.index_note_sequence(_notes(3.0), num_frames=100)
    with pytest.raises(ValueError, match="covers 100 frames but the log-mel has 700"):
        windows.full_song_segments(log_mel, short_index)
    with pytest.raises(ValueError, match=r"shape \[frames, 128\]"):
        windows.full_song_segments(log_mel[:, :64], index)
    with pytest.raises(ValueError, match="longer than segment_frames"):
        windows.window_example(log_mel, index, 0, 300, with_context=False)
    with pytest.raises(ValueError, match="not a non-empty range"):
        windows.window_example(log_mel, index, 650, 701, with_context=False)
    empty = np.zeros((0, 128), np.float32)
    assert windows.full_song_segments(empty, index) == []
    with pytest.raises(ValueError, match="0 frames"):
        windows.training_example(empty, index, np.random.default_rng(0), with_context=False)
    with pytest.raises(ValueError, match="empty list"):
        windows.stack_examples([])
