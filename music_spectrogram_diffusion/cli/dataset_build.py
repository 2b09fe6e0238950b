"""What msd-make-dataset and msd-prepare-dataset share: running one dataset build and reporting it.

Both commands build a dataset folder, print its manifest's summary and the time taken, and turn
the build's own errors (bad input, an unusable release) into one message and exit status 2
instead of a traceback (STYLE §13). One copy keeps their messages and exit codes in step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

from music_spectrogram_diffusion.cli import flags


class _Summarized(Protocol):
    def summary(self) -> str: ...


ManifestT = TypeVar("ManifestT", bound=_Summarized)


def build_and_report(
    prog: str, build: Callable[[], ManifestT], errors: tuple[type[Exception], ...],
    flag_names: Mapping[str, str] | None = None,
) -> ManifestT | None:
    """Runs ``build`` with INFO logging, then prints the manifest's summary and the time taken.

    Args:
        prog: the command's name, which starts the error message.
        build: builds the dataset and returns its manifest.
        errors: the exceptions that mean bad input; their message already names the file and
            the problem, so only it is printed. Any other exception is a bug and propagates.
        flag_names: {argument name: flag} for the messages (``flags.flag_names``).

    Returns:
        The manifest, or None after printing "<prog>: error: <message>" to stderr when ``build``
        raised one of ``errors`` (the caller then exits 2).
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    try:
        manifest = build()
    except errors as e:
        flags.fail(prog, e, flag_names)
        return None
    print(manifest.summary())
    print(f"Done in {time.perf_counter() - start:.1f} s.")
    return manifest
