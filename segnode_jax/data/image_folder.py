"""Your own classification set, one folder per class (torchvision's ``ImageFolder`` layout)::

    <root>/train/<class>/<image>.jpg|png...
    <root>/val/<class>/<image>.jpg|png...      (any split names: each subfolder of root)

Classes are the training split's class folders in sorted order (class index = position); the
other splits may use a subset of them. Pretrain on it with ``configs/imagenet.py`` and
``--config.data.name=image_folder --config.data.root=DIR`` (see docs/training.md); it is
built on first use, like the segmentation ``folder`` dataset.
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds
from ml_collections import config_dict

from segnode_jax.data import classification, common, files, registry
from segnode_jax.data.builder import Plan, variant_config
from segnode_jax.data.classification import ClassificationBuilder, RawImage
from segnode_jax.data.errors import PreparationError
from segnode_jax.data.imagenet import classification_defaults

TASK = classification.TASK
placeholder = config_dict.placeholder
CORRUPT_FIX = "replace or remove it"
# Images per planned source (a progress step).
CHUNK = 500


def default_config(cfg: config_dict.ConfigDict) -> None:
    """ImageNet's recipe (random-resized 224 crops; resize 256 + centre 224 to evaluate)."""
    classification_defaults(cfg)
    cfg.root = placeholder(str)


def split_sizes(dcfg: config_dict.ConfigDict) -> dict[str, int | None]:
    del dcfg
    return {}


class SegnodeImageFolder(ClassificationBuilder):
    """Images in one folder per class, for segnode-jax."""


Builder = SegnodeImageFolder


def _root(dcfg: config_dict.ConfigDict) -> str:
    return common.user_root(dcfg, holding="<split>/<class>/ images")


def builder_config(dcfg: config_dict.ConfigDict) -> str | tfds.core.BuilderConfig:
    return variant_config(Builder, common.root_variant(dcfg, _root(dcfg)))


def _scan(dcfg) -> tuple[str, dict[str, dict[str, list[str]]]]:
    """``root`` and ``{split: {class: [relative image paths]}}``."""
    root = _root(dcfg)
    tree = files.SourceTree(root)
    out: dict[str, dict[str, list[str]]] = {}
    for name in tree.list("", suffix=files.IMAGE_EXTENSIONS):
        parts = name.split("/")
        if len(parts) != 3:
            raise PreparationError(
                f"image_folder: {os.path.join(root, name)} is not at <split>/<class>/<image>; put every image in "
                "its class folder inside a split folder (train/, val/)."
            )
        out.setdefault(parts[0], {}).setdefault(parts[1], []).append(name)
    return root, out


def _classes(dcfg, splits) -> list[str]:
    root = _root(dcfg)
    if dcfg.train_split not in splits:
        raise PreparationError(
            f"image_folder: no {os.path.join(root, dcfg.train_split)}/<class>/ images (found splits: "
            f"{', '.join(sorted(splits)) or 'none'}); data.train_split names the training folder."
        )
    ids = sorted(splits[dcfg.train_split])
    classification.check_class_ids(ids, where=os.path.join(root, dcfg.train_split))
    return ids


def class_table(dcfg: config_dict.ConfigDict):
    """The prepared dataset's classes, else the class folders of the training split."""

    found = classification.prepared_classes(registry.make_builder(dcfg))
    ids, names = found if found else (_classes(dcfg, _scan(dcfg)[1]), None)
    return classification.class_table(ids, names)


def plan(dcfg: config_dict.ConfigDict) -> tuple[Plan, tuple[list[str], list[str]]]:
    """Sources of up to ``CHUNK`` images of one class each; ``(plan, (classes, classes))``."""
    root, splits = _scan(dcfg)
    ids = _classes(dcfg, splits)
    index = {c: i for i, c in enumerate(ids)}
    out: Plan = {}
    for split, classes in sorted(splits.items()):
        extra = sorted(set(classes) - set(index))
        if extra:
            raise PreparationError(
                f"image_folder: {os.path.join(root, split)} has class folders the training split lacks "
                f"({', '.join(extra[:5])}); every class needs training images in {os.path.join(root, dcfg.train_split)}."
            )
        out[split] = [
            (root, tuple(names[i : i + CHUNK]), index[c])
            for c, names in sorted(classes.items())
            for i in range(0, len(names), CHUNK)
        ]
    return out, (ids, ids)


def load_source(dcfg: config_dict.ConfigDict, ref) -> Iterator[RawImage]:
    del dcfg
    root, names, label = ref
    tree = files.SourceTree(root)
    for name in names:
        _, cls, base = name.split("/")
        yield RawImage(f"{cls}/{os.path.splitext(base)[0]}", tree.read(name), tree.describe(name), label)


def label_to_train_ids(dcfg, label) -> np.ndarray:
    raise PreparationError("image_folder is a classification dataset: it has no label images.")


def ground_truth_files(dcfg, split: str):
    raise PreparationError("image_folder is a classification dataset: it has no label images to score.")
