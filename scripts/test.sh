#!/usr/bin/env bash
# One command: install, then run the whole test suite. pytest's exit code 5 (no tests ran) is a failure here.
source "$(dirname "$0")/common.sh"
set +e
"$PY" -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "no tests were collected: that is a failure, not a pass" >&2
  exit 1
fi
exit "$rc"
