"""The paper's claim on real data: HRNetV2, the Baseline and SegNode side by side on real CamVid.

The claim (Tables 1 and 2): SegNode reaches HRNetV2's mIoU with about a third of its
parameters and far less training memory. This script tests it on the real CamVid (SegNet
protocol: train on the 367 training frames, choose the checkpoint on val, score **test** at the
original 360x480 labels), with the code that trains and evaluates every run:

* the paper's three structures with every width scaled by one factor, 12/48: branches of
  12, 24, 48, 96 channels, a 16-channel stem, layer1 of 4 Bottlenecks of 16 planes; HRNetV2's
  stages (1, 4, 3 modules of 4 blocks), the Baseline's 6 residual modules, SegNode's field of 2
  modules x 2 blocks: SegNode has 0.33x HRNetV2's parameters, as in Table 2;
* one reduced input for all three: 120x160 crops of frames scaled by 0.5-2.0 and flipped,
  whole frames resized to 120x160 for evaluation (logits upsampled to the 360x480 labels);
* the same steps, batch, augmentation and loss (HRNet's OHEM cross-entropy) for all three, and
  one shared optimiser recipe (``--recipe shared``: SGD lr 0.1, momentum 0.9, poly, weight
  decay 1e-4, the real-data main job's) or each model's paper recipe (``--recipe paper``:
  ``configs/camvid.py``'s ``train.recipes``);
* SegNode trains with the main job's solve (Euler x 2, unrolled): the paper's adaptive
  Dopri5 + adjoint costs about 100x the Baseline's step on a CPU (benchmarks/README.md);
* seeds: 2 for HRNetV2 and the Baseline, 3 for SegNode (``--seeds``), taken round-robin so that
  an interrupted protocol has one run of each model first;
* per model: test mIoU (mean and standard deviation over seeds) and val mIoU, parameters, the
  analysed memory of the real training step (batch 8, 120x160), the time of that compiled step
  (median, the three interleaved in one process) and of one inference.

Every run resumes where it stopped (the training loop's exact resume): rerun the same command
after any interruption. Each run's folder records when and where each part of it trained
(``camvid_parity_run.json``). A finished run's record (val curve, val and test scores, where and
when it trained) is written at once to ``benchmarks/results/camvid_parity/<run>.json``, inside the
repository: commit it, and a later machine, which has neither the run folders nor the data's
checkpoints, skips that run and trains only what is missing. Writes
``benchmarks/results/camvid_parity.json``, the plot ``benchmarks/results/camvid/parity.png`` and the
page ``benchmarks/results/camvid_parity.md``.

    python -m benchmarks.camvid_parity --train_only        # train and test-score what is missing
    python -m benchmarks.camvid_parity                     # ... then measure and report (idle machine)
    python -m benchmarks.camvid_parity --report_only       # tables and plot again from the JSON

Needs the prepared CamVid (``python -m segnode_jax.data.prepare --dataset camvid --download``).
Plan: about 5 hours of 2-core CPU for the shared recipe (HRNetV2 and the Baseline take ~5x
SegNode's step).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if not __package__:  # run by path: the imports below need the repository root, which `python -m` puts on the path
    print(
        "error: run the benchmarks as modules from the repository root: python -m benchmarks.camvid_parity ...",
        file=sys.stderr,
    )
    sys.exit(2)

import segnode_jax  # noqa: E402
import segnode_jax.config  # noqa: E402
from benchmarks import report  # noqa: E402
from segnode_jax import metrics_log  # noqa: E402

CONFIG = os.path.join(ROOT, "configs", "camvid_small.py")
MODELS = ("hrnetv2", "baseline", "segnode")
SEEDS = {"hrnetv2": 2, "baseline": 2, "segnode": 3}
WIDTH = 12  # W48's structure at 12/48 of its widths
CROP = (120, 160)
BATCH = 8
STEPS = 1500
RECIPES = ("shared", "paper")
MAX_GAP = 0.01  # the claim: SegNode within 1 mIoU point of HRNetV2
PROVENANCE = "camvid_parity_run.json"
RECORDS = os.path.join(report.RESULTS, "camvid_parity")  # one committed JSON per finished run
FAILED = "camvid_parity_failed.txt"


def scaled_widths(width: int = WIDTH) -> dict[str, Any]:
    """W48's widths (branches 48.., stem 64, layer1 64 planes) scaled by ``width / 48``; the
    depths stay the paper's (layer1 4 blocks, SegNode's field 2 modules x 2 blocks)."""
    factor = width / 48
    return {
        "model.size": None,
        "model.width": width,
        "model.stem_width": round(64 * factor),
        "model.layer1_planes": round(64 * factor),
        "model.layer1_blocks": 4,
        "model.segnode.modules_per_field": 2,
        "model.segnode.blocks_per_branch": 2,
    }


def run_config(model: str, recipe: str, seed: int, steps: int = STEPS):
    """The config of one run (configs/camvid_small.py with the protocol's fixed settings)."""
    cfg = segnode_jax.load_config(CONFIG)
    over = {
        **scaled_widths(),
        "model.name": model,
        "seed": seed,
        "data.base_size": CROP[1],
        "data.crop_size": CROP,
        "data.eval_size": CROP,
        "train.batch_size": BATCH,
        "train.num_steps": steps,
        "train.loss.ohem_min_kept": CROP[0] * CROP[1] // 8,
        "train.eval_every_steps": max(1, steps // 3),
        "train.checkpoint_every_steps": max(1, min(250, steps)),
        "train.log_every_steps": max(1, min(50, steps)),
        "train.progress_bar": False,
        "eval.num_visualizations": 0,
    }
    if recipe == "shared":  # explicit: otherwise each model's default recipe (train.recipes) fills them in
        over.update(
            {"train.optimizer": "sgd", "train.learning_rate": 0.1, "train.momentum": 0.9, "train.weight_decay": 1e-4}
        )
    if recipe == "paper":  # each model's own (train.recipes); configs/camvid.py sets HRNet's
        paper = segnode_jax.load_config(os.path.join(ROOT, "configs", "camvid.py")).train.recipes
        over.update(
            {"train.optimizer": "auto", "train.learning_rate": None, "train.momentum": None, "train.weight_decay": None}
        )
        cfg.train.recipes = paper
    return segnode_jax.config.apply_overrides(cfg, over)


def plan(seeds: dict[str, int]) -> list[tuple[str, int]]:
    """(model, seed) in the order they train: round-robin over seeds."""
    return [(m, s) for s in range(max(seeds.values())) for m in MODELS if s < seeds[m]]


def run_name(model: str, recipe: str, seed: int) -> str:
    return f"{model}_{recipe}_s{seed}"


def _last_step(path: str) -> int:
    """The newest step the run has: its newest checkpoint or logged step."""
    jsonl = os.path.join(path, metrics_log.JSONL_NAME)
    records = metrics_log.read_jsonl(jsonl) if os.path.exists(jsonl) else []
    logged = max((int(r["step"]) for r in records if r.get("split", "train") == "train"), default=0)
    folder = os.path.join(path, "checkpoints")
    saved = [int(d) for d in os.listdir(folder) if d.isdigit()] if os.path.isdir(folder) else []
    return max([logged, *saved])


def _finished(path: str, steps: int) -> bool:
    jsonl = os.path.join(path, metrics_log.JSONL_NAME)
    return os.path.exists(jsonl) and any(
        r.get("split") == "val" and int(r["step"]) == steps for r in metrics_log.read_jsonl(jsonl)
    )


def _read(path: str, name: str, default: Any = None) -> Any:
    try:
        with open(os.path.join(path, name)) as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def _record_segment(path: str, started: float, from_step: int) -> None:
    """Appends when, where and from which step to which this run trained just now."""
    segments = _read(path, PROVENANCE, {"segments": []})
    segments["segments"].append(
        {
            "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
            "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "seconds": round(time.time() - started),
            "cpu": report.cpu_model(),
            "cpu_count": os.cpu_count(),
            "from_step": from_step,
            "to_step": _last_step(path),
        }
    )
    with open(os.path.join(path, PROVENANCE), "w") as f:
        json.dump(segments, f, indent=1)


def kept(name: str, steps: int, records: str = RECORDS) -> dict[str, Any] | None:
    """The committed record of a finished (or failed) run of ``steps`` steps, if there is one."""
    record = _read(records, f"{name}.json")
    if record is None or record.get("steps") != steps or not (record["finished"] or record["failed"]):
        return None
    return record


def train_one(model: str, recipe: str, seed: int, workdir: str, steps: int, records: str = RECORDS) -> dict[str, Any]:
    """Trains (or resumes) one run, scores its best-val checkpoint on test and keeps its record in
    ``records``; a run already kept there is not trained again. Returns the record."""
    from segnode_jax import ode, scoring, training

    name = run_name(model, recipe, seed)
    record = kept(name, steps, records)
    if record is not None:
        print(f"kept: {name} (test mIoU {record['test_miou']}) from {os.path.relpath(records, ROOT)}", flush=True)
        return record
    path = os.path.join(workdir, name)
    if not _finished(path, steps) and not os.path.exists(os.path.join(path, FAILED)):
        os.makedirs(path, exist_ok=True)
        started, from_step = time.time(), _last_step(path)
        print(f"training {name} from step {from_step}", flush=True)
        try:
            training.train_and_evaluate(run_config(model, recipe, seed, steps), path)
        except (training.NonFiniteLossError, ode.ODESolveError) as e:
            # A recipe a model cannot train with is a result, kept so that a rerun does not retry it.
            with open(os.path.join(path, FAILED), "w") as f:
                f.write(f"{e}\n")
        finally:
            _record_segment(path, started, from_step)
    if _finished(path, steps) and not os.path.exists(os.path.join(path, "eval_test", "results.json")):
        scoring.evaluate_checkpoint(
            path, which="best", split="test", output=os.path.join(path, "eval_test"), progress=False
        )
    record = collect(path, model, recipe, seed, steps)
    if record["finished"] or record["failed"]:
        report.write_json_at(os.path.join(records, f"{name}.json"), record)
    return record


def collect(path: str, model: str, recipe: str, seed: int, steps: int) -> dict[str, Any]:
    """One run's record: val curve, the chosen checkpoint's val and test scores, provenance."""
    jsonl = os.path.join(path, metrics_log.JSONL_NAME)
    records = metrics_log.read_jsonl(jsonl) if os.path.exists(jsonl) else []
    val = [r for r in records if r.get("split") == "val"]
    test = _read(os.path.join(path, "eval_test"), "results.json")
    failed = None
    if os.path.exists(os.path.join(path, FAILED)):
        with open(os.path.join(path, FAILED)) as f:
            failed = f.read().strip()
    best = max(val, key=lambda r: r["miou"]) if val else None
    return {
        "model": model,
        "recipe": recipe,
        "seed": seed,
        "steps": steps,
        "run": os.path.basename(path),
        "finished": _finished(path, steps) and test is not None,
        "failed": failed,
        "curve": [[int(r["step"]), float(r["miou"])] for r in val],
        "val_miou": float(best["miou"]) if best else None,
        "val_step": int(best["step"]) if best else None,
        "test_miou": float(test["miou"]) if test else None,
        "test_per_class_iou": test["per_class_iou"] if test else None,
        "segments": _read(path, PROVENANCE, {"segments": []})["segments"],
    }


def summarise(runs: list[dict[str, Any]], measured: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for model in MODELS:
        for recipe in RECIPES:
            rs = [r for r in runs if r["model"] == model and r["recipe"] == recipe]
            if not rs:
                continue
            done = [r for r in rs if r["finished"]]
            tests = [r["test_miou"] for r in done]
            vals = [r["val_miou"] for r in done]
            rows.append(
                {
                    "model": model,
                    "recipe": recipe,
                    "seeds": len(rs),
                    "finished": len(done),
                    "failed": sum(1 for r in rs if r["failed"]),
                    "test_miou_mean": float(np.mean(tests)) if tests else None,
                    "test_miou_std": float(np.std(tests, ddof=1)) if len(tests) > 1 else None,
                    "val_miou_mean": float(np.mean(vals)) if vals else None,
                    **measured.get(model, {}),
                }
            )
    return rows


def claim(rows: list[dict[str, Any]], recipe: str = "shared") -> dict[str, Any] | None:
    """SegNode against HRNetV2 under ``recipe``: the mIoU gap, parameter and memory ratios."""
    by = {r["model"]: r for r in rows if r["recipe"] == recipe}
    seg, hr = by.get("segnode"), by.get("hrnetv2")
    if not seg or not hr or seg["test_miou_mean"] is None or hr["test_miou_mean"] is None or "params" not in seg:
        return None
    gap = seg["test_miou_mean"] - hr["test_miou_mean"]
    params = seg["params"] / hr["params"]
    memory = seg["train_memory_bytes"] / hr["train_memory_bytes"]
    return {
        "recipe": recipe,
        "test_miou_gap": gap,
        "params_ratio": params,
        "memory_ratio": memory,
        "within_1_point": gap >= -MAX_GAP,
        "third_of_params": params <= 0.4,
        "under_half_memory": memory < 0.5,
        "holds": gap >= -MAX_GAP and params <= 0.4 and memory < 0.5,
    }


def plot(runs: list[dict[str, Any]], path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recipes = [r for r in RECIPES if any(run["recipe"] == r and run["finished"] for run in runs)]
    fig, axes = plt.subplots(
        1, max(1, len(recipes)), figsize=(6.5 * max(1, len(recipes)), 4.5), squeeze=False, sharey=True
    )
    for ax, recipe in zip(axes[0], recipes):
        for k, model in enumerate(MODELS):
            done = [r for r in runs if r["model"] == model and r["recipe"] == recipe and r["finished"]]
            if not done:
                continue
            colour = plt.get_cmap("tab10")(k)
            for r in done:
                steps, miou = zip(*r["curve"])
                ax.plot(steps, [100 * m for m in miou], "-", color=colour, alpha=0.35, lw=1)
            test = 100 * np.mean([r["test_miou"] for r in done])
            ax.axhline(test, color=colour, ls="--", lw=1.2)
            ax.plot(
                [], [], "-", color=colour, label=f"{model}: val per seed; dashed: test mean {test:.1f} (n={len(done)})"
            )
        ax.set(title=f"CamVid, {recipe} recipe", xlabel="training step", ylabel="mIoU (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _segments_text(runs: list[dict[str, Any]]) -> str:
    days, cpus = {}, set()
    for r in runs:
        for s in r["segments"]:
            days[s["started"][:10]] = days.get(s["started"][:10], 0) + s["seconds"]
            if s.get("cpu"):
                cpus.add(f"{s['cpu_count']} cores of {s['cpu']}")
    hours = ", ".join(f"{d} ({h / 3600:.1f} h)" for d, h in sorted(days.items()))
    return f"trained {hours} on {'; '.join(sorted(cpus)) or 'an unrecorded host'}"


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"`python -m benchmarks.camvid_parity` ({_segments_text(result['runs'])}; measured {m['date']} on "
        f"{m['cpu_count']} cores of {m.get('cpu') or 'an unrecorded CPU'}, no GPU): the paper's three structures at "
        f"{WIDTH}/48 of W48's widths, {result['steps']} steps of batch {BATCH} on real CamVid's training frames "
        f"({CROP[0]}x{CROP[1]} crops), OHEM cross-entropy, SegNode with Euler x2 unrolled; checkpoint chosen on val, "
        "**test** scored at the original 360x480 labels. Memory: XLA's analysis of the training step "
        f"(batch {BATCH}); times: median of the compiled steps interleaved.",
        "",
        "| model | recipe | test mIoU | val mIoU | params | train memory | step time | infer ms/img |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        if r["test_miou_mean"] is None:
            test = f"not finished (0/{r['seeds']})" if not r["failed"] else f"diverged ({r['failed']}/{r['seeds']})"
        else:
            test = f"{100 * r['test_miou_mean']:.1f}" + (
                f" ± {100 * r['test_miou_std']:.1f}" if r["test_miou_std"] is not None else ""
            )
            test += f" (n={r['finished']}" + (f" of {r['seeds']}" if r["finished"] < r["seeds"] else "") + ")"
        val = "-" if r["val_miou_mean"] is None else f"{100 * r['val_miou_mean']:.1f}"
        meas = (
            (
                f"{r['params'] / 1e6:.2f}M | {r['train_memory_bytes'] / 2**20:.0f} MiB | {1000 * r['train_step_seconds']:.0f} ms | "
                f"{r['infer_ms_per_image']:.1f}"
            )
            if "params" in r
            else "- | - | - | -"
        )
        lines.append(f"| {r['model']} | {r['recipe']} | {test} | {val} | {meas} |")
    c = result.get("claim")
    if c:
        verdict = "holds" if c["holds"] else "does not hold"
        lines += [
            "",
            f"The claim {verdict} here ({c['recipe']} recipe): SegNode's test mIoU is "
            f"{100 * c['test_miou_gap']:+.1f} points from HRNetV2's with {c['params_ratio']:.2f}x its parameters "
            f"and {c['memory_ratio']:.2f}x its analysed training memory.",
        ]
    if result.get("plot"):
        lines += ["", f"![CamVid side by side: val mIoU per run, test means]({result['plot']})"]
    return "\n".join(lines)


def main(argv=None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "camvid_parity"))
    parser.add_argument("--recipe", choices=RECIPES, default="shared")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument(
        "--seeds",
        type=int,
        nargs=3,
        metavar=("HRNETV2", "BASELINE", "SEGNODE"),
        default=[SEEDS[m] for m in MODELS],
        help="seeds per model (default 2 2 3)",
    )
    parser.add_argument(
        "--train_only", action="store_true", help="train and test-score the runs; no measurement, no report"
    )
    parser.add_argument(
        "--report_only", action="store_true", help="the table and plot again from results/camvid_parity.json"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds of the step measurement")
    parser.add_argument(
        "--page", help="the Markdown file whose block to update (default benchmarks/results/camvid_parity.md)"
    )
    args = parser.parse_args(argv)
    name = "camvid_parity.json"
    if args.report_only:
        with open(os.path.join(report.RESULTS, name)) as f:
            result = json.load(f)
    else:
        seeds: dict[str, int] = dict(zip(MODELS, args.seeds))
        order = plan(seeds)
        records = [train_one(m, args.recipe, s, args.workdir, args.steps) for m, s in order]
        if args.train_only:
            return None
        earlier = _read(report.RESULTS, name, {})
        runs = [r for r in earlier.get("runs", []) if r["recipe"] != args.recipe] + records
        from benchmarks import parity

        measured = parity.measure(
            {m: run_config(m, "shared", 0, args.steps) for m in MODELS}, args.steps, args.repeats, batch=BATCH
        )
        result = {
            "machine": report.machine(),
            "steps": args.steps,
            "width": WIDTH,
            "crop": list(CROP),
            "batch": BATCH,
            "runs": runs,
            "measured": measured,
        }
        result["rows"] = summarise(runs, measured)
        result["claim"] = claim(result["rows"])
        result["plot"] = os.path.relpath(plot(runs, os.path.join(report.RESULTS, "camvid", "parity.png")), ROOT)
        report.write_json(name, result)
    text = markdown(result)
    report.replace_block(args.page or os.path.join(report.RESULTS, "camvid_parity.md"), "camvid-parity", text)
    print(text)
    return result


if __name__ == "__main__":
    from segnode_jax import cli

    cli.quiet_logs()

    def command() -> int:  # main returns the result, for callers in Python; the command's status is 0
        main()
        return 0

    sys.exit(cli.guarded(command))
