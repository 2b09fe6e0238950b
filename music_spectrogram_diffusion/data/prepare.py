"""Preparing a downloaded dataset release for training: ``msd-prepare-dataset``.

    msd-prepare-dataset NAME --source DIR --out DIR [--source_format raw|tfrecord]
                             [--num_workers N]

reads the release with the dataset's reader (``data/sources``) and writes the layout that the
embedded dataset uses, so the same task machinery reads both (``data/sources/registry.py``)::

    manifest.json      written last, atomically: dataset, per-split totals, one entry per piece
                       (id, split, midi_path, audio_path, duration_seconds, programs,
                       has_drums, ...) and the pieces that failed, with path and reason
    audio/<id>.wav     16 kHz mono 16-bit audio (spec §2.1)
    midi/<id>.mid      the piece's notes in the form of spec §1.2: programs and drums mapped
                       per the dataset's instrument table, sustain applied, no pitch bends
    pieces/<id>.json   per-piece record, written after its WAV and MIDI files
    store/             every piece's log-mel and note index, read window by window in
                       training (``data/piece_store.py``); built after the manifest

Re-running in the same directory skips every piece whose record matches the source files
(path, size, modification time) and whose outputs exist, so an interrupted run resumes where
it stopped. A piece whose files are bad (missing audio, annotations past the audio's end, an
unknown instrument, an unreadable file) is reported with its path and reason and left out; the
others are prepared. Bad pieces are tried again on the next run (the files may have been fixed).
Pieces are prepared in ``num_workers`` processes.

Full-size datasets on Apache Beam (not installed here): the work is one pure function per
piece, so a Beam pipeline is a few lines. On a machine with ``apache-beam[gcp]``::

    import apache_beam as beam
    from music_spectrogram_diffusion.data import prepare, sources

    reader = sources.get_reader("maestrov3", "raw")
    refs = reader.list_pieces("/data/maestro-v3.0.0")        # cheap: index files only
    with beam.Pipeline(options=pipeline_options) as p:
        (p | beam.Create(refs) | beam.Reshuffle()
           | beam.Map(lambda ref: prepare.prepare_piece("maestrov3", "raw", ref, OUT_DIR)))
    prepare.write_manifest("maestrov3", "raw", refs, OUT_DIR)  # after the pipeline

``OUT_DIR`` must be visible to every worker (a shared or FUSE-mounted file system: the piece
files are written with plain ``open``). ``write_manifest`` collects the per-piece records, so it
also reports the pieces that failed. Run the pipeline again to retry failed pieces; finished ones
are skipped.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import io
import json
import logging
import math
import multiprocessing
import os
from collections.abc import Mapping, Sequence

from music_spectrogram_diffusion import file_io
from music_spectrogram_diffusion.data import sources
from music_spectrogram_diffusion.data.piece_manifest import PieceManifest
from music_spectrogram_diffusion.data.sources.base import SPLITS, SourceError, SourceRef
from music_spectrogram_diffusion.features import DEFAULT_FEATURES
from music_spectrogram_diffusion.file_io import write_bytes_atomic, write_json_atomic

logger = logging.getLogger(__name__)

PREPARED_FORMAT = "msd-prepared"
PREPARED_VERSION = 1  # bump when the files a piece produces change
MANIFEST_NAME = "manifest.json"
AUDIO_DIR, MIDI_DIR, RECORD_DIR = "audio", "midi", "pieces"
# The original cached 2000-frame (40 s) chunks and the mega mixture's N counted them (§3.2).
CHUNK_FRAMES = 2000


class PrepareError(ValueError):
    """A release or output directory that cannot be prepared at all."""


@dataclasses.dataclass(frozen=True)
class PreparedPiece:
    """One manifest entry; paths are relative to the prepared directory."""

    id: str
    split: str
    midi_path: str
    audio_path: str
    duration_seconds: float
    programs: tuple[int, ...]  # sorted distinct programs of the pitched notes
    has_drums: bool
    num_notes: int
    source_files: tuple[str, ...]

    @classmethod
    def from_json(cls, data: dict) -> PreparedPiece:
        fields = {f.name: data[f.name] for f in dataclasses.fields(cls)}
        fields["programs"] = tuple(int(p) for p in fields["programs"])
        fields["source_files"] = tuple(fields["source_files"])
        return cls(**fields)

    @property
    def num_chunks(self) -> int:
        """Number of 2000-frame chunks the original would cache for this piece (§3.2)."""
        frames = self.duration_seconds * DEFAULT_FEATURES.frames_per_second
        return max(1, math.ceil(frames / CHUNK_FRAMES))


@dataclasses.dataclass(frozen=True)
class PieceFailure:
    id: str
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclasses.dataclass(frozen=True)
class PreparedManifest(PieceManifest[PreparedPiece]):
    """The contents of a prepared directory's manifest.json."""

    data_dir: str
    dataset: str
    source_format: str
    pieces: tuple[PreparedPiece, ...]
    failures: tuple[PieceFailure, ...] = ()

    def summary(self) -> str:
        lines = [f"{self.dataset} prepared in {self.data_dir} (from {self.source_format} files)"]
        for name in SPLITS:
            pieces = self.split(name)
            hours = sum(p.duration_seconds for p in pieces) / 3600
            lines.append(f"  {name:<10} {len(pieces):6d} pieces {hours:8.3f} h")
        lines.append(f"  {len(self.failures)} pieces failed")
        lines.extend(f"    {failure}" for failure in self.failures)
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "format": PREPARED_FORMAT,
            "version": PREPARED_VERSION,
            "dataset": self.dataset,
            "source_format": self.source_format,
            "sample_rate": DEFAULT_FEATURES.sample_rate,
            "splits": {name: {"pieces": len(self.split(name)),
                              "seconds": round(sum(p.duration_seconds for p in self.split(name)),
                                               3)}
                       for name in SPLITS},
            "pieces": [dataclasses.asdict(p) for p in self.pieces],
            "failures": [dataclasses.asdict(f) for f in self.failures],
        }


def load_prepared_manifest(data_dir: str | os.PathLike) -> PreparedManifest:
    """Reads ``<data_dir>/manifest.json`` of a prepared dataset.

    Raises:
      PrepareError: no manifest, not JSON, malformed, or another format/version. The message
        names the file.
    """
    data_dir = os.path.abspath(os.fspath(data_dir))
    path = os.path.join(data_dir, MANIFEST_NAME)
    data = file_io.read_json_object(
        path, PrepareError, what="manifest",
        missing="no prepared dataset here; prepare one with "
                f"`msd-prepare-dataset NAME --source DIR --out {data_dir}`")
    try:
        if data.get("format") != PREPARED_FORMAT or data.get("version") != PREPARED_VERSION:
            raise PrepareError(f"{path}: format {data.get('format')!r} version "
                               f"{data.get('version')!r}; this code reads {PREPARED_FORMAT!r} "
                               f"version {PREPARED_VERSION}: prepare it again in a new folder")
        return PreparedManifest(
            data_dir=data_dir, dataset=data["dataset"], source_format=data["source_format"],
            pieces=tuple(PreparedPiece.from_json(p) for p in data["pieces"]),
            failures=tuple(PieceFailure(**f) for f in data["failures"]))
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        if isinstance(e, PrepareError):
            raise
        raise PrepareError(f"{path}: malformed manifest ({type(e).__name__}: {e})") from e


# ---------------------------------------------------------------------------------------------
# One piece (runs in a worker process).


def _file_stamps(ref: SourceRef) -> dict[str, list]:
    """Size and modification time of each existing source file (what makes a record stale)."""
    stamps = {}
    for path in ref.files.values():
        try:
            stat = os.stat(path)
            stamps[path] = [stat.st_size, stat.st_mtime_ns]
        except OSError:
            stamps[path] = None
    return stamps


def _record_key(dataset: str, source_format: str, ref: SourceRef) -> dict:
    return {"version": PREPARED_VERSION, "dataset": dataset, "source_format": source_format,
            "split": ref.split, "files": dict(ref.files), "stamps": _file_stamps(ref),
            "details": json.loads(json.dumps(dict(ref.details)))}


def _record_path(out_dir: str, piece_id: str) -> str:
    return os.path.join(out_dir, RECORD_DIR, piece_id + ".json")


def reusable_piece(dataset: str, source_format: str, ref: SourceRef,
                   out_dir: str) -> PreparedPiece | None:
    """The recorded piece if it was prepared from these very source files and is intact."""
    import soundfile

    try:
        with open(_record_path(out_dir, ref.id), encoding="utf-8") as f:
            record = json.load(f)
        if record["key"] != _record_key(dataset, source_format, ref):
            return None
        piece = PreparedPiece.from_json(record["piece"])
        info = soundfile.info(os.path.join(out_dir, piece.audio_path))
        if not os.path.isfile(os.path.join(out_dir, piece.midi_path)):
            return None
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return None  # missing, stale or damaged: prepare the piece again
    expected = round(piece.duration_seconds * DEFAULT_FEATURES.sample_rate)
    if info.frames != expected or info.samplerate != DEFAULT_FEATURES.sample_rate:
        return None
    return piece


def prepare_piece(dataset: str, source_format: str, ref: SourceRef,
                  out_dir: str) -> PreparedPiece | PieceFailure:
    """Loads one piece and writes its WAV, MIDI and record (each atomically, record last).

    Returns a PieceFailure, rather than raising, when the piece cannot be read (a SourceError,
    or any other exception, reported with its type): one bad file must not stop the others.
    """
    import note_seq

    from music_spectrogram_diffusion.audio.audio_io import write_wav

    reused = reusable_piece(dataset, source_format, ref, out_dir)
    if reused is not None:
        return reused
    key = _record_key(dataset, source_format, ref)
    for sub in (MIDI_DIR, AUDIO_DIR, RECORD_DIR):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    try:
        piece = sources.get_reader(dataset, source_format).load_piece(ref)
    except Exception as e:  # noqa: BLE001 - one bad piece must not stop a day-long run.
        if isinstance(e, SourceError):
            failure = PieceFailure(ref.id, e.path, e.reason)
        else:  # A file the reader did not anticipate; reported like the others.
            failure = PieceFailure(ref.id, ref.path, f"unexpected {type(e).__name__}: {e}")
        # Recorded for write_manifest's report; a failure record is never reused.
        write_json_atomic(_record_path(out_dir, ref.id),
                          {"key": key, "failure": dataclasses.asdict(failure)})
        return failure
    ns = piece.note_sequence
    midi_path, audio_path = f"{MIDI_DIR}/{ref.id}.mid", f"{AUDIO_DIR}/{ref.id}.wav"
    write_wav(os.path.join(out_dir, audio_path), piece.samples, DEFAULT_FEATURES.sample_rate)
    buffer = io.BytesIO()
    note_seq.note_sequence_to_pretty_midi(ns).write(buffer)
    write_bytes_atomic(os.path.join(out_dir, midi_path), buffer.getvalue())
    entry = PreparedPiece(
        id=ref.id, split=ref.split, midi_path=midi_path, audio_path=audio_path,
        duration_seconds=len(piece.samples) / DEFAULT_FEATURES.sample_rate,
        programs=tuple(sorted({n.program for n in ns.notes if not n.is_drum})),
        has_drums=any(n.is_drum for n in ns.notes), num_notes=len(ns.notes),
        source_files=piece.source_files)
    write_json_atomic(_record_path(out_dir, ref.id),
                      {"key": key, "piece": dataclasses.asdict(entry)})
    return entry


# ---------------------------------------------------------------------------------------------
# A whole dataset.


def prepare_dataset(
    name: str,
    source_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    source_format: str = "raw",
    num_workers: int = 1,
    progress: bool = True,
    reader_options: Mapping[str, object] | None = None,
) -> PreparedManifest:
    """Prepares (or completes) dataset ``name`` from ``source_dir`` into ``out_dir``.

    Args:
      name: a dataset of ``sources.DATASET_NAMES`` (or an alias such as 'maestro').
      source_dir: the unpacked release (or the folder of TFRecords).
      out_dir: the prepared directory; created if needed.
      source_format: 'raw' (the public release layout) or 'tfrecord' (spec §3.1).
      num_workers: processes loading and writing pieces; 1 works in this process.
      progress: show a tqdm progress bar.
      reader_options: keyword arguments of the reader's ``list_pieces`` (e.g. GuitarSet's
        ``audio='mix'``).

    Returns:
      The manifest written to ``out_dir/manifest.json``; its ``failures`` name each bad file.

    Raises:
      PrepareError: bad arguments, an unusable release index (e.g. no MAESTRO CSV), or an
        output directory holding another dataset. Nothing is written in these cases.
    """
    try:
        dataset = sources.canonical_name(name)
        reader = sources.get_reader(dataset, source_format)
    except ValueError as e:
        raise PrepareError(str(e)) from e
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise PrepareError(f"num_workers must be a positive integer, got {num_workers!r}")
    out_dir = os.path.abspath(os.fspath(out_dir))
    if problem := file_io.output_dir_problem(out_dir):
        raise PrepareError(f"{out_dir}: {problem}; the prepared dataset needs a directory "
                           "(--out DIR)")
    if os.path.exists(os.path.join(out_dir, MANIFEST_NAME)):
        existing = load_prepared_manifest(out_dir)
        if (existing.dataset, existing.source_format) != (dataset, source_format):
            raise PrepareError(
                f"{os.path.join(out_dir, MANIFEST_NAME)}: this folder holds {existing.dataset} "
                f"prepared from {existing.source_format} files; use another --out folder")
    try:
        refs = reader.list_pieces(os.fspath(source_dir), **dict(reader_options or {}))
    except SourceError as e:
        raise PrepareError(str(e)) from e
    except TypeError as e:
        raise PrepareError(f"bad reader options {dict(reader_options or {})} for {dataset}: "
                           f"{e}") from e
    counts = collections.Counter(ref.id for ref in refs)
    duplicates = sorted(piece_id for piece_id, count in counts.items() if count > 1)
    if duplicates:
        raise PrepareError(f"{source_dir}: several pieces share the ids {duplicates[:5]}")
    os.makedirs(out_dir, exist_ok=True)
    outcomes = _run(dataset, source_format, refs, out_dir, num_workers, progress)
    return _finish(dataset, source_format, refs, outcomes, out_dir, num_workers=num_workers,
                   progress=progress)


def _run(dataset, source_format, refs, out_dir, num_workers, progress):
    from tqdm.auto import tqdm

    outcomes: dict[str, PreparedPiece | PieceFailure] = {}
    bar = tqdm(total=len(refs), disable=not progress, unit="piece", desc=f"prepare {dataset}")

    def record(outcome):
        outcomes[outcome.id] = outcome
        if isinstance(outcome, PieceFailure):
            logger.warning("failed: %s", outcome)
        bar.update(1)
        bar.set_postfix(failed=sum(isinstance(o, PieceFailure) for o in outcomes.values()))

    pending = []
    for ref in refs:  # finished pieces first, without starting workers for them
        reused = reusable_piece(dataset, source_format, ref, out_dir)
        if reused is not None:
            record(reused)
        else:
            pending.append(ref)
    try:
        if num_workers == 1 or len(pending) <= 1:
            for ref in pending:
                record(prepare_piece(dataset, source_format, ref, out_dir))
        else:
            # spawn, not fork: the caller may already run JAX or TensorFlow threads.
            with concurrent.futures.ProcessPoolExecutor(
                    min(num_workers, len(pending)),
                    mp_context=multiprocessing.get_context("spawn")) as executor:
                futures = [executor.submit(prepare_piece, dataset, source_format, ref, out_dir)
                           for ref in pending]
                for future in concurrent.futures.as_completed(futures):
                    record(future.result())
    finally:
        bar.close()
    return outcomes


def _finish(dataset, source_format, refs, outcomes, out_dir, *, num_workers: int = 1,
            progress: bool = False) -> PreparedManifest:
    """Writes the manifest, then the piece store of its pieces (``data/piece_store.py``)."""
    from music_spectrogram_diffusion.data import piece_store
    from music_spectrogram_diffusion.data.sources import registry

    ordered = [outcomes[ref.id] for ref in refs]
    manifest = PreparedManifest(
        data_dir=out_dir, dataset=dataset, source_format=source_format,
        pieces=tuple(o for o in ordered if isinstance(o, PreparedPiece)),
        failures=tuple(o for o in ordered if isinstance(o, PieceFailure)))
    write_json_atomic(os.path.join(out_dir, MANIFEST_NAME), manifest.to_json())
    if manifest.pieces:
        piece_store.build_store(out_dir, registry.DATASET_SPECS[dataset],
                                num_workers=num_workers, progress=progress)
    return manifest


def write_manifest(name: str, source_format: str, refs: Sequence[SourceRef],
                   out_dir: str) -> PreparedManifest:
    """The manifest of pieces prepared elsewhere (e.g. by Beam workers) from their records.

    A piece without a valid record is listed as failed, with the reason its worker gave if it
    wrote one; run ``prepare_piece`` again for those.
    """
    dataset = sources.canonical_name(name)
    out_dir = os.path.abspath(out_dir)
    outcomes = {}
    for ref in refs:
        piece = reusable_piece(dataset, source_format, ref, out_dir)
        outcomes[ref.id] = piece or _recorded_failure(ref, out_dir)
    return _finish(dataset, source_format, refs, outcomes, out_dir)


def _recorded_failure(ref: SourceRef, out_dir: str) -> PieceFailure:
    try:
        with open(_record_path(out_dir, ref.id), encoding="utf-8") as f:
            return PieceFailure(**json.load(f)["failure"])
    except (OSError, ValueError, KeyError, TypeError):
        return PieceFailure(ref.id, ref.path, "not prepared (no record; run it again)")


