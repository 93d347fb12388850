#!/usr/bin/env bash
# The optional ONNX export (python -m segnode_jax.export --format onnx) into ./.venv: onnx,
# onnxruntime and jax2onnx's other needs from requirements-onnx.txt, then jax2onnx itself
# without its declared dependencies. Why: jax2onnx 0.17.1 (the newest) declares
# orbax-checkpoint<0.11.37 although its conversion does not use orbax, and this project pins
# orbax-checkpoint 0.12.8; with its dependencies pip would downgrade orbax (or refuse).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
onnx_req="$root/requirements-onnx.txt"
onnx_stamp="$venv/.onnx.sha"
onnx_want="$(cat "$onnx_req" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$onnx_stamp" 2>/dev/null)" != "$onnx_want" ]; then
  echo "[segnode-jax] installing the ONNX export packages into $venv ..." >&2
  python -m pip install -q -r "$onnx_req"
  python -m pip install -q --no-deps "$(grep -E '^# no-deps: ' "$onnx_req" | sed 's/^# no-deps: //')"
  echo "$onnx_want" > "$onnx_stamp"
fi
