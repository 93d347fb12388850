"""Where a SegNode solve's time goes: evaluations counted, and each evaluation's cost inside
diffrax's loops against the same evaluation compiled as straight-line code. A benchmark, not a
test.

A training step cannot cost less than its evaluations of the vector field: the forward solve's
(one field evaluation each) and the backward solve's (one vector-Jacobian product each; with
the recursive-checkpoint adjoint, the forward steps it recomputes as well). For each solve
setting this measures, on the model's real ODE state (the stem's output for a batch of random
images) and its freshly initialised field:

* forward NFE with accepted and rejected steps (diffrax's statistics), and the backward
  evaluations counted on the host (``ode.counting_evaluations``: diffrax reports only the
  forward solve's statistics);
* straight-line: one field evaluation, and one evaluation with its vector-Jacobian product,
  each compiled on its own (no loop);
* the solve alone, forward, and its gradient (w.r.t. the initial state and the field's
  parameters, for a fixed random cotangent), compiled as the library compiles them;
* seconds per evaluation in the loop (forward: solve / NFE; backward: (gradient - forward) /
  backward evaluations) against the straight-line ones, and the floor the evaluations set
  (forward NFE x evaluation + backward evaluations x VJP).

Setups: ``w16`` = table2's timing settings (configs/camvid.py's SegNode at width 16, 96x128,
batch 4); ``main_job`` = the main job's SegNode (configs/synthetic.py, width 12, 128x128, batch
8). Times are medians of interleaved repeats. Writes ``benchmarks/results/solve_breakdown.json``
and the marked block of ``benchmarks/README.md``.

    python -m benchmarks.solve_breakdown                 # both setups, 3 solves: ~20 min on 2 cores
    python -m benchmarks.solve_breakdown --setups main_job --variants rk4x2+backsolve --repeats 1
    python -m benchmarks.solve_breakdown --report_only   # the block again from the JSON
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

if not __package__:  # run by path: the imports below need the repository root
    print(
        "error: run the benchmarks as modules from the repository root: python -m benchmarks.solve_breakdown ...",
        file=sys.stderr,
    )
    sys.exit(2)

import segnode_jax  # noqa: E402
import segnode_jax.config  # noqa: E402
from benchmarks import report, table2  # noqa: E402
from segnode_jax import memory, ode  # noqa: E402

README = os.path.join(report.ROOT, "benchmarks", "README.md")
OUT = os.path.join(report.RESULTS, "solve_breakdown.json")

# name -> (description, model.ode overrides)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "dopri5+backsolve": (
        "Dopri5, backsolve adjoint (paper)",
        {"ode.solver": "dopri5", "ode.num_steps": None, "ode.adjoint": "backsolve"},
    ),
    "dopri5+recursive_checkpoint": (
        "Dopri5, recursive-checkpoint adjoint",
        {"ode.solver": "dopri5", "ode.num_steps": None, "ode.adjoint": "recursive_checkpoint"},
    ),
    "rk4x2+backsolve": (
        "RK4 x 2 steps, backsolve adjoint",
        {"ode.solver": "rk4", "ode.num_steps": 2, "ode.adjoint": "backsolve"},
    ),
}
SETUPS = ("w16", "main_job")


def setup_config(setup: str, overrides: dict[str, Any]):
    """``(model config, (batch, H, W, 3))`` of one setup with a variant's solve."""
    if setup == "w16":
        s = table2.VARIANTS["segnode"][1]
        scaled = {"width": 16, "stem_width": 32, "layer1_planes": 32, "field.groups": 16}
        return table2.model_config({**s, **overrides}, **scaled), (4, 96, 128, 3)
    cfg = segnode_jax.load_config(os.path.join(report.ROOT, "configs", "synthetic.py"))
    segnode_jax.config.apply_overrides(cfg.model, overrides)
    return segnode_jax.freeze(cfg.model), (8, 128, 128, 3)


class _Captured(Exception):
    pass


def capture_solve(mc, shape) -> dict[str, Any]:
    """The arguments of the model's ``ode.solve`` call (eagerly, stopping before the solve):
    the vector field, the real initial state and the field's parameters, and the settings."""
    from segnode_jax import training
    from segnode_jax.models import odeblock

    state = training.create_train_state(mc, table2.make_train_step(mc)[1], jax.random.key(0), (1, *shape[1:]))
    images = jax.random.normal(jax.random.key(1), shape)
    got: dict[str, Any] = {}
    real = odeblock.ode.solve

    def spy(vector_field, y0, params, settings, *, remat=False):
        got.update(vector_field=vector_field, y0=y0, params=params, settings=settings, remat=remat)
        raise _Captured

    odeblock.ode.solve = spy
    try:
        with jax.disable_jit():
            segnode_jax.apply(state.variables, images, mc)
    except _Captured:
        pass
    finally:
        odeblock.ode.solve = real
    if not got:
        raise RuntimeError("the model did not call ode.solve")
    return got


def _vdot(y, c):
    return sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(y), jax.tree_util.tree_leaves(c)))


def _compile(fn: Callable, *args):
    t = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile(compiler_options=memory.compiler_options())
    return compiled, time.perf_counter() - t


def breakdown(name: str, adjoint: str, counts: dict[str, int], med: dict[str, float]) -> dict[str, Any]:
    """One solve's row from its counts and median times (``med``: ``eval``, ``vjp`` straight-line;
    ``<name>/forward``, ``<name>/gradient`` in the loop)."""
    nfe = counts["nfe"]
    fwd, grad = med[f"{name}/forward"], med[f"{name}/gradient"]
    backward = counts["gradient_evaluations"] - nfe
    # Backsolve differentiates each backward evaluation (its augmented dynamics = one VJP);
    # recursive checkpointing differentiates each forward evaluation once, and what else it
    # counts is forward steps recomputed from its checkpoints.
    vjps = backward if adjoint == "backsolve" else nfe
    recomputed = backward - vjps
    backward_line = recomputed * med["eval"] + vjps * med["vjp"]
    floor = nfe * med["eval"] + backward_line
    return {
        "variant": name,
        "description": VARIANTS[name][0],
        "forward_nfe": nfe,
        "forward_accepted_steps": counts["num_accepted_steps"],
        "forward_rejected_steps": counts["num_rejected_steps"],
        "backward_evaluations": backward,
        "backward_vjps": vjps,
        "backward_recomputed": recomputed,
        "forward_seconds": fwd,
        "gradient_seconds": grad,
        "forward_seconds_per_evaluation": fwd / nfe,
        "forward_loop_factor": fwd / nfe / med["eval"],
        "backward_seconds": grad - fwd,
        "backward_straight_line_seconds": backward_line,
        "backward_loop_factor": (grad - fwd) / backward_line if backward_line > 0 else None,
        "floor_seconds": floor,
        "gradient_over_floor": grad / floor,
    }


def measure_setup(setup: str, variants: list[str], repeats: int) -> dict[str, Any]:
    got = {}
    for name in variants:
        mc, shape = setup_config(setup, VARIANTS[name][1])
        got[name] = capture_solve(mc, shape)
    first = got[variants[0]]
    f, y0, params = first["vector_field"], first["y0"], first["params"]
    leaves, treedef = jax.tree_util.tree_flatten(y0)
    keys = jax.random.split(jax.random.key(3), len(leaves))
    cotangent = treedef.unflatten([jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)])
    t_mid = jnp.asarray(0.5, jnp.float32)

    def evaluate(y, p):
        return f(t_mid, y, p)

    def evaluate_vjp(y, p, g):
        out, pull = jax.vjp(evaluate, y, p)
        return out, pull(g)

    fns: dict[str, Any] = {}
    compile_seconds: dict[str, float] = {}
    for key, fn, args in (("eval", evaluate, (y0, params)), ("vjp", evaluate_vjp, (y0, params, cotangent))):
        fns[key], compile_seconds[key] = _compile(fn, *args)
    counts: dict[str, dict[str, int]] = {}
    for name in variants:
        g = got[name]
        settings = ode.ODESettings.from_config(g["settings"])
        vf, remat = g["vector_field"], g["remat"]

        def forward(y, p, settings=settings, vf=vf, remat=remat):
            y1, info = ode.solve(vf, y, p, settings, remat=remat)
            return y1, {k: info[k] for k in ("num_steps", "num_accepted_steps", "num_rejected_steps", "nfe")}

        def gradient(y, p, settings=settings, vf=vf, remat=remat):
            return jax.grad(lambda y, p: _vdot(ode.solve(vf, y, p, settings, remat=remat)[0], cotangent), (0, 1))(y, p)

        fns[f"{name}/forward"], compile_seconds[f"{name}/forward"] = _compile(forward, y0, params)
        fns[f"{name}/gradient"], compile_seconds[f"{name}/gradient"] = _compile(gradient, y0, params)
        counted = dataclasses.replace(settings, count_evaluations=True)
        counted_gradient, _ = _compile(lambda y, p: gradient(y, p, settings=counted), y0, params)
        with ode.counting_evaluations() as evaluations:
            jax.block_until_ready(counted_gradient(y0, params))
        _, info = fns[f"{name}/forward"](y0, params)
        counts[name] = {k: int(v) for k, v in info.items()} | {"gradient_evaluations": int(evaluations["count"])}
        print(f"  {setup} {name}: compiled; counts {counts[name]}", flush=True)
    args_of = {"eval": (y0, params), "vjp": (y0, params, cotangent)}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats + 1):  # the first round warms up and is dropped
        for key, fn in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(fn(*args_of.get(key, (y0, params))))
            if r:
                times[key].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = []
    for name in variants:
        row = breakdown(name, got[name]["settings"].adjoint, counts[name], med)
        row["compile_seconds"] = compile_seconds[f"{name}/forward"] + compile_seconds[f"{name}/gradient"]
        rows.append(row)
        print(
            f"{setup} {name}: NFE {row['forward_nfe']} fwd + {row['backward_evaluations']} bwd; forward "
            f"{row['forward_seconds']:.3f}s ({row['forward_loop_factor']:.2f}x straight-line per evaluation), gradient "
            f"{row['gradient_seconds']:.3f}s (backward {row['backward_loop_factor'] or 0:.2f}x straight-line); floor "
            f"{row['floor_seconds']:.3f}s",
            flush=True,
        )
    return {
        "setup": setup,
        "state_shapes": [list(a.shape) for a in jax.tree_util.tree_leaves(y0)],
        "field_params": int(sum(a.size for a in jax.tree_util.tree_leaves(params))),
        "eval_seconds": med["eval"],
        "vjp_seconds": med["vjp"],
        "rows": rows,
    }


def measure(args) -> dict[str, Any]:
    return {
        "machine": report.machine(),
        "repeats": args.repeats,
        "setups": [measure_setup(s, args.variants, args.repeats) for s in args.setups],
    }


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"Measured {m['date']} on {m.get('cpu_count')} CPU cores of {m.get('cpu') or 'an unknown CPU'} "
        f"(`python -m benchmarks.solve_breakdown`, median of {result['repeats']} interleaved repeats). The solve "
        "alone on the model's real ODE state. *x line*: the loop's time over the same evaluations compiled "
        "straight-line (one evaluation per forward or recomputed evaluation, one evaluation + VJP per "
        "differentiated one); *floor*: all of a gradient's evaluations at straight-line cost. Backward "
        "evaluations are counted on the host (diffrax reports only the forward solve's statistics).",
    ]
    for s in result["setups"]:
        shapes = ", ".join("x".join(str(d) for d in shape[1:]) for shape in s["state_shapes"])
        lines += [
            "",
            f"**{s['setup']}** (state: batch {s['state_shapes'][0][0]} of {shapes}; field {s['field_params']:,} "
            f"parameters): one evaluation {1000 * s['eval_seconds']:.1f} ms, with its VJP "
            f"{1000 * s['vjp_seconds']:.1f} ms straight-line.",
            "",
            "| solve | forward NFE (accepted/rejected steps) | forward s (per eval., x line) | backward evals "
            "(VJPs + recomputed) | backward s (x line) | gradient s | floor s | gradient / floor |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in s["rows"]:
            back = f"{r['backward_loop_factor']:.2f}x" if r["backward_loop_factor"] is not None else "-"
            lines.append(
                f"| {r['description']} | {r['forward_nfe']} ({r['forward_accepted_steps']}/{r['forward_rejected_steps']}) "
                f"| {r['forward_seconds']:.3f} ({1000 * r['forward_seconds_per_evaluation']:.1f} ms, "
                f"{r['forward_loop_factor']:.2f}x) | {r['backward_evaluations']} ({r['backward_vjps']} + "
                f"{r['backward_recomputed']}) | {r['backward_seconds']:.3f} ({back}) | {r['gradient_seconds']:.3f} "
                f"| {r['floor_seconds']:.3f} | {r['gradient_over_floor']:.2f}x |"
            )
    return "\n".join(lines)


def main(argv=None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setups", nargs="+", choices=SETUPS, default=list(SETUPS))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=OUT)
    parser.add_argument("--no_readme", action="store_true", help="do not rewrite benchmarks/README.md")
    parser.add_argument("--report_only", action="store_true", help="regenerate the block from --out, measure nothing")
    args = parser.parse_args(argv)
    if args.report_only:
        with open(args.out) as f:
            result = json.load(f)
    else:
        result = measure(args)
        report.write_json_at(args.out, result)
    text = markdown(result)
    print(text)
    if not args.no_readme:
        report.replace_block(README, "solve-breakdown", text)
    return result


if __name__ == "__main__":
    from segnode_jax import cli

    cli.quiet_logs()
    sys.exit(0 if main() else 1)
