"""The on-disk, random-access store of a dataset's pieces: whole-song log-mels and note indexes.

Training reads windows: 256 target frames, the 256 frames before them, and the note events of
those frames. This store keeps every piece of a dataset folder as slices of a few large arrays,
so that reading one window touches only that window's bytes, and no process holds a split in
RAM (``data/tasks.py`` ``ExampleSource`` reads from it)::

    <data_dir>/store/<STORE_VERSION>-<key>/      key: hash of dataset name, vocab, features
        store.json                     written last, atomically: what built it, its shards (file,
                                       shape, dtype, bytes), one entry per piece (id, split,
                                       shard, offsets and lengths, source file stamps)
        <build>-00000.log_mel.npy      float32 [frames, 128]  pieces' log-mels, one after another
        <build>-00000.frame_index.npy  int32 [frames, 3]      per frame: event start, event end,
                                                              state-event index (piece-relative)
        <build>-00000.events.npy       int32 [events]         pieces' event streams
        <build>-00000.state_events.npy int32 [state events]   pieces' state snapshots
        <build>-00001....              the next shard (a new shard starts past SHARD_BYTES)

Why memory-mapped ``.npy`` shards rather than ArrayRecord: a window is a contiguous row range of
a piece's log-mel and a contiguous run of its events, so with ``np.load(mmap_mode='r')`` a
window is a slice, read straight from the page cache with no decoding and no copy of anything
else. ArrayRecord stores whole records: one record per piece would read (and decompress) the
whole song for each window, and fixed-size chunk records would need two reads and a re-join
per window plus a second index. Memory maps are also shared between the loader's worker
processes (one copy of each page in the OS page cache, however many workers read it), and
opening a store costs reading ``store.json``, whatever the dataset's size.

Built by ``msd-make-dataset`` and ``msd-prepare-dataset`` after their pieces, by
``msd-build-store DATA_DIR`` for folders made before the store existed, and on first use
(``open_store(..., build_missing=True)``, with a progress bar) when there is no store.json.
A rebuild reuses the pieces of the previous store whose source files are unchanged, writes
new shards under a new build name, switches by replacing store.json, then removes the old
build's shards. A store whose files are missing, truncated, or disagree with store.json, or
one built for another manifest.json, is never silently used or rebuilt: ``StoreError`` names
the file and the command that rebuilds it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import logging
import multiprocessing
import os
import time
import uuid
from collections.abc import Iterator, Sequence

import numpy as np

from music_spectrogram_diffusion import file_io
from music_spectrogram_diffusion.data import dataset_specs
from music_spectrogram_diffusion.data.dataset_specs import DatasetSpec, Piece, PieceRef
from music_spectrogram_diffusion.data.tokenizer import EventIndex
from music_spectrogram_diffusion.data.vocabularies import DEFAULT_VOCABULARY, VocabularyConfig
from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig

logger = logging.getLogger(__name__)

STORE_FORMAT = "msd-piece-store"
# Bump when the log-mel front end, the tokenizer's EventIndex or this layout changes.
STORE_VERSION = 1
STORE_DIR = "store"
STORE_NAME = "store.json"
MANIFEST_NAME = "manifest.json"  # the dataset folder's manifest (embedded and prepared alike)
SHARD_BYTES = 256 << 20  # log-mel bytes after which a shard is closed
# Array name -> (dtype, trailing shape given the features).
ARRAYS = ("log_mel", "frame_index", "events", "state_events")
# Per-piece columns of store.json: offsets and lengths into its shard's arrays.
_COLUMNS = ("shard", "frame_offset", "num_frames", "event_offset", "num_events",
            "state_offset", "num_state_events")


class StoreError(ValueError):
    """A piece store that cannot be used; the message names the file and how to rebuild it."""


def rebuild_command(data_dir: str) -> str:
    return f"msd-build-store {data_dir}"


def store_dir(data_dir: str, dataset: DatasetSpec, *, vocab: VocabularyConfig = DEFAULT_VOCABULARY,
              features: FeatureConfig = DEFAULT_FEATURES) -> str:
    """Where the store of ``dataset`` with these settings lives under ``data_dir``."""
    return os.path.join(os.path.abspath(data_dir), STORE_DIR,
                        f"v{STORE_VERSION}-{_settings_key(dataset, vocab, features)}")


def _settings(dataset: DatasetSpec, vocab: VocabularyConfig, features: FeatureConfig) -> dict:
    return {"dataset": dataset.name, "vocab": repr(vocab), "features": repr(features),
            "slakh_programs": dataset.slakh_programs}


def _settings_key(dataset: DatasetSpec, vocab: VocabularyConfig, features: FeatureConfig) -> str:
    text = repr(sorted(_settings(dataset, vocab, features).items()))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _manifest_sha256(data_dir: str) -> str | None:
    path = os.path.join(data_dir, MANIFEST_NAME)
    if not os.path.isfile(path):
        return None  # a DatasetSpec listing pieces some other way
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _file_stamp(path: str) -> list[int]:
    stat = os.stat(path)
    return [stat.st_size, stat.st_mtime_ns]


def _relative(data_dir: str, path: str) -> str:
    return os.path.relpath(path, data_dir)


@dataclasses.dataclass(frozen=True)
class _ShardFile:
    """One array file of a shard as store.json describes it."""

    file: str
    shape: tuple[int, ...]
    dtype: str
    bytes: int

    @classmethod
    def describe(cls, path: str) -> _ShardFile:
        array = np.load(path, mmap_mode="r")
        return cls(os.path.basename(path), tuple(array.shape), array.dtype.str,
                   os.path.getsize(path))

    def to_json(self) -> dict:
        return {"file": self.file, "shape": list(self.shape), "dtype": self.dtype,
                "bytes": self.bytes}


class PieceStore:
    """An opened store: the piece table in memory, the shards memory-mapped on first use.

    Pickles as paths and the table only (no array data), so worker processes reopen the maps.
    """

    def __init__(self, directory: str, data: dict, *, data_dir: str):
        self.directory = directory
        self.data_dir = data_dir
        self.path = os.path.join(directory, STORE_NAME)
        try:
            self.shards = [{name: _ShardFile(s[name]["file"], tuple(s[name]["shape"]),
                                             s[name]["dtype"], int(s[name]["bytes"]))
                            for name in ARRAYS} for s in data["shards"]]
            pieces = data["pieces"]
            self.ids = [str(p["id"]) for p in pieces]
            self.splits = [str(p["split"]) for p in pieces]
            table = np.array([[int(p[c]) for c in _COLUMNS] for p in pieces], np.int64)
            self.sources = [(p["midi"], p["audio"]) for p in pieces]
        except (KeyError, TypeError, ValueError) as e:
            raise self._error(f"malformed ({type(e).__name__}: {e})") from e
        self.table = table.reshape(len(pieces), len(_COLUMNS))
        self.rows = {piece_id: row for row, piece_id in enumerate(self.ids)}
        self.manifest_sha256 = data.get("manifest_sha256")
        self._maps: dict[int, dict[str, np.ndarray]] = {}
        self._check_table()

    def _error(self, problem: str, path: str | None = None) -> StoreError:
        return StoreError(f"{path or self.path}: {problem}; rebuild it with "
                          f"`{rebuild_command(self.data_dir)}`")

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_maps"] = {}
        return state

    def column(self, name: str) -> np.ndarray:  # [num_pieces] int64
        return self.table[:, _COLUMNS.index(name)]

    def _check_table(self) -> None:
        """Every shard file exists with the size store.json gives; every piece lies inside."""
        for shard in self.shards:
            for name, described in shard.items():
                path = os.path.join(self.directory, described.file)
                if not os.path.isfile(path):
                    raise self._error("shard file missing", path)
                size = os.path.getsize(path)
                if size != described.bytes:
                    raise self._error(f"truncated or replaced shard file ({size} bytes; "
                                      f"{STORE_NAME} expects {described.bytes})", path)
        if len(self.rows) != len(self.ids):
            raise self._error("lists a piece id twice")
        shard = self.column("shard")
        if len(shard) and (shard.min() < 0 or shard.max() >= len(self.shards)):
            raise self._error(f"a piece names a shard outside 0..{len(self.shards) - 1}")
        for array, offset, length in (("log_mel", "frame_offset", "num_frames"),
                                      ("events", "event_offset", "num_events"),
                                      ("state_events", "state_offset", "num_state_events")):
            sizes = np.array([s[array].shape[0] for s in self.shards], np.int64)
            start, count = self.column(offset), self.column(length)
            bad = np.flatnonzero((start < 0) | (count < 0) | (start + count > sizes[shard])
                                 | ((count < 1) if array == "log_mel" else False))
            if bad.size:
                row = int(bad[0])
                raise self._error(
                    f"piece {self.ids[row]}'s {array} [{start[row]}, {start[row] + count[row]}) "
                    f"lies outside its shard's {sizes[shard[row]]} rows")

    def _arrays(self, shard: int) -> dict[str, np.ndarray]:
        if shard not in self._maps:
            arrays = {}
            for name, described in self.shards[shard].items():
                path = os.path.join(self.directory, described.file)
                try:
                    array = np.load(path, mmap_mode="r")
                except (OSError, ValueError) as e:
                    raise self._error(f"unreadable shard file ({e})", path) from e
                if tuple(array.shape) != described.shape or array.dtype.str != described.dtype:
                    raise self._error(
                        f"shard file holds {array.dtype.str} {list(array.shape)}; {STORE_NAME} "
                        f"says {described.dtype} {list(described.shape)}", path)
                # A plain ndarray view of the map: np.memmap's Python-level indexing is slow.
                arrays[name] = array.view(np.ndarray)
            self._maps[shard] = arrays
        return self._maps[shard]

    def num_frames(self, rows: Sequence[int]) -> np.ndarray:  # [len(rows)] int64
        return self.column("num_frames")[np.asarray(rows, np.int64)]

    def piece(self, row: int) -> Piece:
        """Piece ``row`` as views into the memory maps (nothing is read until sliced)."""
        shard, f0, nf, e0, ne, s0, ns = (int(v) for v in self.table[row])
        arrays = self._arrays(shard)
        frame_index = arrays["frame_index"][f0:f0 + nf]  # [frames, 3]
        index = EventIndex(
            events=arrays["events"][e0:e0 + ne],
            event_start_indices=frame_index[:, 0],
            event_end_indices=frame_index[:, 1],
            state_events=arrays["state_events"][s0:s0 + ns],
            state_event_indices=frame_index[:, 2],
            num_frames=nf,
        )
        return Piece(id=self.ids[row], log_mel=arrays["log_mel"][f0:f0 + nf], index=index)

    def rows_of(self, refs: Sequence[PieceRef]) -> list[int]:
        """Table rows of ``refs``; StoreError if the store lacks any of them."""
        missing = [ref.id for ref in refs if ref.id not in self.rows]
        if missing:
            raise self._error(f"lacks pieces {missing[:5]} of the dataset ({len(missing)} in "
                              "all): it is older than the dataset's pieces")
        return [self.rows[ref.id] for ref in refs]


def _read_store(directory: str, data_dir: str, settings: dict) -> PieceStore:
    path = os.path.join(directory, STORE_NAME)
    data = file_io.read_json_object(
        path, StoreError, what="store index",
        missing=f"no piece store here; build it with `{rebuild_command(data_dir)}`")
    if data.get("format") != STORE_FORMAT or data.get("version") != STORE_VERSION:
        raise StoreError(f"{path}: format {data.get('format')!r} version "
                         f"{data.get('version')!r}, not {STORE_FORMAT!r} version "
                         f"{STORE_VERSION}; rebuild it with `{rebuild_command(data_dir)}`")
    if data.get("settings") != settings:
        raise StoreError(f"{path}: built for {data.get('settings')}, not {settings}; rebuild "
                         f"it with `{rebuild_command(data_dir)}`")
    return PieceStore(directory, data, data_dir=data_dir)


def open_store(
    data_dir: str,
    dataset: DatasetSpec,
    *,
    vocab: VocabularyConfig = DEFAULT_VOCABULARY,
    features: FeatureConfig = DEFAULT_FEATURES,
    build_missing: bool = True,
    progress: bool = True,
) -> PieceStore:
    """The store of ``dataset`` in ``data_dir``: reads store.json and checks its shard files.

    Args:
      build_missing: when there is no store.json yet (a folder made before the store existed),
        build it now (``build_store``, with a progress bar) instead of raising StoreError.

    Raises:
      StoreError: missing or truncated shards, a store.json that disagrees with them or with
        the settings, or one built for another version of the folder's manifest.json.
    """
    data_dir = os.path.abspath(data_dir)
    directory = store_dir(data_dir, dataset, vocab=vocab, features=features)
    if build_missing and not os.path.exists(os.path.join(directory, STORE_NAME)):
        logger.info("%s: no piece store yet; building it once (later runs open it directly)",
                    data_dir)
        return build_store(data_dir, dataset, vocab=vocab, features=features, progress=progress)
    store = _read_store(directory, data_dir, _settings(dataset, vocab, features))
    sha = _manifest_sha256(data_dir)
    if sha is not None and store.manifest_sha256 != sha:
        raise StoreError(f"{store.path}: built for another version of "
                         f"{os.path.join(data_dir, MANIFEST_NAME)}; rebuild it with "
                         f"`{rebuild_command(data_dir)}`")
    return store


# ---------------------------------------------------------------------------------------------
# Building.


class _ShardWriter:
    """Appends pieces to the current shard; writes a shard's four files when it is full."""

    def __init__(self, directory: str, build: str):
        self.directory, self.build = directory, build
        self.shards: list[dict[str, _ShardFile]] = []
        self._parts: dict[str, list[np.ndarray]] = {name: [] for name in ARRAYS}
        self._sizes = dict.fromkeys(ARRAYS, 0)

    def add(self, piece: Piece) -> dict[str, int]:
        """Appends ``piece``; returns its shard and offsets (the store.json columns)."""
        index = piece.index
        if index.num_frames != piece.log_mel.shape[0] or piece.log_mel.shape[0] < 1:
            raise StoreError(f"piece {piece.id}: {piece.log_mel.shape[0]} log-mel frames but an "
                             f"EventIndex of {index.num_frames} frames")
        frame_index = np.stack([index.event_start_indices, index.event_end_indices,
                                index.state_event_indices], axis=1).astype(np.int32)
        arrays = {"log_mel": np.asarray(piece.log_mel, np.float32), "frame_index": frame_index,
                  "events": np.asarray(index.events, np.int32),
                  "state_events": np.asarray(index.state_events, np.int32)}
        entry = {"shard": len(self.shards),
                 "frame_offset": self._sizes["log_mel"], "num_frames": len(arrays["log_mel"]),
                 "event_offset": self._sizes["events"], "num_events": len(arrays["events"]),
                 "state_offset": self._sizes["state_events"],
                 "num_state_events": len(arrays["state_events"])}
        for name, array in arrays.items():
            self._parts[name].append(array)
            self._sizes[name] += len(array)
        if self._sizes["log_mel"] * piece.log_mel.shape[1] * 4 >= SHARD_BYTES:
            self.flush()
        return entry

    def flush(self) -> None:
        if not self._parts["log_mel"]:
            return
        shard = {}
        for name in ARRAYS:
            array = np.concatenate(self._parts[name])
            path = os.path.join(self.directory, f"{self.build}-{len(self.shards):05d}.{name}.npy")
            file_io.write_file_atomic(path, lambda f, a=array: np.save(f, a))
            shard[name] = _ShardFile.describe(path)
        self.shards.append(shard)
        self._parts = {name: [] for name in ARRAYS}
        self._sizes = dict.fromkeys(ARRAYS, 0)


def _compute(args: tuple[PieceRef, DatasetSpec, VocabularyConfig, FeatureConfig]) -> Piece:
    """compute_piece in a worker process; any problem with the files becomes a StoreError."""
    ref, dataset, vocab, features = args
    try:
        piece = dataset_specs.compute_piece(ref, dataset, vocab=vocab, features=features)
    except (OSError, ValueError) as e:
        raise StoreError(f"piece {ref.id} ({ref.audio_path}, {ref.midi_path}): {e}") from e
    return piece


def _previous(directory: str, data_dir: str, settings: dict) -> PieceStore | None:
    if not os.path.exists(os.path.join(directory, STORE_NAME)):
        return None
    try:
        store = _read_store(directory, data_dir, settings)
        for shard in range(len(store.shards)):
            store._arrays(shard)  # every header checked before any piece is copied
        return store
    except StoreError as e:
        logger.warning("not reusing the previous store: %s", e)
        return None


def build_store(
    data_dir: str,
    dataset: DatasetSpec,
    *,
    vocab: VocabularyConfig = DEFAULT_VOCABULARY,
    features: FeatureConfig = DEFAULT_FEATURES,
    num_workers: int = 1,
    progress: bool = True,
    reuse: bool = True,
) -> PieceStore:
    """Builds (or brings up to date) the store of every piece of ``dataset`` in ``data_dir``.

    Args:
      num_workers: processes computing log-mels and note indexes; 1 works in this process.
      progress: show a tqdm progress bar.
      reuse: copy pieces of the previous store whose MIDI and audio files (path, size,
        modification time) are unchanged instead of computing them again. A damaged previous
        store is never reused.

    Returns:
      The opened store. If the previous one already holds exactly these pieces, from these
      files, for this manifest.json, it is returned unchanged.
    """
    from tqdm.auto import tqdm

    data_dir = os.path.abspath(data_dir)
    directory = store_dir(data_dir, dataset, vocab=vocab, features=features)
    settings = _settings(dataset, vocab, features)
    refs = [(ref, split) for split in dataset.splits for ref in dataset.pieces(data_dir, split)]
    entries = []
    for ref, split in refs:
        try:
            sources = ([_relative(data_dir, ref.midi_path), *_file_stamp(ref.midi_path)],
                       [_relative(data_dir, ref.audio_path), *_file_stamp(ref.audio_path)])
        except OSError as e:
            raise StoreError(f"piece {ref.id}: {e}; is {data_dir} complete?") from e
        entries.append({"id": ref.id, "split": split, "midi": sources[0], "audio": sources[1]})
    ids = [e["id"] for e in entries]
    if len(set(ids)) != len(ids):
        raise StoreError(f"{data_dir}: several pieces share an id; check its manifest")
    manifest_sha = _manifest_sha256(data_dir)
    previous = _previous(directory, data_dir, settings) if reuse else None
    if previous is not None:
        unchanged = (previous.manifest_sha256 == manifest_sha and previous.ids == ids
                     and previous.splits == [e["split"] for e in entries]
                     and previous.sources == [(e["midi"], e["audio"]) for e in entries])
        if unchanged:
            return previous
    reusable = {}
    if previous is not None:
        for entry in entries:
            row = previous.rows.get(entry["id"])
            if row is not None and previous.sources[row] == (entry["midi"], entry["audio"]):
                reusable[entry["id"]] = row
    pending = [(ref, dataset, vocab, features) for ref, _ in refs if ref.id not in reusable]

    os.makedirs(directory, exist_ok=True)
    writer = _ShardWriter(directory, f"b{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}")
    executor = None
    if num_workers > 1 and len(pending) > 1:
        # spawn, not fork: the caller may already run JAX or TensorFlow threads.
        executor = concurrent.futures.ProcessPoolExecutor(
            min(num_workers, len(pending)), mp_context=multiprocessing.get_context("spawn"))
    computed: Iterator[Piece] = (executor.map(_compute, pending) if executor
                                 else map(_compute, pending))
    bar = tqdm(total=len(refs), disable=not progress, unit="piece",
               desc=f"piece store {dataset.name}")
    bar.set_postfix(reused=len(reusable))
    try:
        for entry in entries:
            row = reusable.get(entry["id"])
            piece = previous.piece(row) if row is not None else next(computed)
            entry.update(writer.add(piece))
            bar.update(1)
        writer.flush()
    finally:
        bar.close()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    payload = {
        "format": STORE_FORMAT, "version": STORE_VERSION, "settings": settings,
        "manifest_sha256": manifest_sha, "num_pieces": len(entries),
        "num_frames": int(sum(e["num_frames"] for e in entries)),
        "shards": [{name: f.to_json() for name, f in shard.items()} for shard in writer.shards],
        "pieces": [{k: e[k] for k in ("id", "split", *_COLUMNS, "midi", "audio")}
                   for e in entries],
    }
    file_io.write_json_atomic(os.path.join(directory, STORE_NAME), payload)
    if previous is not None:  # its shards are no longer referenced (open maps stay readable)
        kept = {f.file for shard in writer.shards for f in shard.values()}
        for shard in previous.shards:
            for described in shard.values():
                if described.file not in kept:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(os.path.join(directory, described.file))
    logger.info("%s: piece store of %d pieces (%d reused, %d computed) in %s", data_dir,
                len(entries), len(reusable), len(pending), directory)
    return _read_store(directory, data_dir, settings)


def folder_dataset(data_dir: str) -> DatasetSpec:
    """The dataset spec of a folder built by msd-make-dataset or msd-prepare-dataset."""
    from music_spectrogram_diffusion.data import embedded_dataset, prepare

    path = os.path.join(os.path.abspath(data_dir), MANIFEST_NAME)
    data = file_io.read_json_object(
        path, StoreError, what="manifest",
        missing="no dataset manifest here; is this a folder made by msd-make-dataset or "
                "msd-prepare-dataset?")
    if data.get("format") == prepare.PREPARED_FORMAT:
        from music_spectrogram_diffusion.data.sources import registry

        return registry.DATASET_SPECS[prepare.load_prepared_manifest(data_dir).dataset]
    embedded_dataset.load_manifest(data_dir)  # checks that it is one
    return dataset_specs.EMBEDDED
