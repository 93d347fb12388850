"""What the benchmark scripts share: writing their JSON and their generated Markdown blocks."""

from __future__ import annotations

import datetime
import json
import os
import platform
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def machine() -> dict[str, Any]:
    """Where and when a measurement ran (written next to every result)."""
    import jax

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_model(),
        "backend": jax.default_backend(),
        "devices": [str(d.device_kind) for d in jax.devices()],
        "jax": jax.__version__,
    }


def cpu_model() -> str | None:
    """The CPU as Linux names it, with its family/model numbers and clock: hosted machines with the
    same core count and model name differ in speed (e.g. 105 vs 185 ms per main-job step)."""
    try:
        with open("/proc/cpuinfo") as f:
            fields = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
    except OSError:
        return platform.processor() or None
    get = {k.strip(): v.strip() for k, v in fields.items()}.get
    return f"{get('model name', '?')} (family {get('cpu family', '?')} model {get('model', '?')}, {float(get('cpu MHz', 0)):.0f} MHz)"


def write_json(name: str, payload: dict[str, Any]) -> str:
    """Writes ``benchmarks/results/<name>`` atomically; returns its path."""
    return write_json_at(os.path.join(RESULTS, name), payload)


def write_json_at(path: str, payload: dict[str, Any], indent: int = 1) -> str:
    """Writes ``payload`` to ``path`` atomically (a temporary file, then a rename); returns ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(payload, f, indent=indent, sort_keys=False)
        f.write("\n")
    os.replace(path + ".tmp", path)
    return path


def replace_block(path: str, name: str, text: str) -> None:
    """Replaces the text between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in ``path``
    (the markers are appended if missing): generated tables stay in step with their JSON."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    doc = open(path).read() if os.path.exists(path) else ""
    if begin not in doc:
        doc = doc.rstrip("\n") + f"\n\n{begin}\n{end}\n"
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path + ".tmp", "w") as f:
        f.write(head + begin + "\n" + text.strip("\n") + "\n" + end + tail)
    os.replace(path + ".tmp", path)
