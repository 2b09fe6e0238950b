"""The one command-line style of every ``msd-*`` command.

* Flags are t5x's snake_case (``--max_seconds``); the dashed spelling (``--max-seconds``) is
  accepted as an alias, so ``add_argument("--max_seconds", "--max-seconds", ...)``.
* Every bad input (a bad flag, a missing or corrupt file, a bad gin binding) exits with
  status 2 after one line on stderr, ``PROG: error: what is wrong, and the fix``; no traceback.
* Messages name the flag the user typed, not the library field it sets (``--steps``, not
  ``SamplerConfig.num_steps``): ``flag_names`` rewrites library errors with the command's table.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from typing import NoReturn

from music_spectrogram_diffusion import gin_config

EXIT_BAD_INPUT = 2


def one_line(error: BaseException | str) -> str:
    """An error's message on one line (the first three of gin's and XLA's longer ones)."""
    return gin_config.first_line(error)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line: ``PROG: error: MESSAGE (see PROG --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {one_line(message)} "
                                  f"(see {self.prog} --help)\n")


def fail(prog: str, error: BaseException | str, flags: Mapping[str, str] | None = None) -> int:
    """Prints ``PROG: error: MESSAGE`` (one line, field names as flags) and returns 2."""
    message = one_line(error)
    if flags:
        message = flag_names(message, flags)
    print(f"{prog}: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def flag_names(message: str, flags: Mapping[str, str]) -> str:
    """``message`` with each library field name (``SamplerConfig.num_steps`` or ``num_steps``)
    replaced by its flag from ``flags`` ({field: flag}), longest names first."""
    for field in sorted(flags, key=len, reverse=True):
        qualified = r"(?:\b[A-Z]\w*\.)?" if "." not in field else ""
        message = re.sub(r"(?<![-\w.])" + qualified + re.escape(field) + r"\b", flags[field],
                         message)
    return message
