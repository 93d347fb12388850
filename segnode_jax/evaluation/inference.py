"""Inference modes as functions wrapping a ``predict_fn`` (never in dataset code).

A ``predict_fn`` takes normalised float32 images ``(N, h, w, 3)`` and returns logits ``(N, h,
w, C)`` as numpy arrays:

* :func:`whole_inference`: the image in one forward pass;
* :func:`slide_inference`: ``crop``-sized windows every ``stride`` pixels (the image is padded
  to at least one window), logits averaged where windows overlap (HRNet / mmseg ``slide``);
* :func:`multiscale_inference`: the image resized by each scale (and horizontally flipped,
  with left/right classes such as LIP's arms swapped back), each view inferred with whole or
  slide inference, resized back, softmax probabilities averaged;
* :func:`hrnet_inference`: HRNet-Semantic-Segmentation's own multi-scale + flip test, step by
  step (``eval.mode="hrnet"``).

:func:`infer` dispatches one image to the mode of an ``EvalSettings``, and :func:`canvas_groups`
with :func:`padded_batch` batch whole images by padded canvas: ``evaluate.py``, ``predict.py``,
the exporter's checks and the trajectory all go through them, so that their predictions agree.

Resizing on the host follows PyTorch's ``align_corners=False`` (HRNet's ``F.interpolate``).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from segnode_jax.resize import resize_bilinear_np

PredictFn = Callable[[np.ndarray], np.ndarray]
T = TypeVar("T")


def round_up(x: int, m: int) -> int:
    """``x`` rounded up to a multiple of ``m`` (``x`` itself for ``m <= 1``)."""
    return int(math.ceil(x / m) * m) if m > 1 else int(x)


def pad_value(dcfg) -> np.ndarray:
    """The normalised value of a black pixel (what training pads crops with)."""
    return (0.0 - np.asarray(dcfg.mean, np.float32)) / np.asarray(dcfg.std, np.float32)


def canvas_groups(
    items: Iterable[T], shape_of: Callable[[T], Sequence[int]], batch_size: int, pad_multiple: int
) -> Iterator[list[T]]:
    """Consecutive ``items`` whose images pad to the same canvas (each side rounded up to
    ``pad_multiple``), at most ``batch_size`` per group: the batches of whole-image inference."""
    group: list[T] = []
    canvas = None
    for item in items:
        c = tuple(round_up(int(v), pad_multiple) for v in shape_of(item)[:2])
        if group and (len(group) == batch_size or c != canvas):
            yield group
            group = []
        canvas = c
        group.append(item)
    if group:
        yield group


def padded_batch(images: Sequence[np.ndarray], pad_multiple: int, fill, rows: int | None = None) -> np.ndarray:
    """Normalised images ``(h, w, 3)`` of one canvas as one float32 batch ``(rows, H, W, 3)``
    (``rows`` default ``len(images)``), each at the top left, the rest ``fill``."""
    h = round_up(max(im.shape[0] for im in images), pad_multiple)
    w = round_up(max(im.shape[1] for im in images), pad_multiple)
    batch = np.empty((rows or len(images), h, w, 3), np.float32)
    batch[...] = fill
    for k, im in enumerate(images):
        batch[k, : im.shape[0], : im.shape[1]] = im
    return batch


def infer(predictor, image: np.ndarray, settings, *, fill, flip_pairs=()) -> tuple[np.ndarray, bool]:
    """Scores ``(h', w', C)`` of one normalised image under ``settings.mode`` (an
    ``EvalSettings``; ``whole`` images go through :func:`canvas_groups` instead).

    Returns ``(scores, are_probabilities)``: ``slide`` gives logits; ``multiscale`` and
    ``hrnet`` class probabilities (HRNet's sums of ``exp(logits)`` normalised over the classes).
    The size is the image's except for ``hrnet`` (``base_size``'s): resize before the argmax.
    """
    s = settings
    if s.mode == "slide":
        return slide_inference(
            predictor, image, crop=s.crop, stride=s.stride, pad_value=fill, batch_size=predictor.batch_size
        ), False
    if s.mode == "hrnet":
        scores = hrnet_inference(
            predictor,
            image,
            scales=s.scales,
            flip=s.flip,
            flip_pairs=flip_pairs,
            crop=s.crop,
            base_size=s.base_size,
            rule=s.hrnet_rule,
            pad_value=fill,
        )
        return scores / scores.sum(axis=-1, keepdims=True), True
    if s.mode == "multiscale":
        return multiscale_inference(
            predictor,
            image,
            scales=s.scales,
            flip=s.flip,
            flip_pairs=flip_pairs,
            base=s.multiscale_base,
            crop=s.crop,
            stride=s.stride,
            pad_value=fill,
            batch_size=predictor.batch_size,
        ), True
    raise ValueError(f"infer() takes the per-image modes (slide, multiscale, hrnet), not {s.mode!r}")


def whole_inference(predict_fn: PredictFn, image: np.ndarray) -> np.ndarray:
    """Logits ``(h, w, C)`` of one normalised image ``(h, w, 3)`` in one forward pass."""
    return np.asarray(predict_fn(np.asarray(image, np.float32)[None]))[0]


def sliding_windows(
    height: int, width: int, crop: Sequence[int], stride: Sequence[int]
) -> list[tuple[int, int, int, int]]:
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
    assert total is not None, "sliding_windows gives at least one window"
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
                logits = slide_inference(
                    predict_fn, x, crop=crop, stride=stride, pad_value=pad_value, batch_size=batch_size
                )
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
    assert total is not None, "at least one scale and view"
    return total / views


HRNET_RULES = ("base", "cityscapes")


def hrnet_scaled_size(height: int, width: int, scale: float, base_size: int | None) -> tuple[int, int]:
    """HRNet's ``multi_scale_aug`` size: the long side becomes ``int(base_size * scale + 0.5)``
    (``base_size`` None: the image's own long side), the other keeps the aspect ratio."""
    long_side = int((base_size or max(height, width)) * float(scale) + 0.5)
    if height > width:
        return long_side, int(width * long_side / height + 0.5)
    return int(height * long_side / width + 0.5), long_side


def _hrnet_view(predict_fn: PredictFn, x: np.ndarray, flip: bool, flip_pairs) -> np.ndarray:
    """HRNet's ``inference``: logits at the input size, averaged with the flipped view's
    (flipped back) *as logits*, then ``exp`` -- the space HRNet averages windows and scales in."""
    logits = np.asarray(predict_fn(x[None]), np.float64)[0]
    if flip:
        flipped = np.asarray(predict_fn(np.ascontiguousarray(x[:, ::-1])[None]), np.float64)[0]
        logits = 0.5 * (logits + flip_back(flipped, flip_pairs))
    return np.exp(logits)


def hrnet_inference(
    predict_fn: PredictFn,
    image: np.ndarray,
    *,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    flip_pairs: Sequence[Sequence[int]] = (),
    crop: Sequence[int],
    base_size: int | None = None,
    rule: str = "base",
    pad_value: Sequence[float] | float = 0.0,
) -> np.ndarray:
    """HRNet-Semantic-Segmentation's multi-scale (+ flip) test of one normalised image:
    scores ``(h, w, C)`` (float64) whose argmax is HRNet's prediction.

    Per scale, the image is resized so that its long side is ``base_size * scale``
    (:func:`hrnet_scaled_size`) and inferred as HRNet's dataset class does it:

    * ``rule="base"`` (``BaseDataset.multi_scale_inference``: PASCAL-Context, LIP, ...): if the
      scaled image fits in the ``crop`` (its long side at most the crop's short side), it is
      padded to the crop (``pad_value``, a black pixel) and inferred whole; otherwise it is
      padded up to the crop where smaller and covered by crop windows every 2/3 of a crop,
      windows at the border padded to the crop;
    * ``rule="cityscapes"`` (``Cityscapes.multi_scale_inference``): scales <= 1 inferred whole,
      larger ones by crop windows every crop (stride = crop), the last row/column moved back
      to end at the border, no padding.

    Each view is HRNet's ``inference`` (logits of the image and of its flip averaged, then
    ``exp``); windows are averaged and scales summed in that ``exp(logits)`` space, each
    scale's map resized bilinearly to the image size first.
    """
    if rule not in HRNET_RULES:
        raise ValueError(f"unknown HRNet test rule {rule!r}; use one of {', '.join(HRNET_RULES)}")
    h, w = image.shape[:2]
    ch, cw = int(crop[0]), int(crop[1])
    total = None
    for s in scales:
        size = hrnet_scaled_size(h, w, s, base_size)
        x = resize_bilinear_np(image, size) if size != (h, w) else np.asarray(image, np.float32)
        sh, sw = size
        if rule == "cityscapes" and float(s) <= 1.0:
            scores = _hrnet_view(predict_fn, x, flip, flip_pairs)
        elif rule == "base" and max(sh, sw) <= min(ch, cw):
            scores = _hrnet_view(predict_fn, _pad_image(x, ch, cw, pad_value), flip, flip_pairs)[:sh, :sw]
        else:
            if rule == "base":
                x = _pad_image(x, ch, cw, pad_value)
                stride = (int(ch * 2.0 / 3.0), int(cw * 2.0 / 3.0))
            else:
                stride = (ch, cw)
            ph, pw = x.shape[:2]
            rows = int(math.ceil((ph - ch) / stride[0])) + 1
            cols = int(math.ceil((pw - cw) / stride[1])) + 1
            acc = None
            count = np.zeros((ph, pw, 1), np.float64)
            for r in range(rows):
                for c in range(cols):
                    y0, x0 = r * stride[0], c * stride[1]
                    y1, x1 = min(y0 + ch, ph), min(x0 + cw, pw)
                    if rule == "cityscapes":
                        y0, x0 = max(y1 - ch, 0), max(x1 - cw, 0)
                    window = x[y0:y1, x0:x1]
                    if rule == "base" and (y1 == ph or x1 == pw):
                        window = _pad_image(window, ch, cw, pad_value)
                    pred = _hrnet_view(predict_fn, window, flip, flip_pairs)
                    if acc is None:
                        acc = np.zeros((ph, pw, pred.shape[-1]), np.float64)
                    acc[y0:y1, x0:x1] += pred[: y1 - y0, : x1 - x0]
                    count[y0:y1, x0:x1] += 1
            assert acc is not None, "at least one window"
            scores = (acc / count)[:sh, :sw]
        if scores.shape[:2] != (h, w):
            scores = resize_bilinear_np(scores, (h, w)).astype(np.float64)
        total = scores if total is None else total + scores
    assert total is not None, "at least one scale"
    return total
