"""`pip install .` gives a working package: every imported distribution is declared in setup.py
(or is one of the --no-deps packages with its install command), gin files ship as package data,
and a missing --no-deps package is one message naming the command that installs it.

The installed wheel itself is exercised by scripts/check_wheel.sh (a CI step of .ci/run): it
builds the wheel, installs it into a fresh venv and runs msd-tokenize, msd-make-dataset and a
2-step msd-train from a folder outside the repository.
"""

import ast
import importlib.metadata
import os
import re
import sys

import pytest

import music_spectrogram_diffusion
from music_spectrogram_diffusion import dependencies, gin_config

REPO = os.path.dirname(os.path.dirname(__file__))
PACKAGE = os.path.dirname(music_spectrogram_diffusion.__file__)


def _setup_lists() -> tuple[list[str], dict[str, list[str]]]:
    """setup.py's _CORE and _EXTRAS, read without running setup()."""
    with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    values = {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
              if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
              and node.targets[0].id in ("_CORE", "_EXTRAS")}
    return values["_CORE"], values["_EXTRAS"]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imported_modules() -> set[str]:
    modules = set()
    for folder, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    tree = ast.parse(f.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        modules.update(alias.name.split(".")[0] for alias in node.names)
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"music_spectrogram_diffusion"}


def test_every_imported_distribution_is_declared():
    core, extras = _setup_lists()
    declared = {_name(r) for r in core} | {_name(r) for group in extras.values() for r in group}
    no_deps = {_name(p.requirement) for p in dependencies.NO_DEPS_PACKAGES}
    providers = importlib.metadata.packages_distributions()
    undeclared = {}
    for module in sorted(_imported_modules()):
        names = {_name(d) for d in providers.get(module, [module])}
        if not names & (declared | no_deps):
            undeclared[module] = sorted(names)
    assert not undeclared, f"imported but not in setup.py: {undeclared}"
    # The --no-deps packages stay out of install_requires (pip cannot resolve their pins).
    assert not no_deps & declared


def test_gin_files_are_package_data():
    with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as f:
        text = f.read()
    assert '"music_spectrogram_diffusion.gin": "gin"' in text
    # In a checkout, gin/ lies beside the package; the wheel puts it inside (check_wheel.sh).
    assert gin_config.gin_root() == os.path.abspath(REPO)
    assert os.path.isfile(os.path.join(gin_config.gin_root(), "gin", "train.gin"))


def test_no_deps_command_lists_pinned_requirements(capsys):
    assert dependencies.main() == 0
    lines = capsys.readouterr().out.split()
    assert lines == [p.requirement for p in dependencies.NO_DEPS_PACKAGES]
    assert all(re.fullmatch(r"[\w-]+==[\d.]+", line) for line in lines)


def test_missing_tinysoundfont_names_the_install_command(tmp_path, capsys, monkeypatch):
    from music_spectrogram_diffusion.cli import make_dataset

    monkeypatch.setitem(sys.modules, "tinysoundfont", None)  # import raises ImportError
    assert make_dataset.main(["--out", str(tmp_path / "ds"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        "msd-make-dataset: error: tinysoundfont is not installed; it is needed for rendering MIDI")
    assert "Install it with: pip install --no-deps tinysoundfont==0.3.7" in err
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("module", [p.module for p in dependencies.NO_DEPS_PACKAGES])
def test_require_names_the_package_and_the_command(module, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(dependencies.MissingDependencyError,
                       match=re.escape(dependencies.install_command(module))):
        dependencies.require(module)
