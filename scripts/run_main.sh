#!/usr/bin/env bash
# The main job: set up ./.venv if needed, then run `msd-main` (arguments are passed through).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
exec "$root/.venv/bin/msd-main" "$@"
