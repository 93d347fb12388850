"""Training and evaluation transforms (HRNet's recipe), on numpy arrays with PIL resizing.

Training: random scale (long side = ``base_size * s``, ``s`` from ``scale_range`` in steps of
``scale_step``), pad with ignore (bottom/right) up to the crop, random crop, random horizontal
flip (swapping left/right classes where the dataset has them), ImageNet mean/std. The image is
resized bilinearly, the label with nearest neighbour, both from the same random draws, so
they stay aligned. Only the part of the scaled image that lands in the crop is ever resized
(PIL's ``box=`` argument): the same pixels as resizing the whole image and then cropping,
up to float rounding where a nearest-neighbour sample falls exactly between two pixels.

Evaluation keeps the label at its original resolution and only resizes the image when the
protocol says so (LIP: 473x473).
"""

from __future__ import annotations

import io
from typing import Any, Sequence

import grain
import numpy as np
from PIL import Image

from segnode_jax.data.classes import IGNORE

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}


def decode_record(record: dict[str, Any]) -> dict[str, Any]:
    """Decodes a stored record.

    Arguments:
      record: a record read from the TFDS data source.

    Returns:
      ``image`` uint8 ``(H, W, 3)``, ``label`` uint8 ``(H, W)`` train ids, ``name`` str.
    """
    with Image.open(io.BytesIO(record["image"])) as img:
        image = np.asarray(img.convert("RGB") if img.mode != "RGB" else img)
    with Image.open(io.BytesIO(record["label"])) as lab:
        label = np.asarray(lab)
    name = record["name"]
    if isinstance(name, bytes):
        name = name.decode("utf-8")
    return {"image": image, "label": label, "name": name}


def draw_scale(rng: np.random.Generator, scale_range: Sequence[float], step: float) -> float:
    """A random scale in ``scale_range``: uniform over the grid ``lo, lo+step, ..., hi`` (step > 0)
    or uniform in ``[lo, hi]`` (step = 0)."""
    lo, hi = float(scale_range[0]), float(scale_range[1])
    if step and step > 0:
        n = int(np.floor((hi - lo) / step + 1e-6))
        return lo + step * int(rng.integers(0, n + 1))
    return float(rng.uniform(lo, hi))


def scaled_size(
    height: int, width: int, *, scale: float, base_size: int | None, train_resize: Sequence[int] | None
) -> tuple[int, int]:
    """Size ``(h, w)`` of an image after HRNet's random scaling.

    Arguments:
      height, width: original size.
      scale: the random scale.
      base_size: long side at scale 1 (HRNet's ``BASE_SIZE``); None = the original size.
      train_resize: ``(h, w)`` every image is first resized to (LIP), or None.

    Returns:
      The scaled ``(height, width)``, at least 1x1.
    """
    if train_resize:
        height, width = int(train_resize[0]), int(train_resize[1])
    if base_size:
        long_size = int(base_size * scale + 0.5)
        if height > width:
            nh, nw = long_size, int(width * long_size / height + 0.5)
        else:
            nw, nh = long_size, int(height * long_size / width + 0.5)
    else:
        nh, nw = int(height * scale + 0.5), int(width * scale + 0.5)
    return max(nh, 1), max(nw, 1)


def scale_pad_crop(
    image: np.ndarray,
    label: np.ndarray,
    *,
    size: tuple[int, int],
    crop: tuple[int, int],
    offset: tuple[int, int],
    pad_value: int = 0,
    ignore_index: int = IGNORE,
    image_resample: str = "bilinear",
) -> tuple[np.ndarray, np.ndarray]:
    """Resizes to ``size``, pads bottom/right up to ``crop`` and crops at ``offset``.

    Arguments:
      image: uint8 ``(H, W, 3)``.
      label: uint8 ``(H, W)`` train ids.
      size: ``(h, w)`` of the resized image.
      crop: ``(ch, cw)`` of the output.
      offset: ``(y, x)`` of the crop in the padded, resized image.
      pad_value: image value of padded pixels (before normalisation; HRNet pads with 0).
      ignore_index: label value of padded pixels.
      image_resample: ``"bilinear"`` (HRNet) or ``"nearest"``.

    Returns:
      ``(image (ch, cw, 3) uint8, label (ch, cw) uint8)``.
    """
    h0, w0 = label.shape
    nh, nw = size
    ch, cw = crop
    y, x = offset
    rh, rw = min(y + ch, nh) - y, min(x + cw, nw) - x
    out_img = np.full((ch, cw, 3), pad_value, dtype=np.uint8)
    out_lab = np.full((ch, cw), ignore_index, dtype=np.uint8)
    if rh > 0 and rw > 0:
        sy, sx = h0 / nh, w0 / nw
        box = (x * sx, y * sy, (x + rw) * sx, (y + rh) * sy)
        img = Image.fromarray(image).resize((rw, rh), _RESAMPLE[image_resample], box=box)
        lab = Image.fromarray(label).resize((rw, rh), Image.Resampling.NEAREST, box=box)
        out_img[:rh, :rw] = np.asarray(img)
        out_lab[:rh, :rw] = np.asarray(lab)
    return out_img, out_lab


def flip_lut(pairs: Sequence[Sequence[int]]) -> np.ndarray:
    """A uint8 lookup table swapping each pair of train ids (identity elsewhere)."""
    lut = np.arange(256, dtype=np.uint8)
    for a, b in pairs:
        lut[a], lut[b] = b, a
    return lut


def hflip(
    image: np.ndarray, label: np.ndarray, *, pairs: Sequence[Sequence[int]] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal flip of image and label; left/right classes in ``pairs`` are swapped."""
    image = np.ascontiguousarray(image[:, ::-1])
    label = np.ascontiguousarray(label[:, ::-1])
    if pairs:
        label = flip_lut(pairs)[label]
    return image, label


def normalize(
    image: np.ndarray, *, mean: Sequence[float] | np.ndarray, std: Sequence[float] | np.ndarray
) -> np.ndarray:
    """uint8 RGB -> float32 ``(x / 255 - mean) / std``."""
    scale = np.float32(1.0 / 255.0) / np.asarray(std, np.float32)
    shift = np.asarray(mean, np.float32) / np.asarray(std, np.float32)
    return image.astype(np.float32) * scale - shift


class TrainTransform(grain.transforms.RandomMap):
    """HRNet's training augmentation of one stored record.

    Arguments:
      crop_size: ``(h, w)`` of the output.
      base_size: long side at scale 1; None = original size.
      train_resize: optional ``(h, w)`` resize before scaling (LIP).
      scale_range, scale_step: random scale (see :func:`draw_scale`).
      flip: random horizontal flip with probability 1/2.
      flip_pairs: train ids swapped by a flip.
      mean, std: normalisation.
      ignore_index: label value of padding.
      image_resample: ``"bilinear"`` (default) or ``"nearest"``.
    """

    def __init__(
        self,
        *,
        crop_size: Sequence[int],
        base_size: int | None,
        train_resize: Sequence[int] | None = None,
        scale_range: Sequence[float] = (0.5, 2.0),
        scale_step: float = 0.1,
        flip: bool = True,
        flip_pairs: Sequence[Sequence[int]] = (),
        mean: Sequence[float],
        std: Sequence[float],
        ignore_index: int = IGNORE,
        image_resample: str = "bilinear",
    ):
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.base_size = int(base_size) if base_size else None
        self.train_resize = tuple(int(v) for v in train_resize) if train_resize else None
        self.scale_range = tuple(float(v) for v in scale_range)
        self.scale_step = float(scale_step or 0.0)
        self.flip = bool(flip)
        self.flip_pairs = tuple(tuple(int(v) for v in p) for p in flip_pairs)
        self.mean, self.std = tuple(mean), tuple(std)
        self.ignore_index = int(ignore_index)
        self.image_resample = image_resample

    def augment(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The geometric part: uint8 image and label in, uint8 crops out (same random draws)."""
        h, w = label.shape
        scale = draw_scale(rng, self.scale_range, self.scale_step)
        size = scaled_size(h, w, scale=scale, base_size=self.base_size, train_resize=self.train_resize)
        ch, cw = self.crop_size
        y = int(rng.integers(0, max(size[0], ch) - ch + 1))
        x = int(rng.integers(0, max(size[1], cw) - cw + 1))
        image, label = scale_pad_crop(
            image,
            label,
            size=size,
            crop=self.crop_size,
            offset=(y, x),
            ignore_index=self.ignore_index,
            image_resample=self.image_resample,
        )
        if self.flip and rng.integers(0, 2) == 1:
            image, label = hflip(image, label, pairs=self.flip_pairs)
        return image, label

    def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
        rec = decode_record(element)
        image, label = self.augment(rec["image"], rec["label"], rng)
        return {"image": normalize(image, mean=self.mean, std=self.std), "label": label.astype(np.int32)}


class EvalTransform(grain.transforms.Map):
    """Evaluation view of one record: normalised image (resized to ``eval_size`` if given),
    the label at its original resolution, the (resized) raw image and the name.

    Arguments:
      eval_size: ``(h, w)`` or None.
      mean, std: normalisation.
    """

    def __init__(self, *, eval_size: Sequence[int] | None, mean: Sequence[float], std: Sequence[float]):
        self.eval_size = (int(eval_size[0]), int(eval_size[1])) if eval_size else None
        self.mean, self.std = tuple(mean), tuple(std)

    def map(self, element: dict[str, Any]) -> dict[str, Any]:
        rec = decode_record(element)
        raw = rec["image"]
        if self.eval_size and raw.shape[:2] != self.eval_size:
            height, width = self.eval_size
            raw = np.asarray(Image.fromarray(raw).resize((width, height), Image.Resampling.BILINEAR))
        return {
            "image": normalize(raw, mean=self.mean, std=self.std),
            "label": rec["label"].astype(np.int32),
            "raw_image": raw,
            "name": rec["name"],
        }


# ---------------------------------------------------------------------------------------
# Classification (ImageNet pretraining): torchvision's RandomResizedCrop + flip for training,
# Resize(short side) + CenterCrop for evaluation, as HRNet-Image-Classification trains.


def random_resized_box(
    rng: np.random.Generator, height: int, width: int, scale: Sequence[float], ratio: Sequence[float]
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a random crop covering ``scale`` of the area with aspect ratio
    (w/h) in ``ratio`` (log-uniform): torchvision's ``RandomResizedCrop.get_params``, 10 tries,
    then the centre crop of the nearest allowed ratio."""
    area = height * width
    log_lo, log_hi = np.log(ratio[0]), np.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = float(np.exp(rng.uniform(log_lo, log_hi)))
        w = int(round(np.sqrt(target * aspect)))
        h = int(round(np.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def decode_image_record(record: dict[str, Any]) -> tuple[np.ndarray, int, str]:
    """``(RGB uint8 image, class index, name)`` of a stored classification record."""
    with Image.open(io.BytesIO(record["image"])) as img:
        image = np.asarray(img.convert("RGB") if img.mode != "RGB" else img)
    name = record["name"]
    return image, int(record["label"]), name.decode("utf-8") if isinstance(name, bytes) else name


class ClassificationTrainTransform(grain.transforms.RandomMap):
    """Random-resized crop to ``crop_size`` (bilinear), random horizontal flip, normalisation.

    Arguments:
      crop_size: ``(h, w)`` of the output (ImageNet: 224x224).
      scale, ratio: the crop's area share and aspect-ratio range (torchvision's defaults).
      flip: random horizontal flip with probability 1/2.
      mean, std: normalisation.
    """

    def __init__(
        self,
        *,
        crop_size: Sequence[int],
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        flip: bool = True,
        mean: Sequence[float],
        std: Sequence[float],
    ):
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.scale, self.ratio = tuple(float(v) for v in scale), tuple(float(v) for v in ratio)
        self.flip, self.mean, self.std = bool(flip), tuple(mean), tuple(std)

    def augment(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        top, left, h, w = random_resized_box(rng, image.shape[0], image.shape[1], self.scale, self.ratio)
        height, width = self.crop_size
        out = np.asarray(
            Image.fromarray(image).resize(
                (width, height), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h)
            )
        )
        if self.flip and rng.integers(0, 2) == 1:
            out = np.ascontiguousarray(out[:, ::-1])
        return out

    def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        image, label, _ = decode_image_record(element)
        return {"image": normalize(self.augment(image, rng), mean=self.mean, std=self.std), "label": np.int32(label)}


def resize_center_crop(image: np.ndarray, *, short_side: int, crop: Sequence[int]) -> np.ndarray:
    """torchvision's ``Resize(short_side)`` (bilinear; the long side scaled and truncated) then
    ``CenterCrop(crop)``."""
    h, w = image.shape[:2]
    if h <= w:
        nh, nw = short_side, int(short_side * w / h)
    else:
        nh, nw = int(short_side * h / w), short_side
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR))
    ch, cw = int(crop[0]), int(crop[1])
    if ch > nh or cw > nw:
        raise ValueError(f"centre crop {ch}x{cw} larger than the resized image {nh}x{nw}; raise data.eval_resize")
    top, left = int(round((nh - ch) / 2.0)), int(round((nw - cw) / 2.0))
    return resized[top : top + ch, left : left + cw]


class ClassificationEvalTransform(grain.transforms.Map):
    """Evaluation view of a classification record: resize the short side to ``short_side``,
    centre crop ``crop_size``, normalise; with the class index and the name."""

    def __init__(self, *, short_side: int, crop_size: Sequence[int], mean: Sequence[float], std: Sequence[float]):
        self.short_side, self.crop_size = int(short_side), (int(crop_size[0]), int(crop_size[1]))
        self.mean, self.std = tuple(mean), tuple(std)

    def map(self, element: dict[str, Any]) -> dict[str, Any]:
        image, label, name = decode_image_record(element)
        raw = resize_center_crop(image, short_side=self.short_side, crop=self.crop_size)
        return {
            "image": normalize(raw, mean=self.mean, std=self.std),
            "label": np.int32(label),
            "raw_image": raw,
            "name": name,
        }
