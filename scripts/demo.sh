#!/usr/bin/env bash
# Set up (if needed) and run the demo: fit sleepstudy with lmer and print lme4's summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/python examples/demo.py "$@"
