"""Confusion matrices and mIoU (mmsegmentation's ``IoUMetric``), and scoring a batch of logits
against labels of their original size on device.

One confusion matrix is summed over the whole split at the *original label resolution*
(predictions are resized to each label's size, as HRNet does); per class ``IoU = TP / (TP + FP +
FN)``; the mIoU is the mean over the classes *present* (``TP + FP + FN > 0``; mmsegmentation,
``eval.miou_over="present"``) or over *all* classes, an absent one counting 0 (HRNet's
``IoU_array.mean()``, ``eval.miou_over="all"``); both are always reported
(``miou_present_classes``, ``miou_all_classes``) and ``miou`` is the chosen one. Pixel accuracy
is ``sum TP / labelled pixels``. Pixels labelled 255 are ignored.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from segnode_jax.errors import ConfigError
from segnode_jax.labels import IGNORE_INDEX
from segnode_jax.resize import resize_in_canvas

# Label canvases are rounded up to a multiple of this, so that datasets whose labels come in
# many sizes (LIP) compile the (cheap) scoring step for a few shapes only.
LABEL_CANVAS_MULTIPLE = 64


def confusion_matrix(
    pred: Int[Array, "..."], label: Int[Array, "..."], num_classes: int, *, ignore_index: int = IGNORE_INDEX
) -> Int[Array, "c c"]:
    """Confusion matrix (rows: ground truth, columns: prediction) of one batch, on device.

    Pixels whose label is ``ignore_index`` (or outside ``[0, num_classes)``) are not counted.
    """
    label = label.reshape(-1).astype(jnp.int32)
    pred = pred.reshape(-1).astype(jnp.int32)
    valid = (label >= 0) & (label < num_classes) & (label != ignore_index)
    index = jnp.where(valid, label * num_classes + jnp.clip(pred, 0, num_classes - 1), 0)
    counts = jnp.bincount(index, weights=valid.astype(jnp.int32), length=num_classes * num_classes)
    return counts.astype(jnp.int32).reshape(num_classes, num_classes)


def confusion_matrix_np(
    pred: np.ndarray, label: np.ndarray, num_classes: int, *, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """Confusion matrix on the host, int64 ``(C, C + 1)``: the last column counts labelled
    pixels whose prediction is no class at all (e.g. 255 in a saved prediction)."""
    label = np.asarray(label).reshape(-1).astype(np.int64)
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    valid = (label >= 0) & (label < num_classes) & (label != ignore_index)
    p = np.where((pred >= 0) & (pred < num_classes), pred, num_classes)
    index = label[valid] * (num_classes + 1) + p[valid]
    return np.bincount(index, minlength=num_classes * (num_classes + 1)).reshape(num_classes, num_classes + 1)


MIOU_OVER = ("present", "all")


def metrics_from_confusion(
    confusion: np.ndarray, class_names: Sequence[str] | None = None, *, miou_over: str = "present"
) -> dict[str, Any]:
    """mIoU, pixel accuracy and per-class IoU/accuracy from a summed confusion matrix.

    Arguments:
      confusion: ``(C, C)`` or ``(C, C + 1)`` counts (rows: ground truth; an extra last
        column counts labelled pixels predicted as no class).
      class_names: names of the C classes (default ``class_0`` ...).
      miou_over: which mean ``miou`` is: ``"present"`` or ``"all"`` (module docstring).

    Returns:
      ``miou`` (by default the mean IoU over classes present in the labels or the
      predictions), ``miou_present_classes``, ``miou_all_classes``, ``miou_over``,
      ``pixel_accuracy``, ``mean_accuracy`` (over classes present in the labels),
      ``per_class_iou`` and ``per_class_accuracy`` (``{name: value or None}``; None for a
      class that is absent), ``num_classes_present``, ``labelled_pixels``.
    """
    cm = np.asarray(confusion, dtype=np.float64)
    c = cm.shape[0]
    if cm.shape not in ((c, c), (c, c + 1)):
        raise ValueError(f"confusion matrix must be (C, C) or (C, C + 1), got {cm.shape}")
    names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(c)]
    if len(names) != c:
        raise ValueError(f"{len(names)} class names for {c} classes")
    tp = np.diag(cm[:, :c])
    gt = cm.sum(axis=1)
    predicted = cm[:, :c].sum(axis=0)
    union = gt + predicted - tp
    present = union > 0
    iou = np.where(present, tp / np.maximum(union, 1), np.nan)
    acc = np.where(gt > 0, tp / np.maximum(gt, 1), np.nan)
    total = gt.sum()

    def value(x):
        return None if np.isnan(x) else float(x)

    if miou_over not in MIOU_OVER:
        raise ConfigError(f"invalid miou_over={miou_over!r}; use one of {', '.join(MIOU_OVER)}")
    over_present = float(np.nanmean(iou)) if present.any() else 0.0
    over_all = float(np.nan_to_num(iou, nan=0.0).mean()) if c else 0.0
    return {
        "miou": over_present if miou_over == "present" else over_all,
        "miou_present_classes": over_present,
        "miou_all_classes": over_all,
        "miou_over": miou_over,
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else 0.0,
        "mean_accuracy": float(np.nanmean(acc)) if (gt > 0).any() else 0.0,
        "per_class_iou": {n: value(v) for n, v in zip(names, iou)},
        "per_class_accuracy": {n: value(v) for n, v in zip(names, acc)},
        "num_classes_present": int(present.sum()),
        "labelled_pixels": int(total),
    }


def score_batch(
    logits: Float[Array, "b h w c"],
    image_size: Int[Array, "b 2"],
    labels: Int[Array, "b H W"],
    label_size: Int[Array, "b 2"],
) -> tuple[Int[Array, "c c"], Int[Array, "b H W"]]:
    """Confusion matrix of a batch at label resolution, on device.

    Arguments:
      logits: ``(B, h, w, C)`` predictions on an image canvas; only the top-left
        ``image_size[i]`` of example ``i`` is real (the rest is padding).
      image_size: ``(B, 2)`` real image sizes.
      labels: ``(B, H, W)`` labels on a label canvas, 255 outside the real label.
      label_size: ``(B, 2)`` real label sizes.

    Returns:
      ``(confusion (C, C) int32, predictions (B, H, W) int32)`` -- the real logits resized
      bilinearly to each label's size, then argmax.
    """
    canvas = (int(labels.shape[1]), int(labels.shape[2]))
    resized = jax.vmap(lambda x, s, o: resize_in_canvas(x, s, canvas, o))(logits, image_size, label_size)
    pred = jnp.argmax(resized, axis=-1).astype(jnp.int32)
    return confusion_matrix(pred, labels, logits.shape[-1]), pred
