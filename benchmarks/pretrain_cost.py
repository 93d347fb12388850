"""What ImageNet pretraining costs (paper sec. 4.1), estimated from XLA's own operation count.

    python -m benchmarks.pretrain_cost            # ~5 min on 2 CPU cores (lowering only)

For HRNetV2, the Baseline and SegNode with HRNet-Image-Classification's head (W48, 1000 classes,
224x224), XLA's cost analysis of the lowered computations (nothing runs) gives the floating-
point operations of one forward pass and of one step of the library's training step
(``segnode_jax.training.train_step``: loss, gradients, SGD with momentum), per image.

SegNode's solve is a loop whose length depends on the solver; XLA counts a loop body once, so
SegNode is lowered with its field written out (Euler, ``adjoint="unrolled"``) at 1 and 2
steps: the difference is the cost of one field evaluation (forward, and forward + backward),
the rest is the stem, transitions and head. The paper's Dopri5 + backsolve step with forward
and backward NFE ``n`` then costs ``rest + n x field forward + n x field (forward + backward)``
(the backward solve re-evaluates the field and its vector-Jacobian product); ``n`` is taken from
the Dopri5 run of ``benchmarks/results/parity.json`` (a miniature: width 8, 128x128, 200 steps).

GPU-days = 100 epochs x 1,281,167 images x training FLOPs per image / sustained throughput,
for the throughputs assumed in ``ASSUMED_THROUGHPUT`` (stated beside every estimate; no GPU
was used). The forward count of HRNetV2-W48 is checked against HRNet-Image-Classification's
published 17.3 GFLOPs (multiply-adds; XLA counts a multiply-add as 2 operations).

The same for fine-tuning with each dataset config (its crop, batch and epochs over the official
training-split size). Writes ``benchmarks/results/pretrain_cost.json`` and the tables in
docs/reproduction.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys

import jax
import jax.numpy as jnp

if not __package__:  # run by path: the imports below need the repository root, which `python -m` puts on the path
    print(
        "error: run the benchmarks as modules from the repository root: python -m benchmarks.pretrain_cost ...",
        file=sys.stderr,
    )
    sys.exit(2)

import segnode_jax  # noqa: E402
from benchmarks import report  # noqa: E402

ROOT = report.ROOT
IMAGES_PER_EPOCH = 1_281_167
EPOCHS = 100
SIZE = 224
BATCH = 8
# Sustained training throughput assumed for the GPU-day estimates (FLOP/s); a guess, not a
# measurement: about 40% of a V100's fp32 peak (15.7 TFLOP/s) and 30% of an A100's TF32 dense
# peak (156 TFLOP/s).
ASSUMED_THROUGHPUT = {"V100 fp32 at 40% of peak": 0.40 * 15.7e12, "A100 TF32 at 30% of peak": 0.30 * 156e12}
# HRNet-Image-Classification's README: HRNet-W48-C, 77.5M parameters, 17.3 GFLOPs (multiply-adds).
PUBLISHED_HRNET_W48_C_GMACS = 17.3


FINETUNE = ("cityscapes", "camvid", "lip", "pascal_context")


def run_config(config: str, name: str, *, num_classes: int | None = None, **ode):
    """``configs/<config>.py`` with ``model.name=name`` and ODE overrides."""
    cfg = segnode_jax.load_config(os.path.join(ROOT, "configs", f"{config}.py"))
    if num_classes is not None:
        with cfg.model.ignore_type():
            cfg.model.num_classes = num_classes
    cfg.model.name = name
    for k, v in ode.items():
        cfg.model.ode[k] = v
    return cfg


def steps_of(cfg) -> tuple[int, int]:
    """``(training images, steps)`` of a dataset config with the dataset's official split sizes."""
    from segnode_jax.data import registry
    from segnode_jax.data.builder import split_names

    sizes = registry.dataset_module(cfg.data.name).split_sizes(cfg.data)
    images = sum(int(sizes[s]) for s in split_names(cfg.data.train_split))
    if cfg.train.get("num_steps"):
        return images, int(cfg.train.num_steps)
    return images, int(round(float(cfg.train.num_epochs) * (images // int(cfg.train.batch_size))))


def _flops(lowered) -> float:
    cost = lowered.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost["flops"])


def _size(cfg) -> tuple[int, int]:
    h, w = (int(v) for v in cfg.data.crop_size)
    return h, w


def forward_flops(cfg) -> float:
    """FLOPs of one inference forward pass at the training crop, per image."""
    h, w = _size(cfg)
    variables = jax.eval_shape(lambda: segnode_jax.init(cfg.model, jax.random.key(0), (1, h, w, 3)))
    images = jax.ShapeDtypeStruct((BATCH, h, w, 3), jnp.float32)
    fn = jax.jit(lambda v, x: segnode_jax.apply(v, x, segnode_jax.freeze(cfg.model))[0])
    return _flops(fn.lower(variables, images)) / BATCH


def train_flops(cfg) -> float:
    """FLOPs of one step of the library's training step, per image."""
    from segnode_jax import training

    cfg = training.resolve_config(cfg)
    tx, schedule = training.make_optimizer(cfg.train, 1000)
    mc = segnode_jax.freeze(cfg.model)
    step = functools.partial(
        training.train_step, model_cfg=mc, tx=tx, schedule=schedule, loss_cfg=cfg.train.loss, class_weights=None
    )
    h, w = _size(cfg)
    state = jax.eval_shape(lambda: training.create_train_state(mc, tx, jax.random.key(0), (1, h, w, 3)))
    classify = cfg.model.get("task", "segmentation") == "classification"
    batch = {
        "image": jax.ShapeDtypeStruct((BATCH, h, w, 3), jnp.float32),
        "label": jax.ShapeDtypeStruct((BATCH,) if classify else (BATCH, h, w), jnp.int32),
    }
    return _flops(jax.jit(step).lower(state, batch)) / BATCH


def parity_dopri5_nfe() -> tuple[float, str]:
    path = os.path.join(report.RESULTS, "parity.json")
    with open(path) as f:
        parity = json.load(f)
    runs = [r for r in parity["runs"] if r["model"] == "segnode" and r["setting"].startswith("dopri5") and r.get("nfe")]
    nfe = sum(float(r["nfe"]) for r in runs) / len(runs)
    return (
        nfe,
        f"parity.json ({parity['machine']['date']}): SegNode, Dopri5 + backsolve, mean eval NFE of {len(runs)} run(s)",
    )


def gpu_days(flops_per_image: float, images: int = IMAGES_PER_EPOCH * EPOCHS) -> dict[str, float]:
    total = flops_per_image * images
    return {k: total / v / 86400 for k, v in ASSUMED_THROUGHPUT.items()}


def costs(config: str, nfe: float, *, num_classes: int | None = None, images: int = IMAGES_PER_EPOCH * EPOCHS) -> dict:
    """Per-image forward/training FLOPs and GPU-days of the three networks trained with
    ``configs/<config>.py`` on ``images`` training images (crops) in all."""
    rows = {}
    for name in ("hrnetv2", "baseline"):
        cfg = run_config(config, name, num_classes=num_classes)
        print(f"{config} {name}: lowering ...", flush=True)
        fwd, train = forward_flops(cfg), train_flops(cfg)
        rows[name] = {
            "params": segnode_jax.count_params(cfg.model),
            "forward_flops": fwd,
            "train_flops": train,
            "train_gpu_days": gpu_days(train, images),
        }
    unrolled = {}
    for n in (1, 2):
        cfg = run_config(config, "segnode", num_classes=num_classes, solver="euler", num_steps=n, adjoint="unrolled")
        print(f"{config} segnode, field written out x{n}: lowering ...", flush=True)
        unrolled[n] = (forward_flops(cfg), train_flops(cfg))
    field_fwd = unrolled[2][0] - unrolled[1][0]
    field_train = unrolled[2][1] - unrolled[1][1]
    rest_fwd, rest_train = unrolled[1][0] - field_fwd, unrolled[1][1] - field_train
    dopri_train = rest_train + nfe * field_fwd + nfe * field_train
    dopri_fwd = rest_fwd + nfe * field_fwd
    euler2_train = unrolled[2][1]
    rows["segnode"] = {
        "params": segnode_jax.count_params(run_config(config, "segnode", num_classes=num_classes).model),
        "field_forward_flops": field_fwd,
        "field_train_flops": field_train,
        "rest_forward_flops": rest_fwd,
        "rest_train_flops": rest_train,
        "dopri5_nfe_assumed": nfe,
        "forward_flops": dopri_fwd,
        "train_flops": dopri_train,
        "train_gpu_days": gpu_days(dopri_train, images),
        "euler2_unrolled_train_flops": euler2_train,
        "euler2_unrolled_train_gpu_days": gpu_days(euler2_train, images),
    }
    return rows


def measure() -> dict:
    nfe, nfe_source = parity_dopri5_nfe()
    rows = costs("imagenet", nfe, num_classes=1000)
    rows["segnode"]["dopri5_nfe_source"] = nfe_source
    finetune = {}
    for config in FINETUNE:
        cfg = run_config(config, "segnode")
        images, steps = steps_of(cfg)
        crops = steps * int(cfg.train.batch_size)
        finetune[config] = {
            "crop_size": list(_size(cfg)),
            "train_images": images,
            "steps": steps,
            "batch_size": int(cfg.train.batch_size),
            "crops": crops,
            "models": costs(config, nfe, images=crops),
        }
    xla_gmacs = rows["hrnetv2"]["forward_flops"] / 2 / 1e9
    return {
        "machine": report.machine(),
        "image_size": SIZE,
        "epochs": EPOCHS,
        "images_per_epoch": IMAGES_PER_EPOCH,
        "assumed_throughput_flops": ASSUMED_THROUGHPUT,
        "dopri5_nfe_assumed": nfe,
        "dopri5_nfe_source": nfe_source,
        "check": {
            "hrnetv2_forward_gmacs_xla": xla_gmacs,
            "published_gmacs": PUBLISHED_HRNET_W48_C_GMACS,
            "ratio": xla_gmacs / PUBLISHED_HRNET_W48_C_GMACS,
        },
        "models": rows,
        "finetune": finetune,
    }


def markdown(result: dict) -> str:
    keys = list(result["assumed_throughput_flops"])
    m = result["models"]
    lines = [
        f"Generated by `benchmarks/pretrain_cost.py` ({result['machine']['date']}, XLA cost analysis on "
        f"{result['machine']['backend']}; nothing was trained). {result['epochs']} epochs of "
        f"{result['images_per_epoch']:,} images at {result['image_size']}x{result['image_size']}.",
        "",
        "| classifier (W48) | parameters | forward GFLOPs/image | training GFLOPs/image | GPU-days: "
        + " | GPU-days: ".join(keys)
        + " |",
        "|---|---:|---:|---:|" + "---:|" * len(keys),
    ]
    names = {"hrnetv2": "HRNetV2", "baseline": "Baseline", "segnode": "SegNode, Dopri5 + backsolve"}
    for key, label in names.items():
        r = m[key]
        lines.append(
            f"| {label} | {r['params']:,} | {r['forward_flops'] / 1e9:.1f} | {r['train_flops'] / 1e9:.1f} | "
            + " | ".join(f"{r['train_gpu_days'][k]:.1f}" for k in keys)
            + " |"
        )
    s = m["segnode"]
    lines.append(
        f"| SegNode, Euler x2 written out | {s['params']:,} | - | {s['euler2_unrolled_train_flops'] / 1e9:.1f} | "
        + " | ".join(f"{s['euler2_unrolled_train_gpu_days'][k]:.1f}" for k in keys)
        + " |"
    )
    lines += [
        "",
        "Fine-tuning (the dataset configs' recipes: crop, batch and epochs as `configs/<dataset>.py`, the official "
        "training-split sizes), GPU-days per run:",
        "",
        "| dataset | crop | steps x batch | HRNetV2 | Baseline | SegNode, Dopri5 + backsolve | SegNode, Euler x2 written out |",
        "|---|---|---:|---|---|---|---|",
    ]
    for ds, f in result.get("finetune", {}).items():
        fm = f["models"]

        def both(d):
            return " / ".join(f"{d[k]:.2f}" for k in keys)

        lines.append(
            f"| {ds} | {f['crop_size'][0]}x{f['crop_size'][1]} | {f['steps']:,} x {f['batch_size']} | "
            f"{both(fm['hrnetv2']['train_gpu_days'])} | {both(fm['baseline']['train_gpu_days'])} | "
            f"{both(fm['segnode']['train_gpu_days'])} | {both(fm['segnode']['euler2_unrolled_train_gpu_days'])} |"
        )
    c = result["check"]
    lines += [
        "",
        f"(each cell: {' / '.join(keys)})",
        "",
        f"SegNode's Dopri5 row assumes forward and backward NFE {s['dopri5_nfe_assumed']:.0f} ({s['dopri5_nfe_source']}); "
        f"one field evaluation costs {s['field_forward_flops'] / 1e9:.2f} GFLOPs forward and "
        f"{s['field_train_flops'] / 1e9:.2f} GFLOPs forward + backward per image, so every 10 more evaluations add "
        f"{10 * (s['field_forward_flops'] + s['field_train_flops']) / 1e9:.0f} GFLOPs per training image. "
        "The NFE of a real ImageNet run is unknown until one is run: the row is an estimate of its order.",
        f"Check: XLA counts HRNetV2-W48's forward pass as {c['hrnetv2_forward_gmacs_xla']:.1f} G multiply-adds; "
        f"HRNet-Image-Classification publishes {c['published_gmacs']} GFLOPs (multiply-adds) for HRNet-W48-C "
        f"(ratio {c['ratio']:.3f}). GPU-days assume the sustained throughputs named in the columns (guesses, "
        "not measurements: HRNet's many small, memory-bound convolutions often run at a lower share of the peak, "
        "so read them as lower bounds); data loading, validation and mixed precision are not counted.",
    ]
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--from_json", action="store_true", help="only regenerate the docs table from the JSON")
    args = p.parse_args(argv)
    if args.from_json:
        with open(os.path.join(report.RESULTS, "pretrain_cost.json")) as f:
            result = json.load(f)
    else:
        result = measure()
        report.write_json("pretrain_cost.json", result)
    table = markdown(result)
    report.replace_block(os.path.join(ROOT, "docs", "reproduction.md"), "pretrain_cost", table)
    print(table)
    return result


if __name__ == "__main__":
    main()
