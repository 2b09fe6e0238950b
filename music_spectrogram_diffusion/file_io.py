"""Atomic file writes (a temporary file next to the destination, then ``os.replace``) and the
checked JSON read that goes with them.

Every writer of results, manifests and records uses these, so an interrupted run never leaves a
half-written file where a finished one is expected (and an existing file stays untouched).
``atomic_directory`` does the same for a whole directory (an imported MODEL_DIR).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any, Callable

# mkstemp creates 0o600 files; finished files get the usual rw-r--r--.
_FILE_MODE = 0o644


def read_json_object(path: str, error: Callable[[str], Exception], *, what: str = "file",
                     missing: str = "not found") -> dict[str, Any]:
    """The JSON object in ``path``; any problem raises ``error("<path>: <problem>")``.

    Args:
      path: the file.
      error: the caller's error class (one message naming the file, as every reader gives).
      what: what the file is, for the message ("manifest", "model config").
      missing: the message when the file does not exist (e.g. how to make one).
    """
    if not os.path.isfile(path):
        raise error(f"{path}: {missing}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: unreadable {what} ({e})") from e
    if not isinstance(data, dict):
        raise error(f"{path}: the {what} must be a JSON object, got {type(data).__name__}")
    return data


def write_file_atomic(path: str, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Writes through ``write(file)`` into a temporary file next to ``path``, then renames it.

    The destination directory is created if needed. On any error the temporary file is removed
    and ``path`` is left as it was.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, temp_path = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.",
                                     suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
        os.chmod(temp_path, _FILE_MODE)
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically."""
    write_file_atomic(path, lambda f: f.write(data))


def write_json_atomic(path: str, payload: Any, *, sort_keys: bool = False) -> None:
    """Writes ``payload`` as indented JSON (with a final newline) to ``path`` atomically."""
    text = json.dumps(payload, indent=1, sort_keys=sort_keys) + "\n"
    write_file_atomic(path, lambda f: f.write(text), mode="w")


def output_dir_problem(path: str) -> str | None:
    """Why ``path`` cannot be (or be created as) a directory, or None if it can.

    A file at ``path`` or at one of its parents is the problem; ``os.makedirs`` would raise a
    bare NotADirectoryError or FileExistsError for it.
    """
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        return "exists and is a file, not a directory"
    parent = os.path.dirname(path)
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent) if os.path.dirname(parent) != parent else ""
    if parent and not os.path.isdir(parent):
        return f"{parent} is a file, not a directory"
    return None


def _temp_path_for(path: str) -> str:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, temp_path = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.",
                                     suffix=".tmp")
    os.close(fd)
    return temp_path


@contextlib.contextmanager
def atomic_file_set() -> Iterator[Callable[[str], str]]:
    """Several files that appear together or not at all.

    Yields ``temp_for(path) -> temporary path``: write each output to its temporary path. On a
    clean exit every temporary is renamed to its destination; if anything fails (a write, or a
    rename), the temporaries and the outputs already renamed are removed, and the error is
    raised. ::

        with atomic_file_set() as temp_for:
            audio_io.write_wav(temp_for("a.wav"), audio, 16000)
            np.save(temp_for("a.npy"), mel)
    """
    temps: dict[str, str] = {}

    def temp_for(path: str) -> str:
        if path not in temps:
            temps[path] = _temp_path_for(path)
        return temps[path]

    renamed: list[str] = []
    try:
        yield temp_for
        for final, temp in temps.items():
            os.chmod(temp, _FILE_MODE)
            os.replace(temp, final)
            renamed.append(final)
    except BaseException:
        for final in renamed:
            os.remove(final)
        for temp in temps.values():
            if os.path.exists(temp):
                os.remove(temp)
        raise


@contextlib.contextmanager
def atomic_directory(path: str) -> Iterator[str]:
    """A directory that appears complete or not at all.

    Yields a temporary sibling directory (``.<name>.<random>.tmp``) to fill; on a clean exit it
    is renamed to ``path``, on any error (KeyboardInterrupt included) it is removed and the
    error raised. ``path`` must not exist, or be an empty directory (which is replaced). A
    process killed outright can leave the hidden sibling behind, never a partial ``path``.

    Raises:
      FileExistsError: ``path`` exists and is not an empty directory.
    """
    path = os.path.abspath(path)

    def check_free() -> None:
        if os.path.lexists(path) and not (os.path.isdir(path) and not os.listdir(path)):
            raise FileExistsError(f"{path}: already exists and is not an empty directory")

    check_free()
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    temp_dir = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        yield temp_dir
        check_free()
        os.chmod(temp_dir, 0o755)
        if os.path.isdir(path):
            os.rmdir(path)
        os.rename(temp_dir, path)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
