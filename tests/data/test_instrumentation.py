"""Tests for data/instrumentation.py: score timing, tie merging, instruments, drums, MIDI."""

import io
import os

import mido
import numpy as np
import pretty_midi
import pytest
from music21 import chord, converter, meter, note, stream, tempo, tie

from music_spectrogram_diffusion.data import instrumentation as ins


def _part(name, elements, time_signature="4/4", mark=None):
    part = stream.Part()
    part.partName = name
    part.append(meter.TimeSignature(time_signature))
    if mark is not None:
        part.append(tempo.MetronomeMark(number=mark))
    for element in elements:
        part.append(element)
    part.makeMeasures(inPlace=True)
    return part


def _tied(name, quarter_length, kind):
    n = note.Note(name, quarterLength=quarter_length)
    n.tie = tie.Tie(kind)
    return n


def _two_part_score(mark=60):
    upper = _part("Upper", [
        note.Note("C5", quarterLength=1),
        _tied("D5", 1, "start"), _tied("D5", 2, "stop"),  # one note of 3 quarters
        chord.Chord(["E5", "G5"], quarterLength=2),
        note.Rest(quarterLength=2),
    ], mark=mark)
    lower = _part("Lower", [note.Note("C3", quarterLength=4), note.Note("G2", quarterLength=4)])
    score = stream.Score()
    score.insert(0, upper)
    score.insert(0, lower)
    return score


def test_read_score_times_ties_and_chords_at_the_marked_tempo():
    timed = ins.read_score(_two_part_score(mark=60), default_qpm=100.0, max_seconds=100.0)
    upper, lower = timed.parts
    # 60 quarters per minute: one quarter note per second.
    assert [(n.pitch, n.start, n.end) for n in upper.notes] == [
        (72, 0.0, 1.0), (74, 1.0, 4.0), (76, 4.0, 6.0), (79, 4.0, 6.0)]
    assert [(n.pitch, n.start, n.end) for n in lower.notes] == [(48, 0.0, 4.0), (43, 4.0, 8.0)]
    assert timed.tempo_qpm == pytest.approx(60.0)
    assert timed.time_signature == (4, 4)
    assert timed.end_time == pytest.approx(8.0)
    assert [(b.time, b.index, b.beats_per_bar) for b in timed.beats[:5]] == [
        (0.0, 0, 4), (1.0, 1, 4), (2.0, 2, 4), (3.0, 3, 4), (4.0, 0, 4)]


def test_read_score_uses_the_default_tempo_without_marks_and_truncates():
    timed = ins.read_score(_two_part_score(mark=None), default_qpm=120.0, max_seconds=1.75)
    upper, lower = timed.parts
    # 120 qpm: half a second per quarter; everything is cut at 1.75 s.
    assert [(n.pitch, n.start, n.end) for n in upper.notes] == [(72, 0.0, 0.5), (74, 0.5, 1.75)]
    assert [(n.pitch, n.start, n.end) for n in lower.notes] == [(48, 0.0, 1.75)]
    assert timed.tempo_qpm == pytest.approx(120.0)


@pytest.fixture(scope="module")
def chorale():
    """BWV 277: four parts, a pickup bar, ties, and a (playback) metronome mark of 80."""
    return converter.parse(os.path.join(ins.corpus_root(), "bach/bwv277.mxl"), forceSource=True)


def test_tie_merging_matches_music21_strip_ties_on_a_real_chorale(chorale):
    score = chorale
    timed = ins.read_score(score, default_qpm=60.0, max_seconds=1e6)
    assert timed.tempo_qpm == pytest.approx(80.0)  # the file's (playback) metronome mark
    assert len(timed.parts) == len(score.parts) == 4
    seconds = 60.0 / 80.0  # per quarter note; the mark holds for the whole chorale
    for part, timed_part in zip(score.parts, timed.parts):
        expected = sorted(
            (p.midi, round(n.offset * seconds, 6), round((n.offset + n.quarterLength) * seconds, 6))
            for n in part.stripTies(inPlace=False).flatten().notes
            for p in n.pitches
        )
        got = sorted((n.pitch, round(n.start, 6), round(n.end, 6)) for n in timed_part.notes)
        assert got == expected


def test_pickup_measure_beats_align_with_the_bar_end(chorale):
    score = chorale
    first = score.parts[0].getElementsByClass(stream.Measure)[0]
    assert first.paddingLeft > 0  # this chorale starts with a pickup
    timed = ins.read_score(score, default_qpm=60.0, max_seconds=1e6)
    beats = timed.beats
    pickup_beats = int(first.duration.quarterLength)
    assert beats[0].time == 0.0 and beats[0].index == 4 - pickup_beats
    assert beats[pickup_beats].index == 0  # the first full bar starts on a downbeat
    assert beats[pickup_beats].time == pytest.approx(first.duration.quarterLength * 60.0 / 80.0)
    assert all(b.time < c.time for b, c in zip(beats, beats[1:]))


def test_a_single_part_is_rejected():
    score = stream.Score()
    score.insert(0, _part("Solo", [note.Note("C4", quarterLength=4)]))
    with pytest.raises(ins.ScoreError, match="at least 2 parts"):
        ins.read_score(score, default_qpm=100.0, max_seconds=10.0)


def _timed_part(name, pitches):
    return ins.ScorePart(name, tuple(ins.TimedNote(p, i * 0.5, i * 0.5 + 0.5)
                                     for i, p in enumerate(pitches)))


def test_assigned_instruments_cover_their_parts_and_are_deterministic():
    parts = (_timed_part("S", [67, 72, 79]), _timed_part("A", [60, 64, 67]),
             _timed_part("T", [52, 57, 62]), _timed_part("B", [40, 45, 52]))
    first = ins.assign_instruments(parts, np.random.default_rng(3))
    assert first == ins.assign_instruments(parts, np.random.default_rng(3))
    for part, instrument in zip(parts, first):
        assert instrument.plays(*part.pitch_range), (part.name, instrument)
    assert len({i.program for i in first}) == 4  # distinct when the palette allows
    draws = [ins.assign_instruments(parts, np.random.default_rng(s)) for s in range(30)]
    assert len({tuple(i.program for i in d) for d in draws}) > 20  # varied across seeds
    families = {i.family for d in draws for i in d}
    assert {"keyboard", "guitar", "bass", "strings", "woodwinds", "brass"} <= families
    assert set(ins.FAMILY_WEIGHTS) == {i.family for i in ins.PALETTE}


def test_lowest_part_takes_a_bass_when_asked_and_out_of_range_parts_get_piano():
    parts = (_timed_part("B", [36, 40, 43]), _timed_part("S", [72, 76, 79]))
    for seed in range(10):
        chosen = ins.assign_instruments(parts, np.random.default_rng(seed), bass_probability=1.0)
        assert chosen[0].family == "bass"
    wide = (_timed_part("X", [22, 107]), _timed_part("Y", [60, 62]))
    assert ins.assign_instruments(wide, np.random.default_rng(0))[0] == ins.PIANO


def test_drum_pattern_for_four_and_three_beat_bars():
    four = tuple(ins.Beat(float(i), i % 4, 4) for i in range(4))
    hits = ins.drum_notes(four)
    at = lambda key: [t for k, t, _ in hits if k == key]  # noqa: E731
    assert at(ins.CRASH) == [0.0]
    assert at(ins.KICK) == [0.0, 2.0]
    assert at(ins.SNARE) == [1.0, 3.0]
    assert at(ins.CLOSED_HAT) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    three = tuple(ins.Beat(float(i), i % 3, 3) for i in range(3))
    hits = ins.drum_notes(three)
    assert at(ins.KICK) == [0.0] and at(ins.SNARE) == [1.0, 2.0]


def test_arranged_midi_round_trips_programs_drums_and_notes():
    timed = ins.read_score(_two_part_score(mark=60), default_qpm=100.0, max_seconds=100.0)
    instruments = (ins.PALETTE[17], ins.PALETTE[12])  # Violin, Electric Bass (finger)
    midi_bytes, infos = ins.arrange_midi(timed, instruments, np.random.default_rng(0),
                                         with_drums=True)
    midi = pretty_midi.PrettyMIDI(io.BytesIO(midi_bytes))
    assert [(i.program, i.is_drum) for i in midi.instruments] == [(40, False), (33, False),
                                                                   (0, True)]
    assert [(p.program, p.is_drum, p.instrument) for p in infos] == [
        (40, False, "Violin"), (33, False, "Electric Bass (finger)"),
        (0, True, "Standard Drum Kit")]
    upper = midi.instruments[0].notes
    assert [(n.pitch, round(n.start, 3), round(n.end, 3)) for n in upper] == [
        (72, 0.0, 1.0), (74, 1.0, 4.0), (76, 4.0, 6.0), (79, 4.0, 6.0)]
    assert len({n.velocity for n in upper}) == 1 and infos[0].velocity == upper[0].velocity
    assert infos[2].num_notes == len(midi.instruments[2].notes) > 0
    assert max(n.end for n in midi.instruments[2].notes) <= timed.end_time + 1e-6
    channels = {}
    for track in mido.MidiFile(file=io.BytesIO(midi_bytes)).tracks:
        for message in track:
            if message.type == "note_on":
                channels.setdefault(track.name, set()).add(message.channel)
    assert channels["Drums"] == {9}
    assert 9 not in channels["Upper"] | channels["Lower"]


def test_candidates_are_seeded_deduplicated_scores():
    first = ins.list_candidates(0)
    assert first == ins.list_candidates(0)
    assert first[:20] != ins.list_candidates(1)[:20]
    sources = [c.source for c in first]
    assert "bach/bwv277.mxl" in sources and "bach/bwv277.krn" not in sources
    assert all(os.path.splitext(s)[1] in ins.SCORE_EXTENSIONS for s in sources)
    assert not any("choraleAnalyses" in s or s.endswith("_bak.xml") for s in sources)
    assert len({c.piece_id for c in first}) == len(first) > 1000
    counts = {c.name: 0 for c in ins.COLLECTIONS}
    for candidate in first[:200]:
        counts[candidate.collection] += 1
    assert counts["bach"] > counts["monteverdi"] > 0 and counts["classical"] > 0
