#!/usr/bin/env bash
# Create .venv with Python >= 3.12 (PyMC 6 and ArviZ 1 need it) and install bayesmix with its test extras.
# Idempotent: a second run only re-checks the install.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
    local candidates=("${PYTHON:-}" python3.12 python3.13 python3)
    for version_dir in /root/.pyenv/versions/3.1[2-9]* "$HOME"/.pyenv/versions/3.1[2-9]* /usr/local/bin /usr/bin; do
        [ -x "$version_dir/bin/python" ] && candidates+=("$version_dir/bin/python")
    done
    for py in "${candidates[@]}"; do
        [ -n "$py" ] || continue
        command -v "$py" >/dev/null 2>&1 || [ -x "$py" ] || continue
        if "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
            echo "$py"; return 0
        fi
    done
    echo "bayesmix needs Python >= 3.12 (set PYTHON=/path/to/python3.12)" >&2
    return 1
}

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)'; then
    rm -rf .venv
    "$(find_python)" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
