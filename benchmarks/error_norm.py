"""Which error norm for SegNode's adaptive solve: torchdiffeq's ``max_rms`` (the paper's solver
library) or diffrax's ``rms`` (``model.ode.error_norm``). A benchmark, not a test.

For a trained SegNode (default: the main job's ``runs/synthetic``, best checkpoint):

* forward: mean NFE, val mIoU and ms per image of the adaptive Dopri5 solve at several
  tolerances, with each norm (same weights, same images);
* gradients: for a batch of training crops, the backsolve adjoint's parameter gradient at each
  tolerance and norm against a reference (the same loss differentiated through a Dopri5 solve at
  rtol = atol = 1e-7, ``recursive_checkpoint``): relative error ``|g - g_ref| / |g_ref|`` and
  the NFE of the forward and backward solves.

Writes ``benchmarks/results/error_norm.json`` and the marked block of ``benchmarks/README.md``.

    bash scripts/main.sh && python -m benchmarks.error_norm          # about 10 minutes on 2 cores
    python -m benchmarks.error_norm --ckpt runs/synthetic runs/parity/segnode_dopri5_backsolve_paper_s0
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if not __package__:  # run by path: the imports below need the repository root, which `python -m` puts on the path
    print(
        "error: run the benchmarks as modules from the repository root: python -m benchmarks.error_norm ...",
        file=sys.stderr,
    )
    sys.exit(2)

from segnode_jax import api, data, evaluation, losses, ode, scoring  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results")
README = os.path.join(ROOT, "benchmarks", "README.md")
BEGIN, END = "<!-- error-norm:begin -->", "<!-- error-norm:end -->"
NORMS = ("max_rms", "rms")


def _with_solve(cfg, **ode_fields):
    c = copy.deepcopy(cfg)
    with c.unlocked():
        c.model.ode.solver = "dopri5"
        c.model.ode.num_steps = None
        c.model.ode.adjoint = "backsolve"
        for k, v in ode_fields.items():
            c.model.ode[k] = v
    return c


def forward_rows(variables, cfg, tolerances, num_images):
    settings = evaluation.EvalSettings.from_config(cfg, mode="whole", num_images=num_images, batch_size=1)
    settings.num_visualizations = 0
    rows = []
    for tol in tolerances:
        for norm in NORMS:
            c = _with_solve(cfg, rtol=tol, atol=tol, error_norm=norm)
            start = time.perf_counter()
            res = evaluation.evaluate(variables, c, settings=settings)
            rows.append(
                {
                    "norm": norm,
                    "tol": tol,
                    "miou": res["miou"],
                    "mean_nfe": res.get("mean_nfe"),
                    "seconds_per_image_incl_compile": (time.perf_counter() - start) / res["num_images"],
                }
            )
            print(
                f"forward  tol {tol:g}  {norm:8s} mIoU {100 * res['miou']:.2f}  NFE {res.get('mean_nfe')}", flush=True
            )
    return rows


def _batch(cfg, n):
    ds = data.eval_dataset(cfg.data, split=cfg.data.train_split)
    h, w = (int(v) for v in cfg.data.crop_size)
    examples = [ex for ex in (ds[i] for i in range(n)) if ex is not None]  # mapped, never filtered
    images = np.stack([ex["image"][:h, :w] for ex in examples]).astype(np.float32)
    labels = np.stack([ex["label"][:h, :w] for ex in examples]).astype(np.int32)
    return jnp.asarray(images), jnp.asarray(labels)


def _grad_fn(model_cfg):
    def loss(params, batch_stats, images, labels):
        logits, aux = api.apply({"params": params, "batch_stats": batch_stats}, images, model_cfg)
        return losses.cross_entropy(logits, labels), aux["ode"]["nfe"]

    return jax.jit(jax.value_and_grad(loss, has_aux=True))


def gradient_rows(variables, cfg, tolerances, batch):
    images, labels = batch
    params, stats = variables["params"], variables.get("batch_stats", {})
    ref_cfg = _with_solve(cfg, rtol=1e-7, atol=1e-7, adjoint="recursive_checkpoint", max_steps=4096)
    with ode.solver_errors(ref_cfg.model.ode):
        (_, ref_nfe), ref = _grad_fn(ref_cfg.model)(params, stats, images, labels)
    ref_norm = float(optax.tree.norm(ref))
    print(f"reference gradient: |g| {ref_norm:.4g}, forward NFE {int(ref_nfe)}", flush=True)
    rows = []
    for tol in tolerances:
        for norm in NORMS:
            c = _with_solve(cfg, rtol=tol, atol=tol, error_norm=norm)
            fn = _grad_fn(c.model)
            with ode.solver_errors(c.model.ode):
                jax.block_until_ready(fn(params, stats, images, labels))  # compile
                start = time.perf_counter()
                (_, nfe), g = jax.block_until_ready(fn(params, stats, images, labels))
                seconds = time.perf_counter() - start
            diff = jax.tree_util.tree_map(lambda a, b: a - b, g, ref)
            err = float(optax.tree.norm(diff)) / ref_norm
            # Per-leaf worst relative error (a small leaf can be far off while the total is fine).
            leaf_err = max(
                float(jnp.linalg.norm(d) / jnp.maximum(jnp.linalg.norm(r), 1e-30))
                for d, r in zip(jax.tree_util.tree_leaves(diff), jax.tree_util.tree_leaves(ref))
                if r.size > 1
            )
            rows.append(
                {
                    "norm": norm,
                    "tol": tol,
                    "relative_error": err,
                    "worst_leaf_relative_error": leaf_err,
                    "forward_nfe": int(nfe),
                    "seconds": seconds,
                }
            )
            print(
                f"gradient tol {tol:g}  {norm:8s} rel. error {err:.3e}  worst leaf {leaf_err:.3e}  forward NFE {int(nfe)}",
                flush=True,
            )
    return rows, {"forward_nfe": int(ref_nfe), "rtol": 1e-7, "adjoint": "recursive_checkpoint"}


def markdown(result) -> str:
    m = result["machine"]
    lines = [
        f"Measured {m['date']} on {m['cpu_count']} CPU cores ({m['backend']}), `{result['command']}`. Each "
        "model solved with adaptive Dopri5 at each tolerance (rtol = atol), with each norm: mean forward NFE and "
        "val mIoU over its validation images; gradient error of the backsolve adjoint against a Dopri5 solve at "
        f"1e-7 differentiated directly (batch of {result['batch']} training crops).",
    ]
    for model in result["models"]:
        lines += [
            "",
            f"`{model['ckpt']}` ({model['which']} checkpoint, trained with {model['trained_with']}; "
            f"{model['num_images']} validation images):",
            "",
            "| tol | norm | mean NFE (forward) | val mIoU | gradient rel. error | worst leaf rel. error | loss + gradient (s) |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        grads = {(r["norm"], r["tol"]): r for r in model["gradients"]}
        for r in model["forward"]:
            g = grads.get((r["norm"], r["tol"]), {})
            lines.append(
                f"| {r['tol']:g} | `{r['norm']}` | {r['mean_nfe']:.1f} | {100 * r['miou']:.2f} | "
                f"{g.get('relative_error', float('nan')):.2e} | {g.get('worst_leaf_relative_error', float('nan')):.2e} | "
                f"{g.get('seconds', float('nan')):.2f} |"
            )
        lines += ["", model["conclusion"]]
    if result.get("note"):
        lines += ["", result["note"]]
    lines += ["", f"Default: `model.ode.error_norm={result['default']}`. {result['decision']}"]
    return "\n".join(lines)


def conclusion(model) -> str:
    fw = {(r["norm"], r["tol"]): r for r in model["forward"]}
    gr = {(r["norm"], r["tol"]): r for r in model["gradients"]}
    parts = []
    for tol in model["tolerances"]:
        a, b = fw[("max_rms", tol)], fw[("rms", tol)]
        ga, gb = gr.get(("max_rms", tol)), gr.get(("rms", tol))
        s = (
            f"at {tol:g} max_rms takes {a['mean_nfe']:.0f} evaluations vs {b['mean_nfe']:.0f} "
            f"(mIoU {100 * a['miou']:.2f} vs {100 * b['miou']:.2f}"
        )
        if ga and gb:
            s += (
                f"; gradient error {ga['relative_error']:.1e} vs {gb['relative_error']:.1e} in "
                f"{ga['seconds']:.2f} s vs {gb['seconds']:.2f} s"
            )
        parts.append(s + ")")
    return "Measured: " + "; ".join(parts) + "."


def write_readme(block: str) -> None:
    text = open(README).read()
    new = f"{BEGIN}\n{block}\n{END}"
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        text = head + new + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Error norm of the adaptive solve (`model.ode.error_norm`)\n\n" + new + "\n"
    open(README, "w").write(text)


def measure(ckpt: str, which: str, tolerances, num_images, batch) -> dict:
    cfg, variables, _, _ = scoring.load_model(ckpt, which=which, prepare_data=True)
    if cfg.model.name != "segnode":
        raise SystemExit(f"error: {ckpt} is a {cfg.model.name} run; pass SegNode runs with --ckpt")
    out = {
        "ckpt": ckpt if not os.path.isabs(ckpt) else os.path.relpath(ckpt, ROOT),
        "which": which,
        "trained_with": ode.describe_solve(cfg.model.ode),
        "tolerances": list(tolerances),
    }
    out["forward"] = forward_rows(variables, cfg, tolerances, num_images)
    out["num_images"] = num_images or len(data.eval_dataset(cfg.data, split=cfg.data.eval_split))
    out["gradients"], out["gradient_reference"] = gradient_rows(variables, cfg, tolerances, _batch(cfg, batch))
    out["conclusion"] = conclusion(out)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", nargs="+", default=[os.path.join("runs", "synthetic")], help="SegNode runs")
    p.add_argument("--which", default="best")
    p.add_argument("--tolerances", type=float, nargs="+", default=(1e-1, 1e-2, 1e-3))
    p.add_argument("--num_images", type=int, default=None, help="validation images (default: all)")
    p.add_argument("--batch", type=int, default=2, help="training crops in the gradient comparison")
    p.add_argument("--decision", default="", help="the sentence saying which default the numbers support")
    p.add_argument("--out", default=os.path.join(RESULTS, "error_norm.json"))
    p.add_argument("--no_readme", action="store_true")
    p.add_argument("--report_only", action="store_true", help="regenerate the README block from --out")
    args = p.parse_args(argv)
    if args.report_only:
        result = json.load(open(args.out))
        if args.decision:
            result["decision"] = args.decision
            with open(args.out, "w") as f:
                json.dump(result, f, indent=1)
        write_readme(markdown(result))
        print(markdown(result))
        return result

    tolerances = [float(t) for t in args.tolerances]
    result = {
        "machine": {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "backend": jax.default_backend(),
            "jax": jax.__version__,
        },
        "command": "python -m benchmarks.error_norm" + (" " + " ".join(sys.argv[1:]) if len(sys.argv) > 1 else ""),
        "batch": args.batch,
        "default": ode.ODESettings().error_norm,
        "decision": args.decision,
        "models": [measure(c, args.which, tolerances, args.num_images, args.batch) for c in args.ckpt],
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    block = markdown(result)
    print(block)
    if not args.no_readme:
        write_readme(block)
    return result


if __name__ == "__main__":
    main()
