"""The runtime packages pip cannot install from their own metadata, and how to install them.

Their metadata pins versions that cannot live beside this stack (basic-pitch wants
tensorflow<2.15.1, musicnn numpy<1.17, tinysoundfont PyAudio for live playback only), yet their
code runs with it. So they are installed with ``pip install --no-deps`` at the versions below,
after ``pip install music-spectrogram-diffusion[eval]`` has brought in what they do use:

    pip install --no-deps $(python -m music_spectrogram_diffusion.dependencies)

``scripts/setup_env.sh`` runs exactly that. Code that needs one of them imports it through
``require``, which turns a missing package into one message naming this command.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from types import ModuleType


@dataclasses.dataclass(frozen=True)
class NoDepsPackage:
    """A distribution installed with ``--no-deps`` and the module it provides."""

    module: str
    requirement: str  # what pip installs, pinned
    needed_for: str


NO_DEPS_PACKAGES = (
    NoDepsPackage("tinysoundfont", "tinysoundfont==0.3.7",
                  "rendering MIDI to audio (msd-make-dataset, msd-main)"),
    NoDepsPackage("basic_pitch", "basic-pitch==0.4.0",
                  "the transcription F1 columns (msd-evaluate, msd-main)"),
    NoDepsPackage("musicnn", "musicnn==0.1.0", "the musicnn embedder (msd-evaluate, msd-main)"),
)
_BY_MODULE = {package.module: package for package in NO_DEPS_PACKAGES}


class MissingDependencyError(ImportError):
    """A --no-deps package that is not installed; the message says how to install it."""


def install_command(module: str) -> str:
    return f"pip install --no-deps {_BY_MODULE[module].requirement}"


def require(module: str) -> ModuleType:
    """Imports one of NO_DEPS_PACKAGES' modules.

    Raises:
      MissingDependencyError: it is not installed (names the pip command).
    """
    package = _BY_MODULE[module]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{package.requirement.split('==')[0]} is not installed; it is needed for "
            f"{package.needed_for}. Install it with: {install_command(module)} (pip cannot "
            f"resolve its own pins; scripts/setup_env.sh does this in a checkout)") from e


def main() -> int:
    """Prints the pinned --no-deps requirements, one a line (for ``pip install --no-deps``)."""
    print("\n".join(package.requirement for package in NO_DEPS_PACKAGES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
