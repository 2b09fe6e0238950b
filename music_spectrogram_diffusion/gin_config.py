"""The gin-config loader: the one way this codebase parses gin files (t5x conventions).

Every command that takes gin files (``msd-train``, ``msd-train-vocoder``) and the main job
(``jobs/``) parse through ``parse_gin``, so they share one search-path rule:

  1. the current working directory;
  2. the directory that holds the shipped ``gin/`` folder (``gin_root()``), so that
     ``--gin_file=gin/train.gin`` and ``include 'gin/models/...'`` work from any directory;
  3. the caller's ``--gin_search_paths``.

Apart from ``cli/`` and ``jobs/``, this is the only module that imports gin: models are saved as
``model.json`` (``models/registry.py``) and rebuilt without gin. Runs written before
``model.json`` existed hold only ``config.gin``; ``legacy_model_json`` converts one by parsing it
in a separate Python process (``python -m music_spectrogram_diffusion.gin_config model-json
CONFIG``), so the caller's own gin configuration is never touched.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import music_spectrogram_diffusion

MODEL_MACRO = "MODEL"
_REQUIRED_RE = re.compile(r"^(\w+) = %gin\.REQUIRED\s*$", re.M)
_added_search_paths: set[str] = set()


class GinConfigError(ValueError):
    """A gin file or binding that does not parse or build; one line naming the problem."""


def gin_root() -> str:
    """The directory holding the shipped ``gin/`` folder (gin paths are relative to it)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(music_spectrogram_diffusion.__file__)))


def search_paths(extra: Sequence[str] = ()) -> list[str]:
    """The gin search paths in order (see the module docstring)."""
    paths = [os.getcwd(), gin_root(), *extra]
    return list(dict.fromkeys(os.path.abspath(p) for p in paths))


def first_line(error: BaseException) -> str:
    """The first lines of an exception's message (gin's messages run over several)."""
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split("\n")[:3])


def parse_gin(files: Sequence[str], bindings: Sequence[str] = (), *,
              extra_search_paths: Sequence[str] = (), clear: bool = True) -> str:
    """Parses gin files, then bindings, after the search paths are set; returns config_str().

    Args:
      files: gin files (absolute, or relative to a search path).
      bindings: ``NAME = VALUE`` lines applied after the files.
      extra_search_paths: the caller's additional search paths.
      clear: start from an empty config (what a command does); the config is not finalized.

    Raises:
      GinConfigError: a missing file, bad syntax, an unknown configurable, or a required macro
        (``%gin.REQUIRED``) left unset.
    """
    import gin

    if clear:
        gin.clear_config()
    for path in search_paths(extra_search_paths):
        if path not in _added_search_paths:
            gin.add_config_file_search_path(path)
            _added_search_paths.add(path)
    try:
        gin.parse_config_files_and_bindings(list(files), list(bindings), finalize_config=False)
    except (ValueError, KeyError, NameError, TypeError, OSError, SyntaxError,
            ImportError) as e:
        raise GinConfigError(first_line(e)) from e
    text = gin.config_str()
    missing = _REQUIRED_RE.findall(text)
    if missing:
        raise GinConfigError(f"required macro(s) not set: {', '.join(missing)} (add e.g. "
                             f"--gin.{missing[0]}=...)")
    return text


def build_macro(name: str) -> Any:
    """What the macro ``%name`` of the parsed config builds (e.g. the MODEL object)."""
    import gin

    try:
        reference = gin.query_parameter(f"%{name}")
    except ValueError as e:
        raise GinConfigError(f"the config defines no {name} macro") from e
    if not hasattr(reference, "scoped_configurable_fn"):
        return reference
    try:
        return reference.scoped_configurable_fn()
    except Exception as e:  # a config's __post_init__ rejecting a value, a bad binding
        raise GinConfigError(f"building {name} failed ({type(e).__name__}: {first_line(e)})"
                             ) from e


def model_json_from_config_file(config_path: str) -> dict[str, Any]:
    """model.json's payload for the MODEL a saved config.gin builds (parses in this process)."""
    from music_spectrogram_diffusion.models import registry

    if not os.path.isfile(config_path):
        raise GinConfigError(f"{config_path}: missing")
    try:
        parse_gin([os.path.abspath(config_path)])
    except GinConfigError as e:
        raise GinConfigError(f"{config_path}: cannot be parsed ({e})") from e
    try:
        model = build_macro(MODEL_MACRO)
    except GinConfigError as e:
        raise GinConfigError(f"{config_path}: {e}") from e
    try:
        return registry.model_to_json(model)
    except registry.ModelConfigError as e:
        raise GinConfigError(f"{config_path}: {e}") from e


def legacy_model_json(config_path: str) -> dict[str, Any]:
    """Converts a run's config.gin to model.json's payload in a separate process.

    Raises:
      GinConfigError: the conversion failed; the message is the converter's one line.
    """
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"),
               TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-m", "music_spectrogram_diffusion.gin_config", "model-json",
         os.path.abspath(config_path)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise GinConfigError(lines[-1] if lines else f"{config_path}: conversion failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] != "model-json":
        print("usage: python -m music_spectrogram_diffusion.gin_config model-json CONFIG_GIN",
              file=sys.stderr)
        return 2
    try:
        payload = model_json_from_config_file(args[1])
    except GinConfigError as e:
        print(str(e), file=sys.stderr)
        return 1
    print(json.dumps(payload, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
