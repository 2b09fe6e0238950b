"""From a music21 corpus score to a multi-instrument MIDI file, in the spirit of Slakh2100.

Slakh2100 renders Lakh MIDI files with sampled instruments; the embedded dataset does the same
with multi-part scores from music21's bundled corpus (chorales, madrigals, masses, string
quartets), which carry no instrumentation (music21 writes every part as program 0). This module:

1. lists the corpus sources in a seeded order (``list_candidates``), interleaving collections
   by weight;
2. reads a score into timed parts (``read_score``): seconds from the score's own metronome marks
   (or a default tempo), ties merged, chords split into notes, grace notes dropped, and a beat
   grid taken from the measures and time signatures;
3. gives each part a General MIDI instrument (``assign_instruments``) from a palette of
   keyboards, mallets, guitars, basses, strings, woodwinds and brass whose playable range covers
   the part, preferring a bass instrument for the lowest part and different instruments for
   different parts;
4. writes the arrangement as a MIDI file with pretty_midi (``arrange_midi``), optionally with a
   simple drum part on channel 10 built from the beat grid. ``arrange_candidate`` runs 2-4.

Every random choice comes from a ``numpy.random.Generator`` seeded by (seed, piece id), so an
arrangement is a pure function of the source, the seed and the options. Programs are 0-based
General MIDI numbers (0 = Acoustic Grand Piano), as in pretty_midi, note_seq and the tokenizer.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import typing
import warnings
import zlib

import numpy as np

if typing.TYPE_CHECKING:
    from music21 import stream

# A MIDI file has 16 channels and channel 10 (index 9) is reserved for drums.
MAX_PITCHED_PARTS = 15
DRUM_NOTE_SECONDS = 0.1


class ScoreError(ValueError):
    """A score that cannot be arranged (no notes, a single part, too many parts, ...)."""


@dataclasses.dataclass(frozen=True)
class Instrument:
    """A General MIDI instrument and the MIDI pitch range it plays well."""

    program: int  # 0-based General MIDI program
    name: str
    family: str
    lowest_pitch: int
    highest_pitch: int

    def plays(self, lowest: int, highest: int) -> bool:
        return self.lowest_pitch <= lowest and highest <= self.highest_pitch


# Ranges are the sounding ranges of the real instruments, widened a little where a soundfont
# sample still sounds natural. A part first draws a family (FAMILY_WEIGHTS), then an instrument
# within it, so that large families do not dominate.
PALETTE: tuple[Instrument, ...] = (
    Instrument(0, "Acoustic Grand Piano", "keyboard", 21, 108),
    Instrument(4, "Electric Piano 1", "keyboard", 28, 103),
    Instrument(6, "Harpsichord", "keyboard", 29, 89),
    Instrument(16, "Drawbar Organ", "keyboard", 24, 96),
    Instrument(19, "Church Organ", "keyboard", 24, 96),
    Instrument(11, "Vibraphone", "mallets", 53, 89),
    Instrument(12, "Marimba", "mallets", 45, 96),
    Instrument(24, "Acoustic Guitar (nylon)", "guitar", 40, 84),
    Instrument(25, "Acoustic Guitar (steel)", "guitar", 40, 84),
    Instrument(26, "Electric Guitar (jazz)", "guitar", 40, 86),
    Instrument(27, "Electric Guitar (clean)", "guitar", 40, 86),
    Instrument(32, "Acoustic Bass", "bass", 28, 60),
    Instrument(33, "Electric Bass (finger)", "bass", 28, 67),
    Instrument(34, "Electric Bass (pick)", "bass", 28, 67),
    Instrument(35, "Fretless Bass", "bass", 28, 67),
    Instrument(43, "Contrabass", "bass", 28, 67),
    Instrument(58, "Tuba", "bass", 28, 65),
    Instrument(40, "Violin", "strings", 55, 100),
    Instrument(41, "Viola", "strings", 48, 88),
    Instrument(42, "Cello", "strings", 36, 76),
    Instrument(46, "Orchestral Harp", "strings", 24, 103),
    Instrument(48, "String Ensemble 1", "strings", 28, 96),
    Instrument(65, "Alto Sax", "woodwinds", 49, 81),
    Instrument(66, "Tenor Sax", "woodwinds", 44, 76),
    Instrument(68, "Oboe", "woodwinds", 58, 91),
    Instrument(70, "Bassoon", "woodwinds", 34, 75),
    Instrument(71, "Clarinet", "woodwinds", 50, 91),
    Instrument(73, "Flute", "woodwinds", 60, 96),
    Instrument(56, "Trumpet", "brass", 54, 86),
    Instrument(57, "Trombone", "brass", 40, 72),
    Instrument(60, "French Horn", "brass", 34, 77),
    Instrument(61, "Brass Section", "brass", 36, 84),
)
# Keyboards and guitars are the most common pitched classes in Slakh2100; mallets are rare there
# and, uniformly drawn, would take a seventh of the mid-range parts.
FAMILY_WEIGHTS: dict[str, float] = {
    "keyboard": 1.5, "mallets": 0.5, "guitar": 1.5, "bass": 1.0, "strings": 1.0,
    "woodwinds": 1.0, "brass": 1.0,
}
PIANO = PALETTE[0]  # plays all 88 keys: the fallback when nothing else covers a part

# General MIDI percussion keys (channel 10).
KICK, SNARE, CLOSED_HAT, CRASH = 36, 38, 42, 49


@dataclasses.dataclass(frozen=True)
class TimedNote:
    pitch: int
    start: float  # seconds
    end: float  # seconds


@dataclasses.dataclass(frozen=True)
class ScorePart:
    name: str
    notes: tuple[TimedNote, ...]  # sorted by (start, pitch)

    @property
    def pitch_range(self) -> tuple[int, int]:
        pitches = [n.pitch for n in self.notes]
        return min(pitches), max(pitches)

    @property
    def median_pitch(self) -> float:
        return float(np.median([n.pitch for n in self.notes]))


@dataclasses.dataclass(frozen=True)
class Beat:
    time: float  # seconds
    index: int  # position in the bar, 0 = downbeat
    beats_per_bar: int


@dataclasses.dataclass(frozen=True)
class TimedScore:
    """A score with every time in seconds: what a MIDI file needs."""

    parts: tuple[ScorePart, ...]
    beats: tuple[Beat, ...]
    tempo_qpm: float  # the opening tempo, in quarter notes per minute
    time_signature: tuple[int, int]  # the opening (numerator, denominator)
    end_time: float  # seconds; the end of the last note


@dataclasses.dataclass(frozen=True)
class PartInfo:
    """How one part of a piece was arranged (recorded in the dataset manifest)."""

    name: str
    program: int
    instrument: str
    is_drum: bool
    num_notes: int
    velocity: int | None  # None for the drum part, whose hits have their own velocities


def read_score(score: stream.Score, *, default_qpm: float, max_seconds: float) -> TimedScore:
    """Converts a music21 ``Score`` into timed parts, truncated to ``max_seconds``.

    Tempo comes from the score's metronome marks (all of them, so tempo changes are honoured);
    a score without any uses ``default_qpm``. Repeats are not expanded. Notes that start at or
    after ``max_seconds`` are dropped and the others end by then.

    Raises:
      ScoreError: fewer than two parts with notes, or more than ``MAX_PITCHED_PARTS``.
    """
    from music21 import stream, tempo  # noqa: F811 (the runtime import of the typing name)

    if not isinstance(score, stream.Score):
        raise ScoreError(f"expected a single score, got a {type(score).__name__}")
    to_seconds = _seconds_map(score, default_qpm, has_marks=bool(
        score.recurse().getElementsByClass(tempo.MetronomeMark)))
    parts = []
    for number, part in enumerate(score.parts):
        notes = _part_notes(part, to_seconds, max_seconds)
        if notes:
            parts.append(ScorePart(str(part.partName or part.id or f"Part {number + 1}"), notes))
    if len(parts) < 2:
        raise ScoreError(f"needs at least 2 parts with notes, found {len(parts)}")
    if len(parts) > MAX_PITCHED_PARTS:
        raise ScoreError(f"has {len(parts)} parts; a MIDI file holds at most {MAX_PITCHED_PARTS}")
    end_time = max(n.end for p in parts for n in p.notes)
    beats = _beat_grid(score, to_seconds, end_time)
    return TimedScore(
        parts=tuple(parts),
        beats=beats,
        tempo_qpm=float(60.0 / (to_seconds(1.0) - to_seconds(0.0))),
        time_signature=_opening_time_signature(score),
        end_time=end_time,
    )


def _seconds_map(score, default_qpm: float, *, has_marks: bool):
    """Returns f(quarter-note offset) -> seconds, piecewise linear between tempo marks."""
    quarters, seconds = [0.0], [0.0]
    if has_marks:
        for start, end, mark in score.metronomeMarkBoundaries():
            qpm = mark.getQuarterBPM() or default_qpm
            qpm = float(np.clip(qpm, 20.0, 400.0))  # guards against mis-encoded marks
            quarters.append(float(end))
            seconds.append(seconds[-1] + (float(end) - float(start)) * 60.0 / qpm)
    else:
        end = max(float(score.highestTime), 1.0)
        quarters.append(end)
        seconds.append(end * 60.0 / default_qpm)
    # One quarter past the end at the last tempo, so that np.interp never clamps a real time.
    rate = (seconds[-1] - seconds[-2]) / max(quarters[-1] - quarters[-2], 1e-9)
    quarters.append(quarters[-1] + 1.0)
    seconds.append(seconds[-1] + rate)
    q, s = np.asarray(quarters), np.asarray(seconds)
    return lambda offset: float(np.interp(float(offset), q, s))


def _part_notes(part, to_seconds, max_seconds: float) -> tuple[TimedNote, ...]:
    """The part's notes in seconds, tied notes merged (by hand: ``stripTies`` deep-copies the
    whole part and takes seconds on a madrigal)."""
    from music21 import chord, note

    spans: list[tuple[int, float, float]] = []  # (pitch, start, end) in quarter notes
    open_ties: dict[int, list[float]] = {}  # pitch -> [start, end] of a tie still open
    for element in part.flatten().notes:
        if not isinstance(element, (note.Note, chord.Chord)) or element.duration.isGrace:
            continue
        start = float(element.offset)
        end = start + float(element.quarterLength)
        if end <= start:
            continue
        members = element.notes if isinstance(element, chord.Chord) else (element,)
        for member in members:
            pitch = min(max(int(round(member.pitch.ps)), 0), 127)
            tie = member.tie.type if member.tie is not None else None
            if tie in ("stop", "continue") and pitch in open_ties:
                open_ties[pitch][1] = end
                if tie == "stop":
                    spans.append((pitch, *open_ties.pop(pitch)))
                continue
            if pitch in open_ties:  # a tie that never stopped: end it here
                spans.append((pitch, *open_ties.pop(pitch)))
            if tie in ("start", "continue"):
                open_ties[pitch] = [start, end]
            else:
                spans.append((pitch, start, end))
    spans.extend((pitch, *span) for pitch, span in open_ties.items())

    notes: dict[tuple[int, float], TimedNote] = {}
    for pitch, start_quarters, end_quarters in spans:
        start = to_seconds(start_quarters)
        end = min(to_seconds(end_quarters), max_seconds)
        if start >= max_seconds or end <= start:
            continue
        key = (pitch, round(start, 6))
        # The same pitch twice at one time (unison voices): keep the longer note.
        if key not in notes or notes[key].end < end:
            notes[key] = TimedNote(pitch, start, end)
    return tuple(sorted(notes.values(), key=lambda n: (n.start, n.pitch)))


def _opening_time_signature(score) -> tuple[int, int]:
    from music21 import meter

    signatures = score.recurse().getElementsByClass(meter.TimeSignature)
    if not signatures:
        return 4, 4
    return int(signatures[0].numerator), int(signatures[0].denominator)


def _beat_grid(score, to_seconds, end_time: float) -> tuple[Beat, ...]:
    """Beats of the first part's measures (pickups aligned to the bar end), in seconds."""
    from music21 import meter, stream

    beats = []
    measures = score.parts[0].getElementsByClass(stream.Measure)
    for position, measure in enumerate(measures):
        signature = measure.getContextByClass(meter.TimeSignature) or meter.TimeSignature("4/4")
        beat = float(signature.beatDuration.quarterLength)
        count = int(signature.beatCount)
        length = float(measure.duration.quarterLength)
        padding = float(measure.paddingLeft)
        if position == 0 and padding == 0.0 and 0 < length < signature.barDuration.quarterLength:
            padding = float(signature.barDuration.quarterLength) - length  # unmarked pickup
        for index in range(count):
            offset = index * beat - padding
            if 0.0 <= offset < length:
                time = to_seconds(measure.offset + offset)
                if time < end_time:
                    beats.append(Beat(time, index, count))
    if not beats:  # no measures (some kern files): a 4/4 grid of quarter notes
        quarter, index = 0.0, 0
        while (time := to_seconds(quarter)) < end_time:
            beats.append(Beat(time, index % 4, 4))
            quarter, index = quarter + 1.0, index + 1
    return tuple(beats)


def assign_instruments(
    parts: tuple[ScorePart, ...],
    rng: np.random.Generator,
    *,
    bass_probability: float = 0.6,
) -> tuple[Instrument, ...]:
    """Picks an instrument for each part, in the order of ``parts``.

    Candidates are the palette instruments whose range covers the whole part (piano if none
    does). With probability ``bass_probability`` the lowest part (by median pitch) of a
    multi-part score takes a bass-family instrument when one fits. Parts are visited from low to
    high; each draws a family by FAMILY_WEIGHTS, then an instrument uniformly, preferring ones
    not used yet.
    """
    order = sorted(range(len(parts)), key=lambda i: parts[i].median_pitch)
    chosen: dict[int, Instrument] = {}
    used: set[int] = set()
    for rank, index in enumerate(order):
        lowest, highest = parts[index].pitch_range
        fitting = [i for i in PALETTE if i.plays(lowest, highest)] or [PIANO]
        if rank == 0 and len(parts) > 1 and rng.random() < bass_probability:
            fitting = [i for i in fitting if i.family == "bass"] or fitting
        fresh = [i for i in fitting if i.program not in used] or fitting
        families = [f for f in FAMILY_WEIGHTS if any(i.family == f for i in fresh)]
        weights = np.array([FAMILY_WEIGHTS[f] for f in families])
        family = families[rng.choice(len(families), p=weights / weights.sum())]
        members = [i for i in fresh if i.family == family]
        chosen[index] = members[rng.integers(len(members))]
        used.add(chosen[index].program)
    return tuple(chosen[i] for i in range(len(parts)))


def drum_notes(beats: tuple[Beat, ...]) -> list[tuple[int, float, int]]:
    """A plain rock/waltz kit pattern on the beat grid: [(key, time, velocity)], time-sorted.

    Kick on downbeats (and beat 3 of four), snare on the back beats (beats 2 and 3 of a
    three-beat bar), closed hi-hat on every beat and between beats, one crash at the start.
    """
    hits = []
    for position, beat in enumerate(beats):
        if position == 0:
            hits.append((CRASH, beat.time, 90))
        if beat.index == 0 or (beat.beats_per_bar == 4 and beat.index == 2):
            hits.append((KICK, beat.time, 100))
        elif beat.beats_per_bar == 3 or beat.index % 2 == 1:
            hits.append((SNARE, beat.time, 85))
        hits.append((CLOSED_HAT, beat.time, 70))
        if position + 1 < len(beats):
            hits.append((CLOSED_HAT, 0.5 * (beat.time + beats[position + 1].time), 50))
    return sorted(hits, key=lambda hit: (hit[1], hit[0]))


def arrange_midi(
    score: TimedScore,
    instruments: tuple[Instrument, ...],
    rng: np.random.Generator,
    *,
    with_drums: bool,
    velocity_range: tuple[int, int] = (72, 104),
) -> tuple[bytes, tuple[PartInfo, ...]]:
    """Writes the arranged score as Standard MIDI File bytes.

    Each pitched part gets its own track and channel (pretty_midi numbers channels in track
    order, skipping channel 10) with one velocity drawn from ``velocity_range`` (the tokenizer
    keeps a single velocity bin, so dynamics inside a part would only be noise). The drum
    track, if any, is flagged ``is_drum`` so it lands on channel 10.

    Returns:
      (midi_bytes, one PartInfo per track in track order).
    """
    import pretty_midi

    if len(instruments) != len(score.parts):
        raise ValueError(f"{len(instruments)} instruments for {len(score.parts)} parts")
    midi = pretty_midi.PrettyMIDI(initial_tempo=score.tempo_qpm)
    midi.time_signature_changes.append(pretty_midi.TimeSignature(*score.time_signature, 0.0))
    infos = []
    for part, instrument in zip(score.parts, instruments):
        velocity = int(rng.integers(velocity_range[0], velocity_range[1] + 1))
        track = pretty_midi.Instrument(program=instrument.program, name=part.name)
        track.notes = [pretty_midi.Note(velocity, n.pitch, n.start, n.end) for n in part.notes]
        midi.instruments.append(track)
        infos.append(PartInfo(part.name, instrument.program, instrument.name, False,
                              len(part.notes), velocity))
    if with_drums:
        track = pretty_midi.Instrument(program=0, is_drum=True, name="Drums")
        track.notes = [
            pretty_midi.Note(velocity, key, time, min(time + DRUM_NOTE_SECONDS, score.end_time))
            for key, time, velocity in drum_notes(score.beats)
            if time < score.end_time
        ]
        midi.instruments.append(track)
        infos.append(PartInfo("Drums", 0, "Standard Drum Kit", True, len(track.notes), None))
    buffer = io.BytesIO()
    midi.write(buffer)
    return buffer.getvalue(), tuple(infos)


@dataclasses.dataclass(frozen=True)
class Collection:
    """A group of corpus directories, its share of the candidate order and its tempo range."""

    name: str
    directories: tuple[str, ...]  # relative to music21's corpus directory
    weight: float
    default_qpm: tuple[int, int]  # tempo range (quarters/minute) for scores without marks
    max_source_bytes: int | None = None  # very large files take music21 many seconds to parse


# Chorales are notated in quarter-note beats; Renaissance music in half-note tactus, hence
# the faster quarter-note tempi. Whole Beethoven quartets in one file (100-360 KB) parse in
# 10+ s, so "classical" keeps single movements.
COLLECTIONS: tuple[Collection, ...] = (
    Collection("bach", ("bach",), 0.45, (66, 96)),
    Collection("monteverdi", ("monteverdi",), 0.15, (112, 152)),
    Collection("palestrina", ("palestrina",), 0.15, (120, 160)),
    Collection("trecento", ("trecento",), 0.10, (100, 140)),
    Collection("classical", ("mozart", "haydn", "beethoven"), 0.15, (96, 144), 40_000),
)
# When one piece exists in several formats (e.g. bwv277.mxl and bwv277.krn), the first listed
# here is used, so the same music never lands in two splits. Roman-numeral analyses (.rntxt)
# and ABC tune books are not scores of parts and are left out.
SCORE_EXTENSIONS = (".mxl", ".musicxml", ".xml", ".krn")


@dataclasses.dataclass(frozen=True)
class Candidate:
    source: str  # path relative to music21's corpus directory, e.g. "bach/bwv277.mxl"
    collection: str
    piece_id: str  # e.g. "bach-bwv277": file-name safe and unique


def corpus_root() -> str:
    from music21 import common

    return str(common.getCorpusFilePath())


def piece_id_for(source: str) -> str:
    """'trecento/PMFC_04-Si dolce.xml' -> 'trecento-PMFC_04-Si_dolce'."""
    stem = os.path.splitext(source)[0].replace("/", "-")
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem)


def list_candidates(seed: int) -> tuple[Candidate, ...]:
    """All usable corpus sources, in the order the dataset tries them for ``seed``.

    Each collection is shuffled by the seed, and the collections are interleaved by weight: the
    k-th source of a collection with weight w gets the sort key (k + U[0, 1)) / w, so a
    collection with twice the weight appears about twice as often until it runs out.
    """
    rng = np.random.default_rng(seed)
    root = corpus_root()
    keys: list[float] = []
    candidates: list[Candidate] = []
    for collection in COLLECTIONS:
        by_stem: dict[str, str] = {}  # corpus-relative path without extension -> source
        for directory in collection.directories:
            for folder, subfolders, files in os.walk(os.path.join(root, directory)):
                relative_folder = os.path.relpath(folder, root).replace(os.sep, "/")
                for name in files:
                    stem, extension = os.path.splitext(name)
                    if extension not in SCORE_EXTENSIONS or stem.endswith("_bak"):
                        continue  # "_bak": a backup copy of another corpus file
                    if collection.max_source_bytes and (
                        os.path.getsize(os.path.join(folder, name)) > collection.max_source_bytes
                    ):
                        continue
                    key, source = f"{relative_folder}/{stem}", f"{relative_folder}/{name}"
                    if key not in by_stem or _rank(source) < _rank(by_stem[key]):
                        by_stem[key] = source
        sources = sorted(by_stem.values())
        order = rng.permutation(len(sources))
        jitter = rng.random(len(sources))
        for rank, index in enumerate(order):
            keys.append((rank + jitter[rank]) / collection.weight)
            source = sources[index]
            candidates.append(Candidate(source, collection.name, piece_id_for(source)))
    ordered = [candidates[i] for i in np.argsort(keys, kind="stable")]
    if len({c.piece_id for c in ordered}) != len(ordered):
        raise ValueError("two corpus sources map to the same piece id")  # a bug, not bad input
    return tuple(ordered)


def _rank(path: str) -> int:
    return SCORE_EXTENSIONS.index(os.path.splitext(path)[1])


@dataclasses.dataclass(frozen=True)
class Arrangement:
    midi: bytes  # a Standard MIDI File
    parts: tuple[PartInfo, ...]
    tempo_qpm: float
    has_drums: bool


def arrange_candidate(
    candidate: Candidate,
    *,
    seed: int,
    drum_probability: float,
    max_seconds: float,
    bass_probability: float = 0.6,
) -> Arrangement:
    """Parses a corpus source and arranges it (deterministic in seed and piece id).

    Raises:
      ScoreError: music21 cannot read the source, or the score cannot be arranged (the message
        says why; the dataset skips such sources).
    """
    from music21 import converter
    from music21.musicxml.xmlObjects import MusicXMLWarning

    collection = next(c for c in COLLECTIONS if c.name == candidate.collection)
    rng = np.random.default_rng([seed, zlib.crc32(candidate.piece_id.encode())])
    default_qpm = float(rng.integers(collection.default_qpm[0], collection.default_qpm[1] + 1))
    try:
        with warnings.catch_warnings():
            # Notation quirks of a few corpus files (e.g. an overfull bar), which music21
            # repairs itself; they would only break up the progress bar.
            warnings.simplefilter("ignore", MusicXMLWarning)
            # forceSource: parse the file itself, not a pickle cached by an earlier music21 run.
            score = converter.parse(os.path.join(corpus_root(), candidate.source),
                                    forceSource=True)
    except Exception as e:  # music21 raises many exception types for files it cannot read.
        raise ScoreError(f"music21 cannot parse it ({type(e).__name__}: {e})") from e
    timed = read_score(score, default_qpm=default_qpm, max_seconds=max_seconds)
    instruments = assign_instruments(timed.parts, rng, bass_probability=bass_probability)
    with_drums = bool(rng.random() < drum_probability)
    midi, parts = arrange_midi(timed, instruments, rng, with_drums=with_drums)
    return Arrangement(midi, parts, round(timed.tempo_qpm, 3), with_drums)
