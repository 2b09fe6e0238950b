"""The gin flags every gin-configured command takes (t5x conventions), in one place.

    --gin_file=FILE            repeatable; later files override earlier ones
    --gin_search_paths=A,B     extra directories searched for gin files and includes
    --gin.NAME=VALUE           a binding applied after the files (also ``--gin.NAME VALUE``)
    --gin_bindings='NAME = V'  the same, t5x's long form (repeatable)

Strings are gin literals and need their quotes: ``--gin.MODEL_DIR="'/tmp/run'"``. Files and
includes are found through ``gin_config.search_paths`` (the working directory, then the shipped
``gin/`` folder's parent, then ``--gin_search_paths``).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence

from music_spectrogram_diffusion import gin_config

GIN_FLAGS_HELP = """gin flags (t5x conventions):
  --gin_file=FILE            gin config file (repeatable; later files override earlier)
  --gin_search_paths=A,B     extra directories searched for gin files and includes
  --gin.NAME=VALUE           bind NAME after the files; also '--gin.NAME VALUE'
  --gin_bindings='NAME = V'  the same, t5x's long form (repeatable)
strings need gin quotes: --gin.MODEL_DIR="'/tmp/run'"
"""


def add_gin_flags(parser: argparse.ArgumentParser, *, required_macros: Sequence[str] = ()
                  ) -> None:
    """Adds --gin_file / --gin_search_paths / --gin_bindings and the help text for all forms."""
    parser.add_argument("--gin_file", "--gin-file", action="append", default=[],
                        metavar="FILE",
                        help="gin config file (repeatable; later files override earlier)")
    parser.add_argument("--gin_search_paths", "--gin-search-paths", action="append", default=[],
                        metavar="A,B",
                        help="comma-separated directories searched for gin files and includes")
    parser.add_argument("--gin_bindings", "--gin-bindings", action="append", default=[],
                        metavar="'NAME = V'",
                        help="a gin binding (repeatable); same as --gin.NAME=V")
    required = ""
    if required_macros:
        required = "required macros: " + ", ".join(required_macros) + "\n"
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = GIN_FLAGS_HELP + required + (parser.epilog or "")


def split_gin_bindings(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(other arguments, bindings): ``--gin.A.b=v`` and ``--gin.A.b v`` become ``A.b = v``.

    Raises:
      GinConfigError: a ``--gin.NAME`` flag without a value.
    """
    rest: list[str] = []
    bindings: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--gin.") and arg != "--gin.":
            name, sep, value = arg[len("--gin."):].partition("=")
            if not sep:
                if i + 1 >= len(args) or args[i + 1].startswith("--"):
                    raise gin_config.GinConfigError(
                        f"{arg}: missing value (use --gin.{name}=VALUE)")
                i += 1
                value = args[i]
            bindings.append(f"{name} = {value}")
        else:
            rest.append(arg)
        i += 1
    return rest, bindings


def parse_flags(parser: argparse.ArgumentParser, argv: Sequence[str]
                ) -> tuple[argparse.Namespace, list[str]]:
    """Parses ``argv`` with ``parser`` (which has ``add_gin_flags``); returns (flags, bindings).

    Exits 2 with argparse's one-line message on a bad flag.
    """
    try:
        rest, bindings = split_gin_bindings(argv)
    except gin_config.GinConfigError as e:
        parser.error(str(e))
    flags = parser.parse_args(rest)
    return flags, list(flags.gin_bindings) + bindings


def parse_gin_flags(flags: argparse.Namespace, bindings: Sequence[str], *,
                    macro_hints: Mapping[str, str] | None = None) -> str:
    """Parses the flags' gin files and bindings (``gin_config.parse_gin``); returns config_str.

    Raises:
      GinConfigError: one line naming the file, binding or macro at fault.
    """
    if not flags.gin_file:
        raise gin_config.GinConfigError("give at least one --gin_file (e.g. gin/train.gin)")
    search_paths = [p for group in flags.gin_search_paths for p in group.split(",") if p]
    return gin_config.parse_gin(flags.gin_file, bindings, extra_search_paths=search_paths,
                                macro_hints=macro_hints)
