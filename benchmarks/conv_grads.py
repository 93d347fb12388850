"""How SegNode's vector-field convolutions are differentiated (``model.field.conv_grads``), timed.
A benchmark, not a test.

XLA:CPU rewrites gradient convolutions into the layout of its fast kernels only in a program's
entry computation; inside the loops of a diffrax solve they keep transposed layouts and run on
its generic convolution. ``conv_grads="canonical"`` (models/layers.py ``canonical_conv``; what
"auto" picks on a CPU for every adjoint but "unrolled") writes them as ordinary convolutions
and matrix products. For each SegNode solve setting this times the library's training step
(configs/camvid.py's recipe, table2's scaled widths) with ``xla`` and with ``canonical``,
interleaved with the Baseline's step, and checks that both give the same update.

Writes ``benchmarks/results/conv_grads.json`` and the marked block of ``benchmarks/README.md``.

    python -m benchmarks.conv_grads                      # width 16, 96x128, batch 4: ~25 min on 2 cores
    python -m benchmarks.conv_grads --variants segnode+euler_x2 --repeats 1 --width 4 --size 32 32
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time

import jax
import numpy as np

if not __package__:  # run by path: the imports below need the repository root
    print(
        "error: run the benchmarks as modules from the repository root: python -m benchmarks.conv_grads ...",
        file=sys.stderr,
    )
    sys.exit(2)

from benchmarks import report, table2  # noqa: E402
from segnode_jax import memory, ode  # noqa: E402

README = os.path.join(report.ROOT, "benchmarks", "README.md")
OUT = os.path.join(report.RESULTS, "conv_grads.json")
VARIANTS = ("segnode", "segnode/recursive_checkpoint", "segnode/adjoint_tol_1e-1", "segnode+rk4x2", "segnode+euler_x2")
CHOICES = ("xla", "canonical")


def _scaled(width: int) -> dict:
    """table2's scaling of the W48 widths (stem, layer1, field groups) to ``width``."""
    return {
        "width": width,
        "stem_width": max(16, 2 * width),
        "layer1_planes": max(16, 2 * width),
        "field.groups": min(16, width),
    }


def _prepare(name: str, conv_grads: str | None, args) -> dict:
    extra = {} if conv_grads is None else {"field.conv_grads": conv_grads}
    mc = table2.model_config(table2.VARIANTS[name][1], **_scaled(args.width), **extra)
    step, state, images, labels = table2.train_inputs(mc, (args.batch, *args.size, 3))
    t = time.perf_counter()
    compiled = jax.jit(step).lower(state, images, labels).compile(compiler_options=memory.compiler_options())
    seconds = time.perf_counter() - t
    print(f"  compiled {name} [{conv_grads or 'n/a'}] in {seconds:.0f}s", flush=True)
    return {
        "mc": mc,
        "fn": compiled,
        "inputs": (state, images, labels),
        "times": [],
        "compile_seconds": seconds,
    }


def _run(entry: dict):
    with ode.solver_errors(entry["mc"].ode):
        t = time.perf_counter()
        out = entry["fn"](*entry["inputs"])
        jax.block_until_ready(out)
    return time.perf_counter() - t, out


def _update_difference(a, b, state) -> float:
    """Largest relative difference of two steps' parameter updates (same state in)."""
    worst = 0.0
    for new_a, new_b, old in zip(
        jax.tree_util.tree_leaves(a.params),
        jax.tree_util.tree_leaves(b.params),
        jax.tree_util.tree_leaves(state.params),
    ):
        da, db = np.asarray(new_a - old), np.asarray(new_b - old)
        scale = float(np.abs(da).max())
        if scale > 0:
            worst = max(worst, float(np.abs(da - db).max()) / scale)
    return worst


def measure(args) -> dict:
    prepared: dict[tuple[str, str | None], dict] = {("baseline", None): _prepare("baseline", None, args)}
    for name in args.variants:
        for choice in CHOICES:
            prepared[(name, choice)] = _prepare(name, choice, args)
    last = {}
    for r in range(args.repeats + 1):  # the first round warms up and is dropped
        for key, entry in prepared.items():
            seconds, out = _run(entry)
            if r:
                entry["times"].append(seconds)
            last[key] = out
    baseline = statistics.median(prepared[("baseline", None)]["times"])
    rows = []
    for name in args.variants:
        row = {"variant": name, "description": table2.VARIANTS[name][0]}
        for choice in CHOICES:
            entry, (_, metrics) = prepared[(name, choice)], last[(name, choice)]
            seconds = statistics.median(entry["times"])
            row[choice] = {
                "train_step_seconds": seconds,
                "times_baseline": seconds / baseline,
                "forward_nfe": int(metrics.get("ode_nfe", 0)),
                "loss": float(metrics["loss"]),
                "compile_seconds": entry["compile_seconds"],
            }
        row["speedup"] = row["xla"]["train_step_seconds"] / row["canonical"]["train_step_seconds"]
        state = prepared[(name, "xla")]["inputs"][0]
        row["max_relative_update_difference"] = _update_difference(
            last[(name, "xla")][0], last[(name, "canonical")][0], state
        )
        rows.append(row)
        print(
            f"{name}: xla {row['xla']['train_step_seconds']:.2f}s  canonical {row['canonical']['train_step_seconds']:.2f}s  "
            f"({row['speedup']:.2f}x; Baseline {baseline:.2f}s)  update difference {row['max_relative_update_difference']:.1e}",
            flush=True,
        )
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": report.machine(),
        "jax": jax.__version__,
        "settings": {"width": args.width, "size": list(args.size), "batch": args.batch, "repeats": args.repeats},
        "baseline_train_step_seconds": baseline,
        "rows": rows,
    }


def markdown(result: dict) -> str:
    s, m = result["settings"], result["machine"]
    lines = [
        f"Measured {result['date']} on {m.get('cpu_count')} CPU cores of {m.get('cpu') or 'an unknown CPU'} "
        f"(`python -m benchmarks.conv_grads`; width {s['width']}, {s['size'][0]}x{s['size'][1]}, batch {s['batch']}, "
        f"median of {s['repeats']}, interleaved with the Baseline's step: "
        f"{result['baseline_train_step_seconds']:.2f} s).",
        "",
        "| training step | `xla` (s) | `canonical` (s) | speed-up | x Baseline (`xla` -> `canonical`) "
        "| forward NFE | update difference |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        x, c = row["xla"], row["canonical"]
        lines.append(
            f"| {row['description']} | {x['train_step_seconds']:.2f} | {c['train_step_seconds']:.2f} | "
            f"{row['speedup']:.2f}x | {x['times_baseline']:.1f} -> {c['times_baseline']:.1f} | {c['forward_nfe']} | "
            f"{row['max_relative_update_difference']:.1e} |"
        )
    lines += [
        "",
        "Update difference: the largest difference of the two steps' parameter updates (same state in), "
        "relative to the largest update of that tensor. It is bounded below by float32's resolution of the "
        "parameters (a first SGD update of a few 1e-6 on weights of about 0.1 is resolved to about 1e-3 of "
        "itself), so it says the two updates agree to the last bits the parameters hold; the gradients "
        "themselves are compared with JAX's in tests/models/test_layers.py.",
    ]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=OUT)
    parser.add_argument("--no_readme", action="store_true", help="do not rewrite benchmarks/README.md")
    parser.add_argument("--report_only", action="store_true", help="regenerate the block from --out, measure nothing")
    args = parser.parse_args(argv)
    args.size = tuple(args.size)
    if args.report_only:
        with open(args.out) as f:
            result = json.load(f)
    else:
        result = measure(args)
        report.write_json_at(args.out, result, indent=1)
    text = markdown(result)
    print(text)
    if not args.no_readme:
        report.replace_block(README, "conv-grads", text)
    return result


if __name__ == "__main__":
    main()
