# Sourced by scripts/test.sh and scripts/main.sh: make sure ./.venv exists with requirements installed.
# Python: 3.11 (what `python3` is on our machines; 3.12 also works). Override with PYTHON=/path/to/python.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
req="$root/requirements.txt"
[ "${SEGNODE_GPU:-0}" = "1" ] && req="$root/requirements-gpu.txt"
if [ -z "${PYTHON:-}" ]; then
  if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi
stamp="$venv/.requirements.sha"
want="$(cat "$root/requirements.txt" "$req" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$PYTHON" -c 'import sys; assert sys.version_info[:2] in ((3, 11), (3, 12)), "segnode-jax needs Python 3.11 or 3.12, got " + sys.version' 
  echo "[segnode-jax] creating $venv with $("$PYTHON" --version) and installing $(basename "$req") ..." >&2
  "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -r "$req"
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
cd "$root"
