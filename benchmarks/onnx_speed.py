"""onnxruntime vs JAX (CPU): inference time of the same exported function.

    bash scripts/install_onnx.sh                  # the optional ONNX packages
    python -m benchmarks.onnx_speed               # -> benchmarks/results/onnx_speed.json + tables

For each case -- the main job's SegNode (configs/synthetic.py, width 12, 128x128) and the
paper's SegNode-W48 at CamVid's 360x480 (configs/camvid.py), each with ``--solver rk4:1`` and
``euler:2`` (the main job's recommended fast solve, benchmarks/results/main_job.json) -- the
inference function of ``python -m segnode_jax.export`` (uint8 images in, logits out, the
fixed-step solve unrolled) is exported to ONNX (``segnode_jax.export.onnx_model``) and timed in
onnxruntime's CPU provider, and the same function is timed under ``jax.jit`` on XLA:CPU. Batch 1
(one photograph, as a deployed model sees them), median of ``--repeats`` calls after a warm-up;
export and compile times are reported apart. The weights are a seeded initialisation: the times
do not depend on their values, and the largest difference between the two runtimes' logits is
recorded (the same function: it should be float32 rounding). Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

from benchmarks import report

CASES = (
    ("main job SegNode (width 12)", "synthetic.py", None),
    ("SegNode-W48", "camvid.py", None),
)
SOLVERS = ("rk4:1", "euler:2")
BLOCK = "onnx-speed"


def _timed(call, repeats: int) -> tuple[float, list[float]]:
    first = time.perf_counter()
    call()
    first = time.perf_counter() - first
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return first, times


def measure(label: str, config: str, solver: str, repeats: int, threads: int | None) -> dict:
    import jax
    import onnxruntime as ort

    import segnode_jax
    from segnode_jax import api, export, segment

    cfg = segnode_jax.load_config(os.path.join(report.ROOT, "configs", config))
    cfg = segment.with_solver(cfg, solver)
    n, h, w = export.default_shape(cfg)
    variables = api.init(cfg.model, jax.random.key(0), (1, h, w, 3))
    images = np.random.default_rng(0).integers(0, 256, (1, h, w, 3), dtype=np.uint8)

    t = time.perf_counter()
    proto = export.onnx_model(variables, cfg, shape=(n, h, w))
    export_s = time.perf_counter() - t
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    ort_out: list = []
    ort_first, ort_times = _timed(lambda: ort_out.append(session.run(None, {name: images})[0]), repeats)

    from segnode_jax import ode

    jcfg = cfg.copy_and_resolve_references()
    with jcfg.unlocked():
        jcfg.model = ode.with_settings(jcfg.model, adjoint="unrolled")
    fn = jax.jit(export.inference_function(variables, jcfg, on_failure="nan", per_image=False))
    jax_out: list = []
    jax_first, jax_times = _timed(lambda: jax_out.append(np.asarray(jax.block_until_ready(fn(images)))), repeats)

    diff = float(np.abs(ort_out[-1] - jax_out[-1]).max())
    scale = float(np.abs(jax_out[-1]).max())
    row = {
        "model": label,
        "config": f"configs/{config}",
        "solver": solver,
        "input": [h, w],
        "params": int(sum(np.size(v) for v in jax.tree_util.tree_leaves(variables["params"]))),
        "onnx_export_seconds": round(export_s, 2),
        "onnx_bytes": len(proto.SerializeToString()),
        "onnxruntime_first_call_seconds": round(ort_first, 3),
        "onnxruntime_ms": round(1000 * statistics.median(ort_times), 1),
        "jax_first_call_seconds": round(jax_first, 3),
        "jax_ms": round(1000 * statistics.median(jax_times), 1),
        "max_abs_logit_difference": diff,
        "max_abs_logit": scale,
    }
    row["onnxruntime_speedup"] = round(row["jax_ms"] / row["onnxruntime_ms"], 2)
    print(
        f"{label:28s} {solver:8s} {h}x{w}: onnxruntime {row['onnxruntime_ms']:8.1f} ms, jax {row['jax_ms']:8.1f} ms "
        f"(x{row['onnxruntime_speedup']}); export {export_s:.1f} s; max |diff| {diff:.2e} of {scale:.2f}",
        flush=True,
    )
    return row


def markdown(payload: dict) -> str:
    m = payload["machine"]
    lines = [
        f"onnxruntime {payload['onnxruntime']} vs JAX {m['jax']} (XLA:CPU), batch 1, median of {payload['repeats']} "
        f"calls after a warm-up; finished {m['date']} on {m['cpu_count']} cores of {m['cpu']} "
        f"(`python -m benchmarks.onnx_speed`, the machine otherwise idle; weights: {payload['weights']}).",
        "",
        "| model | input | solve | onnxruntime ms | JAX ms | JAX / onnxruntime | ONNX export s | max logit diff |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in payload["rows"]:
        lines.append(
            f"| {r['model']} | {r['input'][0]}x{r['input'][1]} | `{r['solver']}` | {r['onnxruntime_ms']:.1f} | "
            f"{r['jax_ms']:.1f} | {r['onnxruntime_speedup']:.2f} | {r['onnx_export_seconds']:.1f} | "
            f"{r['max_abs_logit_difference']:.1e} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: its own)")
    parser.add_argument("--only", choices=[c[1] for c in CASES], help="one config only (a quick check)")
    parser.add_argument("--out", default="onnx_speed.json", help="file name under benchmarks/results/")
    parser.add_argument("--render", action="store_true", help="only rewrite the table from the committed JSON")
    args = parser.parse_args(argv)
    readme = os.path.join(report.ROOT, "benchmarks", "README.md")
    if args.render:
        with open(os.path.join(report.RESULTS, "onnx_speed.json")) as f:
            report.replace_block(readme, BLOCK, markdown(json.load(f)))
        return 0
    try:
        import onnxruntime
    except ImportError:
        print("error: the optional ONNX packages are missing: bash scripts/install_onnx.sh", file=sys.stderr)
        return 2
    rows = [
        measure(label, config, solver, args.repeats, args.threads)
        for label, config, _ in CASES
        if args.only in (None, config)
        for solver in SOLVERS
    ]
    payload = {
        "machine": report.machine(),
        "onnxruntime": onnxruntime.__version__,
        "repeats": args.repeats,
        "batch": 1,
        "weights": "seeded initialisation (times do not depend on the values)",
        "rows": rows,
    }
    path = report.write_json(args.out, payload)
    print(f"written: {path}")
    if args.out == "onnx_speed.json":
        report.replace_block(readme, BLOCK, markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
