"""Tables 1 and 2 in miniature, on a CPU: HRNetV2, the Baseline and SegNode side by side (not a test).

The paper's claim is accuracy parity (Cityscapes: SegNode 81.8, HRNetV2 81.6, Baseline 81.7 mIoU)
with a third of the parameters and far less training memory. This script checks it at small
scale, on the main job's data (the synthetic street scenes, ``configs/synthetic.py``), with the
same code that trains and evaluates real runs:

* the three models at the same width (branches of 8, 16, 32, 64 channels; plain cross-entropy:
  ``PARITY_FIXED``, whatever the main job's config says), the same data, the same number of
  steps, ``--seeds`` seeds each;
* each model with its own paper recipe (``train.recipes``: SegNode SGD 0.1, Baseline AdamW 1e-4,
  HRNetV2 SGD 0.01) *and* all three with one shared recipe (AdamW 1e-3), so that architecture
  and recipe effects can be told apart;
* SegNode also trained with each candidate solve: Dopri5 + backsolve (the paper's), Dopri5 +
  recursive checkpointing (the dataset configs'), RK4 x 2 + backsolve, Euler x 2 unrolled (``--solve_seeds`` seeds), each with and without
  rematerialisation (remat changes memory and time, not the function: its rows are trained with
  ``--remat_seeds`` seeds, or only measured with ``--remat_seeds 0``);
* per row: validation mIoU (mean and standard deviation over seeds), parameters, the analysed
  memory of the real training step at batch 24 (the paper's Table 2 batch) on 128x128 crops and
  the time of that same compiled step (all variants interleaved in one process, median), inference
  milliseconds per image and the solver's NFE;
* the recommended training solve: the fastest whose mean mIoU is within 1 point of
  Dopri5 + backsolve's.

Writes ``benchmarks/results/parity.json`` and ``parity.png`` (validation mIoU against training
step), and regenerates the table in ``benchmarks/README.md``. Runs are kept
in ``--workdir`` (default ``runs/parity``): rerunning resumes or reuses finished runs.

    python -m benchmarks.parity                  # the full protocol: several hours on 2 CPU cores
    python -m benchmarks.parity --steps 200 --seeds 1 --solve_seeds 1 --remat_seeds 0   # reduced
    python -m benchmarks.parity --quick          # a smoke test of every code path (~30 min: compiles)
    python -m benchmarks.parity --ode_peers      # also U-Node and NODEs-UNet (Table 1's neural-ODE peers)
    python -m benchmarks.parity --shared_sgd     # also every model with SegNode's SGD 0.1 (a second shared recipe)
    python -m benchmarks.parity ... --runs_from benchmarks/results/parity.json   # reuse that file's finished runs
    python -m benchmarks.parity --report_only    # tables and plot again from results/parity.json

Most of the time is XLA compiling each variant on the CPU (minutes each) and the adaptive
Dopri5 + backsolve runs; the measured step times are in the table, each run's wall time in
``parity.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if not __package__:  # run by path: the imports below need the repository root, which `python -m` puts on the path
    print(
        "error: run the benchmarks as modules from the repository root: python -m benchmarks.parity ...",
        file=sys.stderr,
    )
    sys.exit(2)

import segnode_jax  # noqa: E402
import segnode_jax.config  # noqa: E402
from benchmarks import report  # noqa: E402
from segnode_jax import api, data, memory, metrics_log, ode, parallel, training  # noqa: E402

CONFIG = os.path.join(ROOT, "configs", "synthetic.py")
MODELS = ("hrnetv2", "baseline", "segnode")
# The earlier neural-ODE segmentation designs of Table 1 (``--ode_peers``): trained like SegNode
# (its main-job solve, both recipes), at a small width (PARITY_FIXED).
ODE_PEERS = ("unode", "nodes_unet")
# SegNode's candidate training solves (cfg.model.ode overrides).
SOLVES = {
    "dopri5 + backsolve": {"ode.solver": "dopri5", "ode.num_steps": None, "ode.adjoint": "backsolve"},
    # The dataset configs' training solve (issue 34): the paper's Dopri5 with the exact gradient of
    # the discrete solve by recursive checkpointing, instead of the backsolve adjoint.
    "dopri5 + recursive checkpoint": {
        "ode.solver": "dopri5",
        "ode.num_steps": None,
        "ode.adjoint": "recursive_checkpoint",
    },
    "rk4 x2 + backsolve": {"ode.solver": "rk4", "ode.num_steps": 2, "ode.adjoint": "backsolve"},
    "euler x2 unrolled": {"ode.solver": "euler", "ode.num_steps": 2, "ode.adjoint": "unrolled"},
}
PAPER_SOLVE = "dopri5 + backsolve"
REMAT = {"remat.stem": True, "remat.field": True, "remat.head": True}
# One recipe for all three models (explicit train.* values win over train.recipes).
SHARED_RECIPE = {"optimizer": "adamw", "learning_rate": 1e-3, "weight_decay": 1e-4}
# A second shared recipe (``--shared_sgd``): SegNode's paper recipe (SGD lr 0.1, momentum 0.9, no
# decay, poly) for every model, so that a ranking under one shared recipe can be checked under
# another (the AdamW one favours U-Node, 2026-12-02).
SHARED_RECIPES = {"shared": SHARED_RECIPE, "shared_sgd": dict(segnode_jax.config.paper_recipes().segnode)}
MEMORY_BATCH = 24
MAX_MIOU_DROP = 0.01


@dataclasses.dataclass(frozen=True)
class Variant:
    """A model as trained and measured: name, SegNode solve (None for the others), remat."""

    model: str
    solve: str | None
    remat: bool

    @property
    def setting(self) -> str:
        base = self.solve or "-"
        return base + (" + remat" if self.remat else "")

    @property
    def key(self) -> str:
        return f"{self.model}|{self.setting}"

    def overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model.name": self.model}
        if self.solve is not None:
            out.update({f"model.{k}": v for k, v in SOLVES[self.solve].items()})
        if self.remat:
            out.update({f"model.{k}": v for k, v in REMAT.items()})
        return out


@dataclasses.dataclass(frozen=True)
class Run:
    variant: Variant
    recipe: str  # "paper" | "shared" (AdamW) | "shared_sgd"
    seed: int

    @property
    def name(self) -> str:
        solve = (self.variant.solve or "").replace(" + ", "_").replace(" ", "_")
        return f"{self.variant.model}{'_' + solve if solve else ''}{'_remat' if self.variant.remat else ''}_{self.recipe}_s{self.seed}"


def main_job_solve() -> str:
    """The name of the solve configs/synthetic.py trains with."""
    ode_cfg = segnode_jax.load_config(CONFIG).model.ode
    for name, over in SOLVES.items():
        if all(ode_cfg[k.split(".", 1)[1]] == v for k, v in over.items()):
            return name
    raise SystemExit(
        f"configs/synthetic.py's solve ({ode_cfg.solver}, {ode_cfg.num_steps}, {ode_cfg.adjoint}) is not a candidate"
    )


def plan(
    seeds: int, remat_seeds: int, solve_seeds: int | None = None, peers: tuple[str, ...] = (), shared_sgd: bool = False
) -> list[Run]:
    """Model comparison (paper and shared recipes, with ``shared_sgd`` also the shared SGD one;
    SegNode and the ODE ``peers`` with the main job's solve, ``seeds`` seeds) and solve comparison
    (paper recipe; each other solve with ``solve_seeds`` seeds, default ``seeds``; each solve with
    remat with ``remat_seeds``)."""
    main_solve = main_job_solve()
    solve_seeds = seeds if solve_seeds is None else solve_seeds
    runs: list[Run] = []
    for recipe in ("paper", "shared") + (("shared_sgd",) if shared_sgd else ()):
        for model in MODELS + tuple(peers):
            v = Variant(model, main_solve if model in ("segnode",) + ODE_PEERS else None, False)
            runs += [Run(v, recipe, s) for s in range(seeds)]
    for solve in SOLVES:
        if solve != main_solve:
            runs += [Run(Variant("segnode", solve, False), "paper", s) for s in range(solve_seeds)]
        runs += [Run(Variant("segnode", solve, True), "paper", s) for s in range(remat_seeds)]
    return runs


# What the parity runs keep fixed whatever the main job's config becomes: the width and loss
# they were measured with (results/parity.json), so that finished runs stay reusable.
# Width 8: HRNet branches of 8..64 channels; the U-Net family's top level likewise 8 (U-Node's
# levels 8..128, NODEs-UNet's U-Net 8..128 with its ODE blocks).
PARITY_FIXED = {
    "model.width": 8,
    "train.loss.ohem": False,
    "model.unode.num_filters": 8,
    "model.nodes_unet.base_width": 8,
    "model.nodes_unet.groups": 8,
}


def run_config(run: Run, steps: int):
    cfg = segnode_jax.load_config(CONFIG)
    over = {
        **PARITY_FIXED,
        **run.variant.overrides(),
        "seed": run.seed,
        "train.num_steps": steps,
        "train.eval_every_steps": max(1, steps // 4),
        "train.checkpoint_every_steps": steps,
        "train.log_every_steps": max(1, min(50, steps)),
        "train.progress_bar": False,
        "eval.num_visualizations": 0,
    }
    if run.recipe in SHARED_RECIPES:
        over.update({f"train.{k}": v for k, v in SHARED_RECIPES[run.recipe].items()})
    return segnode_jax.config.apply_overrides(cfg, over)


FAILED = "parity_failed.txt"  # in a run's folder: why it stopped (a non-finite loss, a failed solve)


PROVENANCE = "parity_run.json"  # in a run's folder: when, where and how long it trained


def _provenance(path: str, jsonl: str) -> dict[str, Any]:
    """When a finished run in the workdir was trained (its record, else its log's time)."""
    try:
        with open(os.path.join(path, PROVENANCE)) as f:
            return json.load(f)
    except FileNotFoundError:
        mtime = time.gmtime(os.path.getmtime(jsonl if os.path.exists(jsonl) else path))
        return {"trained": time.strftime("%Y-%m-%d %H:%M UTC", mtime), "cpu": None, "wall_seconds": None}


def _failure(path: str) -> str | None:
    try:
        with open(os.path.join(path, FAILED)) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def train(run: Run, steps: int, workdir: str, earlier: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Trains one run (or reuses/resumes it) and reads its validation curve and NFE. A run not in
    ``workdir`` but in ``earlier`` (records of an earlier parity.json of the same steps, by run
    name) is taken from there, marked with the date it was trained."""
    cfg = run_config(run, steps)
    path = os.path.join(workdir, run.name)
    jsonl = os.path.join(path, metrics_log.JSONL_NAME)
    done = os.path.exists(jsonl) and any(
        r.get("split") == "val" and int(r["step"]) == steps for r in metrics_log.read_jsonl(jsonl)
    )
    if not done and earlier and run.name in earlier:
        return earlier[run.name]
    t = time.perf_counter()
    failed = None
    if not done:
        failed = _failure(path)
    if not done and failed is None:
        try:
            training.train_and_evaluate(cfg, path)
        except (training.NonFiniteLossError, ode.ODESolveError) as e:
            # A recipe the model cannot train with is a result: recorded (and kept in the run's
            # folder, so that a rerun does not train it again), not a crash of the whole protocol.
            failed = str(e)
            with open(os.path.join(path, FAILED), "w") as f:
                f.write(failed + "\n")
        provenance = {
            "trained": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cpu": report.cpu_model(),
            "wall_seconds": time.perf_counter() - t,
        }
        with open(os.path.join(path, PROVENANCE), "w") as f:
            json.dump(provenance, f)
    else:
        provenance = _provenance(path, jsonl)
    records = metrics_log.read_jsonl(jsonl) if os.path.exists(jsonl) else []
    val = [r for r in records if r.get("split") == "val"]
    nfe = [float(r["ode_nfe"]) for r in records if r.get("split", "train") == "train" and "ode_nfe" in r]
    return {
        "model": run.variant.model,
        "setting": run.variant.setting,
        "recipe": run.recipe,
        "seed": run.seed,
        "miou": None if failed else float(val[-1]["miou"]),
        "failed": failed,
        "curve": [[int(r["step"]), float(r["miou"])] for r in val],
        "train_nfe": float(np.mean(nfe)) if nfe else None,
        "eval_nfe": float(val[-1]["mean_nfe"]) if val and "mean_nfe" in val[-1] else None,
        **provenance,
    }


def measure(configs: dict[str, Any], steps: int, repeats: int, batch: int = MEMORY_BATCH) -> dict[str, dict[str, Any]]:
    """Parameters, memory and step time of the real training step at ``batch`` on each config's
    crops (one compile per config serves both: the analysed executable is the one timed), and
    inference time of one image; the timed rounds interleave the configs (keyed as given)."""
    mesh = parallel.make_mesh()
    prepared = {}
    for key, run_cfg in configs.items():
        cfg = training.resolve_config(run_cfg)
        data.resolve_num_classes(cfg)
        data.ensure_prepared(cfg.data)
        tx, _ = training.make_optimizer(cfg.train, steps)
        h, w = (int(s) for s in cfg.data.crop_size)
        step_fn = training.make_train_step(cfg, steps, mesh)
        shardings = training.train_state_shardings(cfg.model, tx, mesh)
        abstract = jax.tree_util.tree_map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            training.abstract_train_state(cfg.model, tx),
            shardings,
        )
        batch_spec = {
            "image": jax.ShapeDtypeStruct((batch, h, w, 3), jnp.float32, sharding=parallel.batch_sharding(mesh)),
            "label": jax.ShapeDtypeStruct((batch, h, w), jnp.int32, sharding=parallel.batch_sharding(mesh)),
        }
        compiled = step_fn.lower(abstract, batch_spec).compile(compiler_options=memory.compiler_options())
        mem = memory.of_compiled(compiled)
        state = jax.device_put(training.create_train_state(cfg.model, tx, jax.random.key(0), (1, h, w, 3)), shardings)
        it = data.train_iterator(cfg.data, batch_size=batch, seed=0, worker_count=0)
        batch_data = parallel.global_batch(next(it), mesh)
        frozen = api.freeze(cfg.model)
        infer = jax.jit(lambda variables, x: api.apply(variables, x, frozen)[0])
        image = batch_data["image"][:1]
        with ode.solver_errors(cfg.model.ode):
            jax.block_until_ready(infer(state.variables, image))  # compiles
        prepared[key] = [cfg, compiled, infer, state, batch_data, image, mem]
        print(f"  compiled and analysed {key}", flush=True)
    times = {k: {"train": [], "infer": []} for k in prepared}
    for r in range(repeats + 1):  # round 0 warms up
        for k, p in prepared.items():
            cfg, step_fn, infer, state, batch_data, image, _ = p
            with ode.solver_errors(cfg.model.ode):
                t = time.perf_counter()
                state, _ = step_fn(state, batch_data)
                jax.block_until_ready(state.params)
                dt = time.perf_counter() - t
                t = time.perf_counter()
                jax.block_until_ready(infer(state.variables, image))
                di = time.perf_counter() - t
            p[3] = state
            if r:
                times[k]["train"].append(dt)
                times[k]["infer"].append(di)
    out = {}
    for key, (cfg, *_, mem) in prepared.items():
        out[key] = {
            "params": int(segnode_jax.count_params(cfg.model)),
            "train_memory_bytes": int(mem["total"]),
            "train_step_seconds": statistics.median(times[key]["train"]),
            "infer_ms_per_image": 1000 * statistics.median(times[key]["infer"]),
        }
    return out


def summarise(runs: list[dict[str, Any]], measured: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, setting, recipe): mIoU mean/std over seeds and the measurements;
    variants measured but not trained (remat with ``--remat_seeds 0``) get a row without mIoU."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["model"], r["setting"], r["recipe"]), []).append(r)
    rows = []
    trained = {f"{m}|{s}" for m, s, _ in groups}
    for key, values in measured.items():
        if key not in trained:
            model, setting = key.split("|", 1)
            rows.append(
                {
                    "model": model,
                    "setting": setting,
                    "recipe": "paper",
                    "seeds": 0,
                    "miou_mean": None,
                    "miou_std": None,
                    "nfe": None,
                    **values,
                }
            )
    for (model, setting, recipe), rs in groups.items():
        mious = [r["miou"] for r in rs if r["miou"] is not None]
        nfes = [r["eval_nfe"] for r in rs if r["eval_nfe"] is not None]
        rows.append(
            {
                "model": model,
                "setting": setting,
                "recipe": recipe,
                "seeds": len(rs),
                "failed": len(rs) - len(mious),
                "miou_mean": float(np.mean(mious)) if mious else None,
                "miou_std": float(np.std(mious, ddof=1)) if len(mious) > 1 else None,
                "nfe": float(np.mean(nfes)) if nfes else None,
                **measured[f"{model}|{setting}"],
            }
        )
    return rows


def best_recipes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model (plain variants: SegNode with the main job's solve), the recipe with the highest
    mean mIoU, best first."""
    solve = main_job_solve()
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["miou_mean"] is None or r["setting"] not in ("-", solve):
            continue
        if r["model"] not in best or r["miou_mean"] > best[r["model"]]["miou_mean"]:
            best[r["model"]] = {"model": r["model"], "recipe": r["recipe"], "miou_mean": r["miou_mean"]}
    return sorted(best.values(), key=lambda b: -b["miou_mean"])


def recommend(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The fastest SegNode solve (paper recipe) within 1 mIoU point of Dopri5 + backsolve's."""
    segnode = [r for r in rows if r["model"] == "segnode" and r["recipe"] == "paper" and r["miou_mean"] is not None]
    ref = next((r for r in segnode if r["setting"] == PAPER_SOLVE), None)
    if ref is None:
        return None
    ok = [r for r in segnode if r["miou_mean"] >= ref["miou_mean"] - MAX_MIOU_DROP]
    pick = min(ok, key=lambda r: r["train_step_seconds"])
    return {
        "setting": pick["setting"],
        "miou_mean": pick["miou_mean"],
        "train_step_seconds": pick["train_step_seconds"],
        "reference": PAPER_SOLVE,
        "reference_miou_mean": ref["miou_mean"],
        "reference_train_step_seconds": ref["train_step_seconds"],
        "max_miou_drop": MAX_MIOU_DROP,
        "speedup": ref["train_step_seconds"] / pick["train_step_seconds"],
    }


def plot(runs: list[dict[str, Any]], path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recipes = [r for r in ("paper", *SHARED_RECIPES) if any(run["recipe"] == r for run in runs)]
    fig, axes = plt.subplots(1, len(recipes), figsize=(6.5 * len(recipes), 4.5), sharey=True, squeeze=False)
    axes = axes[0]
    groups: dict[tuple, list] = {}
    for r in runs:
        if r["miou"] is not None:  # diverged runs have no (whole) curve
            groups.setdefault((r["model"], r["setting"], r["recipe"]), []).append(r["curve"])
    for (model, setting, recipe), curves in sorted(groups.items()):
        ax = axes[recipes.index(recipe)]
        steps = [s for s, _ in curves[0]]
        mean = [100 * float(np.mean([c[i][1] for c in curves])) for i in range(len(steps))]
        label = f"{model}, {setting}, {recipe}" if setting != "-" else f"{model}, {recipe}"
        # One colour per model in every panel; SegNode's other solves dashed.
        colour = plt.get_cmap("tab10")((MODELS + ODE_PEERS).index(model))
        style = "o-" if setting in ("-", main_job_solve()) else "s--"
        ax.plot(steps, mean, style, label=label, lw=1.5, color=colour)
    titles = {
        "paper": "each model's paper recipe",
        "shared": "shared recipe: AdamW 1e-3",
        "shared_sgd": "shared recipe: SGD 0.1 (SegNode's)",
    }
    for ax, recipe in zip(axes, recipes):
        ax.set(title=titles[recipe] + " (mean over seeds)", xlabel="training step")
    axes[0].set(ylabel="val mIoU (%)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown(result: dict[str, Any]) -> str:
    rows = result["rows"]
    solve_seeds = result.get("solve_seeds", result["seeds"])
    command = (
        f"`python -m benchmarks.parity --steps {result['steps']} --seeds {result['seeds']} "
        f"--solve_seeds {solve_seeds} --remat_seeds {result['remat_seeds']}"
        + (" --ode_peers" if result.get("ode_peers") else "")
        + (" --shared_sgd" if any(r["recipe"] == "shared_sgd" for r in result["runs"]) else "")
        + "`"
    )
    trained: dict[str, int] = {}
    for r in result["runs"]:
        day = (r.get("trained") or result["machine"]["date"])[:10]
        trained[day] = trained.get(day, 0) + 1
    recipes = result.get("shared_recipes", {"shared": result["shared_recipe"]})
    shared = "; ".join(f"`{name}`: " + ", ".join(f"{k} {v}" for k, v in rec.items()) for name, rec in recipes.items())
    lines = [
        f"Measured {result['machine']['date']} on {result['machine']['cpu_count']} CPU cores of "
        f"{result['machine'].get('cpu') or 'an unknown CPU'} ({result['machine']['backend']}), {command}: {result['steps']} training steps "
        f"of batch 8 on the synthetic street scenes (128x128), val mIoU on its 64 validation images; memory "
        f"(XLA's analysis) and time (median, variants interleaved) of the real training step at batch "
        f"{MEMORY_BATCH}; inference on one image. Shared recipes ({shared}); runs trained "
        + ", ".join(f"{day} ({n})" for day, n in sorted(trained.items()))
        + "."
        + (
            f" Params, memory and times were measured {result['measurements_date']} (same code and variants; "
            "`--measurements_from`)."
            if result.get("measurements_date")
            else ""
        ),
        "",
        f"| model | setting | recipe | val mIoU | params | train memory (b{MEMORY_BATCH}) | step time (b{MEMORY_BATCH}) | infer ms/img | NFE |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    order = {m: i for i, m in enumerate(MODELS + ODE_PEERS)}
    recipe_order = {name: i for i, name in enumerate(("paper", *SHARED_RECIPES))}
    for r in sorted(rows, key=lambda r: (recipe_order[r["recipe"]], order[r["model"]], r["setting"])):
        failed = r.get("failed", 0)
        if r["seeds"] == 0:
            miou = "same function (not trained)"
        elif r["miou_mean"] is None:
            miou = f"diverged ({failed}/{r['seeds']} seeds)"
        else:
            miou = f"{100 * r['miou_mean']:.1f}" + (
                f" ± {100 * r['miou_std']:.1f}" if r["miou_std"] is not None else ""
            )
            miou += f" (n={r['seeds'] - failed}" + (f"; {failed} diverged" if failed else "") + ")"
        nfe = "-" if r["nfe"] is None else f"{r['nfe']:.1f}"
        lines.append(
            f"| {r['model']} | {r['setting']} | {r['recipe']} | {miou} | {r['params'] / 1e3:.0f}k | "
            f"{r['train_memory_bytes'] / 2**20:.0f} MiB | {1000 * r['train_step_seconds']:.0f} ms | "
            f"{r['infer_ms_per_image']:.1f} | {nfe} |"
        )
    best = best_recipes(rows)
    if len({r["recipe"] for r in rows}) > 2:
        lines += [
            "",
            "Each model's best recipe of those tried (mean val mIoU; SegNode and the ODE peers with the main job's "
            "solve): "
            + ", ".join(f"{b['model']} {100 * b['miou_mean']:.1f} ({b['recipe']})" for b in best)
            + ". Diverged: "
            + (
                ", ".join(
                    f"{r['model']} under `{r['recipe']}` ({r['failed']}/{r['seeds']} seeds)"
                    for r in rows
                    if r.get("failed")
                )
                or "none"
            )
            + ".",
        ]
    rec = result.get("recommended_training_setting")
    if rec:
        lines += [
            "",
            f"Recommended training solve: **{rec['setting']}** ({100 * rec['miou_mean']:.1f} mIoU vs "
            f"{100 * rec['reference_miou_mean']:.1f} for {rec['reference']}, {rec['speedup']:.1f}x faster per step): "
            "the fastest within 1 point of the paper's solve.",
        ]
    return "\n".join(lines)


def _earlier_runs(path: str, steps: int) -> dict[str, dict[str, Any]]:
    """The run records of an earlier parity.json by run name (that file's runs all have its steps)."""
    with open(path) as f:
        earlier = json.load(f)
    if earlier["steps"] != steps:
        raise SystemExit(
            f"error: {path} holds runs of {earlier['steps']} steps, not {steps}; pass --steps {earlier['steps']} "
            "or omit --runs_from"
        )
    out = {}
    for r in earlier["runs"]:
        solve, remat = r["setting"].removesuffix(" + remat"), r["setting"].endswith(" + remat")
        run = Run(Variant(r["model"], None if solve == "-" else solve, remat), r["recipe"], r["seed"])
        record = {
            k: v
            for k, v in r.items()
            if k not in ("params", "train_memory_bytes", "train_step_seconds", "infer_ms_per_image", "nfe")
        }
        record.setdefault("trained", earlier["machine"]["date"])
        out[run.name] = record
    return out


MEASURED_FIELDS = ("params", "train_memory_bytes", "train_step_seconds", "infer_ms_per_image")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400, help="training steps per run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--remat_seeds", type=int, default=1)
    parser.add_argument(
        "--solve_seeds", type=int, default=None, help="seeds of SegNode's other candidate solves (default: --seeds)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (interleaved)")
    parser.add_argument(
        "--ode_peers",
        action="store_true",
        help="also train U-Node and NODEs-UNet (Table 1's earlier neural-ODE designs) at the same small width",
    )
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "parity"))
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 4 steps, 1 seed, 1 timed round, results in --workdir only"
    )
    parser.add_argument(
        "--measurements_from",
        default=None,
        metavar="PARITY_JSON",
        help="take params, memory and times from an earlier parity.json of the same variants "
        "instead of measuring them again (the table says when they were measured)",
    )
    parser.add_argument(
        "--runs_from",
        default=None,
        metavar="PARITY_JSON",
        help="take finished runs (same steps) that --workdir lacks from an earlier parity.json instead of "
        "training them again (each keeps the date it was trained)",
    )
    parser.add_argument(
        "--shared_sgd",
        action="store_true",
        help="also train every model with SegNode's paper recipe (SGD 0.1) as a second shared recipe",
    )
    parser.add_argument(
        "--report_only",
        action="store_true",
        help="regenerate the README tables and the plot from results/parity.json (no runs)",
    )
    return parser


def _earlier_measurements(path: str, variants) -> tuple[dict[str, dict], str]:
    """``--measurements_from``: the measurements of ``variants`` in an earlier parity.json and
    when they were taken; exits with one ``error:`` line if a variant is not there."""
    with open(path) as f:
        earlier = json.load(f)
    measured = {f"{r['model']}|{r['setting']}": {k: r[k] for k in MEASURED_FIELDS} for r in earlier["rows"]}
    missing = sorted({v.key for v in variants} - set(measured))
    if missing:
        raise SystemExit(
            f"error: {path} has no measurements of {', '.join(missing)}; measure them (omit --measurements_from)"
        )
    return {v.key: measured[v.key] for v in variants}, earlier.get("measurements_date") or earlier["machine"]["date"]


def _publish(result: dict[str, Any], quick: bool, workdir: str) -> None:
    """Writes parity.json, the plot and the README table (a quick run: into ``workdir`` only)."""
    if quick:
        out = os.path.join(workdir, "parity.json")
        with open(out, "w") as f:
            json.dump(result, f, indent=1)
        plot(result["runs"], os.path.join(workdir, "parity.png"))
        print(markdown(result))
        print(f"quick run: {out} (the committed results are left alone)")
        return
    path = report.write_json("parity.json", result)
    plot(result["runs"], os.path.join(report.RESULTS, "parity.png"))
    table = markdown(result)
    report.replace_block(os.path.join(ROOT, "benchmarks", "README.md"), "parity", table)
    print(table)
    print(f"results: {path}")


def main(argv=None) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    if args.report_only:
        with open(os.path.join(report.RESULTS, "parity.json")) as f:
            result = json.load(f)
        plot(result["runs"], os.path.join(report.RESULTS, "parity.png"))
        table = markdown(result)
        report.replace_block(os.path.join(ROOT, "benchmarks", "README.md"), "parity", table)
        print(table)
        return result
    from segnode_jax import cli

    cli.quiet_logs()
    if args.quick:
        args.steps, args.seeds, args.remat_seeds, args.solve_seeds, args.repeats = 4, 1, 1, 1, 1
        args.workdir = os.path.join(args.workdir, "quick")
    runs = plan(args.seeds, args.remat_seeds, args.solve_seeds, ODE_PEERS if args.ode_peers else (), args.shared_sgd)
    earlier_runs = _earlier_runs(args.runs_from, args.steps) if args.runs_from else None
    print(f"parity: {len(runs)} training runs of {args.steps} steps into {args.workdir}", flush=True)
    start = time.time()
    results = []
    for i, run in enumerate(runs, 1):
        res = train(run, args.steps, args.workdir, earlier_runs)
        results.append(res)
        outcome = f"val mIoU {100 * res['miou']:.2f}" if res["miou"] is not None else f"failed: {res['failed']}"
        print(f"[{i}/{len(runs)}] {run.name}: {outcome} ({(time.time() - start) / 60:.1f} min)", flush=True)
    variants = list(dict.fromkeys(r.variant for r in runs))
    if args.remat_seeds == 0:  # remat changes memory and time, not the function: measured only
        variants += [Variant("segnode", solve, True) for solve in SOLVES]
    measured_at = None
    if args.measurements_from:
        measured, measured_at = _earlier_measurements(args.measurements_from, variants)
    else:
        measured = measure(
            {v.key: run_config(Run(v, "paper", 0), args.steps) for v in variants}, args.steps, args.repeats
        )
    rows = summarise(results, measured)
    result = {
        "machine": report.machine(),
        "steps": args.steps,
        "seeds": args.seeds,
        "solve_seeds": args.seeds if args.solve_seeds is None else args.solve_seeds,
        "remat_seeds": args.remat_seeds,
        "memory_batch": MEMORY_BATCH,
        "shared_recipe": SHARED_RECIPE,
        "shared_recipes": {k: v for k, v in SHARED_RECIPES.items() if k == "shared" or args.shared_sgd},
        "main_job_solve": main_job_solve(),
        "ode_peers": list(ODE_PEERS) if args.ode_peers else [],
        "runs": [
            {**r, **{k: measured[f"{r['model']}|{r['setting']}"][k] for k in MEASURED_FIELDS}, "nfe": r["eval_nfe"]}
            for r in results
        ],
        "rows": rows,
        "recommended_training_setting": recommend(rows),
        "best_recipe_per_model": best_recipes(rows),
        "measurements_date": measured_at,
        "total_minutes": (time.time() - start) / 60,
    }
    _publish(result, args.quick, args.workdir)
    return result


if __name__ == "__main__":
    main()
