#!/usr/bin/env bash
# The test command: pytest over test/ inside the loopback-only namespace.
# usage: tools/run_tests.sh PYTHON MARK_EXPRESSION [pytest args...]
set -euo pipefail
py="$1"; marks="$2"; shift 2
here="$(cd "$(dirname "$0")" && pwd)"
exec "$here/loopback_only.sh" "$py" -m pytest -m "$marks" "$@"
