"""One command-line style for every console script: t5x's snake_case flags with the dashed
spelling as an alias, one-line usage errors with exit status 2."""

import importlib
import os
import re

import pytest

from music_spectrogram_diffusion.cli import flags

REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def _console_scripts() -> dict[str, str]:
    with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as f:
        return dict(re.findall(r'"(msd-[\w-]+)=([\w.]+):main"', f.read()))


SCRIPTS = _console_scripts()


def test_every_console_script_is_checked():
    assert {"msd-train", "msd-tokenize", "msd-evaluate", "msd-synthesize"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_flags_are_snake_case_with_dashed_aliases(script):
    parser = importlib.import_module(SCRIPTS[script])._parser()
    assert isinstance(parser, flags.ArgumentParser) and parser.prog == script
    for action in parser._actions:
        names = [o for o in action.option_strings if o.startswith("--")]
        if not names or names == ["--help"]:
            continue
        first = names[0][2:]
        assert "-" not in first, f"{script}: {names[0]} is not snake_case"
        assert action.dest == first.replace(".", "_")
        if "_" in first:
            assert "--" + first.replace("_", "-") in names, f"{script}: {names} lacks the alias"


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_usage_errors_are_one_line_with_status_2(script, capsys):
    module = importlib.import_module(SCRIPTS[script])
    with pytest.raises(SystemExit) as info:
        module.main(["--no_such_flag"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{script}: error: "), err
    assert f"(see {script} --help)" in err


def test_flag_names_rewrites_fields_not_flags():
    names = {"num_steps": "--steps", "max_midi_seconds": "--max_seconds"}
    assert flags.flag_names("SamplerConfig.num_steps must be > 0; raise max_midi_seconds; "
                            "--steps stays; num_steps_x stays", names) == (
        "--steps must be > 0; raise --max_seconds; --steps stays; num_steps_x stays")
