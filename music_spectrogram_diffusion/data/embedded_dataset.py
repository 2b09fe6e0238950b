"""The embedded dataset: multi-instrument MIDI + rendered audio built offline from music21's corpus.

The paper trains on Slakh2100 (Lakh MIDI rendered with sampled instruments), which needs a
download. This dataset is built the same way from what is already installed: multi-part scores
from music21's bundled corpus (Bach chorales, Monteverdi madrigals, Palestrina masses, Trecento
pieces, Mozart/Haydn/Beethoven string quartets), arranged for varied General MIDI instruments
(``instrumentation``) and rendered to 16 kHz mono audio with a General MIDI soundfont
(``rendering.render_midi``; TimGM6mb from pretty_midi unless another .sf2 is given).

Layout of a dataset directory::

    manifest.json        written last, atomically: config, per-split totals, one entry per piece
    midi/<id>.mid        the arranged MIDI file (the model's input)
    audio/<id>.wav       its 16 kHz mono 16-bit rendering (the model's target)
    pieces/<id>.json     per-source record (the entry or why the source was skipped), so an
                         interrupted or repeated build reuses finished pieces
    store/               every piece's log-mel and note index, read window by window in
                         training (``data/piece_store.py``); built after the manifest

Determinism: a seed fixes the order in which corpus sources are tried; each piece's tempo,
instruments, velocities and drums come from a generator seeded by (seed, piece id), so a piece
is the same whichever other pieces are built. The dataset is the first ``num_pieces`` sources in
that order that convert (sources that fail to parse or have fewer than two parts are skipped and
logged), whatever the number of worker processes. Splits are by piece: the k-th piece goes to
validation if k % 10 == 1, to test if k % 10 == 2, else to train (80/10/10, and a 3-piece dataset
has one piece in each split); growing ``num_pieces`` keeps the earlier pieces' splits.

Rebuilding in an existing directory reuses every piece whose record matches the requested
config and whose MIDI and WAV files exist with the recorded length. A directory whose manifest
was built with a different config (seed, soundfont, ...) is an error, not a silent rebuild:
use a new directory or delete the old one (nothing is ever deleted here).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os

from music_spectrogram_diffusion.data import instrumentation
from music_spectrogram_diffusion.data.instrumentation import Candidate, PartInfo, ScoreError
from music_spectrogram_diffusion.data.piece_manifest import SPLITS, PieceManifest
from music_spectrogram_diffusion.features import DEFAULT_FEATURES
from music_spectrogram_diffusion import file_io
from music_spectrogram_diffusion.file_io import write_bytes_atomic, write_json_atomic

logger = logging.getLogger(__name__)

DATASET_VERSION = 1  # bump when the pieces a config produces change
DEFAULT_NUM_PIECES = 80  # over 1 h of training audio (see the report of the build)
QUICK_NUM_PIECES = 8
DEFAULT_DRUM_PROBABILITY = 0.25
DEFAULT_MAX_PIECE_SECONDS = 120.0
DEFAULT_DATA_DIR = os.path.join("data", "embedded")
MANIFEST_NAME = "manifest.json"
MIDI_DIR, AUDIO_DIR, RECORD_DIR = "midi", "audio", "pieces"

__all__ = [
    "DatasetConfig",
    "DatasetError",
    "Manifest",
    "PieceEntry",
    "SkippedSource",
    "build_embedded_dataset",
    "load_manifest",
]


class DatasetError(ValueError):
    """A dataset directory, manifest or build request that cannot be used."""


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """Everything that decides the pieces' contents; a rebuild must use the same values."""

    seed: int
    soundfont: str  # file name of the .sf2 used (its path is machine-specific)
    soundfont_sha256: str
    sample_rate: int
    drum_probability: float
    max_piece_seconds: float
    version: int = DATASET_VERSION

    def __post_init__(self):
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise DatasetError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not 0.0 <= self.drum_probability <= 1.0:
            raise DatasetError(f"drum_probability must be in [0, 1], got {self.drum_probability}")
        if not self.max_piece_seconds > 0:
            raise DatasetError(f"max_piece_seconds must be positive, got {self.max_piece_seconds}")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> DatasetConfig:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class PieceEntry:
    """One piece: its files (relative to the dataset directory) and how it was arranged."""

    id: str
    split: str  # 'train' | 'validation' | 'test'; '' in a per-piece record (set at selection)
    midi_path: str
    audio_path: str
    duration_seconds: float  # of the WAV file: the music plus a 1 s release tail
    programs: tuple[int, ...]  # sorted distinct GM programs of the pitched parts
    has_drums: bool
    source: str  # music21 corpus path, e.g. "bach/bwv277.mxl"
    collection: str
    tempo_qpm: float  # opening tempo
    parts: tuple[PartInfo, ...]  # per-track details, in MIDI track order

    def __post_init__(self):
        if self.split not in ("", *SPLITS):
            raise ValueError(f"piece {self.id}: unknown split {self.split!r}; valid splits: "
                             f"{', '.join(SPLITS)}")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> PieceEntry:
        fields = {f.name: data[f.name] for f in dataclasses.fields(cls)}
        fields["programs"] = tuple(int(p) for p in fields["programs"])
        fields["parts"] = tuple(PartInfo(**part) for part in fields["parts"])
        return cls(**fields)


@dataclasses.dataclass(frozen=True)
class SkippedSource:
    source: str
    reason: str


def split_for_position(position: int) -> str:
    """Split of the ``position``-th piece (0-based, in selection order): 80/10/10 by piece."""
    return {1: "validation", 2: "test"}.get(position % 10, "train")


@dataclasses.dataclass(frozen=True)
class Manifest(PieceManifest[PieceEntry]):
    """The contents of ``manifest.json``; paths in entries are relative to ``data_dir``."""

    data_dir: str
    config: DatasetConfig
    pieces: tuple[PieceEntry, ...]
    skipped: tuple[SkippedSource, ...] = ()

    def instrument_histogram(self) -> dict[str, int]:
        """Number of parts played by each instrument, most common first."""
        counts = collections.Counter(part.instrument for p in self.pieces for part in p.parts)
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    def summary(self) -> str:
        """Pieces and hours per split, instruments and collections, as a few lines of text."""
        config = self.config
        lines = [
            f"Embedded dataset {self.data_dir} (version {config.version}, seed {config.seed}, "
            f"soundfont {config.soundfont}, {config.sample_rate} Hz)"
        ]
        for name in SPLITS:
            lines.append(f"  {name:<10} {len(self.split(name)):5d} pieces "
                         f"{self.split_seconds(name) / 3600:7.3f} h")
        total = sum(p.duration_seconds for p in self.pieces)
        drums = sum(p.has_drums for p in self.pieces)
        lines.append(f"  {'total':<10} {len(self.pieces):5d} pieces {total / 3600:7.3f} h "
                     f"({drums} with drums, {len(self.skipped)} corpus sources skipped)")
        sources = collections.Counter(p.collection for p in self.pieces)
        lines.append("Collections: " + ", ".join(f"{k} {v}" for k, v in sorted(sources.items())))
        lines.append("Instruments (parts): " + ", ".join(
            f"{name} {count}" for name, count in self.instrument_histogram().items()))
        return "\n".join(lines)

    def to_json(self) -> dict:
        totals = {
            name: {"pieces": len(self.split(name)), "seconds": round(self.split_seconds(name), 3)}
            for name in SPLITS
        }
        return {
            **self.config.to_json(),
            "num_pieces": len(self.pieces),
            "splits": totals,
            "pieces": [p.to_json() for p in self.pieces],
            "skipped": [dataclasses.asdict(s) for s in self.skipped],
        }

    @classmethod
    def from_json(cls, data_dir: str, data: dict) -> Manifest:
        return cls(
            data_dir=data_dir,
            config=DatasetConfig.from_json(data),
            pieces=tuple(PieceEntry.from_json(p) for p in data["pieces"]),
            skipped=tuple(SkippedSource(**s) for s in data.get("skipped", [])),
        )


def load_manifest(data_dir: str | os.PathLike) -> Manifest:
    """Reads ``<data_dir>/manifest.json``.

    Raises:
      DatasetError: the file is missing, not valid JSON, lacks fields, or was written by an
        incompatible dataset version. The message names the file.
    """
    data_dir = os.path.abspath(os.fspath(data_dir))
    path = os.path.join(data_dir, MANIFEST_NAME)
    data = file_io.read_json_object(
        path, DatasetError, what="manifest",
        missing=f"no dataset manifest here; build one with `msd-make-dataset --out {data_dir}`")
    if data.get("version") != DATASET_VERSION:
        raise DatasetError(f"{path}: dataset version {data.get('version')!r}; this code reads "
                           f"version {DATASET_VERSION}; rebuild it in a new directory")
    try:
        return Manifest.from_json(data_dir, data)
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{path}: malformed manifest ({type(e).__name__}: {e})") from e


def build_embedded_dataset(
    out_dir: str | os.PathLike,
    *,
    num_pieces: int | None = None,
    seed: int = 0,
    soundfont: str | None = None,
    num_workers: int = 2,
    progress: bool = True,
    drum_probability: float = DEFAULT_DRUM_PROBABILITY,
    max_piece_seconds: float = DEFAULT_MAX_PIECE_SECONDS,
) -> Manifest:
    """Builds (or completes) the embedded dataset in ``out_dir`` and returns its manifest.

    Args:
      out_dir: dataset directory; created if needed.
      num_pieces: pieces to build; None means DEFAULT_NUM_PIECES (over 1 h of training audio).
      seed: fixes the pieces, their order, splits and instrumentation.
      soundfont: a General MIDI .sf2 file (e.g. FluidR3_GM.sf2); None uses TimGM6mb.
      num_workers: processes that parse and render in parallel; 1 works in this process.
      progress: show a tqdm progress bar.
      drum_probability: chance that a piece gets a generated drum part on channel 10.
      max_piece_seconds: pieces are cut after this many seconds of music.

    Raises:
      DatasetError: bad arguments, an unreadable soundfont, or ``out_dir`` holding a dataset
        built with a different config. Nothing is written in these cases.
    """
    from music_spectrogram_diffusion.data.rendering import default_soundfont_path

    num_pieces = DEFAULT_NUM_PIECES if num_pieces is None else num_pieces
    if isinstance(num_pieces, bool) or not isinstance(num_pieces, int) or num_pieces < 1:
        raise DatasetError(f"num_pieces must be a positive integer, got {num_pieces!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise DatasetError(f"num_workers must be a positive integer, got {num_workers!r}")
    soundfont_path = os.path.abspath(soundfont) if soundfont else default_soundfont_path()
    _check_soundfont(soundfont_path)
    config = DatasetConfig(
        seed=seed,
        soundfont=os.path.basename(soundfont_path),
        soundfont_sha256=_sha256(soundfont_path),
        sample_rate=DEFAULT_FEATURES.sample_rate,
        drum_probability=drum_probability,
        max_piece_seconds=max_piece_seconds,
    )
    out_dir = os.fspath(out_dir)
    if problem := file_io.output_dir_problem(out_dir):
        raise DatasetError(f"{out_dir}: {problem}; the dataset needs a directory (--out DIR)")
    if os.path.exists(os.path.join(out_dir, MANIFEST_NAME)):
        _check_same_config(load_manifest(out_dir), config)
    for sub in (MIDI_DIR, AUDIO_DIR, RECORD_DIR):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)

    candidates = instrumentation.list_candidates(seed)
    outcomes = _make_pieces(candidates, num_pieces, out_dir, config, soundfont_path,
                            num_workers=num_workers, progress=progress)
    pieces, skipped = [], []
    for index in sorted(outcomes):
        outcome = outcomes[index]
        if isinstance(outcome, SkippedSource):
            skipped.append(outcome)
        else:
            pieces.append(dataclasses.replace(outcome, split=split_for_position(len(pieces))))
    if len(pieces) < num_pieces:
        logger.warning("only %d of the %d requested pieces could be built (%d sources skipped)",
                       len(pieces), num_pieces, len(skipped))
    manifest = Manifest(os.path.abspath(out_dir), config, tuple(pieces), tuple(skipped))
    write_json_atomic(os.path.join(out_dir, MANIFEST_NAME), manifest.to_json())
    from music_spectrogram_diffusion.data import dataset_specs, piece_store

    piece_store.build_store(out_dir, dataset_specs.EMBEDDED, num_workers=num_workers,
                            progress=progress)
    return manifest


def _make_pieces(
    candidates: tuple[Candidate, ...],
    num_pieces: int,
    out_dir: str,
    config: DatasetConfig,
    soundfont_path: str,
    *,
    num_workers: int,
    progress: bool,
) -> dict[int, PieceEntry | SkippedSource]:
    """Makes pieces for the shortest prefix of ``candidates`` holding ``num_pieces`` successes.

    A candidate is started only while fewer than ``num_pieces`` started ones are still expected
    to succeed, and each skip starts the next one; the prefix, and so the dataset, does not
    depend on which worker finishes first.
    """
    from tqdm.auto import tqdm

    outcomes: dict[int, PieceEntry | SkippedSource] = {}
    executor = None
    if num_workers > 1:
        # spawn, not fork: the caller may already run JAX or TensorFlow threads.
        executor = concurrent.futures.ProcessPoolExecutor(
            num_workers, mp_context=multiprocessing.get_context("spawn"))
    futures: dict[concurrent.futures.Future, int] = {}
    expected, next_index = 0, 0
    bar = tqdm(total=num_pieces, disable=not progress, unit="piece", desc="embedded dataset")

    def record(index: int, outcome: PieceEntry | SkippedSource) -> None:
        nonlocal expected
        outcomes[index] = outcome
        if isinstance(outcome, SkippedSource):
            expected -= 1
            logger.warning("skipped %s: %s", outcome.source, outcome.reason)
        else:
            bar.update(1)
        bar.set_postfix(skipped=sum(isinstance(o, SkippedSource) for o in outcomes.values()))

    try:
        while True:
            while expected < num_pieces and next_index < len(candidates):
                index, candidate = next_index, candidates[next_index]
                next_index += 1
                expected += 1
                reused = _reusable_outcome(candidate, out_dir, config)
                if reused is not None:
                    record(index, reused)
                elif executor is None:
                    record(index, make_piece(candidate, out_dir, config, soundfont_path))
                else:
                    future = executor.submit(make_piece, candidate, out_dir, config,
                                             soundfont_path)
                    futures[future] = index
            if not futures:
                return outcomes
            done, _ = concurrent.futures.wait(
                futures, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                record(futures.pop(future), future.result())
    finally:
        bar.close()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


def make_piece(
    candidate: Candidate, out_dir: str, config: DatasetConfig, soundfont_path: str
) -> PieceEntry | SkippedSource:
    """Arranges, writes and renders one corpus source (runs in a worker process).

    Writes midi/<id>.mid, then audio/<id>.wav, then the record pieces/<id>.json, each
    atomically; the record comes last so it only ever describes finished files.
    """
    from music_spectrogram_diffusion.audio.audio_io import write_wav
    from music_spectrogram_diffusion.data.rendering import render_midi

    record_path = os.path.join(out_dir, RECORD_DIR, candidate.piece_id + ".json")
    record = {"config": config.to_json(), "source": candidate.source}
    try:
        arrangement = instrumentation.arrange_candidate(
            candidate, seed=config.seed, drum_probability=config.drum_probability,
            max_seconds=config.max_piece_seconds)
    except ScoreError as e:
        write_json_atomic(record_path, {**record, "skipped": str(e)})
        return SkippedSource(candidate.source, str(e))
    midi_path = f"{MIDI_DIR}/{candidate.piece_id}.mid"
    audio_path = f"{AUDIO_DIR}/{candidate.piece_id}.wav"
    write_bytes_atomic(os.path.join(out_dir, midi_path), arrangement.midi)
    samples = render_midi(os.path.join(out_dir, midi_path), sample_rate=config.sample_rate,
                          soundfont=soundfont_path)  # [num_samples]
    write_wav(os.path.join(out_dir, audio_path), samples, config.sample_rate)
    entry = PieceEntry(
        id=candidate.piece_id,
        split="",
        midi_path=midi_path,
        audio_path=audio_path,
        duration_seconds=len(samples) / config.sample_rate,
        programs=tuple(sorted({p.program for p in arrangement.parts if not p.is_drum})),
        has_drums=arrangement.has_drums,
        source=candidate.source,
        collection=candidate.collection,
        tempo_qpm=arrangement.tempo_qpm,
        parts=arrangement.parts,
    )
    write_json_atomic(record_path, {**record, "piece": entry.to_json()})
    return entry


def _reusable_outcome(
    candidate: Candidate, out_dir: str, config: DatasetConfig
) -> PieceEntry | SkippedSource | None:
    """The recorded outcome for ``candidate`` if it was made with ``config`` and is intact."""
    import soundfile

    path = os.path.join(out_dir, RECORD_DIR, candidate.piece_id + ".json")
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        if record["config"] != config.to_json() or record["source"] != candidate.source:
            return None
        if "skipped" in record:
            return SkippedSource(candidate.source, record["skipped"])
        entry = PieceEntry.from_json(record["piece"])
        info = soundfile.info(os.path.join(out_dir, entry.audio_path))
        if not os.path.isfile(os.path.join(out_dir, entry.midi_path)):
            return None
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return None  # missing, old or damaged: make the piece again
    expected = round(entry.duration_seconds * config.sample_rate)
    if info.samplerate != config.sample_rate or info.frames != expected or info.channels != 1:
        return None
    return entry


def _check_soundfont(path: str) -> None:
    from music_spectrogram_diffusion import dependencies

    try:
        tinysoundfont = dependencies.require("tinysoundfont")
    except dependencies.MissingDependencyError as e:
        raise DatasetError(str(e)) from e
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: soundfont file not found")
    try:
        tinysoundfont.Synth().sfload(path)
    except Exception as e:  # tinysoundfont raises RuntimeError, but be safe about its version.
        raise DatasetError(f"{path}: not a readable SoundFont 2 file ({e})") from e


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_same_config(existing: Manifest, config: DatasetConfig) -> None:
    old, new = existing.config.to_json(), config.to_json()
    differences = [f"{k}={old.get(k)!r} (asked for {new[k]!r})" for k in new if old.get(k) != new[k]]
    if differences:
        raise DatasetError(
            f"{os.path.join(existing.data_dir, MANIFEST_NAME)}: this directory holds a dataset "
            f"built with {', '.join(differences)}; use another output directory or delete it"
        )

