"""Running a model over a dataset split (:func:`evaluate`): in ``whole`` mode entirely on device
(a jitted predict step, then a jitted scoring step that resizes logits to each label's size
inside a fixed canvas and accumulates the confusion matrix), in the other modes through a
:class:`~segnode_jax.evaluation.predictor.Predictor` and host-side assembly; several hosts sum
their confusion matrices."""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np

from segnode_jax import data, ode
from segnode_jax.evaluation.classification import evaluate_classification
from segnode_jax.evaluation.inference import canvas_groups, infer, pad_value, padded_batch, round_up
from segnode_jax.evaluation.metrics import LABEL_CANVAS_MULTIPLE, confusion_matrix_np, metrics_from_confusion
from segnode_jax.evaluation.predictor import Predictor, _score_jit
from segnode_jax.evaluation.report import _write_visualization, composite
from segnode_jax.evaluation.settings import EvalSettings, sum_over_hosts
from segnode_jax.labels import IGNORE_INDEX
from segnode_jax.resize import resize_bilinear_np


def _examples(dcfg, split: str, num_images: int | None):
    import grain

    ds = data.eval_dataset(dcfg, split=split)
    if num_images is not None:
        ds = ds[: int(num_images)]
    count = len(ds)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))
    return it, count


def evaluate(
    variables,
    cfg,
    *,
    settings: EvalSettings | None = None,
    visualize_dir: str | None = None,
    progress: bool = False,
    devices=None,
    on_prediction=None,
) -> dict[str, Any]:
    """Evaluates model variables on a split of ``cfg.data``.

    Arguments:
      variables: ``{"params", "batch_stats"}`` (host or device arrays).
      cfg: the run config (``model``, ``data``, ``eval`` sections).
      settings: evaluation settings (default: from ``cfg``).
      visualize_dir: where to write ``input | ground truth | prediction`` PNGs of the first
        ``settings.num_visualizations`` images (None: none).
      progress: show a tqdm bar.
      devices: this host's devices to run on (default: all); the batch is split over them.
      on_prediction: called as ``on_prediction(example, pred)`` with every image's train-id
        prediction at its label's (the original) resolution.

    Returns:
      A classifier (``model.task="classification"``): top-1/top-5 accuracy and loss
      (:func:`~segnode_jax.evaluation.classification.evaluate_classification`; no images are
      written). Otherwise the metrics of :func:`metrics_from_confusion` plus ``num_images``, ``split``,
      ``mode``, ``scales``/``flip`` (multiscale), ``mean_nfe`` and ``num_solves`` (SegNode),
      ``confusion_matrix``, ``seconds`` and ``visualizations`` (paths).

    Raises:
      segnode_jax.data.PreparationError: the dataset is not prepared.
      segnode_jax.ODESolveError: an ODE solve failed (the message names the field to change).
    """
    s = settings or EvalSettings.from_config(cfg)
    if cfg.model.get("task", "segmentation") == "classification":
        return evaluate_classification(variables, cfg, settings=s, progress=progress, devices=devices)
    predictor = Predictor.for_model(
        variables, cfg.model, batch_size=s.batch_size, per_image_solve=s.per_image_solve, devices=devices
    )
    return evaluate_predictor(
        predictor, cfg, settings=s, visualize_dir=visualize_dir, progress=progress, on_prediction=on_prediction
    )


def evaluate_predictor(
    predictor: Predictor,
    cfg,
    *,
    settings: EvalSettings | None = None,
    visualize_dir: str | None = None,
    progress: bool = False,
    on_prediction=None,
) -> dict[str, Any]:
    """:func:`evaluate` with any :class:`Predictor` (``cfg.model`` only gives the class count
    and the ODE settings named in solver error messages). ``on_prediction(example, pred)``
    is called with every image's train-id prediction at its label's resolution (e.g. an
    :class:`~segnode_jax.evaluation.server_export.ExportWriter`)."""
    from tqdm import tqdm

    s = settings or EvalSettings.from_config(cfg)
    dcfg = cfg.data
    info = data.get_info(dcfg)
    num_classes = int(cfg.model.num_classes)
    if num_classes != info.num_classes:
        raise ValueError(f"model.num_classes={num_classes} but the {dcfg.name} dataset has {info.num_classes} classes")
    it, count = _examples(dcfg, s.split, s.num_images)
    fill = pad_value(dcfg)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    visualizations: list[str] = []
    start = time.time()
    bar = tqdm(
        total=count, desc=f"eval {s.split} ({s.mode})", unit="img", disable=not progress or jax.process_index() != 0
    )

    def visualize(ex, pred):
        if visualize_dir is not None and len(visualizations) < s.num_visualizations:
            pic = composite(ex["raw_image"], ex["label"], pred, info.palette, info.class_names)
            visualizations.append(_write_visualization(visualize_dir, ex["name"], pic))
        if on_prediction is not None:
            on_prediction(ex, pred)

    with ode.solver_errors(cfg.model.get("ode")):
        if s.mode == "whole":
            score = _score_jit(predictor.mesh)
            for group in canvas_groups(it, lambda ex: ex["image"].shape, predictor.batch_size, s.pad_multiple):
                confusion += _whole_batch(predictor, score, group, fill, s.pad_multiple, visualize)
                bar.update(len(group))
        else:
            for ex in it:
                confusion += _one_image(predictor, ex, s, fill, info.flip_pairs, num_classes, visualize)
                bar.update(1)
        stats = predictor.solver_stats()
    bar.close()
    confusion = sum_over_hosts(confusion)
    num_images = int(sum_over_hosts(np.asarray([count]))[0])
    result = metrics_from_confusion(confusion, info.class_names, miou_over=s.miou_over)
    result.update(
        num_images=num_images,
        split=s.split,
        mode=s.mode,
        dataset=dcfg.name,
        model=cfg.model.name,
        confusion_matrix=confusion.tolist(),
        seconds=round(time.time() - start, 3),
        visualizations=visualizations,
    )
    result.update(_mode_settings(s))
    result.update(stats)
    return result


def _one_image(predictor: Predictor, ex, s: EvalSettings, fill, flip_pairs, num_classes: int, visualize) -> np.ndarray:
    """The confusion of one image scored by ``infer`` (slide / multiscale / hrnet modes), its
    scores resized to the label's resolution where they differ."""
    scores, _ = infer(predictor, ex["image"], s, fill=fill, flip_pairs=flip_pairs)
    label = ex["label"]
    if scores.shape[:2] != label.shape:
        scores = resize_bilinear_np(scores, label.shape)
    pred = np.argmax(scores, axis=-1).astype(np.int32)
    visualize(ex, pred)
    return confusion_matrix_np(pred, label, num_classes)[:, :num_classes]


def _mode_settings(s: EvalSettings) -> dict[str, Any]:
    """The settings of the evaluation mode that ``results.json`` records."""
    out: dict[str, Any] = {}
    if s.mode == "multiscale":
        out.update(scales=list(s.scales), flip=s.flip, multiscale_base=s.multiscale_base)
    if s.mode == "hrnet":
        out.update(
            scales=list(s.scales),
            flip=s.flip,
            hrnet_rule=s.hrnet_rule,
            base_size=s.base_size,
            crop=list(s.crop) if s.crop else None,
        )
    if s.mode == "slide" or (s.mode == "multiscale" and s.multiscale_base == "slide"):
        out.update(crop=list(s.crop) if s.crop else None, stride=list(s.stride) if s.stride else None)
    return out


def _whole_batch(predictor: Predictor, score, group, fill, pad_multiple, visualize) -> np.ndarray:
    """Whole-image inference and scoring of a group of examples sharing an image canvas."""
    n, bs = len(group), predictor.batch_size
    images = padded_batch([ex["image"] for ex in group], pad_multiple, fill, rows=bs)
    hc, wc = images.shape[1:3]
    image_size = np.zeros((bs, 2), np.int32)
    lh = round_up(max(ex["label"].shape[0] for ex in group), LABEL_CANVAS_MULTIPLE)
    lw = round_up(max(ex["label"].shape[1] for ex in group), LABEL_CANVAS_MULTIPLE)
    labels = np.full((bs, lh, lw), IGNORE_INDEX, np.int32)
    label_size = np.zeros((bs, 2), np.int32)
    for i, ex in enumerate(group):
        image_size[i] = ex["image"].shape[:2]
        labels[i, : ex["label"].shape[0], : ex["label"].shape[1]] = ex["label"]
        label_size[i] = ex["label"].shape
    image_size[n:] = (hc, wc)
    label_size[n:] = (lh, lw)
    logits = predictor.device_call(images[:n])
    cm, pred = score(logits, *(predictor.put(a) for a in (image_size, labels, label_size)))
    cm = np.asarray(cm, np.int64)
    for i, ex in enumerate(group):
        visualize(ex, np.asarray(pred[i])[: ex["label"].shape[0], : ex["label"].shape[1]])
    return cm
