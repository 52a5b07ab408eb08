#!/usr/bin/env bash
# One command: install, then capture two runs of an example job (the second with a known fault) and attribute.
source "$(dirname "$0")/common.sh"
exec "$PY" jobs/demo.py "$@"
