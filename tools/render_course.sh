#!/usr/bin/env bash
# The instructor's reference run: tools/render_course.sh DATA_DIR OUT_DIR [--cpu] [--notebooks 01 04]
# executes every course notebook with papermill on DATA_DIR and renders it to OUT_DIR/*.html.
# All options: python tools/render_course.py --help (docs/instructors.md explains the run).
set -euo pipefail
exec "${PYTHON:-python}" "$(dirname "$0")/render_course.py" "$@"
