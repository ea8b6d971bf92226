#!/usr/bin/env bash
# The README's test command: set-up (idempotent), then lint, format check and the default test suite.
#   bash tools/test.sh            # default suite (well under 15 minutes on 2 cores)
#   bash tools/test.sh -m slow    # extra arguments go to pytest (here: the slow suite only)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/setup.sh
# shellcheck source=tools/env.sh
source tools/env.sh
# Tests and their ROS processes must not join other runs' DDS traffic: each run gets its own log folder and
# localhost-only discovery; test/rosutil.py picks a free ROS_DOMAIN_ID per test process.
export ROS_LOG_DIR="$(mktemp -d -t reasonvos-ros-log.XXXXXX)"
echo "==> ruff check + format check"
ruff check .
ruff format --check .
echo "==> golden checks (reasonvos golden, every vendored case)"
python -m reasonvos_ros.cli golden test/golden_data/cases/*
echo "==> pytest"
python -m pytest "$@"
