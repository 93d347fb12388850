"""What ``evaluate.py`` does, as functions: evaluate a checkpoint, or score saved predictions.

Both write ``results.json`` (see ``evaluation.metrics_from_confusion`` for the fields) into an
output folder and return ``(results, output_folder)``.
"""

from __future__ import annotations

import copy
import os
import re
from typing import Any

import jax

from segnode_jax import api, checkpoints, checks, data, evaluation, models, parallel, weights
from segnode_jax import config as config_lib
from segnode_jax.checkpoints import CheckpointError
from segnode_jax.evaluation import trajectory

RESULTS_NAME = "results.json"
PREDICTIONS_DIR = "predictions"


def _step_of(pytree_dir: str) -> int | None:
    m = re.search(r"(?:^|/)(\d+)/state/?$", pytree_dir.replace(os.sep, "/"))
    return int(m.group(1)) if m else None


def refuse_classifier(cfg, what: str) -> None:
    """``what`` (export, trajectory, predict) works on segmentation models only."""
    if cfg.get("model") is not None and cfg.model.get("task", "segmentation") == "classification":
        raise CheckpointError(
            f"{what} is for segmentation models; this run is an ImageNet-pretraining classifier (model.task=classification): "
            "evaluate it for top-1/top-5 without it, or fine-tune it on a segmentation dataset with --config.init_from"
        )


def default_output(ckpt: str, split: str, mode: str, which: str) -> str:
    """``<run workdir>/eval/<split>_<mode>[_best]`` (the workdir is where config.json is)."""
    found = config_lib.find_run_config(ckpt)
    base = os.path.dirname(found) if found else os.path.abspath(ckpt)
    suffix = "_best" if which == "best" else ""
    return os.path.join(base, "eval", f"{split}_{mode}{suffix}")


def evaluate_checkpoint(
    ckpt: str,
    cfg=None,
    *,
    which: str = "latest",
    split: str | None = None,
    mode: str | None = None,
    num_images: int | None = None,
    batch_size: int | None = None,
    output: str | None = None,
    progress: bool = True,
    export: str | None = None,
    overwrite: bool = False,
) -> tuple[dict[str, Any], str]:
    """Evaluates a checkpoint and writes ``results.json`` and prediction images.

    Arguments:
      ckpt: a training workdir, a ``checkpoints/<step>`` folder, or a converted-weights folder.
      cfg: the config; None reads the run's ``config.json``.
      which: ``"latest"`` or ``"best"`` (for a workdir).
      split, mode, num_images, batch_size: override ``cfg.eval`` (None: keep).
      output: output folder (default :func:`default_output`).
      progress: show a progress bar.
      export: also write every prediction as the dataset's benchmark server wants it into
        this folder, and ``<export>.zip`` (see :class:`segnode_jax.evaluation.ExportWriter`);
        ``results["export"]`` and ``results["export_zip"]`` name them.
      overwrite: allow ``export`` to be a folder that already holds files.

    Returns:
      ``(results, output_folder)``.

    Raises:
      CheckpointError: no checkpoint at ``ckpt``, no config for it, or a checkpoint that does
        not fit the config.
      segnode_jax.data.PreparationError: the dataset is not prepared.
      segnode_jax.ODESolveError: an ODE solve failed.
    """
    writer = None
    if export is not None and cfg is not None:
        refuse_classifier(cfg, "--export")
        writer = evaluation.ExportWriter(cfg.data, export, overwrite=overwrite)  # refuse before loading
    cfg, loaded, pytree_dir, description = _load(ckpt, cfg, which)
    if export is not None:
        refuse_classifier(cfg, "--export")
    if export is not None and writer is None:
        writer = evaluation.ExportWriter(cfg.data, export, overwrite=overwrite)
    settings = evaluation.EvalSettings.from_config(
        cfg, split=split, mode=mode, num_images=num_images, batch_size=batch_size
    )
    out_dir = os.path.abspath(output or default_output(ckpt, settings.split, settings.mode, which))
    results = evaluation.evaluate(
        loaded,
        cfg,
        settings=settings,
        visualize_dir=os.path.join(out_dir, PREDICTIONS_DIR),
        progress=progress,
        on_prediction=writer,
    )
    results.update(checkpoint=description, step=_step_of(pytree_dir))
    if writer is not None:
        results.update(export=writer.out_dir, export_zip=writer.finish())
    evaluation.write_results(os.path.join(out_dir, RESULTS_NAME), results)
    return results, out_dir


def load_model(ckpt: str, cfg=None, which: str = "latest", *, prepare_data: bool = False):
    """``(cfg, variables, pytree_dir, description)`` of a checkpoint, checked against the config
    (the run's ``config.json`` when ``cfg`` is None). ``prepare_data``: also make sure the
    dataset is prepared (evaluation needs it; predicting your own images does not)."""
    return _load(ckpt, cfg, which, prepare_data=prepare_data)


def load(path: str, *, which: str = "best"):
    """``segnode_jax.load``: ``(variables, cfg)`` of a trained model, checked against its config.

    Arguments:
      path: a training workdir, one of its checkpoints, or a model folder written by
        :func:`segnode_jax.checkpoints.export_model` (such as ``pretrained/camvid_small``).
      which: for a workdir, its ``"best"`` (default) or ``"latest"`` checkpoint.

    Returns:
      ``{"params", "batch_stats"}`` as numpy arrays, and the run config (``cfg.model`` for
      ``segnode_jax.apply``, the whole ``cfg`` for ``segnode_jax.predict``).

    Raises:
      CheckpointError: nothing readable at ``path``, or weights that do not fit its config.
      segnode_jax.config.RunConfigNotFound: no ``config.json`` with it.
    """
    cfg, variables, _, _ = _load(path, None, which, prepare_data=False)
    return variables, cfg


def _load(ckpt: str, cfg, which: str, *, prepare_data: bool = True):

    checkpoints.resolve_checkpoint(ckpt, which=which)  # nothing there: say so before anything else
    cfg = config_lib.load_run_config(ckpt) if cfg is None else copy.deepcopy(cfg)
    for section in ("model", "data", "eval"):
        if section not in cfg:
            raise CheckpointError(f"the config has no '{section}' section; pass a config from configs/")
    checks.check_config(cfg)  # every enumerated field, before data or compilation
    # Several hosts: each evaluates its shard of the split; the confusion matrices are summed.
    parallel.initialize(cfg.get("parallel"))
    data.resolve_num_classes(cfg)
    if prepare_data:
        data.ensure_prepared(cfg.data)
    # The checkpoint actually read (a workdir whose newest is damaged: the newest intact one).
    loaded, pytree_dir, description = checkpoints.read_checkpoint(ckpt, which=which)
    crop = tuple(int(v) for v in cfg.data.crop_size)
    expected = jax.eval_shape(lambda: api.init(cfg.model, jax.random.key(0), (1, crop[0], crop[1], 3)))
    weights.check_compatible(expected, loaded, source=description)
    return cfg, loaded, pytree_dir, description


def trajectory_checkpoint(
    ckpt: str,
    cfg=None,
    *,
    which: str = "latest",
    split: str | None = None,
    num_images: int | None = None,
    output: str | None = None,
    progress: bool = True,
) -> tuple[dict[str, Any], str]:
    """``evaluate.py --trajectory``: SegNode's speed/accuracy trade-off (see
    ``segnode_jax.evaluation.trajectory``), written to ``output`` (default ``<workdir>/eval/trajectory``).

    Raises:
      CheckpointError, PreparationError: as :func:`evaluate_checkpoint`.
      segnode_jax.evaluation.trajectory.TrajectoryError: not a SegNode, or bad ``eval.trajectory`` settings.
    """

    named = config_lib.load_run_config(ckpt) if cfg is None else cfg
    refuse_classifier(named, "--trajectory")
    if named.get("model") is not None and not models.capabilities(named.model).saves_along_solve:
        raise trajectory.TrajectoryError(
            f"--trajectory needs a model that saves its predictions along the ODE solve "
            f"({', '.join(models.along_solve_names())}); the config has model.name={named.model.name}"
        )
    cfg, loaded, pytree_dir, description = _load(ckpt, cfg, which)
    if split:
        with cfg.eval.ignore_type():
            cfg.eval.split = split
    found = config_lib.find_run_config(ckpt)
    base = os.path.dirname(found) if found else os.path.abspath(ckpt)
    out_dir = os.path.abspath(output or os.path.join(base, "eval", "trajectory"))
    result = trajectory.run(
        loaded,
        cfg,
        out_dir,
        num_images=num_images,
        progress=progress,
        metadata={"checkpoint": description, "step": _step_of(pytree_dir)},
    )
    return result, out_dir


def score_folder(
    cfg, pred_dir: str, *, split: str | None = None, output: str | None = None
) -> tuple[dict[str, Any], str]:
    """Scores a folder of predicted label images (see ``evaluation.score_predictions``) and
    writes ``results.json`` into ``output`` (default ``<pred_dir>_eval``)."""
    if "data" not in cfg:
        raise CheckpointError("the config has no 'data' section; pass a config from configs/")
    results = evaluation.score_predictions(cfg.data, pred_dir, split=split)
    results.update(predictions=os.path.abspath(pred_dir))
    out_dir = os.path.abspath(output or os.path.abspath(pred_dir).rstrip(os.sep) + "_eval")
    evaluation.write_results(os.path.join(out_dir, RESULTS_NAME), results)
    return results, out_dir
