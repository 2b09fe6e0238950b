#!/usr/bin/env bash
# The test suite: set up ./.venv if needed, then run pytest (extra arguments go to pytest).
# Default run excludes tests marked slow; add `-m slow` for those.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
exec "$root/.venv/bin/python" -m pytest -n 2 --durations=15 "$@"
