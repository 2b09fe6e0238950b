#!/usr/bin/env bash
# Checks that `pip install` of the wheel gives a working package, outside the checkout:
#   bash scripts/check_wheel.sh
# Builds the wheel, installs it into a fresh venv (with requirements/constraints.txt; about
# 4 GB, most of the few minutes this takes), and from a
# folder outside the repository runs msd-tokenize, msd-make-dataset (first without tinysoundfont:
# one message naming its install command), then the documented --no-deps install, a 3-piece
# dataset and a 2-step msd-train of the tiny model. A run must log no ERROR line. Run by .ci/run
# after the tests; prints the time it took.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$SECONDS
step() { echo "[wheel $((SECONDS - start)) s] $*"; }
fail() { echo "[wheel] FAILED: $*" >&2; exit 1; }

step "building the wheel"
# From a copy of the files git knows, so that setuptools' build/ and *.egg-info stay out of the
# checkout and nothing untracked slips into the wheel.
mkdir "$work/src"
(cd "$root" && git ls-files -z --cached --others --exclude-standard \
  | xargs -0 tar --ignore-failed-read -cf - --) | tar -xf - -C "$work/src"
"$python" -m pip wheel -q --no-deps --no-build-isolation -w "$work/dist" "$work/src" >/dev/null
step "installing it into a fresh venv"
"$python" -m venv "$work/venv"
venv_python="$work/venv/bin/python"
# --no-compile: byte-compiling TensorFlow's thousands of modules is most of pip's time here.
"$venv_python" -m pip install -qq --no-compile -c "$root/requirements/constraints.txt" \
  "$work/dist/"*.whl
bin="$work/venv/bin"

mkdir "$work/outside"
cd "$work/outside"
export TF_CPP_MIN_LOG_LEVEL=2 JAX_PLATFORMS=cpu PYTHONNOUSERSITE=1
unset PYTHONPATH
"$venv_python" -c "import music_spectrogram_diffusion as m, os; \
assert '$work/venv' in m.__file__, m.__file__; \
assert os.path.isfile(os.path.join(os.path.dirname(m.__file__), 'gin', 'train.gin'))"

step "msd-tokenize"
"$venv_python" -c "from music_spectrogram_diffusion.testing import midi_fixtures as f; \
open('song.mid', 'wb').write(f.make_midi_bytes(f.worked_example_notes()))"
tokens="$("$bin/msd-tokenize" song.mid)"
[ "$tokens" = '{"segments": [{"start_seconds": 0.0, "tokens": [1134, 13, 1135, 1133, 1064, 1299, 53, 1132, 1064, 1]}]}' ] \
  || fail "msd-tokenize printed $tokens"

step "msd-make-dataset without tinysoundfont"
set +e
"$bin/msd-make-dataset" --out data --quiet 2>err.txt
rc=$?
set -e
[ "$rc" -eq 2 ] && grep -q "pip install --no-deps tinysoundfont==" err.txt \
  || fail "msd-make-dataset without tinysoundfont: exit $rc, $(cat err.txt)"

step "the --no-deps install and a 3-piece dataset"
mapfile -t no_deps < <("$venv_python" -m music_spectrogram_diffusion.dependencies)
"$venv_python" -m pip install -qq --no-compile --no-deps "${no_deps[@]}"
"$bin/msd-make-dataset" --out data --num_pieces 3 --seed 0 --max_piece_seconds 12 \
  --num_workers 1 --quiet >/dev/null

step "a 2-step msd-train of the tiny model"
"$bin/msd-train" --gin_file=gin/models/diffusion/tiny.gin --gin_file=gin/tasks/embedded.gin \
  --gin_file=gin/train.gin --gin.MODEL_DIR="'run'" --gin.DATA_DIR="'data'" \
  --gin.TRAIN_STEPS=2 --gin.BATCH_SIZE=2 --gin.EVAL_STEPS=1 \
  --gin.trainer.train.eval_images=False >train.out 2>train.err \
  || fail "msd-train: $(tail -5 train.err)"
grep -q "msd-train: done at step 2" train.out || fail "msd-train printed $(cat train.out)"
if grep -E "^[0-9-]+ [0-9:,]+ ERROR|Traceback" train.err; then
  fail "msd-train logged errors"
fi
[ -f run/config.gin ] && [ -f run/model.json ] || fail "run/ lacks config.gin or model.json"
step "passed: the installed wheel works from $(pwd)"
cd /
rm -rf "$work"
trap - EXIT
step "done (venv removed)"
