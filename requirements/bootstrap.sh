#!/usr/bin/env bash
# The two tools every environment is built with, found or installed on a fresh
# machine, and the venvs built from the hash-locked requirements:
#   requirements/bootstrap.sh uv                 prints the uv command
#   requirements/bootstrap.sh python             prints a Python 3.10 interpreter
#   requirements/bootstrap.sh venv <dir> <lock>  creates <dir> and syncs it to <lock>
# Messages go to stderr; a failure ends with one line that says what to do.
set -euo pipefail
cd "$(dirname "$0")/.."

# uv where it is not installed: `pip install --target` into this folder. It works
# where the system Python is "externally managed" (PEP 668), which refuses
# `pip install uv` into itself, and needs no venv module.
UV_DIR=.cache/uv

fail() { echo "$*" >&2; exit 1; }

find_uv() {
  if command -v uv >/dev/null 2>&1; then echo uv; return; fi
  if python3 -m uv --version >/dev/null 2>&1; then echo "python3 -m uv"; return; fi
  if [ -x "$UV_DIR/bin/uv" ]; then echo "$UV_DIR/bin/uv"; return; fi
  command -v python3 >/dev/null 2>&1 || fail "uv is needed and there is no python3 to install it with: install uv (https://docs.astral.sh/uv/getting-started/installation/) and rerun"
  echo "uv is not installed: installing it into $UV_DIR" >&2
  python3 -m pip install --quiet --disable-pip-version-check --target "$UV_DIR" uv >&2 \
    || fail "could not install uv with python3 -m pip: install uv (pipx install uv, or https://docs.astral.sh/uv/getting-started/installation/) and rerun"
  echo "$UV_DIR/bin/uv"
}

# Python 3.10 (TFX 1.16's newest): from PATH, pyenv's versions, uv's managed
# Pythons, else downloaded by uv.
find_python() {
  local uv candidate
  if command -v python3.10 >/dev/null 2>&1 && python3.10 --version >/dev/null 2>&1; then
    command -v python3.10; return
  fi
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.10*/bin/python3.10; do
    if [ -x "$candidate" ]; then echo "$candidate"; return; fi
  done
  uv=$(find_uv)
  if $uv python find 3.10 2>/dev/null; then return; fi
  echo "Python 3.10 not found: installing it with uv" >&2
  $uv python install 3.10 >&2 && $uv python find 3.10 \
    || fail "Python 3.10 is needed and uv could not download it: install it (pyenv install 3.10.13, or your system's python3.10 package) and rerun"
}

case "${1:-}" in
  uv) find_uv ;;
  python) find_python ;;
  venv)
    [ $# -eq 3 ] || fail "usage: $0 venv <dir> <lock>"
    uv=$(find_uv)
    if [ ! -x "$2/bin/python" ]; then
      python=$(find_python)
      $uv venv --python "$python" "$2"
    fi
    # pip comes from the lock: TFX installs module-file wheels with `python -m pip`.
    # Bytecode is compiled once here: without it every process that imports
    # TFX compiles TensorFlow's and TFX's sources again (35 s instead of 12 s
    # per `import tfx.v1` on 2 cores) wherever PYTHONDONTWRITEBYTECODE is set
    # or site-packages is read-only, and pays it once per fresh venv elsewhere.
    $uv pip sync --compile-bytecode --python "$2/bin/python" "$3"
    ;;
  *) fail "usage: $0 uv | python | venv <dir> <lock>" ;;
esac
