"""Scoring a folder of saved predictions (label images in the dataset's own format) with the
same metric code (:func:`score_predictions`)."""

from __future__ import annotations

import fnmatch
import os
from typing import Any

import numpy as np

from segnode_jax import data
from segnode_jax.errors import UserError
from segnode_jax.evaluation.metrics import confusion_matrix_np, metrics_from_confusion


class PredictionError(UserError):
    """A folder of saved predictions that cannot be scored (missing files, wrong sizes)."""


def _prediction_path(pred_dir: str, name: str, gt_path: str) -> str | None:
    base = os.path.basename(gt_path)
    ext = os.path.splitext(gt_path)[1] or ".png"
    candidates = [
        os.path.join(pred_dir, name + ext),
        os.path.join(pred_dir, name + ".png"),
        os.path.join(pred_dir, os.path.dirname(name), base),
        os.path.join(pred_dir, base),
    ]
    for c in candidates:
        if os.path.isfile(c):
            return c
    return None


class _PatternIndex:
    """Finds predictions the way a dataset's own evaluator does, by a file-name pattern
    anywhere under the folder (Cityscapes: ``<city>_<seq>_<frame>*.png``, as cityscapesScripts)."""

    def __init__(self, pred_dir: str):
        self.walk = [(root, sorted(files)) for root, _, files in sorted(os.walk(pred_dir))]

    def find(self, pattern: str, name: str) -> str | None:
        matches = [os.path.join(root, f) for root, files in self.walk for f in fnmatch.filter(files, pattern)]
        if len(matches) > 1:
            shown = " and ".join(matches[:2]) + (f" (and {len(matches) - 2} more)" if len(matches) > 2 else "")
            raise PredictionError(
                f"two predictions match {name} ({pattern}): {shown}; keep one per image in the folder"
            )
        return matches[0] if matches else None


def score_predictions(dcfg, pred_dir: str, *, split: str | None = None) -> dict[str, Any]:
    """Scores a folder of predicted label images against the ground truth of a split.

    Arguments:
      dcfg: data settings (``cfg.data``).
      pred_dir: predictions in the dataset's own label format, one per ground-truth file,
        named like it: ``<name>.png`` (the example name, e.g. ``frankfurt/frankfurt_000000_000294``)
        or the ground-truth file's own name (in the name's sub-folder or flat); for datasets
        whose evaluator finds predictions by pattern (Cityscapes: any file under the folder
        named ``<city>_<seq>_<frame>*.png``, e.g. ``..._leftImg8bit.png``) that way too.
      split: default ``dcfg.eval_split``.

    Returns:
      The metrics of :func:`metrics_from_confusion` plus ``num_images`` and ``split``.

    Raises:
      PredictionError: ``pred_dir`` is missing, lacks predictions (names the first ones), holds
        two for one image (names both), or a prediction's size differs from its ground truth.
    """

    split = split or dcfg.eval_split
    if not os.path.isdir(pred_dir):
        raise PredictionError(f"predictions folder {pred_dir} does not exist")
    info = data.get_info(dcfg)
    c = info.num_classes
    gt_files = data.ground_truth_files(dcfg, split)
    pattern_of = getattr(data.dataset_module(dcfg.name), "prediction_pattern", None)
    index = _PatternIndex(pred_dir) if pattern_of else None
    pairs, missing = [], []
    for name, gt_path in gt_files:
        p = _prediction_path(pred_dir, name, gt_path)
        if p is None and index is not None and pattern_of is not None:
            p = index.find(pattern_of(name), name)
        if p is None:
            missing.append(name)
        else:
            pairs.append((name, gt_path, p))
    if missing:
        raise PredictionError(
            f"{len(missing)} of {len(gt_files)} {dcfg.name} {split} images have no prediction in {pred_dir} "
            f"(expected e.g. {os.path.join(pred_dir, missing[0] + '.png')}; first missing: "
            f"{', '.join(missing[:3])}). Name each prediction like its ground-truth file or example."
        )
    confusion = np.zeros((c, c + 1), np.int64)
    for name, gt_path, p in pairs:
        gt = data.label_to_train_ids(dcfg, gt_path)
        pred = data.label_to_train_ids(dcfg, p)
        if pred.shape != gt.shape:
            raise PredictionError(
                f"prediction {p} is {pred.shape[1]}x{pred.shape[0]} but its ground truth {gt_path} is "
                f"{gt.shape[1]}x{gt.shape[0]} (width x height); predictions must be at the original resolution."
            )
        confusion += confusion_matrix_np(pred, gt, c)
    result = metrics_from_confusion(confusion, info.class_names)
    result.update(num_images=len(pairs), split=split, dataset=dcfg.name, confusion_matrix=confusion.tolist())
    return result
