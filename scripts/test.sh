#!/usr/bin/env bash
# Set up (if needed) and run the test suite (slow tests excluded; add `-m slow` to run only those).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/python -m pytest "$@"
