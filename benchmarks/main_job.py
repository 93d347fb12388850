"""Records a run of the main job (``bash scripts/main.sh``) and regenerates the README's results.

    bash scripts/main.sh                                   # writes runs/synthetic/...
    python -m benchmarks.main_job --workdir runs/synthetic # -> benchmarks/results/main_job.json + README

Reads what the run wrote -- ``metrics.jsonl`` (validation curve), ``eval/results.json`` (final
evaluation, per-class IoU), ``eval/trajectory/trajectory.json`` (fast-inference
recommendation) and ``main_job.json`` (the whole command's wall time, written by main.sh) --
and writes ``benchmarks/results/main_job.json`` and the README's main-job block from it, so
that the numbers in the README are the run's, never typed by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if not __package__:  # run by path: the imports below need the repository root, which `python -m` puts on the path
    print(
        "error: run the benchmarks as modules from the repository root: python -m benchmarks.main_job ...",
        file=sys.stderr,
    )
    sys.exit(2)

from benchmarks import report  # noqa: E402
from segnode_jax import metrics_log  # noqa: E402


def collect(workdir: str, seconds: float | None = None, note: str | None = None) -> dict:
    def load(*parts):
        with open(os.path.join(workdir, *parts)) as f:
            return json.load(f)

    cfg = load("config.json")
    ceiling = resolution_ceiling(cfg)
    records = metrics_log.read_jsonl(os.path.join(workdir, metrics_log.JSONL_NAME))
    val = [r for r in records if r.get("split") == "val"]
    train = {int(r["step"]): r for r in records if r.get("split", "train") == "train"}
    final = load("eval", "results.json")
    timing = load("main_job.json") if seconds is None else {"seconds": seconds}
    try:
        traj = load("eval", "trajectory", "trajectory.json")
    except FileNotFoundError:
        traj = None
    ode = cfg["model"]["ode"]
    machine = report.machine()
    if timing.get("finished"):  # when the run ended (main.sh), not when this script reads it
        machine["date"] = timing["finished"]
    return {
        "machine": machine,
        "command": "bash scripts/main.sh",
        "note": note,
        "seconds": timing["seconds"],
        "phases": timing.get("phases"),
        "model": {
            "name": cfg["model"]["name"],
            "width": cfg["model"]["width"],
            "solver": ode["solver"],
            "num_steps": ode["num_steps"],
            "adjoint": ode["adjoint"],
        },
        "data": {
            "generator": cfg["data"].get("generator"),
            "image_size": cfg["data"]["image_size"],
            "num_train": cfg["data"]["num_train"],
            "num_val": cfg["data"]["num_val"],
        },
        "train": {"steps": cfg["train"]["num_steps"], "batch_size": cfg["train"]["batch_size"]},
        "validation": [
            {
                "step": int(r["step"]),
                "miou": r["miou"],
                "pixel_accuracy": r["pixel_accuracy"],
                "mean_nfe": r.get("mean_nfe"),
                "images_per_second": train.get(int(r["step"]), {}).get("images_per_second"),
            }
            for r in val
        ],
        "final": {
            "miou": final["miou"],
            "pixel_accuracy": final["pixel_accuracy"],
            "per_class_iou": final["per_class_iou"],
            "checkpoint_step": final.get("step"),
        },
        "fast_inference": traj and traj.get("recommended"),
        "ceiling_at_output_resolution": {"per_class_iou": ceiling, "miou": sum(ceiling.values()) / len(ceiling)},
        "trajectory": traj
        and {
            "model_solver": traj.get("model_solver"),
            "along_trajectory": {k: traj["along_trajectory"][k] for k in ("t", "miou", "num_images")},
            "sweep": [
                {k: row.get(k) for k in ("setting", "miou", "mean_nfe", "seconds_per_image")} for row in traj["sweep"]
            ],
        },
    }


def resolution_ceiling(cfg: dict, stride: int = 4) -> dict[str, float]:
    """Per-class IoU of a perfect predictor at the networks' output resolution (1/``stride``):
    the validation labels, one-hot, average-pooled by ``stride``, resized back bilinearly (as
    the models' logits are) and arg-maxed. What no model of this output stride can exceed."""
    import jax
    import numpy as np

    from segnode_jax import data

    dcfg = data.data_config("synthetic")
    for k in ("generator", "image_size", "num_val", "seed"):
        dcfg[k] = cfg["data"][k] if not isinstance(cfg["data"][k], list) else tuple(cfg["data"][k])
    info = data.get_info(dcfg)
    from segnode_jax.data import synthetic

    labels = np.stack([synthetic.load_example(dcfg, ("val", i)).label for i in range(int(dcfg.num_val))])
    n, h, w = labels.shape
    c = info.num_classes
    onehot = np.eye(c, dtype=np.float32)[labels]
    pooled = onehot.reshape(n, h // stride, stride, w // stride, stride, c).mean((2, 4))
    pred = np.asarray(jax.image.resize(pooled, (n, h, w, c), "bilinear").argmax(-1))
    out = {}
    for k, name in enumerate(info.class_names):
        tp = np.sum((pred == k) & (labels == k))
        fp = np.sum((pred == k) & (labels != k))
        fn = np.sum((pred != k) & (labels == k))
        out[name] = float(tp / max(tp + fp + fn, 1))
    return out


def _min_s(seconds: int) -> str:
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def markdown(r: dict) -> str:
    m, d = r["model"], r["data"]
    solve = f"{m['solver']} x{m['num_steps']}" if m["num_steps"] else f"adaptive {m['solver']}"
    cpu = f" of {r['machine']['cpu']}" if r["machine"].get("cpu") else ""
    phases = r.get("phases") or {}
    phases = (" (" + ", ".join(f"{k} {_min_s(v)}" for k, v in phases.items()) + ")") if phases else ""
    lines = [
        f"Main job (`bash scripts/main.sh` from a fresh clone, .venv creation included; measured "
        f"{r['machine']['date']} on {r['machine']['cpu_count']} CPU cores{cpu}, no GPU): SegNode width {m['width']} "
        f"({solve}, adjoint `{m['adjoint']}`), {r['train']['steps']} steps of batch {r['train']['batch_size']} on "
        f"{d['num_train']} synthetic {d['generator']} scenes of {d['image_size'][0]}x{d['image_size'][1]}; validation on "
        f"{d['num_val']}. The whole command took {_min_s(r['seconds'])}{phases}.",
        "",
        "| step | val mIoU | pixel accuracy |",
        "|---:|---:|---:|",
    ]
    for v in r["validation"]:
        lines.append(f"| {v['step']} | {100 * v['miou']:.1f} | {100 * v['pixel_accuracy']:.1f} |")
    per_class = ", ".join(f"{k} {100 * v:.1f}" for k, v in r["final"]["per_class_iou"].items())
    lines += ["", f"Per-class IoU of the best checkpoint (step {r['final']['checkpoint_step']}): {per_class}."]
    ceil = r.get("ceiling_at_output_resolution")
    if ceil:
        lines.append(
            f"A perfect prediction at the networks' 1/4-resolution output would score {100 * ceil['miou']:.1f} mIoU "
            "(" + ", ".join(f"{k} {100 * v:.1f}" for k, v in ceil["per_class_iou"].items()) + ")."
        )
    fast = r.get("fast_inference")
    if fast:
        lines.append(
            f"Fastest inference within 1 mIoU point of the best solve (`evaluate.py --trajectory`): `{fast['setting']}`, "
            f"{100 * fast['miou']:.1f} mIoU"
            + (
                f", {fast['time_vs_hrnetv2']:.2f}x HRNetV2's time at the same width."
                if fast.get("time_vs_hrnetv2")
                else "."
            )
        )
    if r.get("note"):
        lines += ["", r["note"]]
    return "\n".join(lines)


def trajectory_markdown(r: dict) -> str:
    t = r.get("trajectory")
    if not t:
        return "(no trajectory analysis in this run)"
    along = t["along_trajectory"]
    lines = [
        f"The main job's model (`runs/synthetic`, measured {r['machine']['date']}; {along['num_images']} validation "
        f"images, one image per forward pass, {r['machine']['cpu_count']} CPU cores). mIoU (%) of the prediction decoded "
        f"from the ODE state at time t of the model's own solve ({t['model_solver']}):",
        "",
        "| t | " + " | ".join(f"{x:.3g}" for x in along["t"]) + " |",
        "|---|" + "---|" * len(along["t"]),
        "| mIoU | " + " | ".join(f"{100 * m:.1f}" for m in along["miou"]) + " |",
        "",
        "Solver sweep (the same weights solved differently):",
        "",
        "| setting | mIoU (%) | mean NFE | ms / image |",
        "|---|---:|---:|---:|",
    ]
    for row in t["sweep"]:
        miou = "—" if row["miou"] is None else f"{100 * row['miou']:.2f}"
        nfe = "—" if row["mean_nfe"] is None else f"{row['mean_nfe']:.1f}"
        lines.append(f"| `{row['setting']}` | {miou} | {nfe} | {1000 * row['seconds_per_image']:.1f} |")
    fast = r.get("fast_inference")
    if fast:
        lines += ["", f"Recommended fast-inference setting (fastest within 1 point of the best): `{fast['setting']}`."]
    return "\n".join(lines)


def copy_pictures(workdir: str) -> list[str]:
    """The run's trajectory plot, one prediction strip and one prediction image, for people to
    look at (benchmarks/results/main_job/)."""
    import glob
    import shutil

    out = os.path.join(report.RESULTS, "main_job")
    os.makedirs(out, exist_ok=True)
    picks = {
        "trajectory.png": os.path.join(workdir, "eval", "trajectory", "trajectory.png"),
        "strip_example.png": (
            sorted(glob.glob(os.path.join(workdir, "eval", "trajectory", "strips", "*.png"))) or [None]
        )[0],
        "prediction_example.png": (sorted(glob.glob(os.path.join(workdir, "eval", "predictions", "*.png"))) or [None])[
            0
        ],
    }
    written = []
    for name, src in picks.items():
        if src and os.path.exists(src):
            shutil.copyfile(src, os.path.join(out, name))
            written.append(os.path.join(out, name))
    return written


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "synthetic"))
    parser.add_argument("--seconds", type=int, help="the command's wall time, if main.sh did not record it")
    parser.add_argument("--note", help="a sentence on how the run went (shown under the table)")
    args = parser.parse_args(argv)
    result = collect(args.workdir, args.seconds, args.note)
    path = report.write_json("main_job.json", result)
    report.replace_block(os.path.join(ROOT, "README.md"), "main-job", markdown(result))
    report.replace_block(
        os.path.join(ROOT, "benchmarks", "README.md"), "main-job-trajectory", trajectory_markdown(result)
    )
    copy_pictures(args.workdir)
    print(markdown(result))
    print(f"written: {path}")
    return result


if __name__ == "__main__":
    main()
