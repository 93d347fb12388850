"""Evaluation: confusion matrices and mIoU, and whole / sliding-window / multi-scale+flip inference.

Metrics follow mmsegmentation's ``IoUMetric``: one confusion matrix is summed over the whole
split at the *original label resolution* (predictions are resized to each label's size, as
HRNet does), then per class ``IoU = TP / (TP + FP + FN)``; the mIoU is the mean over the
classes *present* (``TP + FP + FN > 0``, i.e. in the ground truth or the predictions); pixel
accuracy is ``sum TP / labelled pixels``. Pixels labelled 255 are ignored.

Inference modes are functions wrapping a ``predict_fn`` -- any callable taking normalised
float32 images ``(N, h, w, 3)`` and returning logits ``(N, h, w, C)`` as numpy arrays -- and
never live in dataset code:

* :func:`whole_inference`: the image in one forward pass;
* :func:`slide_inference`: ``crop``-sized windows every ``stride`` pixels (the image is padded
  to at least one window), logits averaged where windows overlap (HRNet / mmseg ``slide``);
* :func:`multiscale_inference`: the image resized by each scale (and horizontally flipped,
  with left/right classes such as LIP's arms swapped back), each view inferred with whole or
  slide inference, resized back, softmax probabilities averaged.

:func:`evaluate` runs a model over a dataset split: in ``whole`` mode entirely on device (a
jitted predict step, then a jitted scoring step that resizes logits to each label's size
inside a fixed canvas and accumulates the confusion matrix), in the other modes through a
:class:`Predictor` and host-side assembly. :func:`score_predictions` scores a folder of
predicted label images with the same metric code.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from jaxtyping import Array, Float, Int

IGNORE_INDEX = 255
# Label canvases are rounded up to a multiple of this, so that datasets whose labels come in
# many sizes (LIP) compile the (cheap) scoring step for a few shapes only.
LABEL_CANVAS_MULTIPLE = 64

PredictFn = Callable[[np.ndarray], np.ndarray]


class PredictionError(ValueError):
    """A folder of saved predictions that cannot be scored (missing files, wrong sizes)."""


# ---------------------------------------------------------------------------------------
# Confusion matrices and metrics.


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


def confusion_matrix_np(pred: np.ndarray, label: np.ndarray, num_classes: int, *, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Confusion matrix on the host, int64 ``(C, C + 1)``: the last column counts labelled
    pixels whose prediction is no class at all (e.g. 255 in a saved prediction)."""
    label = np.asarray(label).reshape(-1).astype(np.int64)
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    valid = (label >= 0) & (label < num_classes) & (label != ignore_index)
    p = np.where((pred >= 0) & (pred < num_classes), pred, num_classes)
    index = label[valid] * (num_classes + 1) + p[valid]
    return np.bincount(index, minlength=num_classes * (num_classes + 1)).reshape(num_classes, num_classes + 1)


def metrics_from_confusion(confusion: np.ndarray, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """mIoU, pixel accuracy and per-class IoU/accuracy from a summed confusion matrix.

    Arguments:
      confusion: ``(C, C)`` or ``(C, C + 1)`` counts (rows: ground truth; an extra last
        column counts labelled pixels predicted as no class).
      class_names: names of the C classes (default ``class_0`` ...).

    Returns:
      ``miou`` (mean IoU over classes present in the labels or the predictions),
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

    return {
        "miou": float(np.nanmean(iou)) if present.any() else 0.0,
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else 0.0,
        "mean_accuracy": float(np.nanmean(acc)) if (gt > 0).any() else 0.0,
        "per_class_iou": {n: value(v) for n, v in zip(names, iou)},
        "per_class_accuracy": {n: value(v) for n, v in zip(names, acc)},
        "num_classes_present": int(present.sum()),
        "labelled_pixels": int(total),
    }


# ---------------------------------------------------------------------------------------
# Bilinear resizing with PyTorch's align_corners=False convention (HRNet's F.interpolate).


def _source_index_np(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, (src - i0).astype(np.float32)


def resize_bilinear_np(x: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Bilinear resize of ``(H, W, ...)`` to ``size=(h, w)`` on the host, no antialiasing
    (PyTorch ``F.interpolate(mode="bilinear", align_corners=False)`` / OpenCV ``INTER_LINEAR``)."""
    out_h, out_w = int(size[0]), int(size[1])
    x = np.asarray(x, dtype=np.float32)
    in_h, in_w = x.shape[:2]
    if in_h != out_h:
        i0, i1, w = _source_index_np(out_h, in_h)
        w = w.reshape((-1,) + (1,) * (x.ndim - 1))
        x = x[i0] * (1 - w) + x[i1] * w
    if in_w != out_w:
        i0, i1, w = _source_index_np(out_w, in_w)
        w = w.reshape((1, -1) + (1,) * (x.ndim - 2))
        x = x[:, i0] * (1 - w) + x[:, i1] * w
    return x


def _resize_in_canvas(
    x: Float[Array, "h w c"], in_size: Int[Array, " 2"], canvas: tuple[int, int], out_size: Int[Array, " 2"]
) -> Float[Array, "H W c"]:
    """Resizes the valid ``in_size`` corner of ``x`` to ``out_size`` inside an output canvas
    (static shape ``canvas``), on device; sizes may be traced. Same convention as
    :func:`resize_bilinear_np`; canvas pixels beyond ``out_size`` hold edge values."""

    def axis_tables(out_len, n_out, n_in):
        dst = jnp.arange(out_len, dtype=jnp.float32)
        scale = n_in.astype(jnp.float32) / n_out.astype(jnp.float32)
        src = jnp.maximum((dst + 0.5) * scale - 0.5, 0.0)
        i0 = jnp.minimum(jnp.floor(src).astype(jnp.int32), n_in - 1)
        i1 = jnp.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0.astype(jnp.float32)

    i0, i1, w = axis_tables(canvas[0], out_size[0], in_size[0])
    x = jnp.take(x, i0, axis=0) * (1 - w)[:, None, None] + jnp.take(x, i1, axis=0) * w[:, None, None]
    j0, j1, v = axis_tables(canvas[1], out_size[1], in_size[1])
    x = jnp.take(x, j0, axis=1) * (1 - v)[None, :, None] + jnp.take(x, j1, axis=1) * v[None, :, None]
    return x


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
    canvas = tuple(labels.shape[1:3])
    resized = jax.vmap(lambda x, s, o: _resize_in_canvas(x, s, canvas, o))(logits, image_size, label_size)
    pred = jnp.argmax(resized, axis=-1).astype(jnp.int32)
    return confusion_matrix(pred, labels, logits.shape[-1]), pred


# ---------------------------------------------------------------------------------------
# The model as a prediction function.


def local_mesh(devices=None) -> jax.sharding.Mesh:
    """A 1-D ``data`` mesh over this host's devices (evaluation runs per host), or over
    ``devices``."""
    devices = jax.local_devices() if devices is None else list(devices)
    return jax.sharding.Mesh(np.array(devices), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def predict_logits(variables, images: Float[Array, "b h w 3"], model_cfg, *, per_image: bool = True):
    """Logits and per-image solver NFE of a batch (pure; call inside ``jax.jit``).

    Arguments:
      variables: ``{"params", "batch_stats"}``.
      images: normalised images.
      model_cfg: ``cfg.model``.
      per_image: vmap the model over the images, so that each image's ODE gets its own
        adaptive steps and the result does not depend on the rest of the batch.

    Returns:
      ``(logits (B, h, w, C) float32, nfe (B,) int32)`` (``nfe`` is 0 for models without ODE).
    """
    from segnode_jax import api

    def nfe_of(aux, n):
        ode = aux.get("ode") if isinstance(aux, Mapping) else None
        if ode is None:
            return jnp.zeros((n,), jnp.int32)
        return jnp.broadcast_to(jnp.asarray(ode["nfe"], jnp.int32), (n,))

    if per_image:
        def one(x):
            logits, aux = api.apply(variables, x[None], model_cfg, train=False)
            return logits[0], nfe_of(aux, 1)[0]

        return jax.vmap(one)(images)
    logits, aux = api.apply(variables, images, model_cfg, train=False)
    return logits, nfe_of(aux, images.shape[0])


@functools.lru_cache(maxsize=32)
def _predict_jit(frozen_model_cfg, per_image: bool, mesh):
    data = NamedSharding(mesh, PartitionSpec("data"))
    rep = NamedSharding(mesh, PartitionSpec())
    return jax.jit(
        functools.partial(predict_logits, model_cfg=frozen_model_cfg, per_image=per_image),
        in_shardings=(rep, data), out_shardings=(data, data),
    )


@functools.lru_cache(maxsize=8)
def _score_jit(mesh):
    data = NamedSharding(mesh, PartitionSpec("data"))
    rep = NamedSharding(mesh, PartitionSpec())
    return jax.jit(score_batch, in_shardings=(data, data, data, data), out_shardings=(rep, data))


class Predictor:
    """A batched prediction function on this host's devices: numpy images in, logits out.

    Build one with :meth:`for_model` (a segnode-jax model) or :meth:`from_function` (any
    JAX function ``images -> logits``, e.g. another model or a test oracle). Calls are split
    into batches of ``batch_size`` (the last one padded), sharded over the local devices, so a
    fixed window size compiles once. ``solver_stats()`` gives the mean number of vector-field
    evaluations per forward solve of one input (an image, a window, a scale or a flipped view).

    Arguments:
      fn: jittable ``images (B, h, w, 3) -> (logits (B, h, w, C), nfe (B,) int32)``.
      batch_size: inputs per call (rounded up to a multiple of the local device count);
        None: one per local device.
      is_ode: whether ``nfe`` is meaningful (SegNode).
      args: leading arguments of ``fn`` (e.g. the variables), replicated on the devices.
      devices: the devices to run on (default: all of this host's).
    """

    def __init__(
        self, fn, *, batch_size: int | None = None, is_ode: bool = False, args: tuple = (), devices=None, _jitted=None
    ):
        self.mesh = local_mesh(devices)
        n_dev = self.mesh.size
        bs = n_dev if not batch_size else int(batch_size)
        self.batch_size = int(math.ceil(bs / n_dev) * n_dev)
        self.is_ode = is_ode
        rep = NamedSharding(self.mesh, PartitionSpec())
        self._args = jax.device_put(tuple(args), rep)
        if _jitted is None:
            data = NamedSharding(self.mesh, PartitionSpec("data"))
            _jitted = jax.jit(fn, in_shardings=(rep,) * len(args) + (data,), out_shardings=(data, data))
        self._fn = _jitted
        self._nfe: list[tuple[jax.Array, int]] = []

    @classmethod
    def for_model(
        cls, variables, model_cfg, *, batch_size: int | None = None, per_image_solve: bool = True, devices=None
    ) -> "Predictor":
        """A predictor running a segnode-jax model (see :func:`predict_logits`)."""
        from segnode_jax import api

        frozen = api.freeze(model_cfg)
        mesh = local_mesh(devices)
        return cls(
            None, batch_size=batch_size, is_ode=frozen.name == "segnode", args=(variables,), devices=devices,
            _jitted=_predict_jit(frozen, bool(per_image_solve), mesh),
        )

    @classmethod
    def from_function(cls, fn: Callable[[jax.Array], jax.Array], *, batch_size: int | None = None) -> "Predictor":
        """A predictor from a JAX function ``images -> logits`` (no solver statistics)."""

        def wrapped(images):
            logits = fn(images)
            return logits, jnp.zeros((images.shape[0],), jnp.int32)

        return cls(wrapped, batch_size=batch_size)

    def device_call(self, images: np.ndarray) -> jax.Array:
        """Logits on device for one batch (``len(images) <= batch_size``; padded with zeros)."""
        n = len(images)
        if n > self.batch_size:
            raise ValueError(f"device_call takes at most batch_size={self.batch_size} images, got {n}")
        batch = np.asarray(images, np.float32)
        if n < self.batch_size:
            pad = np.zeros((self.batch_size - n,) + batch.shape[1:], np.float32)
            batch = np.concatenate([batch, pad])
        logits, nfe = self._fn(*self._args, self.put(batch))
        if self.is_ode:
            self._nfe.append((nfe, n))
        return logits

    def put(self, batch: np.ndarray) -> jax.Array:
        """A host batch (leading axis = batch) split over this predictor's devices (explicit:
        in a multi-host run JAX does not place NumPy inputs of a sharded ``jit`` itself)."""
        return jax.device_put(batch, NamedSharding(self.mesh, PartitionSpec("data")))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            out.append(np.asarray(self.device_call(chunk))[: len(chunk)])
        return np.concatenate(out)

    def solver_stats(self) -> dict[str, float]:
        """``mean_nfe`` and ``num_solves`` so far (empty for models without ODE)."""
        if not self.is_ode or not self._nfe:
            return {}
        total = sum(int(np.asarray(v)[:n].sum()) for v, n in self._nfe)
        count = sum(n for _, n in self._nfe)
        return {"mean_nfe": total / count, "num_solves": count}


# ---------------------------------------------------------------------------------------
# Inference modes (host side, around any predict_fn).


def whole_inference(predict_fn: PredictFn, image: np.ndarray) -> np.ndarray:
    """Logits ``(h, w, C)`` of one normalised image ``(h, w, 3)`` in one forward pass."""
    return np.asarray(predict_fn(np.asarray(image, np.float32)[None]))[0]


def sliding_windows(height: int, width: int, crop: Sequence[int], stride: Sequence[int]) -> list[tuple[int, int, int, int]]:
    """Windows ``(y0, y1, x0, x1)`` of size ``crop`` covering an image of at least that size.

    Windows start every ``stride`` pixels; the last row/column is moved back to end at the
    image border (HRNet / mmseg), so every window lies inside the image and every pixel is
    covered at least once.
    """
    ch, cw = int(crop[0]), int(crop[1])
    sh, sw = int(stride[0]), int(stride[1])
    if height < ch or width < cw:
        raise ValueError(f"image {height}x{width} is smaller than the window {ch}x{cw}; pad it first")
    if sh < 1 or sw < 1:
        raise ValueError(f"stride must be positive, got {stride}")
    rows = max(int(math.ceil((height - ch) / sh)), 0) + 1
    cols = max(int(math.ceil((width - cw) / sw)), 0) + 1
    out = []
    for r in range(rows):
        for c in range(cols):
            y1, x1 = min(r * sh + ch, height), min(c * sw + cw, width)
            out.append((y1 - ch, y1, x1 - cw, x1))
    return out


def _pad_image(image: np.ndarray, height: int, width: int, pad_value) -> np.ndarray:
    h, w = image.shape[:2]
    if h >= height and w >= width:
        return image
    out = np.empty((max(h, height), max(w, width), image.shape[2]), np.float32)
    out[...] = np.asarray(pad_value, np.float32)
    out[:h, :w] = image
    return out


def slide_inference(
    predict_fn: PredictFn,
    image: np.ndarray,
    *,
    crop: Sequence[int],
    stride: Sequence[int] | None = None,
    pad_value: Sequence[float] | float = 0.0,
    batch_size: int = 1,
) -> np.ndarray:
    """Sliding-window logits ``(h, w, C)`` of one normalised image ``(h, w, 3)``.

    Arguments:
      predict_fn: numpy ``(N, ch, cw, 3) -> (N, ch, cw, C)``.
      image: the normalised image.
      crop: window ``(ch, cw)``; an image smaller than it is padded (bottom/right) with
        ``pad_value`` and the padding cropped off the result.
      stride: window step; default 2/3 of the window.
      pad_value: normalised value of padding (per channel), e.g. a black pixel.
      batch_size: windows per ``predict_fn`` call.

    Returns:
      Logits averaged over the windows covering each pixel.
    """
    h, w = image.shape[:2]
    ch, cw = int(crop[0]), int(crop[1])
    if stride is None:
        stride = (max(1, (2 * ch) // 3), max(1, (2 * cw) // 3))
    padded = _pad_image(np.asarray(image, np.float32), ch, cw, pad_value)
    ph, pw = padded.shape[:2]
    windows = sliding_windows(ph, pw, (ch, cw), stride)
    total = None
    count = np.zeros((ph, pw, 1), np.float32)
    for start in range(0, len(windows), batch_size):
        group = windows[start : start + batch_size]
        crops = np.stack([padded[y0:y1, x0:x1] for y0, y1, x0, x1 in group])
        logits = np.asarray(predict_fn(crops), np.float32)
        if total is None:
            total = np.zeros((ph, pw, logits.shape[-1]), np.float32)
        for (y0, y1, x0, x1), lg in zip(group, logits):
            total[y0:y1, x0:x1] += lg
            count[y0:y1, x0:x1] += 1
    return (total / count)[:h, :w]


def flip_back(logits: np.ndarray, flip_pairs: Sequence[Sequence[int]] = ()) -> np.ndarray:
    """Un-flips the logits ``(h, w, C)`` of a horizontally flipped image, swapping the
    channels of left/right class pairs (e.g. LIP's arms, legs, shoes)."""
    out = logits[:, ::-1]
    if flip_pairs:
        perm = np.arange(out.shape[-1])
        for a, b in flip_pairs:
            perm[a], perm[b] = b, a
        out = out[..., perm]
    return np.ascontiguousarray(out)


def softmax_np(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def multiscale_inference(
    predict_fn: PredictFn,
    image: np.ndarray,
    *,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    flip_pairs: Sequence[Sequence[int]] = (),
    base: str = "whole",
    crop: Sequence[int] | None = None,
    stride: Sequence[int] | None = None,
    pad_value: Sequence[float] | float = 0.0,
    batch_size: int = 1,
) -> np.ndarray:
    """Multi-scale (+ flip) class probabilities ``(h, w, C)`` of one normalised image.

    Each scale ``s`` resizes the image bilinearly to ``round(h*s) x round(w*s)``, infers it
    with ``base`` (``"whole"`` or ``"slide"`` with ``crop``/``stride``), optionally also its
    horizontal flip (flipped back, ``flip_pairs`` swapped), resizes the logits back to
    ``(h, w)`` and averages the softmax probabilities of all views.
    """
    h, w = image.shape[:2]
    total = None
    views = 0
    for s in scales:
        size = (max(1, int(h * float(s) + 0.5)), max(1, int(w * float(s) + 0.5)))
        scaled = resize_bilinear_np(image, size) if size != (h, w) else np.asarray(image, np.float32)
        inputs = [(scaled, False)] + ([(np.ascontiguousarray(scaled[:, ::-1]), True)] if flip else [])
        for x, flipped in inputs:
            if base == "slide":
                if crop is None:
                    raise ValueError("slide inference needs a crop size")
                logits = slide_inference(predict_fn, x, crop=crop, stride=stride, pad_value=pad_value, batch_size=batch_size)
            elif base == "whole":
                logits = whole_inference(predict_fn, x)
            else:
                raise ValueError(f"unknown base inference {base!r}; use 'whole' or 'slide'")
            if flipped:
                logits = flip_back(logits, flip_pairs)
            if logits.shape[:2] != (h, w):
                logits = resize_bilinear_np(logits, (h, w))
            p = softmax_np(logits)
            total = p if total is None else total + p
            views += 1
    return total / views


# ---------------------------------------------------------------------------------------
# Running over a dataset.


@dataclasses.dataclass
class EvalSettings:
    """Resolved evaluation settings (from ``cfg.eval`` and ``cfg.data``)."""

    mode: str = "whole"
    split: str = "val"
    batch_size: int | None = None
    crop: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    multiscale_base: str = "slide"
    pad_multiple: int = 1
    per_image_solve: bool = True
    num_images: int | None = None
    num_visualizations: int = 0

    @classmethod
    def from_config(cls, cfg, **overrides) -> "EvalSettings":
        """From ``cfg.eval`` with ``cfg.data`` defaults; keyword overrides win when not None."""
        from segnode_jax.config import EVAL_MODES

        e, d = cfg.eval, cfg.data
        out = cls(
            mode=e.mode,
            split=e.get("split") or d.eval_split,
            batch_size=e.get("batch_size"),
            crop=tuple(int(v) for v in (e.get("crop_size") or d.crop_size)),
            stride=tuple(int(v) for v in e.stride) if e.get("stride") else None,
            scales=tuple(float(s) for s in (e.get("scales") or d.eval_scales)),
            flip=bool(d.eval_flip if e.get("flip") is None else e.flip),
            multiscale_base=e.get("multiscale_base", "slide"),
            pad_multiple=int(e.get("pad_multiple", 1) or 1),
            per_image_solve=bool(e.get("per_image_solve", True)),
            num_images=e.get("num_images"),
            num_visualizations=int(e.get("num_visualizations", 0)),
        )
        for k, v in overrides.items():
            if v is not None:
                setattr(out, k, v)
        if out.mode not in EVAL_MODES:
            raise ValueError(f"invalid eval.mode={out.mode!r}; use one of {', '.join(EVAL_MODES)}")
        if out.multiscale_base not in ("whole", "slide"):
            raise ValueError(f"invalid eval.multiscale_base={out.multiscale_base!r}; use 'whole' or 'slide'")
        return out


def _round_up(x: int, m: int) -> int:
    return int(math.ceil(x / m) * m) if m > 1 else int(x)


def _pad_value(dcfg) -> np.ndarray:
    """The normalised value of a black pixel (what training pads crops with)."""
    return (0.0 - np.asarray(dcfg.mean, np.float32)) / np.asarray(dcfg.std, np.float32)


def _examples(dcfg, split: str, num_images: int | None):
    import grain

    from segnode_jax import data

    ds = data.eval_dataset(dcfg, split=split)
    if num_images is not None:
        ds = ds[: int(num_images)]
    count = len(ds)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))
    return it, count


def _sum_over_hosts(x: np.ndarray) -> np.ndarray:
    if jax.process_count() == 1:
        return x
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x)).sum(axis=0)


def composite(raw_image: np.ndarray, label: np.ndarray, pred: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """``input | ground truth | prediction`` side by side at the label's resolution (uint8)."""
    from PIL import Image

    from segnode_jax import data

    h, w = label.shape
    img = np.asarray(raw_image, np.uint8)
    if img.shape[:2] != (h, w):
        img = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
    gap = np.full((h, 4, 3), 255, np.uint8)
    return np.concatenate([img, gap, data.colorize(label, palette), gap, data.colorize(pred, palette)], axis=1)


def _write_visualization(out_dir: str, name: str, picture: np.ndarray) -> str:
    from PIL import Image

    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name.replace("/", "__") + ".png")
    Image.fromarray(picture).save(path)
    return path


def evaluate(
    variables,
    cfg,
    *,
    settings: EvalSettings | None = None,
    visualize_dir: str | None = None,
    progress: bool = False,
    devices=None,
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

    Returns:
      The metrics of :func:`metrics_from_confusion` plus ``num_images``, ``split``,
      ``mode``, ``scales``/``flip`` (multiscale), ``mean_nfe`` and ``num_solves`` (SegNode),
      ``confusion_matrix``, ``seconds`` and ``visualizations`` (paths).

    Raises:
      segnode_jax.data.PreparationError: the dataset is not prepared.
      segnode_jax.ODESolveError: an ODE solve failed (the message names the field to change).
    """
    s = settings or EvalSettings.from_config(cfg)
    predictor = Predictor.for_model(
        variables, cfg.model, batch_size=s.batch_size, per_image_solve=s.per_image_solve, devices=devices
    )
    return evaluate_predictor(predictor, cfg, settings=s, visualize_dir=visualize_dir, progress=progress)


def evaluate_predictor(
    predictor: Predictor,
    cfg,
    *,
    settings: EvalSettings | None = None,
    visualize_dir: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """:func:`evaluate` with any :class:`Predictor` (``cfg.model`` only gives the class count
    and the ODE settings named in solver error messages)."""
    from tqdm import tqdm

    from segnode_jax import data, ode

    s = settings or EvalSettings.from_config(cfg)
    dcfg = cfg.data
    info = data.get_info(dcfg)
    num_classes = int(cfg.model.num_classes)
    if num_classes != info.num_classes:
        raise ValueError(
            f"model.num_classes={num_classes} but the {dcfg.name} dataset has {info.num_classes} classes"
        )
    it, count = _examples(dcfg, s.split, s.num_images)
    pad_value = _pad_value(dcfg)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    visualizations: list[str] = []
    start = time.time()
    bar = tqdm(total=count, desc=f"eval {s.split} ({s.mode})", unit="img", disable=not progress or jax.process_index() != 0)

    def visualize(ex, pred):
        if visualize_dir is not None and len(visualizations) < s.num_visualizations:
            pic = composite(ex["raw_image"], ex["label"], pred, info.palette)
            visualizations.append(_write_visualization(visualize_dir, ex["name"], pic))

    with ode.solver_errors(cfg.model.get("ode")):
        if s.mode == "whole":
            score = _score_jit(predictor.mesh)
            group: list[dict] = []

            def flush(group):
                nonlocal confusion
                confusion += _whole_batch(predictor, score, group, pad_value, s.pad_multiple, visualize)
                bar.update(len(group))

            for ex in it:
                canvas = tuple(_round_up(v, s.pad_multiple) for v in ex["image"].shape[:2])
                if group and (len(group) == predictor.batch_size or group[0]["_canvas"] != canvas):
                    flush(group)
                    group = []
                ex["_canvas"] = canvas
                group.append(ex)
            if group:
                flush(group)
        else:
            for ex in it:
                if s.mode == "slide":
                    scores = slide_inference(
                        predictor, ex["image"], crop=s.crop, stride=s.stride, pad_value=pad_value,
                        batch_size=predictor.batch_size,
                    )
                else:
                    scores = multiscale_inference(
                        predictor, ex["image"], scales=s.scales, flip=s.flip, flip_pairs=info.flip_pairs,
                        base=s.multiscale_base, crop=s.crop, stride=s.stride, pad_value=pad_value,
                        batch_size=predictor.batch_size,
                    )
                label = ex["label"]
                if scores.shape[:2] != label.shape:
                    scores = resize_bilinear_np(scores, label.shape)
                pred = np.argmax(scores, axis=-1).astype(np.int32)
                confusion += confusion_matrix_np(pred, label, num_classes)[:, :num_classes]
                visualize(ex, pred)
                bar.update(1)
        stats = predictor.solver_stats()
    bar.close()
    confusion = _sum_over_hosts(confusion)
    num_images = int(_sum_over_hosts(np.asarray([count]))[0])
    result = metrics_from_confusion(confusion, info.class_names)
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
    if s.mode == "multiscale":
        result.update(scales=list(s.scales), flip=s.flip, multiscale_base=s.multiscale_base)
    if s.mode in ("slide",) or (s.mode == "multiscale" and s.multiscale_base == "slide"):
        result.update(crop=list(s.crop), stride=list(s.stride) if s.stride else None)
    result.update(stats)
    return result


def _whole_batch(predictor: Predictor, score, group, pad_value, pad_multiple, visualize) -> np.ndarray:
    """Whole-image inference and scoring of a group of examples sharing an image canvas."""
    n, bs = len(group), predictor.batch_size
    hc, wc = group[0]["_canvas"]
    images = np.empty((bs, hc, wc, 3), np.float32)
    images[...] = pad_value
    image_size = np.zeros((bs, 2), np.int32)
    lh = _round_up(max(ex["label"].shape[0] for ex in group), LABEL_CANVAS_MULTIPLE)
    lw = _round_up(max(ex["label"].shape[1] for ex in group), LABEL_CANVAS_MULTIPLE)
    labels = np.full((bs, lh, lw), IGNORE_INDEX, np.int32)
    label_size = np.zeros((bs, 2), np.int32)
    for i, ex in enumerate(group):
        h, w = ex["image"].shape[:2]
        images[i, :h, :w] = ex["image"]
        image_size[i] = (h, w)
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


# ---------------------------------------------------------------------------------------
# Scoring saved predictions.


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


def score_predictions(dcfg, pred_dir: str, *, split: str | None = None) -> dict[str, Any]:
    """Scores a folder of predicted label images against the ground truth of a split.

    Arguments:
      dcfg: data settings (``cfg.data``).
      pred_dir: predictions in the dataset's own label format, one per ground-truth file,
        named like it: ``<name>.png`` (the example name, e.g. ``frankfurt/frankfurt_000000_000294``)
        or the ground-truth file's own name (in the name's sub-folder or flat).
      split: default ``dcfg.eval_split``.

    Returns:
      The metrics of :func:`metrics_from_confusion` plus ``num_images`` and ``split``.

    Raises:
      PredictionError: ``pred_dir`` is missing, lacks predictions (names the first ones), or
        a prediction's size differs from its ground truth.
    """
    from segnode_jax import data

    split = split or dcfg.eval_split
    if not os.path.isdir(pred_dir):
        raise PredictionError(f"predictions folder {pred_dir} does not exist")
    info = data.get_info(dcfg)
    c = info.num_classes
    gt_files = data.ground_truth_files(dcfg, split)
    pairs, missing = [], []
    for name, gt_path in gt_files:
        p = _prediction_path(pred_dir, name, gt_path)
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


def write_results(path: str, results: Mapping[str, Any]) -> str:
    """Writes ``results`` as indented JSON (atomically; process 0 of a multi-host run) and
    returns the path."""
    if jax.process_index() != 0:
        return path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path


def summary(results: Mapping[str, Any]) -> str:
    """A few human-readable lines: mIoU, pixel accuracy, per-class IoU."""
    lines = [
        f"mIoU {100 * results['miou']:.2f}  pixel accuracy {100 * results['pixel_accuracy']:.2f}  "
        f"({results.get('num_images', '?')} images, {results.get('split', '?')}, {results.get('mode', 'saved predictions')})"
    ]
    if "mean_nfe" in results:
        lines.append(f"solver: mean NFE {results['mean_nfe']:.1f} per forward solve")
    per = results.get("per_class_iou", {})
    width = max((len(n) for n in per), default=0)
    for name, v in per.items():
        lines.append(f"  {name:<{width}}  {'-' if v is None else f'{100 * v:.2f}'}")
    return "\n".join(lines)


__all__ = [
    "EvalSettings",
    "PredictionError",
    "Predictor",
    "confusion_matrix",
    "confusion_matrix_np",
    "evaluate",
    "evaluate_predictor",
    "flip_back",
    "metrics_from_confusion",
    "multiscale_inference",
    "predict_logits",
    "resize_bilinear_np",
    "score_batch",
    "score_predictions",
    "slide_inference",
    "sliding_windows",
    "summary",
    "whole_inference",
    "write_results",
]
