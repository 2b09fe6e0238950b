"""The gin-config loader: the one way this codebase parses gin files (t5x conventions).

Every command that takes gin files (``msd-train``, ``msd-train-vocoder``) and the main job
(``jobs/``) parse through ``parse_gin``, so they share one search-path rule:

  1. the current working directory;
  2. the directory that holds the shipped ``gin/`` folder (``gin_root()``: the installed package,
     or the checkout), so that
     ``--gin_file=gin/train.gin`` and ``include 'gin/models/...'`` work from any directory;
  3. the caller's ``--gin_search_paths``.

Apart from ``cli/`` and ``jobs/``, this is the only module that imports gin: models are saved as
``model.json`` (``models/registry.py``) and rebuilt without gin. Runs written before
``model.json`` existed hold only ``config.gin``; ``legacy_model_json`` converts one by parsing it
in a separate Python process (``python -m music_spectrogram_diffusion.gin_config model-json
CONFIG``), so the caller's own gin configuration is never touched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import music_spectrogram_diffusion

MODEL_MACRO = "MODEL"
_REQUIRED_RE = re.compile(r"^(\w+) = %gin\.REQUIRED\s*$", re.M)
_MACRO_USE_RE = re.compile(r"%(\w+)\b(?!\.)")
_MACRO_DEFINITION_RE = re.compile(r"^(\w+) = ", re.M)
_added_search_paths: set[str] = set()


class GinConfigError(ValueError):
    """A gin file or binding that does not parse or build; one line naming the problem."""


def gin_root() -> str:
    """The directory holding the shipped ``gin/`` folder (gin paths are relative to it).

    An installed wheel carries it as package data (``music_spectrogram_diffusion/gin``, see
    setup.py); in a checkout it is ``gin/`` beside the package.
    """
    package = os.path.dirname(os.path.abspath(music_spectrogram_diffusion.__file__))
    if os.path.isfile(os.path.join(package, "gin", "train.gin")):
        return package
    return os.path.dirname(package)


def search_paths(extra: Sequence[str] = ()) -> list[str]:
    """The gin search paths in order (see the module docstring)."""
    paths = [os.getcwd(), gin_root(), *extra]
    return list(dict.fromkeys(os.path.abspath(p) for p in paths))


def first_line(error: BaseException) -> str:
    """The first lines of an exception's message on one line (gin's messages run over several)."""
    text = str(error).strip() or type(error).__name__
    return " ".join(" ".join(text.split("\n")[:3]).split())


class _DropGinLogging(logging.Filter):
    """Drops the records gin logs on the root logger while it looks for files: it tries every
    search path as a Python package too and logs ``ERROR root: Path not found`` for each miss."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not os.path.abspath(record.pathname).startswith(_gin_package_dir())


def _gin_package_dir() -> str:
    import gin

    return os.path.dirname(os.path.abspath(gin.__file__)) + os.sep


@contextlib.contextmanager
def _quiet_gin_file_search():
    root = logging.getLogger()
    quiet = _DropGinLogging()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def _binding_error(binding: str, error: Exception) -> GinConfigError:
    """One line naming the binding; a bare word where a value belongs gets the quoting hint."""
    name, _, value = (part.strip() for part in binding.partition("="))
    message = f"binding '{binding}': {first_line(error)}"
    if "Unable to parse value" in str(error) and value and value[0] not in "'\"":
        message += (f"; strings need gin quotes: --gin.{name}=\"'{value}'\" "
                    f"(or --gin_bindings=\"{name} = '{value}'\")")
    return GinConfigError(message)


def undefined_macros(config_text: str) -> list[str]:
    """Macros the config uses (``%NAME``) but never defines (``NAME = ...``), sorted."""
    used = set(_MACRO_USE_RE.findall(config_text))
    defined = set(_MACRO_DEFINITION_RE.findall(config_text))
    return sorted(used - defined)


def parse_gin(files: Sequence[str], bindings: Sequence[str] = (), *,
              extra_search_paths: Sequence[str] = (), clear: bool = True,
              macro_hints: Mapping[str, str] | None = None) -> str:
    """Parses gin files, then bindings, after the search paths are set; returns config_str().

    Args:
      files: gin files (absolute, or relative to a search path).
      bindings: ``NAME = VALUE`` lines applied after the files.
      extra_search_paths: the caller's additional search paths.
      clear: start from an empty config (what a command does); the config is not finalized.
      macro_hints: {macro: where it usually comes from} for the macros the caller needs; one of
        them used but not defined by any file or binding is an error naming the hint (e.g.
        ``MODEL``: "a model gin file, e.g. --gin_file=gin/models/diffusion/tiny.gin").

    Raises:
      GinConfigError: a missing file, bad syntax (naming the binding), an unknown configurable,
        a required macro (``%gin.REQUIRED``) left unset, or a hinted macro used but undefined.
    """
    import gin

    if clear:
        gin.clear_config()
    for path in search_paths(extra_search_paths):
        if path not in _added_search_paths:
            gin.add_config_file_search_path(path)
            _added_search_paths.add(path)
    errors = (ValueError, KeyError, NameError, TypeError, OSError, SyntaxError, ImportError)
    with _quiet_gin_file_search():
        try:
            gin.parse_config_files_and_bindings(list(files), None, finalize_config=False)
        except errors as e:
            raise GinConfigError(first_line(e)) from e
        for binding in bindings:
            try:
                gin.parse_config(binding)
            except errors as e:
                raise _binding_error(binding, e) from e
    text = gin.config_str()
    missing = _REQUIRED_RE.findall(text)
    if missing:
        raise GinConfigError(f"required macro(s) not set: {', '.join(missing)} (add e.g. "
                             f"--gin.{missing[0]}=...)")
    undefined: dict[str, list[str]] = {}  # hint -> the undefined macros it defines
    for name in undefined_macros(text):
        if name in (macro_hints or {}):
            undefined.setdefault(macro_hints[name], []).append(name)
    if undefined:
        raise GinConfigError("; ".join(
            f"{' and '.join(names)} {'is' if len(names) == 1 else 'are'} not defined: add {hint}"
            for hint, names in undefined.items()))
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
