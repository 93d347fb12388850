"""Speed/accuracy of SegNode's solve (paper sec. 4.8, Figs. 3-4): ``evaluate.py --trajectory``.

Two measurements on the evaluation split:

* **along the trajectory**: the prediction decoded from the ODE state at several times
  ``t in (t0, t1]`` of one solve (the model's own solver settings, dense output), scored like
  the final prediction -> mIoU(t), and for a few images a strip of those predictions (Fig. 3);
* **solver sweep**: the whole evaluation repeated with other solvers, step counts and
  tolerances (``eval.trajectory.sweep``) -> mIoU, mean NFE and seconds per image of each, next
  to HRNetV2 at the same width (random weights, time only) -> the fastest setting within
  ``eval.trajectory.max_miou_drop`` of the most accurate one is recommended for fast inference.

Writes ``trajectory.json``, ``trajectory.png`` (mIoU vs t; mIoU vs NFE; mIoU vs seconds) and
``strips/*.png`` into the output folder.
"""

from __future__ import annotations

import copy
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from segnode_jax import api, data, evaluation, models, ode
from segnode_jax.config import eval_config
from segnode_jax.errors import UserError
from segnode_jax.evaluation.inference import pad_value, padded_batch


class TrajectoryError(UserError):
    """Bad trajectory settings (the message names the field)."""


def _sweep_overrides(spec: str, model_ode) -> dict[str, Any]:
    try:
        return ode.solver_spec_overrides(spec, model_ode)
    except ode.SolverSpecError as e:
        raise TrajectoryError(f"eval.trajectory.sweep entry: {e}") from None


def _with_ode(cfg, **settings):
    c = copy.deepcopy(cfg)
    with c.unlocked():
        for k, v in settings.items():
            c.model.ode[k] = v
    return c


def _prepare(ex, pad_multiple: int, fill):
    """One example as evaluate.py's whole-image mode sees it: padded to its canvas."""
    image = padded_batch([ex["image"].astype(np.float32)], pad_multiple, fill)
    label = ex["label"][None].astype(np.int32)
    size = np.array([ex["image"].shape[:2]], np.int32)
    lsize = np.array([label.shape[1:3]], np.int32)
    return image, size, label, lsize


def along_trajectory(variables, cfg, *, times, num_images=None, num_strips=4, strips_dir=None, progress=False):
    """mIoU of the predictions decoded from the ODE state at ``times`` (one solve per image).

    Returns:
      ``{"t": [...], "miou": [...], "pixel_accuracy": [...], "mean_nfe", "strips": [paths]}``.
    """
    from tqdm import tqdm

    if not models.capabilities(cfg.model).saves_along_solve:
        raise TrajectoryError(
            f"--trajectory needs a model that saves its predictions along the ODE solve "
            f"({', '.join(models.along_solve_names())}); this checkpoint is model.name={cfg.model.name}"
        )
    t0, t1 = float(cfg.model.ode.t0), float(cfg.model.ode.t1)
    times = sorted({float(t) for t in times} | {t1})
    if times[0] <= t0:
        raise TrajectoryError(f"trajectory times must lie in (t0, t1] = ({t0:g}, {t1:g}]")
    c = _with_ode(cfg, saveat=tuple(t for t in times if t < t1))
    frozen = api.freeze(c.model)

    @jax.jit
    def run(variables, image):
        _, aux = api.apply(variables, image, frozen, train=False)
        return aux["ode"]["trajectory_logits"], aux["ode"]["nfe"]

    score = jax.jit(evaluation.score_batch)
    info = data.get_info(cfg.data)
    n_cls = int(cfg.model.num_classes)
    confusion = np.zeros((len(times), n_cls, n_cls), np.int64)
    nfes, strips = [], []
    ds = data.eval_dataset(cfg.data, split=cfg.eval.get("split") or cfg.data.eval_split)
    pad_multiple, fill = evaluation.EvalSettings.from_config(cfg).pad_multiple, pad_value(cfg.data)
    if num_images is not None:
        ds = ds[: int(num_images)]
    for idx in tqdm(range(len(ds)), desc="trajectory", unit="img", disable=not progress):
        ex = ds[idx]
        assert ex is not None, "an evaluation dataset is mapped, never filtered"
        image, size, label, lsize = _prepare(ex, pad_multiple, fill)
        traj, nfe = run(variables, jnp.asarray(image))
        nfes.append(int(nfe))
        preds = []
        for k in range(len(times)):
            cm, pred = score(traj[k], size, label, lsize)
            confusion[k] += np.asarray(cm, np.int64)
            preds.append(np.asarray(pred[0])[: ex["label"].shape[0], : ex["label"].shape[1]])
        if strips_dir is not None and len(strips) < num_strips:
            strips.append(_write_strip(strips_dir, ex, preds, times, info))
    metrics = [evaluation.metrics_from_confusion(cm, info.class_names) for cm in confusion]
    return {
        "t": times,
        "miou": [m["miou"] for m in metrics],
        "pixel_accuracy": [m["pixel_accuracy"] for m in metrics],
        "mean_nfe": float(np.mean(nfes)) if nfes else None,
        "num_images": len(nfes),
        "strips": strips,
    }


def _write_strip(out_dir, ex, preds, times, info) -> str:
    """input | ground truth | the prediction decoded at each solve time, each panel titled."""
    from PIL import Image

    pic = evaluation.labelled_panels(
        ex["raw_image"], ex["label"], preds, [f"t = {t:.3g}" for t in times], info.palette, info.class_names
    )
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, str(ex["name"]).replace("/", "__") + ".png")
    Image.fromarray(pic).save(path)
    return path


def _seconds_per_image(predictor, images: np.ndarray, repeats: int = 3) -> float:
    """Median wall time of one forward pass per image (compiled beforehand)."""
    jax.block_until_ready(predictor.device_call(images[:1]))
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(len(images)):
            jax.block_until_ready(predictor.device_call(images[i : i + 1]))
        runs.append((time.perf_counter() - start) / len(images))
    return float(np.median(runs))


def solver_sweep(variables, cfg, *, specs, num_images=None, timing_images=4, progress=False):
    """Evaluates the model with each solver setting of ``specs`` (see :func:`segnode_jax.ode.parse_solver_spec`).

    Returns:
      A list of ``{"setting", "miou", "mean_nfe", "seconds_per_image"}`` plus a final
      ``{"setting": "hrnetv2 (same width)", "seconds_per_image"}`` row.
    """

    settings = evaluation.EvalSettings.from_config(cfg, mode="whole", num_images=num_images, batch_size=1)
    settings.num_visualizations = 0
    ds = data.eval_dataset(cfg.data, split=settings.split)
    examples = [ds[i] for i in range(min(timing_images, len(ds)))]
    images = np.stack([ex["image"] for ex in examples if ex is not None]).astype(np.float32)
    rows = []
    for spec in specs:
        c = _with_ode(cfg, **_sweep_overrides(spec, cfg.model.ode))
        res = evaluation.evaluate(variables, c, settings=settings, progress=progress)
        predictor = evaluation.Predictor.for_model(variables, c.model, batch_size=1)
        rows.append(
            {
                "setting": spec,
                "miou": res["miou"],
                "pixel_accuracy": res["pixel_accuracy"],
                "mean_nfe": res.get("mean_nfe"),
                "seconds_per_image": _seconds_per_image(predictor, images),
            }
        )
    ref = copy.deepcopy(cfg)
    with ref.unlocked():
        ref.model.name = "hrnetv2"
    hr_vars = api.init(ref.model, jax.random.key(0), (1,) + images.shape[1:])
    hr = evaluation.Predictor.for_model(hr_vars, ref.model, batch_size=1)
    rows.append({"setting": "hrnetv2 (same width)", "seconds_per_image": _seconds_per_image(hr, images)})
    return rows


def recommend(rows, max_drop: float) -> dict[str, Any] | None:
    """The fastest sweep setting whose mIoU is within ``max_drop`` (absolute) of the best."""
    scored = [r for r in rows if r.get("miou") is not None]
    if not scored:
        return None
    best = max(r["miou"] for r in scored)
    ok = [r for r in scored if r["miou"] >= best - max_drop]
    pick = min(ok, key=lambda r: r["seconds_per_image"])
    hr = next((r["seconds_per_image"] for r in rows if r["setting"].startswith("hrnetv2")), None)
    out = dict(pick, best_miou=best, max_drop=max_drop)
    if hr:
        out["time_vs_hrnetv2"] = pick["seconds_per_image"] / hr
    return out


def plot(result: dict[str, Any], path: str) -> str:
    """mIoU along t; mIoU vs NFE and vs seconds per image for the sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 5.4))
    tr = result["along_trajectory"]
    axes[0].plot(tr["t"], [100 * m for m in tr["miou"]], "o-")
    axes[0].set(xlabel="solve time t", ylabel="mIoU (%)", title=f"prediction at time t ({result['model_solver']})")
    rows = [r for r in result["sweep"] if r.get("miou") is not None]
    for ax, key, label in (
        (axes[1], "mean_nfe", "mean NFE per image"),
        (axes[2], "seconds_per_image", "seconds per image"),
    ):
        # Points are numbered on the plot and named in a legend: settings with similar cost
        # and accuracy sit on top of each other, and their names would overlap.
        for i, r in enumerate(rows, 1):
            ax.scatter(r[key], 100 * r["miou"], s=60, label=f"{i}: {r['setting']}")
            ax.annotate(
                str(i),
                (r[key], 100 * r["miou"]),
                fontsize=8,
                ha="center",
                va="center",
                color="white",
                fontweight="bold",
            )
        ax.set(xlabel=label, ylabel="mIoU (%)")
        if key == "mean_nfe":
            ax.set_xscale("symlog", linthresh=1.0)
        # Below the axes: inside, it would hide the points it names.
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    hr = next((r for r in result["sweep"] if r["setting"].startswith("hrnetv2")), None)
    if hr:
        axes[2].axvline(hr["seconds_per_image"], color="gray", ls="--", label="HRNetV2, same width")
        axes[2].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    axes[1].set_title("solver sweep")
    axes[2].set_title("solver sweep")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def run(variables, cfg, out_dir: str, *, num_images=None, progress=True, metadata=None) -> dict[str, Any]:
    """Both measurements, the recommendation, the JSON, the plot and the strips; ``metadata``
    (e.g. the checkpoint's name and step) is stored in ``trajectory.json`` too."""

    # Runs from before eval.trajectory existed get the defaults.
    tcfg = cfg.eval.get("trajectory") or eval_config().trajectory
    k = int(tcfg.get("num_times", 8))
    t0, t1 = float(cfg.model.ode.t0), float(cfg.model.ode.t1)
    times = [t0 + (t1 - t0) * (i + 1) / k for i in range(k)]
    os.makedirs(out_dir, exist_ok=True)
    result: dict[str, Any] = {
        "split": cfg.eval.get("split") or cfg.data.eval_split,
        "model_solver": ode.describe_solve(cfg.model.ode),
        "along_trajectory": along_trajectory(
            variables,
            cfg,
            times=times,
            num_images=num_images,
            num_strips=int(tcfg.get("num_strips", 4)),
            strips_dir=os.path.join(out_dir, "strips"),
            progress=progress,
        ),
    }
    specs = list(tcfg.get("sweep") or ())
    result["sweep"] = solver_sweep(variables, cfg, specs=specs, num_images=num_images, progress=progress)
    result["recommended"] = recommend(result["sweep"], float(tcfg.get("max_miou_drop", 0.01)))
    result.update(metadata or {})
    evaluation.write_results(os.path.join(out_dir, "trajectory.json"), result)
    result["plot"] = plot(result, os.path.join(out_dir, "trajectory.png"))
    return result


def summary(result: dict[str, Any]) -> str:
    tr = result["along_trajectory"]
    lines = [f"along the trajectory ({result['model_solver']}, mean NFE {tr['mean_nfe']}):"]
    lines += [f"  t={t:.3g}  mIoU {100 * m:.2f}" for t, m in zip(tr["t"], tr["miou"])]
    lines.append("solver sweep:")
    for r in result["sweep"]:
        miou = f"mIoU {100 * r['miou']:.2f}  NFE {r['mean_nfe']}" if r.get("miou") is not None else "(time only)"
        lines.append(f"  {r['setting']:<22} {miou}  {1000 * r['seconds_per_image']:.1f} ms/image")
    rec = result.get("recommended")
    if rec:
        extra = f", {rec['time_vs_hrnetv2']:.2f}x HRNetV2's time" if "time_vs_hrnetv2" in rec else ""
        lines.append(
            f"fast inference: {rec['setting']} (mIoU {100 * rec['miou']:.2f} vs best {100 * rec['best_miou']:.2f}{extra})"
        )
    return "\n".join(lines)
