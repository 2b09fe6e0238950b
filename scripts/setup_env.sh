#!/usr/bin/env bash
# Creates ./.venv if missing and installs the project into it (idempotent).
# Sourced by scripts/run_main.sh and scripts/run_tests.sh; safe to run by hand:
#   bash scripts/setup_env.sh
# Re-installs only when setup.py, requirements/constraints.txt or this script change.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MSD_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating virtual environment in $venv"
  "$python" -m venv "$venv"
fi

stamp="$venv/.msd-setup-stamp"
want="$(cat "$root/setup.py" "$root/requirements/constraints.txt" "$root/scripts/setup_env.sh" \
  "$root/music_spectrogram_diffusion/dependencies.py" | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

echo "[setup] installing (first time takes about 4 minutes and 4 GB)"
pip=("$venv/bin/python" -m pip)
"${pip[@]}" install -q --upgrade pip
"${pip[@]}" install -q -c "$root/requirements/constraints.txt" -e "$root[eval,test]"
# Wheels whose metadata pins versions that cannot co-exist with this stack (deps-report.md):
# basic-pitch pins tensorflow<2.15.1, musicnn pins numpy<1.17, tinysoundfont wants PyAudio
# (live playback only). Their code runs with the stack above; the pinned list is
# music_spectrogram_diffusion/dependencies.py (the same command works for an installed wheel).
mapfile -t no_deps < <("$venv/bin/python" -m music_spectrogram_diffusion.dependencies)
"${pip[@]}" install -q --no-deps "${no_deps[@]}"
echo "$want" > "$stamp"
echo "[setup] done"
