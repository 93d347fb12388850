"""A procedural segmentation dataset, generated deterministically from a seed.

Two generators (``data.generator``):

* ``street`` (default; ``segnode_jax.data.street``): street scenes seen by a camera -- road,
  sidewalk, building, vegetation, sky, pole, person, car (8 classes, Cityscapes' names and
  colours) told apart by colour, texture, position, context and shape, with perspective,
  occlusion, illumination changes and sensor noise. The main job trains on it.
* ``shapes``: the first generator, kept for comparison. Every image has a textured, coloured background and 5-10 objects drawn on top of each other
(occlusions), at random positions, sizes (radius 8-20 % of the short side), rotations,
colours and textures (solid, stripes, checker, speckle). The class of an object is its
*shape* (disc, square, triangle, ring, cross, ellipse, frame; the first ``num_classes - 1``
are used); colour and texture are drawn independently of the class, so colour alone does
not give the class. All shapes have the same area for the same size parameter, so classes
get similar pixel shares; ``num_classes`` (2-8) chooses how many shapes are used. A hard task
for its size: the classes differ *only* by outline.

Defaults: 256x256, 512 train / 64 val.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from ml_collections import config_dict
from PIL import Image

from segnode_jax import config as config_lib
from segnode_jax.data import common, files, street
from segnode_jax.data.builder import Plan, RawExample, SegmentationBuilder, variant_config
from segnode_jax.data.classes import ClassEntry, ClassTable, rgb, voc_colormap
from segnode_jax.data.errors import PreparationError

SHAPES = ("disc", "square", "triangle", "ring", "cross", "ellipse", "frame")
GENERATORS = ("street", "shapes")
# Bump when a generator's drawing changes (it is part of the variant name).
GENERATOR_VERSION = {"shapes": 1, "street": 1}


def _generator(dcfg: config_dict.ConfigDict) -> str:
    name = dcfg.get("generator") or "street"
    if name not in GENERATORS:
        raise PreparationError(f"unknown data.generator={name!r}; choose one of {', '.join(GENERATORS)}.")
    return name


def num_classes(dcfg: config_dict.ConfigDict) -> int:
    """The class count of these settings: 8 for ``street``; ``num_classes`` (default 6) for ``shapes``."""
    n = config_lib.optional_int(dcfg, "num_classes", section="data")
    if _generator(dcfg) == "street":
        if n is not None and n != len(street.CLASSES):
            raise PreparationError(
                f"the street generator has {len(street.CLASSES)} classes ({', '.join(street.CLASSES)}), "
                f"but data.num_classes={n}; leave data.num_classes unset (None) or set it to {len(street.CLASSES)}."
            )
        return len(street.CLASSES)
    return 6 if n is None else n


def class_table(dcfg: config_dict.ConfigDict) -> ClassTable:
    """``street``: its 8 classes with Cityscapes' colours. ``shapes``: background (0) and the
    first ``num_classes - 1`` shapes. Train id == stored id."""
    if _generator(dcfg) == "street":
        num_classes(dcfg)
        return ClassTable(tuple(ClassEntry(nm, i, i, street.PALETTE[i]) for i, nm in enumerate(street.CLASSES)))
    n = num_classes(dcfg)
    if not 2 <= n <= len(SHAPES) + 1:
        raise PreparationError(f"synthetic num_classes must be in [2, {len(SHAPES) + 1}], got {n}.")
    colors = voc_colormap(n)
    names = ("background",) + SHAPES[: n - 1]
    return ClassTable(tuple(ClassEntry(nm, i, i, rgb(colors[i])) for i, nm in enumerate(names)))


def default_config(cfg: config_dict.ConfigDict) -> None:
    """Synthetic defaults: small, CPU-friendly, learnable by a small SegNode in minutes."""
    cfg.generator = "street"
    cfg.image_size = (256, 256)
    cfg.num_train = 512
    cfg.num_val = 64
    cfg.seed = 0
    # None: the generator's own count (street 8, shapes 6); shapes take 2..8.
    cfg.num_classes = config_dict.placeholder(int)
    cfg.crop_size = (256, 256)
    # base_size stays None: scales are relative to the generated size.
    cfg.scale_range = (0.75, 1.5)
    # Decoding 256x256 PNGs is cheap; worker processes would compete with the model for
    # the CPU cores. Set num_workers > 0 on bigger machines.
    cfg.num_workers = 0


def split_sizes(dcfg: config_dict.ConfigDict) -> dict[str, int]:
    return {"train": int(dcfg.num_train), "val": int(dcfg.num_val)}


def variant_name(dcfg: config_dict.ConfigDict) -> str:
    """TFDS config name encoding every generation parameter."""
    h, w = _size(dcfg)
    gen = _generator(dcfg)
    prefix = f"v{GENERATOR_VERSION[gen]}" if gen == "shapes" else f"{gen}{GENERATOR_VERSION[gen]}"
    return f"{prefix}_{h}x{w}_c{num_classes(dcfg)}_n{int(dcfg.num_train)}-{int(dcfg.num_val)}_s{int(dcfg.seed)}"


class SegnodeSynthetic(SegmentationBuilder):
    """Procedural street-scene / shapes dataset for segnode-jax (deterministic from a seed)."""


Builder = SegnodeSynthetic


def builder_config(dcfg: config_dict.ConfigDict) -> str | tfds.core.BuilderConfig:
    return variant_config(Builder, str(dcfg.get("variant") or variant_name(dcfg)))


def _size(dcfg: config_dict.ConfigDict) -> tuple[int, int]:
    size = dcfg.image_size
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h < 16 or w < 16:
        raise PreparationError(f"synthetic image_size must be at least 16x16, got {size}.")
    return h, w


def plan(dcfg: config_dict.ConfigDict) -> Plan:
    class_table(dcfg)  # validates num_classes
    return {
        "train": [("train", i) for i in range(int(dcfg.num_train))],
        "val": [("val", i) for i in range(int(dcfg.num_val))],
    }


def load_example(dcfg: config_dict.ConfigDict, ref: tuple[str, int]) -> RawExample:
    split, index = ref
    if _generator(dcfg) == "street":
        image, label = street.render(seed=int(dcfg.seed), split=split, index=index, size=_size(dcfg))
    else:
        image, label = render(
            seed=int(dcfg.seed), split=split, index=index, size=_size(dcfg), num_classes=num_classes(dcfg)
        )
    name = f"{index:05d}"
    return RawExample(name, files.encode_png(image), f"synthetic {split}/{name}", label, f"synthetic {split}/{name}")


def label_to_train_ids(dcfg: config_dict.ConfigDict, label) -> np.ndarray:
    """Synthetic labels (array or PNG path) are train ids already; checked against the table."""
    return common.table_label_to_train_ids(class_table(dcfg), label)


def ground_truth_files(dcfg: config_dict.ConfigDict, split: str) -> list[tuple[str, str]]:
    """``[(name, png)]``: the split's labels exported once from the prepared records."""
    return common.export_ground_truth(dcfg, split)


# ---------------------------------------------------------------------------------------
# Drawing.


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Pixels inside ``shape`` in rotated local coordinates; area ~ pi * r^2 for every shape."""
    if shape == "disc":
        return u * u + v * v <= r * r
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.886 * r
    if shape == "triangle":
        apothem = 0.5 * 1.555 * r  # equilateral, circumradius 1.555 r
        inside = np.ones(u.shape, dtype=bool)
        for k in range(3):
            a = np.pi / 2 + 2 * np.pi * k / 3
            inside &= u * np.cos(a) + v * np.sin(a) <= apothem
        return inside
    if shape == "ring":
        outer = 1.25 * r
        d2 = u * u + v * v
        return (d2 <= outer * outer) & (d2 >= (0.6 * outer) ** 2)
    if shape == "cross":
        arm, half = 1.241 * r, 0.3 * 1.241 * r
        au, av = np.abs(u), np.abs(v)
        return ((au <= arm) & (av <= half)) | ((av <= arm) & (au <= half))
    if shape == "ellipse":
        a, b = 1.6 * r, r / 1.6
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0
    if shape == "frame":
        s = 1.108 * r
        m = np.maximum(np.abs(u), np.abs(v))
        return (m <= s) & (m >= 0.6 * s)
    raise ValueError(shape)


def _texture(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, color: np.ndarray, unit: float) -> np.ndarray:
    """An ``(h, w, 3)`` float texture in ``color`` (solid, stripes, checker or speckle)."""
    kind = int(rng.integers(0, 4))
    other = np.clip(color * rng.uniform(0.35, 0.7) + rng.uniform(0, 255, 3) * 0.3, 0, 255)
    period = rng.uniform(4.0, 10.0) * unit
    if kind == 0:
        t = np.zeros(u.shape, np.float32)
    elif kind == 1:
        phi = rng.uniform(0, np.pi)
        t = (np.sin(2 * np.pi * (u * np.cos(phi) + v * np.sin(phi)) / period) > 0).astype(np.float32)
    elif kind == 2:
        t = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    else:
        t = (rng.random(u.shape) < 0.3).astype(np.float32)
    return color[None, None, :] * (1 - t[..., None]) + other[None, None, :] * t[..., None]


def _background(rng: np.random.Generator, h: int, w: int, unit: float) -> np.ndarray:
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    a = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = xx * np.cos(a) + yy * np.sin(a)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    img = c1[None, None] * (1 - t[..., None]) + c2[None, None] * t[..., None]
    # Low-frequency colour blotches.
    gh, gw = max(2, int(h / (40 * unit)) + 2), max(2, int(w / (40 * unit)) + 2)
    blot = rng.normal(0, 30, (gh, gw, 3)).astype(np.float32)
    blot_img = np.stack(
        [np.asarray(Image.fromarray(blot[..., c]).resize((w, h), Image.Resampling.BILINEAR)) for c in range(3)], axis=-1
    )
    img = img + blot_img
    if rng.random() < 0.5:  # Faint stripes so that texture alone is not "object".
        phi, period = rng.uniform(0, np.pi), rng.uniform(6, 16) * unit
        s = np.sin(2 * np.pi * (xx * np.cos(phi) + yy * np.sin(phi)) / period) > 0
        img = img + s[..., None] * rng.uniform(-40, 40, 3)[None, None]
    return img


def render(
    *, seed: int, split: str, index: int, size: tuple[int, int], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draws one example of the ``shapes`` generator.

    Arguments:
      seed: dataset seed.
      split: ``"train"`` or ``"val"`` (different random streams).
      index: example index in its split.
      size: ``(h, w)``.
      num_classes: background + ``num_classes - 1`` shapes.

    Returns:
      ``(image uint8 (h, w, 3), label uint8 (h, w))`` with label = class (0 = background).
    """
    h, w = size
    rng = np.random.default_rng([int(seed), {"train": 0, "val": 1}.get(split, 2), int(index)])
    short = min(h, w)
    unit = short / 256.0
    img = _background(rng, h, w, unit)
    label = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(5, 11))):
        cls = int(rng.integers(1, num_classes))
        r = rng.uniform(0.08, 0.2) * short
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        theta = rng.uniform(0, 2 * np.pi)
        ext = 1.65 * r
        x0, x1 = max(int(cx - ext), 0), min(int(cx + ext) + 1, w)
        y0, y1 = max(int(cy - ext), 0), min(int(cy + ext) + 1, h)
        if x1 <= x0 or y1 <= y0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dx, dy = xx - cx, yy - cy
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        mask = _shape_mask(SHAPES[cls - 1], u, v, r)
        if not mask.any():
            continue
        local_mean = img[y0:y1, x0:x1][mask].mean(axis=0)
        for _try in range(10):  # A colour that stands out from what is underneath.
            color = rng.uniform(0, 255, 3)
            if np.linalg.norm(color - local_mean) > 90:
                break
        tex = _texture(rng, u, v, color, unit)
        img[y0:y1, x0:x1][mask] = tex[mask]
        label[y0:y1, x0:x1][mask] = cls
    img = img + rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), label
