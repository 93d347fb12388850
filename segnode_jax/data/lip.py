"""LIP (Look Into Person) single-person human parsing: 20 classes, background included.

Layout of the official download (folders, or the two zips themselves)::

    <manual_dir>/TrainVal_images/train_images/<id>.jpg       (30462)
    <manual_dir>/TrainVal_images/val_images/<id>.jpg         (10000)
    <manual_dir>/TrainVal_images/train_id.txt, val_id.txt    (one <id> per line)
    <manual_dir>/TrainVal_parsing_annotations/train_segmentations/<id>.png
    <manual_dir>/TrainVal_parsing_annotations/val_segmentations/<id>.png
    or <manual_dir>/TrainVal_images.zip and <manual_dir>/TrainVal_parsing_annotations.zip

Folders may be nested one level deeper (``TrainVal_images/TrainVal_images/train_images``,
as some unzip tools produce); they are found wherever they are below ``manual_dir``.
HRNet's list files (``trainList.txt``/``valList.txt``) name the same images and labels.
A horizontal flip swaps the left/right classes (14<->15, 16<->17, 18<->19).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds
from ml_collections import config_dict

from segnode_jax.data import common, files
from segnode_jax.data.builder import Plan, RawExample, SegmentationBuilder, variant_config
from segnode_jax.data.classes import ClassEntry, ClassTable
from segnode_jax.data.errors import PreparationError

_NAMES_COLORS = (
    ("background", (0, 0, 0)),
    ("hat", (128, 0, 0)),
    ("hair", (255, 0, 0)),
    ("glove", (0, 85, 0)),
    ("sunglasses", (170, 0, 51)),
    ("upper_clothes", (255, 85, 0)),
    ("dress", (0, 0, 85)),
    ("coat", (0, 119, 221)),
    ("socks", (85, 85, 0)),
    ("pants", (0, 85, 85)),
    ("jumpsuits", (85, 51, 0)),
    ("scarf", (52, 86, 128)),
    ("skirt", (0, 128, 0)),
    ("face", (0, 0, 255)),
    ("left_arm", (51, 170, 221)),
    ("right_arm", (0, 255, 255)),
    ("left_leg", (85, 255, 170)),
    ("right_leg", (170, 255, 85)),
    ("left_shoe", (255, 255, 0)),
    ("right_shoe", (255, 170, 0)),
)
CLASSES = ClassTable(tuple(ClassEntry(n, i, i, c) for i, (n, c) in enumerate(_NAMES_COLORS)))
# Train ids exchanged by a horizontal flip: left/right arm, leg, shoe.
FLIP_PAIRS = ((14, 15), (16, 17), (18, 19))
SPLIT_SIZES = {"train": 30462, "val": 10000}
CORRUPT_FIX = "re-extract it from TrainVal_images.zip / TrainVal_parsing_annotations.zip"
EXPECTED = (
    "  TrainVal_images/{train_images,val_images}/<id>.jpg, TrainVal_images/{train_id,val_id}.txt,\n"
    "  TrainVal_parsing_annotations/{train_segmentations,val_segmentations}/<id>.png\n"
    "  (or the zips TrainVal_images.zip and TrainVal_parsing_annotations.zip)."
)


def class_table(dcfg: config_dict.ConfigDict) -> ClassTable:
    del dcfg
    return CLASSES


def default_config(cfg: config_dict.ConfigDict) -> None:
    """HRNet's LIP recipe: flip, resize to 473x473, scale 0.5-1.6 (HRNet's SCALE_FACTOR 11:
    ``0.5 + randint(0, 11) / 10``), 473x473 crops; evaluation on images resized to 473x473
    (predictions go back to the label size), with flip."""
    cfg.crop_size = (473, 473)
    cfg.base_size = 473
    cfg.train_resize = (473, 473)
    cfg.scale_range = (0.5, 1.6)
    cfg.eval_size = (473, 473)
    cfg.eval_flip = True
    cfg.test_crop_size = (473, 473)  # HRNet's TEST.IMAGE_SIZE


def split_sizes(dcfg: config_dict.ConfigDict) -> dict[str, int]:
    del dcfg
    return dict(SPLIT_SIZES)


class SegnodeLip(SegmentationBuilder):
    """LIP human parsing (20 classes) for segnode-jax."""

    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="single_person", description="LIP train/val")]


Builder = SegnodeLip


def builder_config(dcfg: config_dict.ConfigDict):
    return variant_config(Builder, str(dcfg.get("variant") or "single_person"))


def _trees(root: str) -> list[files.SourceTree]:
    trees = [files.SourceTree(root)]
    for z in ("TrainVal_images.zip", "TrainVal_parsing_annotations.zip"):
        if os.path.isfile(os.path.join(root, z)):
            trees.append(files.SourceTree(os.path.join(root, z)))
    return trees


def _find_folder(trees: list[files.SourceTree], folder: str) -> tuple[files.SourceTree, str] | None:
    """``(tree, prefix)`` such that ``<prefix><folder>/`` holds files; shortest prefix wins."""
    best = None
    for tree in trees:
        for n in tree.names():
            parts = n.split("/")
            if folder in parts[:-1]:
                prefix = "/".join(parts[: parts.index(folder)])
                prefix = prefix + "/" if prefix else ""
                if best is None or len(prefix) < len(best[1]):
                    best = (tree, prefix)
                break
    return best


def _find_file(trees: list[files.SourceTree], basename: str) -> tuple[files.SourceTree, str] | None:
    for tree in trees:
        for n in tree.names():
            if n.split("/")[-1] == basename:
                return tree, n
    return None


def _split_plan(trees, root: str, split: str) -> list:
    img = _find_folder(trees, f"{split}_images")
    seg = _find_folder(trees, f"{split}_segmentations")
    missing = [f for f, v in ((f"{split}_images/", img), (f"{split}_segmentations/", seg)) if v is None]
    if missing or img is None or seg is None:
        raise PreparationError(
            f"lip: missing download: no folder {' or '.join(missing)} below {root}. Expected:\n{EXPECTED}"
        )
    (itree, iprefix), (stree, sprefix) = img, seg
    images = {
        os.path.splitext(n.split("/")[-1])[0]: n
        for n in itree.list(f"{iprefix}{split}_images", suffix=(".jpg", ".jpeg", ".png"))
    }
    labels = {
        os.path.splitext(n.split("/")[-1])[0]: n for n in stree.list(f"{sprefix}{split}_segmentations", suffix=".png")
    }
    ids_file = _find_file(trees, f"{split}_id.txt")
    if ids_file is not None:
        ids = [line.strip() for line in ids_file[0].read(ids_file[1]).decode().splitlines() if line.strip()]
        where = ids_file[0].describe(ids_file[1])
        for what, have, folder in (
            ("image", images, itree.describe(f"{iprefix}{split}_images/")),
            ("label", labels, stree.describe(f"{sprefix}{split}_segmentations/")),
        ):
            lacking = [i for i in ids if i not in have]
            if lacking:
                raise PreparationError(
                    f"lip: incomplete download: {len(lacking)} id(s) listed in {where} have no {what} in "
                    f"{folder} (e.g. {', '.join(lacking[:3])}). Extract the complete archives again."
                )
        return [(itree, stree, i, images[i], labels[i]) for i in ids]
    common.warn(f"lip: no {split}_id.txt found below {root}; using every image in {split}_images/.")
    pairs = common.pair(
        images,
        labels,
        image_where=itree.describe(f"{iprefix}{split}_images/"),
        label_where=stree.describe(f"{sprefix}{split}_segmentations/"),
        label_pattern=stree.describe(f"{sprefix}{split}_segmentations/{{key}}.png"),
        fix="Extract the complete TrainVal_parsing_annotations archive.",
    )
    return [(itree, stree, k, i, s) for k, i, s in pairs]


def plan(dcfg: config_dict.ConfigDict) -> Plan:
    """Lists the train and val examples (ids from ``{train,val}_id.txt``)."""
    root = common.manual_dir(dcfg, expected=EXPECTED)
    trees = _trees(root)
    out: Plan = {}
    for split, official in SPLIT_SIZES.items():
        out[split] = _split_plan(trees, root, split)
        common.check_count("lip", split, len(out[split]), official)
    return out


def load_example(dcfg: config_dict.ConfigDict, ref) -> RawExample:
    itree, stree, key, img, lab = ref
    raw = files.decode_label(stree.read(lab), source=stree.describe(lab), fix=CORRUPT_FIX)
    label = CLASSES.to_train_ids(raw, source=stree.describe(lab))
    return RawExample(key, itree.read(img), itree.describe(img), label, stree.describe(lab))


def label_to_train_ids(dcfg: config_dict.ConfigDict, label) -> np.ndarray:
    """A LIP parsing annotation (values 0..19, array or path) -> train ids (identical values)."""
    del dcfg
    return common.table_label_to_train_ids(CLASSES, label)


def ground_truth_files(dcfg: config_dict.ConfigDict, split: str) -> list[tuple[str, str]]:
    """``[(id, .../<split>_segmentations/<id>.png)]`` (extracted folders needed)."""
    root = common.manual_dir(dcfg, expected=EXPECTED)
    found = _find_folder([files.SourceTree(root)], f"{split}_segmentations")
    if found is None:
        raise PreparationError(
            f"lip: no extracted {split}_segmentations/ folder below {root}; unzip TrainVal_parsing_annotations.zip there."
        )
    tree, prefix = found
    folder = tree.local_path(f"{prefix}{split}_segmentations")
    if folder is None:  # inside an archive: the comparison reads files
        raise PreparationError(
            f"lip: {split}_segmentations/ is inside an archive below {root}; unzip TrainVal_parsing_annotations.zip there."
        )
    return sorted((os.path.splitext(n)[0], os.path.join(folder, n)) for n in os.listdir(folder) if n.endswith(".png"))
