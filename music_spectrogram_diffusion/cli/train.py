"""msd-train: train a model with gin configs, t5x style.

    msd-train --gin_file=gin/models/diffusion_context/tiny.gin \\
              --gin_file=gin/tasks/context_embedded.gin --gin_file=gin/train.gin \\
              --gin.MODEL_DIR="'/tmp/msd_run'" --gin.TRAIN_STEPS=1000

Flags follow t5x: repeated ``--gin_file``, ``--gin_search_paths`` (comma-separated; the current
directory and the repository root are always searched, so ``include 'gin/...'`` works from
anywhere), and ``--gin.NAME=VALUE`` bindings applied after the files. The script parses flags
and gin, then calls ``training.trainer.train`` as configured (train.gin binds it). Re-running
the same command resumes from the newest checkpoint in MODEL_DIR. Exits 2 with one message on
a bad gin file or binding, 1 on a data or training error.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys

import music_spectrogram_diffusion

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(music_spectrogram_diffusion.__file__)))


def parse_flags(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """(flags, gin bindings): ``--gin.A.b=v`` and ``--gin.A.b v`` become ``A.b = v``."""
    parser = argparse.ArgumentParser(prog="msd-train", description=__doc__.split("\n")[0])
    parser.add_argument("--gin_file", action="append", default=[],
                        help="gin config file (repeatable; later files override earlier)")
    parser.add_argument("--gin_search_paths", action="append", default=[],
                        help="comma-separated directories searched for gin files and includes")
    parser.add_argument("--gin_bindings", action="append", default=[],
                        help="a gin binding 'NAME = VALUE' (repeatable)")
    bindings: list[str] = []
    rest: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--gin.") and arg != "--gin.":
            name, sep, value = arg[len("--gin."):].partition("=")
            if not sep:
                if i + 1 >= len(args):
                    parser.error(f"{arg}: missing value (use --gin.NAME=VALUE)")
                i += 1
                value = args[i]
            bindings.append(f"{name} = {value}")
        else:
            rest.append(arg)
        i += 1
    flags = parser.parse_args(rest)
    return flags, flags.gin_bindings + bindings


def main(argv: list[str] | None = None) -> int:
    import gin

    flags, bindings = parse_flags(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every file it writes
    if not flags.gin_file:
        print("msd-train: error: give at least one --gin_file (e.g. gin/train.gin)", file=sys.stderr)
        return 2
    search_paths = [p for group in flags.gin_search_paths for p in group.split(",") if p]
    for path in [os.getcwd(), REPO_ROOT, *search_paths]:
        gin.add_config_file_search_path(path)
    try:
        gin.parse_config_files_and_bindings(flags.gin_file, bindings, finalize_config=False)
        from music_spectrogram_diffusion.training import trainer

        train_fn = gin.get_configurable(trainer.train)
        config_text = gin.config_str()
        missing = re.findall(r"^(\w+) = %gin\.REQUIRED\s*$", config_text, flags=re.M)
        if missing:
            raise ValueError(f"required macro(s) not set: {', '.join(missing)} (add e.g. "
                             f"--gin.{missing[0]}=...)")
    except (ValueError, KeyError, NameError, TypeError, OSError, SyntaxError) as e:
        # gin reports unknown names, bad syntax and missing files with these; one message.
        print(f"msd-train: error in gin config: {_first_line(e)}", file=sys.stderr)
        return 2
    return _run(train_fn, config_text)


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split("\n")[:3])


def _run(train_fn, config_text: str) -> int:
    from music_spectrogram_diffusion.data.embedded_dataset import DatasetError
    from music_spectrogram_diffusion.training.trainer import NonFiniteLossError

    try:
        result = train_fn(config_text=config_text)
    except (DatasetError, NonFiniteLossError) as e:
        print(f"msd-train: error: {_first_line(e)}", file=sys.stderr)
        return 1
    except ValueError as e:
        # Bad configuration values (validated configs, missing REQUIRED macros) end up here.
        if "gin" in str(e).lower() or "REQUIRED" in str(e) or "valid" in str(e):
            print(f"msd-train: error in gin config: {_first_line(e)}", file=sys.stderr)
            return 2
        raise
    state = "stopped by SIGTERM" if result.stopped_by_signal else "done"
    loss = result.metrics.get("loss")
    print(f"msd-train: {state} at step {result.step}; loss {loss}; checkpoints in "
          f"{result.model_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
