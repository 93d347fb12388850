"""Cityscapes (19 classes) from the official archives or their extracted folders::

    <manual_dir>/leftImg8bit_trainvaltest.zip   or  <manual_dir>/leftImg8bit/{train,val,test}/<city>/*_leftImg8bit.png
    <manual_dir>/gtFine_trainvaltest.zip        or  <manual_dir>/gtFine/{train,val,test}/<city>/*_gtFine_labelIds.png
    optional (use_coarse=True, adds the split "train_extra"):
    <manual_dir>/leftImg8bit_trainextra.zip     or  <manual_dir>/leftImg8bit/train_extra/<city>/*_leftImg8bit.png
    <manual_dir>/gtCoarse.zip                   or  <manual_dir>/gtCoarse/train_extra/<city>/*_gtCoarse_labelIds.png

``labelIds`` are mapped to the 19 train ids with cityscapesScripts' label table
(``cityscapesscripts.helpers.labels``); everything else becomes 255. Names and colours come
from the same table.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds
from cityscapesscripts.helpers import labels as cs_labels
from ml_collections import config_dict

from segnode_jax.data import common, files
from segnode_jax.data.builder import Plan, RawExample, SegmentationBuilder, variant_config
from segnode_jax.data.classes import IGNORE, ClassEntry, ClassTable
from segnode_jax.data.errors import PreparationError

# HRNet's Cityscapes loss weights, indexed by train id (HRNet-Semantic-Segmentation,
# lib/datasets/cityscapes.py).
HRNET_CLASS_WEIGHTS = (
    0.8373,
    0.918,
    0.866,
    1.0345,
    1.0166,
    0.9969,
    0.9754,
    1.0489,
    0.8786,
    1.0023,
    0.9539,
    0.9843,
    1.1116,
    0.9037,
    1.0865,
    1.0955,
    1.0865,
    1.1529,
    1.0507,
)


def _table() -> ClassTable:
    entries = []
    for lab in cs_labels.labels:
        if lab.id < 0:  # "license plate" (id -1) never appears in labelIds files.
            continue
        train_id = lab.trainId if 0 <= lab.trainId < IGNORE else IGNORE
        weight = HRNET_CLASS_WEIGHTS[train_id] if train_id != IGNORE else None
        entries.append(ClassEntry(lab.name, lab.id, train_id, tuple(lab.color), weight))
    return ClassTable(tuple(entries))


CLASSES = _table()
SPLIT_SIZES = {"train": 2975, "val": 500, "test": 1525}
EXTRA_SIZE = 19998
CORRUPT_FIX = "re-extract it from the official archive (or download the archive again)"
EXPECTED = (
    "  leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip (as downloaded from cityscapes-dataset.com),\n"
    "  or their extracted folders leftImg8bit/{train,val,test}/<city>/*_leftImg8bit.png and\n"
    "  gtFine/{train,val,test}/<city>/*_gtFine_labelIds.png;\n"
    "  with use_coarse also leftImg8bit_trainextra.zip and gtCoarse.zip (or leftImg8bit/train_extra/, gtCoarse/train_extra/)."
)


def class_table(dcfg: config_dict.ConfigDict) -> ClassTable:
    del dcfg
    return CLASSES


def default_config(cfg: config_dict.ConfigDict) -> None:
    """HRNet's Cityscapes recipe: 512x1024 crops of the 2048-wide frames scaled by 0.5-2.1
    (HRNet's ``0.5 + randint(0, SCALE_FACTOR=16) / 10``: the upper end included),
    class-weighted loss, multi-scale (+flip) testing at 0.5-1.75."""
    cfg.crop_size = (512, 1024)
    cfg.base_size = 2048
    cfg.scale_range = (0.5, 2.1)
    cfg.class_weights = True
    cfg.eval_scales = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    cfg.eval_flip = True
    cfg.test_crop_size = (1024, 2048)  # HRNet's TEST.IMAGE_SIZE: whole frames
    cfg.hrnet_test_rule = "cityscapes"
    # Also build "train_extra" (19998 images with gtCoarse labels); train on it with
    # train_split="train+train_extra".
    cfg.use_coarse = False


def split_sizes(dcfg: config_dict.ConfigDict) -> dict[str, int]:
    sizes = dict(SPLIT_SIZES)
    if dcfg.get("use_coarse"):
        sizes["train_extra"] = EXTRA_SIZE
    return sizes


class SegnodeCityscapes(SegmentationBuilder):
    """Cityscapes (19 train ids, fine annotations; optional coarse train_extra) for segnode-jax."""

    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="fine", description="gtFine train/val/test"),
        tfds.core.BuilderConfig(name="fine_coarse", description="gtFine train/val/test + gtCoarse train_extra"),
    ]


Builder = SegnodeCityscapes


def builder_config(dcfg: config_dict.ConfigDict):
    return variant_config(Builder, str(dcfg.get("variant") or ("fine_coarse" if dcfg.get("use_coarse") else "fine")))


def _tree(root: str, folder: str, archive: str, *, what: str) -> files.SourceTree:
    """The extracted ``folder`` under ``root``, else the zip ``archive`` (rooted at ``folder``)."""
    if os.path.isdir(os.path.join(root, folder)):
        return files.SourceTree(root)
    if os.path.isfile(os.path.join(root, archive)):
        return files.SourceTree(os.path.join(root, archive))
    raise PreparationError(
        f"cityscapes: missing download: neither {os.path.join(root, archive)} nor the folder "
        f"{os.path.join(root, folder)}/ exists ({what}). Expected in {root}:\n{EXPECTED}"
    )


def _split_pairs(img_tree, gt_tree, split: str, gt: str) -> list[tuple[str, str, str]]:
    images = {
        k[len(f"leftImg8bit/{split}/") :]: v
        for k, v in common.stems(
            img_tree.list(f"leftImg8bit/{split}", suffix="_leftImg8bit.png"), strip="_leftImg8bit"
        ).items()
    }
    labels = {
        k[len(f"{gt}/{split}/") :]: v
        for k, v in common.stems(
            gt_tree.list(f"{gt}/{split}", suffix=f"_{gt}_labelIds.png"), strip=f"_{gt}_labelIds"
        ).items()
    }
    if not images:
        raise PreparationError(
            f"cityscapes: no images in {img_tree.describe(f'leftImg8bit/{split}/')} "
            f"(expected <city>/*_leftImg8bit.png). The download is incomplete; expected:\n{EXPECTED}"
        )
    return common.pair(
        images,
        labels,
        image_where=img_tree.describe(f"leftImg8bit/{split}/"),
        label_where=gt_tree.describe(f"{gt}/{split}/"),
        label_pattern=gt_tree.describe(f"{gt}/{split}/{{key}}_{gt}_labelIds.png"),
        fix=f"Download/extract the complete {'gtFine_trainvaltest.zip' if gt == 'gtFine' else 'gtCoarse.zip'} "
        "and leftImg8bit archives again.",
    )


def plan(dcfg: config_dict.ConfigDict) -> Plan:
    """Lists image/labelIds pairs of train/val/test (and train_extra with use_coarse)."""
    root = common.manual_dir(dcfg, expected=EXPECTED)
    img_tree = _tree(root, "leftImg8bit", "leftImg8bit_trainvaltest.zip", what="images")
    gt_tree = _tree(root, "gtFine", "gtFine_trainvaltest.zip", what="fine annotations")
    out: Plan = {}
    for split, official in SPLIT_SIZES.items():
        pairs = _split_pairs(img_tree, gt_tree, split, "gtFine")
        common.check_count("cityscapes", split, len(pairs), official)
        out[split] = [(img_tree, gt_tree, key, img, lab) for key, img, lab in pairs]
    if dcfg.get("use_coarse"):
        extra_tree = img_tree
        if not img_tree.has_dir("leftImg8bit/train_extra"):
            extra_tree = _tree(root, "leftImg8bit/train_extra", "leftImg8bit_trainextra.zip", what="train_extra images")
        coarse_tree = _tree(root, "gtCoarse", "gtCoarse.zip", what="coarse annotations")
        pairs = _split_pairs(extra_tree, coarse_tree, "train_extra", "gtCoarse")
        common.check_count("cityscapes", "train_extra", len(pairs), EXTRA_SIZE)
        out["train_extra"] = [(extra_tree, coarse_tree, key, img, lab) for key, img, lab in pairs]
    return out


def load_example(dcfg: config_dict.ConfigDict, ref) -> RawExample:
    img_tree, gt_tree, key, img, lab = ref
    raw = files.decode_label(gt_tree.read(lab), source=gt_tree.describe(lab), fix=CORRUPT_FIX)
    label = CLASSES.to_train_ids(raw, source=gt_tree.describe(lab))
    return RawExample(key, img_tree.read(img), img_tree.describe(img), label, gt_tree.describe(lab))


def label_to_train_ids(dcfg: config_dict.ConfigDict, label) -> np.ndarray:
    """A ``*_gtFine_labelIds.png`` (array or path) -> train ids (255 = ignore)."""
    del dcfg
    return common.table_label_to_train_ids(CLASSES, label)


def prediction_pattern(name: str) -> str:
    """How cityscapesScripts' evaluator finds the prediction of an image anywhere under a
    folder: ``frankfurt/frankfurt_000000_000294`` -> ``frankfurt_000000_000294*.png``."""
    return os.path.basename(name) + "*.png"


def export_name(name: str) -> str:
    """The benchmark server's file name of an image's prediction (labelIds PNG):
    ``frankfurt/frankfurt_000000_000294`` -> ``frankfurt/frankfurt_000000_000294_leftImg8bit.png``."""
    return name + "_leftImg8bit.png"


def ground_truth_files(dcfg: config_dict.ConfigDict, split: str) -> list[tuple[str, str]]:
    """``[('frankfurt/frankfurt_000000_000294', <manual_dir>/gtFine/val/frankfurt/..._gtFine_labelIds.png)]``.

    Needs the extracted ``gtFine`` folder (cityscapesScripts' evaluation reads the same files).
    """
    root = common.manual_dir(dcfg, expected=EXPECTED)
    folder = os.path.join(root, "gtFine", split)
    if not os.path.isdir(folder):
        raise PreparationError(
            f"cityscapes: {folder} does not exist. Scoring reads the extracted ground truth: unzip "
            f"gtFine_trainvaltest.zip in {root}."
        )
    tree = files.SourceTree(folder)
    found = common.stems(tree.list("", suffix="_gtFine_labelIds.png"), strip="_gtFine_labelIds")
    return sorted((k, os.path.join(folder, v)) for k, v in found.items())
