#!/usr/bin/env bash
# The test command: sets up ./.venv if needed, then runs the whole suite on the CPU.
source "$(dirname "$0")/env.sh"
# Two workers by default (SEGNODE_TEST_WORKERS=0 runs in one process); a test file runs whole
# on one worker (tests/conftest.py groups the files that share the tiny training run), so that
# the fixtures they share are built once.
workers="${SEGNODE_TEST_WORKERS:-2}"
if [ "$workers" = "0" ]; then exec python -m pytest tests "$@"; fi
exec python -m pytest -n "$workers" --dist loadfile tests "$@"
