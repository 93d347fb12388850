"""Marks the slow tests from a suite run's timings: every test function whose setup + call took
THRESHOLD seconds or more gets ``@pytest.mark.slow`` (the rest is the fast subset,
``bash scripts/test.sh -m "not slow"``).

    bash scripts/test.sh --durations=0 > suite.log     # a clean-clone run on the reference host
    python scripts/mark_slow.py suite.log 5            # prints what it would mark
    python scripts/mark_slow.py suite.log 5 --apply    # adds the missing marks
"""

import argparse
import ast
import collections
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINE = re.compile(r"\s*([\d.]+)s (call|setup|teardown)\s+(\S+)")


def durations(log: str) -> dict[tuple[str, str], float]:
    """(test file, function) -> seconds of setup + call + teardown, summed over parameters."""
    total: dict[tuple[str, str], float] = collections.defaultdict(float)
    with open(log) as f:
        for line in f:
            m = LINE.match(line)
            if m:
                path, _, name = m.group(3).partition("::")
                total[(path, name.split("[")[0])] += float(m.group(1))
    return total


def mark(path: str, functions: set[str]) -> int:
    """Adds ``@pytest.mark.slow`` above each module-level test function in ``functions``."""
    with open(path) as f:
        source = f.read()
    lines = source.split("\n")
    at = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name in functions:
            if not any(isinstance(d, ast.Attribute) and d.attr == "slow" for d in node.decorator_list):
                at.append(min([d.lineno for d in node.decorator_list] + [node.lineno]) - 1)
    for i in sorted(at, reverse=True):
        lines.insert(i, "@pytest.mark.slow")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return len(at)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("log")
    p.add_argument("threshold", type=float)
    p.add_argument("--apply", action="store_true")
    args = p.parse_args()
    total = durations(args.log)
    slow = {k: v for k, v in total.items() if v >= args.threshold}
    fast = sum(v for k, v in total.items() if v < args.threshold)
    print(
        f"{len(slow)} slow test functions ({sum(slow.values()):.0f} s); the fast {len(total) - len(slow)}: {fast:.0f} s"
    )
    if args.apply:
        by_file = collections.defaultdict(set)
        for path, name in slow:
            by_file[path].add(name)
        for path, names in sorted(by_file.items()):
            print(f"{path}: {mark(os.path.join(ROOT, path), names)} marked")


if __name__ == "__main__":
    main()
