#!/usr/bin/env bash
# The test command: sets up ./.venv if needed, then runs the whole suite on the CPU.
source "$(dirname "$0")/env.sh"
# The optional ONNX export's packages too: its test converts a model and runs it in onnxruntime.
bash scripts/install_onnx.sh
# The optional demo page's packages, and chromium + chromium-driver (apt-get, as root) for its
# browser test (skipped with the reason where no browser can be installed).
bash scripts/install_demo.sh
# Two workers by default (SEGNODE_TEST_WORKERS=0 runs in one process); a test file runs whole
# on one worker (tests/conftest.py groups the files that share the tiny training run), so that
# the fixtures they share are built once.
# Lint, import order and formatting first (pyproject.toml [tool.ruff]; a second, no tests).
ruff check . && ruff format --check . || { echo "[segnode-jax] ruff: fix the above (ruff check --fix . && ruff format .)" >&2; exit 1; }
# Types (pyproject.toml [tool.pyright]; the tree is clean, so any error fails).
basedpyright || { echo "[segnode-jax] basedpyright: fix the type errors above" >&2; exit 1; }
workers="${SEGNODE_TEST_WORKERS:-2}"
if [ "$workers" = "0" ]; then exec python -m pytest tests "$@"; fi
exec python -m pytest -n "$workers" --dist loadfile tests "$@"
