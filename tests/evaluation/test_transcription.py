"""Transcription F1 with basic-pitch on real rendered piano audio, and the scoring rules."""

import io

import numpy as np
import pretty_midi
import pytest

from music_spectrogram_diffusion.data import rendering
from music_spectrogram_diffusion.evaluation import transcription

# Measured on the piece below (TimGM6mb piano, basic-pitch ONNX, default thresholds):
# onset F1 0.848 (P 0.737, R 1.0), onset + offset F1 0.364. Offsets are late by about 0.1 s
# because the rendered piano's release rings past the MIDI note-off.
MIN_ONSET_F1 = 0.75
MIN_ONSET_OFFSET_F1 = 0.25


def _piano_and_drums() -> pretty_midi.PrettyMIDI:
    midi = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    for i, pitch in enumerate([60, 64, 67, 72, 71, 69, 65, 62, 55, 59, 62, 67]):
        piano.notes.append(pretty_midi.Note(velocity=90, pitch=pitch, start=0.4 * i, end=0.4 * i + 0.35))
    piano.notes.append(pretty_midi.Note(velocity=90, pitch=48, start=0.0, end=1.6))
    piano.notes.append(pretty_midi.Note(velocity=90, pitch=43, start=1.6, end=3.2))
    midi.instruments.append(piano)
    return midi


def _midi_bytes(midi: pretty_midi.PrettyMIDI) -> bytes:
    buffer = io.BytesIO()
    midi.write(buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def transcriber():
    return transcription.BasicPitchTranscriber()


def test_rendered_piano_transcribes_with_high_f1(transcriber):
    midi = _piano_and_drums()
    audio = rendering.render_midi(_midi_bytes(midi))
    estimate = transcriber.transcribe(audio)
    scores = transcription.note_scores(transcription.pitched_notes(midi), estimate)
    assert scores["onset recall"] > 0.9
    assert scores["onset F1"] > MIN_ONSET_F1
    assert scores["onset + offset F1"] > MIN_ONSET_OFFSET_F1
    # Deterministic: the same audio gives the same notes.
    again = transcriber.transcribe(audio)
    np.testing.assert_array_equal(again.intervals, estimate.intervals)
    np.testing.assert_array_equal(again.pitches, estimate.pitches)


def test_silence_scores_zero_with_model_and_gt_rows(transcriber):
    midi = _piano_and_drums()
    audio = rendering.render_midi(_midi_bytes(midi))
    silence = np.zeros(3 * 16000, np.float32)
    assert len(transcriber.transcribe(silence)) == 0
    rows = transcription.transcription_scores(transcriber, [midi], [silence], [audio])
    assert rows["Model onset F1"] == 0.0 and rows["Model onset + offset F1"] == 0.0
    assert rows["GT onset F1"] > MIN_ONSET_F1
    assert set(rows) == {
        f"{source} {kind} {metric}"
        for source in ("Model", "GT")
        for kind in ("onset", "onset + offset")
        for metric in ("precision", "recall", "F1")
    }


def test_note_scores_tolerances():
    reference = transcription.NoteArrays([[0.0, 1.0], [1.0, 1.5]], [60, 64])
    assert transcription.note_scores(reference, reference)["onset + offset F1"] == 1.0
    # Onsets 40 ms late still match (tolerance 50 ms); offsets 0.15 s late are within 20% of
    # the 1-s note but not of the 0.5-s note (0.1 s).
    shifted = transcription.NoteArrays([[0.04, 1.15], [1.04, 1.65]], [60, 64])
    scores = transcription.note_scores(reference, shifted)
    assert scores["onset F1"] == 1.0
    assert scores["onset + offset F1"] == pytest.approx(0.5)
    wrong_pitch = transcription.NoteArrays([[0.0, 1.0], [1.0, 1.5]], [61, 64])
    assert transcription.note_scores(reference, wrong_pitch)["onset F1"] == pytest.approx(0.5)
    empty = transcription.NoteArrays(np.zeros((0, 2)), [])
    assert transcription.note_scores(reference, empty)["onset F1"] == 0.0
    assert transcription.note_scores(empty, reference)["onset F1"] == 0.0


def test_pitched_notes_drops_drums_and_clips_to_audio():
    midi = _piano_and_drums()
    drums = pretty_midi.Instrument(program=0, is_drum=True)
    drums.notes.append(pretty_midi.Note(velocity=100, pitch=36, start=0.0, end=0.0))
    midi.instruments.append(drums)
    midi.instruments[0].notes.append(pretty_midi.Note(velocity=90, pitch=80, start=2.0, end=2.0))
    notes = transcription.pitched_notes(midi)
    assert len(notes) == 15 and 36 not in notes.pitches
    zero_length = notes.intervals[notes.pitches == 80][0]
    assert zero_length[1] - zero_length[0] == pytest.approx(transcription.MIN_NOTE_SECONDS)
    clipped = transcription.pitched_notes(midi, end_seconds=1.0)
    # Onsets 0.0, 0.4, 0.8 plus the long bass note starting at 0; offsets clipped to 1.0.
    assert len(clipped) == 4
    assert clipped.intervals[:, 1].max() == pytest.approx(1.0)
    # A note_seq NoteSequence gives the same notes as the PrettyMIDI it came from.
    import note_seq

    sequence = note_seq.midi_io.midi_to_note_sequence(midi)
    from_sequence = transcription.pitched_notes(sequence)
    np.testing.assert_allclose(from_sequence.intervals, notes.intervals, atol=1e-6)
    np.testing.assert_array_equal(from_sequence.pitches, notes.pitches)
    with pytest.raises(TypeError, match="NoteSequence"):
        transcription.pitched_notes([1, 2, 3])
