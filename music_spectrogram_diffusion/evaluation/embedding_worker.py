"""A long-lived child process that loads one embedding model and serves embedding requests.

Why a separate process: musicnn calls ``tf.compat.v1.disable_eager_execution()`` and needs
``TF_USE_LEGACY_KERAS=1``, both process-wide switches that would break any other TensorFlow
(seqio, TF-Hub models) in the evaluating process; and TensorFlow grabs accelerator memory that
JAX needs. The child is started with ``python -m`` (not multiprocessing), so it never re-imports
the caller's ``__main__`` and works the same from scripts, notebooks and pytest.

Protocol: each message is an 8-byte big-endian length followed by a pickle. The parent writes
requests to the child's stdin; the child answers on a private duplicate of its original stdout
and points its own stdout at stderr, so stray prints from model libraries cannot corrupt the
channel. The child's stderr goes to a log file whose tail is quoted if the child dies.

    parent -> child: ("init", "module:factory", kwargs)   child -> parent: ("ready", dim)
    parent -> child: ("embed", audio [N] float32)          child -> parent: ("ok", [frames, dim])
    parent -> child: ("close",)                            child exits with status 0
    any failure inside the child                           child -> parent: ("error", message)
"""

from __future__ import annotations

import importlib
import os
import pickle
import select
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, BinaryIO

_HEADER = struct.Struct(">Q")
_LOG_TAIL_LINES = 15


class WorkerError(RuntimeError):
    """The worker process failed to start, died, timed out, or reported an error."""


def _write_message(stream: BinaryIO, message: Any) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def _read_message_blocking(stream: BinaryIO) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("parent closed the channel")
    (length,) = _HEADER.unpack(header)
    return pickle.loads(stream.read(length))


class WorkerProcess:
    """Parent-side handle of one worker; ``request`` is synchronous and thread-unsafe.

    Args:
      name: used in error messages ("musicnn embedding worker").
      factory: "package.module:callable" that builds the backend inside the child. The backend
        must have an ``embed(audio) -> np.ndarray`` method and a ``dim`` attribute.
      factory_kwargs: picklable keyword arguments of the factory.
      env: extra environment variables of the child (added to a copy of os.environ).
      startup_timeout: seconds allowed for importing and loading the model.
      call_timeout: seconds allowed per request; None waits forever.
    """

    def __init__(
        self,
        name: str,
        factory: str,
        factory_kwargs: dict[str, Any],
        *,
        env: dict[str, str] | None = None,
        startup_timeout: float = 300.0,
        call_timeout: float | None = 600.0,
    ):
        self.name = name
        self.call_timeout = call_timeout
        child_env = dict(os.environ)
        child_env.update(env or {})
        log_fd, self.log_path = tempfile.mkstemp(prefix="msd-embedder-", suffix=".log")
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_fd,
                env=child_env,
            )
        finally:
            os.close(log_fd)
        self._closed = False
        self._keep_log = False
        try:
            self.dim = int(self.request(("init", factory, factory_kwargs), timeout=startup_timeout))
        except BaseException:
            self.close()  # A child that could not load its model is of no use; stop it.
            raise

    @property
    def pid(self) -> int:
        return self._process.pid

    def is_alive(self) -> bool:
        return not self._closed and self._process.poll() is None

    def request(self, message: tuple, *, timeout: float | None = None) -> Any:
        """Sends one request and returns the child's answer; raises WorkerError on failure."""
        if self._closed:
            raise WorkerError(f"{self.name} has been closed")
        if self._process.poll() is not None:
            self._fail("is not running")
        try:
            _write_message(self._process.stdin, message)
        except (BrokenPipeError, OSError):
            self._fail("stopped accepting requests")
        deadline = None
        if timeout is None:
            timeout = self.call_timeout
        if timeout is not None:
            deadline = time.monotonic() + timeout
        header = self._read_exact(_HEADER.size, deadline)
        (length,) = _HEADER.unpack(header)
        status, payload = pickle.loads(self._read_exact(length, deadline))
        if status == "error":
            raise WorkerError(f"{self.name} failed: {payload}")
        return payload

    def _read_exact(self, num_bytes: int, deadline: float | None) -> bytes:
        fd = self._process.stdout.fileno()
        data = bytearray()
        while len(data) < num_bytes:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                self._kill()
                self._fail("timed out and was stopped")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue  # The loop re-checks the deadline.
            chunk = os.read(fd, min(num_bytes - len(data), 1 << 20))
            if not chunk:
                try:
                    self._process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._kill()
                self._fail("exited unexpectedly")
            data += chunk
        return bytes(data)

    def _fail(self, what: str) -> None:
        self._keep_log = True  # The error message points at it.
        code = self._process.poll()
        status = f"exit status {code}" if code is not None else "still running"
        raise WorkerError(
            f"{self.name} (pid {self.pid}) {what} ({status}). Last lines of its log "
            f"{self.log_path}:\n{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            return "(log unavailable)"
        return "\n".join(lines[-_LOG_TAIL_LINES:]) or "(log is empty)"

    def _kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def close(self, timeout: float = 10.0) -> None:
        """Asks the child to exit (killing it after ``timeout`` s); keeps its log if it failed."""
        if self._closed:
            return
        self._closed = True
        if self._process.poll() is None:
            try:
                _write_message(self._process.stdin, ("close",))
                self._process.wait(timeout=timeout)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                self._kill()
        for stream in (self._process.stdin, self._process.stdout):
            stream.close()
        if not self._keep_log:
            try:
                os.remove(self.log_path)
            except OSError:
                pass

    def __del__(self) -> None:
        # Last resort only: callers should close() or use the embedder as a context manager.
        if not getattr(self, "_closed", True):
            self._kill()


def _load_factory(path: str):
    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def _serve(requests: BinaryIO, replies: BinaryIO) -> int:
    backend = None
    while True:
        try:
            message = _read_message_blocking(requests)
        except EOFError:
            return 0  # The parent went away; nothing left to serve.
        kind = message[0]
        if kind == "close":
            return 0
        try:
            if kind == "init":
                _, factory, kwargs = message
                backend = _load_factory(factory)(**kwargs)
                _write_message(replies, ("ready", int(backend.dim)))
            elif kind == "embed":
                if backend is None:
                    raise RuntimeError("embed requested before init")
                _write_message(replies, ("ok", backend.embed(message[1])))
            else:
                raise RuntimeError(f"unknown request {kind!r}")
        except Exception as e:  # Report to the parent instead of dying.
            traceback.print_exc()
            _write_message(replies, ("error", f"{type(e).__name__}: {e}"))


def main() -> int:
    """Child entry point: protocol on stdin/private stdout, stray prints go to stderr."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    requests = os.fdopen(os.dup(sys.stdin.fileno()), "rb")
    return _serve(requests, replies)


if __name__ == "__main__":
    sys.exit(main())
