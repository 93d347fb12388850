#!/usr/bin/env bash
# The optional demo page into ./.venv (requirements-demo.txt: Gradio, and Selenium for its test),
# and a headless browser for tests/test_demo.py: Debian's chromium + chromium-driver, installed
# with apt-get where this user may (root on a fresh CI machine); elsewhere the browser test is
# skipped with the reason, and `sudo apt-get install chromium chromium-driver` enables it.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
demo_req="$root/requirements-demo.txt"
demo_stamp="$venv/.demo.sha"
demo_want="$(cat "$root/requirements.txt" "$demo_req" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$demo_stamp" 2>/dev/null)" != "$demo_want" ]; then
  echo "[segnode-jax] installing the demo packages into $venv ..." >&2
  # -c requirements.txt: the core pins win (pip refuses rather than downgrading one).
  python -m pip install -q -r "$demo_req" -c "$root/requirements.txt"
  echo "$demo_want" > "$demo_stamp"
fi
if ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[segnode-jax] installing chromium + chromium-driver (apt-get) for the demo's browser test ..." >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver; } >/dev/null 2>&1 \
      || echo "[segnode-jax] note: apt-get could not install chromium; the demo's browser test will be skipped" >&2
  else
    echo "[segnode-jax] note: no chromedriver; the demo's browser test will be skipped (sudo apt-get install chromium chromium-driver)" >&2
  fi
fi
