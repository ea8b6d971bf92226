#!/usr/bin/env bash
# The README's main command: set-up (idempotent), then the end-to-end demo on a real video (vtest.avi):
# bag -> live node (lite CPU backends) -> recorded results -> demo_out/overlay.mp4, contact_sheet.png, summary.
# Extra arguments go to the demo (python -m reasonvos_ros.demo --help).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/setup.sh
# shellcheck source=tools/env.sh
source tools/env.sh
python -m reasonvos_ros.demo "$@"
