"""Tiny releases of every dataset in its public layout, for tests and smoke runs.

Each ``write_<dataset>_release(root)`` writes a few pieces of a few seconds each, with audio
rendered from the pieces' own notes (``data/rendering.py``, at the release's sample rate) and
annotations in the release's formats (CSV, JSON, YAML, JAMS, TXT, MIDI), then returns what a
reader should find: piece id -> ``Expected``. ``bad=True`` adds broken pieces (missing audio,
annotations past the audio's end, an unknown instrument) whose ids are listed in
``Expected.error`` with a phrase their SourceError must contain.

    from music_spectrogram_diffusion.data.sources import fixtures
    fixtures.write_maestro_release("/tmp/maestro")   # then: msd-prepare-dataset maestro ...
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os

import numpy as np

Note = tuple[int, float, float]  # (pitch, start seconds, end seconds)


@dataclasses.dataclass(frozen=True)
class Expected:
    split: str
    programs: tuple[int, ...] = ()  # sorted programs of the pitched notes
    has_drums: bool = False
    error: str | None = None  # phrase of the SourceError of a broken piece


def _notes(pitches: list[int], *, start: float = 0.1, step: float = 0.35,
           length: float = 0.3) -> list[Note]:
    return [(p, start + i * step, start + i * step + length) for i, p in enumerate(pitches)]


def _midi_bytes(parts: list[tuple[int, bool, list[Note]]], *,
                sustain: list[tuple[float, int]] = ()) -> bytes:
    """A MIDI file with one track per (program, is_drum, notes); sustain CCs on track 0."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    for program, is_drum, notes in parts:
        instrument = pretty_midi.Instrument(program=program, is_drum=is_drum)
        for pitch, start, end in notes:
            instrument.notes.append(pretty_midi.Note(100, pitch, start, end))
        pm.instruments.append(instrument)
    for time, value in sustain:
        pm.instruments[0].control_changes.append(pretty_midi.ControlChange(64, value, time))
    buffer = io.BytesIO()
    pm.write(buffer)
    return buffer.getvalue()


def _render(midi: bytes, sample_rate: int, seconds: float | None = None) -> np.ndarray:
    from music_spectrogram_diffusion.data.rendering import render_midi

    samples = render_midi(midi, sample_rate=sample_rate, tail_seconds=0.5)  # [num_samples]
    if seconds is not None:
        samples = samples[: int(seconds * sample_rate)]
    return samples


def _write(path: str, data: bytes | str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(data, bytes) else "w", encoding=None
              if isinstance(data, bytes) else "utf-8") as f:
        f.write(data)


def _write_audio(path: str, samples: np.ndarray, sample_rate: int, channels: int = 1) -> None:
    import soundfile

    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = np.stack([samples] * channels, axis=1) if channels > 1 else samples
    soundfile.write(path, data, sample_rate, subtype="PCM_16")


# ---------------------------------------------------------------------------------------------


def write_maestro_release(root: str, *, bad: bool = False, metadata: str = "csv"
                          ) -> dict[str, Expected]:
    """maestro-v3.0.0.{csv,json} + 2018/*.midi and stereo 44.1 kHz *.wav (sustain pedal used)."""
    rows, expected = [], {}
    pieces = [("train", [60, 64, 67, 72]), ("validation", [62, 65, 69]), ("test", [59, 62, 67])]
    if bad:
        pieces += [("train", [60, 62]), ("train", [64, 65])]
    for i, (split, pitches) in enumerate(pieces):
        name = f"2018/MIDI-Unprocessed_{i:02d}_R1_2018_wav--{i + 1}"
        # Piece 4's notes start at 1.5 s but only 0.2 s of its audio is written.
        notes = _notes(pitches, start=1.5 if i == 4 else 0.1)
        midi = _midi_bytes([(0, False, notes)], sustain=[(0.05, 127), (1.0, 0)])
        piece_id = name.replace("/", "__")
        _write(os.path.join(root, name + ".midi"), midi)
        error = None
        if i == 3:
            error = "audio file not found"  # its .wav is never written
        else:
            seconds = 0.2 if i == 4 else None
            _write_audio(os.path.join(root, name + ".wav"), _render(midi, 44100, seconds),
                         44100, channels=2)
            error = "annotations past the audio's end" if i == 4 else None
        expected[piece_id] = Expected(split, (0,), error=error)
        rows.append({"canonical_composer": "Test", "canonical_title": f"Piece {i}",
                     "split": split, "year": 2018, "midi_filename": name + ".midi",
                     "audio_filename": name + ".wav", "duration": 2.0})
    if metadata == "csv":
        with open(os.path.join(root, "maestro-v3.0.0.csv"), "w", newline="",
                  encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:  # the v3 JSON: column -> {row index: value}
        columns = {key: {str(i): row[key] for i, row in enumerate(rows)} for key in rows[0]}
        _write(os.path.join(root, "maestro-v3.0.0.json"), json.dumps(columns))
    return expected


# Slakh stems: (stem id, metadata program, is_drum, notes, audio_rendered).
_SLAKH_TRACKS = {
    ("train", "Track00001"): [
        ("S00", 0, False, _notes([60, 64, 67]), True),     # Acoustic Piano -> 0
        ("S01", 27, False, _notes([52, 55, 59]), True),    # Clean Electric Guitar -> 26
        ("S02", 34, False, _notes([36, 40, 43]), True),    # Electric Bass -> 33
        ("S03", 0, True, _notes([36, 38, 42, 36]), True),  # Drums
        ("S04", 120, False, _notes([70]), False),          # not rendered: ignored
    ],
    ("validation", "Track00002"): [
        ("S00", 1, False, _notes([62, 65, 69]), True),     # Acoustic Piano -> 0
        ("S01", 30, False, _notes([50, 53]), True),        # Distorted Electric Guitar -> 29
        ("S02", 38, False, _notes([38, 41]), True),        # Electric Bass -> 33
        ("S03", 0, True, _notes([36, 38]), True),          # Drums
        ("S04", 40, False, _notes([76, 79]), True),        # Violin -> 40 (not in Cerberus4)
    ],
    ("test", "Track00003"): [
        ("S00", 73, False, _notes([72, 74, 76]), True),    # Pipe -> 73
        ("S01", 4, False, _notes([60, 64]), True),         # Electric Piano -> 4
    ],
    ("omitted", "Track00004"): [("S00", 0, False, _notes([60]), True)],
}
_SLAKH_BAD_TRACK = ("train", "Track00005")
_SLAKH_BAD_STEMS = [("S00", 0, False, _notes([60, 62]), True),
                    ("S01", 104, False, _notes([67]), True)]  # Sitar: no Slakh class


def write_slakh_release(root: str, *, bad: bool = False) -> dict[str, Expected]:
    """slakh2100_flac_redux-style tracks: metadata.yaml, MIDI/S*.mid, stems/S*.flac, mix.flac."""
    import yaml

    tracks = dict(_SLAKH_TRACKS)
    if bad:
        tracks[_SLAKH_BAD_TRACK] = _SLAKH_BAD_STEMS
    expected = {}
    for (folder, track), stems in tracks.items():
        track_dir = os.path.join(root, folder, track)
        metadata = {"UUID": track, "audio_dir": "stems", "midi_dir": "MIDI", "stems": {}}
        mix = None
        for stem_id, program, is_drum, notes, rendered in stems:
            midi = _midi_bytes([(program, is_drum, notes)])
            _write(os.path.join(track_dir, "MIDI", f"{stem_id}.mid"), midi)
            metadata["stems"][stem_id] = {
                "audio_rendered": rendered, "midi_saved": True, "is_drum": is_drum,
                "inst_class": "Drums" if is_drum else "Test", "program_num": program,
                "plugin_name": "test.nkm", "integrated_loudness": -20.0}
            if rendered:
                audio = 0.5 * _render(midi, 44100, seconds=1.8)
                audio = np.pad(audio, (0, int(1.8 * 44100) - len(audio)))
                _write_audio(os.path.join(track_dir, "stems", f"{stem_id}.flac"), audio, 44100)
                mix = audio if mix is None else mix + audio
        _write_audio(os.path.join(track_dir, "mix.flac"), mix, 44100)
        _write(os.path.join(track_dir, "metadata.yaml"), yaml.safe_dump(metadata))
        if folder != "omitted":
            from music_spectrogram_diffusion.data.sources.slakh import PROGRAM_CLASSES, \
                SLAKH_CLASS_PROGRAMS

            programs = tuple(sorted({SLAKH_CLASS_PROGRAMS[PROGRAM_CLASSES[p]]
                                     for _, p, drum, _, r in stems
                                     if r and not drum and p in PROGRAM_CLASSES}))
            error = "unknown instrument" if (folder, track) == _SLAKH_BAD_TRACK else None
            expected[track] = Expected(folder, programs, any(s[2] for s in stems), error)
    return expected


def expected_cerberus4(slakh_expected: dict[str, Expected]) -> dict[str, Expected]:
    """The Cerberus4 pieces of ``write_slakh_release``: the tracks with all four roles."""
    return {track: Expected(e.split, (0, 24, 32), True)
            for track, e in slakh_expected.items() if track in ("Track00001", "Track00002")}


def write_guitarset_release(root: str, *, bad: bool = False) -> dict[str, Expected]:
    """annotation/*.jams (six note_midi annotations) + audio_mono-mic/*_mic.wav (44.1 kHz)."""
    pieces = {"00_BN1-129-Eb_comp": "train", "05_Jazz2-187-F#_solo": "validation"}
    if bad:
        pieces["01_Rock1-90-C#_comp"] = "train"
    expected = {}
    for piece_id, split in pieces.items():
        strings = [_notes([40 + 5 * s, 45 + 5 * s], start=0.1 + 0.1 * s) for s in range(6)]
        annotations = []
        for string, notes in enumerate(strings):
            data = [{"time": start, "duration": end - start, "value": pitch + 0.03,
                     "confidence": None} for pitch, start, end in notes]
            annotations.append({"namespace": "note_midi", "data": data,
                                "annotation_metadata": {"data_source": str(string)}})
        annotations.append({"namespace": "pitch_contour", "data": []})
        _write(os.path.join(root, "annotation", piece_id + ".jams"),
               json.dumps({"annotations": annotations, "file_metadata": {"title": piece_id}}))
        if split == "train" and piece_id.startswith("01"):
            expected[piece_id] = Expected(split, (24,), error="audio file not found")
            continue
        midi = _midi_bytes([(24, False, [n for notes in strings for n in notes])])
        _write_audio(os.path.join(root, "audio_mono-mic", piece_id + "_mic.wav"),
                     _render(midi, 44100), 44100)
        expected[piece_id] = Expected(split, (24,))
    return expected


def write_musicnet_release(root: str, *, bad: bool = False) -> dict[str, Expected]:
    """{train,test}_labels/<id>.csv (times in 44.1 kHz samples) + {train,test}_data/<id>.wav."""
    pieces = {("train", "1727"): [(41, [67, 71, 74]), (43, [43, 50])],  # violin, cello
              ("train", "1733"): [(1, [60, 64, 67])],                      # piano; validation
              ("test", "1759"): [(74, [72, 76]), (72, [60, 64])]}          # flute, clarinet
    if bad:
        pieces[("train", "2000")] = [(99, [60])]
    expected = {}
    for (folder, piece_id), parts in pieces.items():
        rows, midi_parts = [], []
        for number, pitches in parts:
            notes = _notes(pitches)
            midi_parts.append((max(0, number - 1), False, notes))
            rows += [{"start_time": int(start * 44100), "end_time": int(end * 44100),
                      "instrument": number, "note": pitch, "start_beat": 0.0,
                      "end_beat": 0.5, "note_value": "Quarter"} for pitch, start, end in notes]
        path = os.path.join(root, f"{folder}_labels", piece_id + ".csv")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        _write_audio(os.path.join(root, f"{folder}_data", piece_id + ".wav"),
                     _render(_midi_bytes(midi_parts), 44100), 44100)
        split = "test" if folder == "test" else ("validation" if piece_id == "1733" else "train")
        expected[piece_id] = Expected(
            split, tuple(sorted(n - 1 for n, _ in parts)),
            error="unknown instrument 99" if piece_id == "2000" else None)
    return expected


def write_urmp_release(root: str, *, bad: bool = False) -> dict[str, Expected]:
    """<nn>_<Piece>_<codes>/AuMix_*.wav (48 kHz) + Notes_<n>_<code>_*.txt (onset, Hz, length)."""
    from music_spectrogram_diffusion.data.sources.urmp import INSTRUMENT_PROGRAMS

    pieces = {"01_Jupiter_vn_vc": [("vn", [67, 71]), ("vc", [43, 47])],
              "03_Dance_fl_cl": [("fl", [72, 74, 76]), ("cl", [60, 62])]}
    if bad:
        pieces["05_Bad_xx_vn"] = [("xx", [60]), ("vn", [67])]
    expected = {}
    for name, parts in pieces.items():
        number, title = name.split("_")[:2]
        folder = os.path.join(root, name)
        midi_parts = []
        for part, (code, pitches) in enumerate(parts, start=1):
            notes = _notes(pitches)
            lines = [f"{start:.4f}\t{440.0 * 2 ** ((pitch - 69) / 12):.3f}\t{end - start:.4f}"
                     for pitch, start, end in notes]
            _write(os.path.join(folder, f"Notes_{part}_{code}_{number}_{title}.txt"),
                   "\n".join(lines) + "\n")
            midi_parts.append((INSTRUMENT_PROGRAMS.get(code, 0), False, notes))
        _write_audio(os.path.join(folder, f"AuMix_{name}.wav"),
                     _render(_midi_bytes(midi_parts), 48000), 48000)
        split = "validation" if int(number) in (1, 2, 12, 13, 24, 25, 31, 38, 39) else "train"
        programs = tuple(sorted(INSTRUMENT_PROGRAMS[c] for c, _ in parts
                                if c in INSTRUMENT_PROGRAMS))
        expected[name] = Expected(split, programs,
                                  error="unknown instrument 'xx'" if "xx" in name else None)
    return expected


# ---------------------------------------------------------------------------------------------
# The original pipeline's TFRecords (spec §3.1); needs TensorFlow.


def write_tfrecord_release(root: str, dataset: str) -> dict[str, Expected]:
    """``<dataset>-{train,validation}.tfrecord-00000-of-00001`` files in the §3.1 format.

    Records hold two pieces per split; piece ids are ``<file>-<record number>``.
    """
    import tensorflow as tf

    from music_spectrogram_diffusion.data.midi_io import read_midi

    def feature(values, kind):
        if kind == "bytes":
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        if kind == "float":
            return tf.train.Feature(float_list=tf.train.FloatList(value=values))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    def wav_bytes(samples, rate):
        import soundfile

        buffer = io.BytesIO()
        soundfile.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
        return buffer.getvalue()

    tracks = {  # label -> (program used to render, is_drum, pitches)
        "maestrov3": [("piano", 0, False, [60, 64, 67])],
        "guitarset": [("guitar", 25, False, [52, 57])],
        "musicnet": [("violin", 40, False, [67, 71]), ("cello", 42, False, [43])],
        "urmp": [("vn", 40, False, [67, 71]), ("fl", 73, False, [72, 74])],
        "slakh": [("Acoustic Piano", 0, False, [60, 64]), ("Drums", 0, True, [36, 38]),
                  ("Synth Pad", 90, False, [55])],
        "cerberus4": [("piano", 0, False, [60]), ("guitar", 27, False, [52]),
                      ("bass", 33, False, [36]), ("drums", 0, True, [36, 42])],
    }[dataset]
    programs = {"maestrov3": (0,), "guitarset": (24,), "musicnet": (40, 42), "urmp": (40, 73),
                "slakh": (0, 88), "cerberus4": (0, 24, 32)}[dataset]
    expected = {}
    os.makedirs(root, exist_ok=True)
    for split in ("train", "validation"):
        file_name = f"{dataset}-{split}.tfrecord-00000-of-00001"
        with tf.io.TFRecordWriter(os.path.join(root, file_name)) as writer:
            for number in range(2):
                parts = [(program, drum, _notes([p + number for p in pitches]))
                         for _, program, drum, pitches in tracks]
                midi = _midi_bytes(parts)
                rate = 44100 if dataset in ("musicnet", "slakh", "cerberus4") else 16000
                samples = _render(midi, rate)
                sequences = [read_midi(_midi_bytes([part])).SerializeToString()
                             for part in parts]
                labels = [label.encode() for label, *_ in tracks]
                features = {"id": feature([f"{dataset}-{split}-{number}".encode()], "bytes")}
                if dataset in ("slakh", "cerberus4"):
                    features.update(
                        mix=feature(samples.tolist(), "float"),
                        audio_sample_rate=feature([rate], "int64"),
                        note_sequences=feature(sequences, "bytes"),
                        **{"slakh_class" if dataset == "slakh" else "inst_names":
                           feature(labels, "bytes")})
                elif dataset == "musicnet":
                    features.update(audio=feature(samples.tolist(), "float"),
                                    sample_rate=feature([float(rate)], "float"),
                                    sequence=feature([read_midi(midi).SerializeToString()],
                                                     "bytes"))
                else:
                    features.update(audio=feature([wav_bytes(samples, rate)], "bytes"),
                                    sequence=feature([read_midi(midi).SerializeToString()],
                                                     "bytes"))
                    if dataset == "urmp":
                        features.update(instrument_sequences=feature(sequences, "bytes"),
                                        inst_names=feature(labels, "bytes"))
                example = tf.train.Example(features=tf.train.Features(feature=features))
                writer.write(example.SerializeToString())
                expected[f"{file_name}-{number:05d}"] = Expected(
                    split, programs, any(drum for _, _, drum, _ in tracks))
    return expected
