"""Executes a notebook in place, so that it is committed with its outputs.

    python scripts/run_notebook.py notebooks/synthesize_midi.ipynb

Runs every cell with the notebook's own parameters (its first code cell) in a temporary working
directory, so outputs cannot depend on where it is run from, then writes the notebook back with
its outputs. tests/notebooks/ runs the same notebooks on their own tiny checkpoints.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile


def main(argv: list[str] | None = None) -> int:
    import nbformat
    from nbclient import NotebookClient

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebook", help="the .ipynb file to execute and rewrite")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per cell")
    args = parser.parse_args(argv)
    os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")
    notebook = nbformat.read(args.notebook, as_version=4)
    with tempfile.TemporaryDirectory() as cwd:
        NotebookClient(notebook, kernel_name="python3", timeout=args.timeout,
                       resources={"metadata": {"path": cwd}}).execute()
    nbformat.write(notebook, args.notebook)
    print(f"executed and wrote {args.notebook}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
