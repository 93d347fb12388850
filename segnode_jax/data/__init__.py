"""Datasets and input pipelines of segnode-jax (TFDS array_record + grain, no TensorFlow).

Typical use::

    from segnode_jax import data
    dcfg = data.data_config("cityscapes")
    info = data.get_info(dcfg)
    it = data.train_iterator(dcfg, batch_size=8, seed=0)
    batch = next(it)          # {'image': (B,H,W,3) float32, 'label': (B,H,W) int32, 255 = ignore}
    for ex in data.eval_dataset(dcfg, split="val"):
        ...                   # 'image', 'label' (original size), 'raw_image', 'name'

Datasets are built once with ``python -m segnode_jax.data.prepare`` (see docs/datasets.md);
the synthetic dataset is built on first use.
"""

from __future__ import annotations

import warnings

import numpy as np
from ml_collections import config_dict

from segnode_jax.data.builder import DatasetInfo
from segnode_jax.data.classes import colorize
from segnode_jax.data.errors import PreparationError
from segnode_jax.data.pipeline import (
    eval_dataset,
    num_examples,
    resolve_shard,
    steps_per_epoch,
    train_dataset,
    train_iterator,
)
from segnode_jax.data.prepare import ensure_prepared, prepare

# `python -m segnode_jax.data.prepare` runs a module this package has already imported (for the
# `prepare` function above), and runpy warns about exactly that; the module defines no state the
# second execution could disturb (its main() only reads arguments), so that one warning is dropped.
warnings.filterwarnings(
    "ignore", message=r"'segnode_jax\.data\.prepare' found in sys\.modules", category=RuntimeWarning
)
from segnode_jax.data.registry import DATASETS, data_config, dataset_module, get_info  # noqa: E402 - after the filter above
from segnode_jax.errors import UserError  # noqa: E402 - after the filter above


def label_to_train_ids(dcfg: config_dict.ConfigDict, label) -> np.ndarray:
    """Converts a label in the dataset's own format to train ids.

    Arguments:
      dcfg: data settings.
      label: an array, or the path of a label file as the dataset distributes it
        (Cityscapes ``*_gtFine_labelIds.png``, CamVid ``*annot/*.png``, LIP
        ``*_segmentations/*.png``, PASCAL-Context 60-class PNG, folder masks, synthetic PNG).

    Returns:
      int32 ``(H, W)`` train ids, 255 = ignore.

    Raises:
      PreparationError: the label holds values outside the class table.
    """
    return dataset_module(dcfg.name).label_to_train_ids(dcfg, label)


def train_ids_to_dataset_ids(dcfg: config_dict.ConfigDict, train_ids) -> np.ndarray:
    """The inverse of :func:`label_to_train_ids` for predictions: train ids -> the dataset's
    own ids (Cityscapes labelIds, CamVid / LIP / PASCAL-Context / folder ids), 255 kept.

    Returns:
      uint8 ``(H, W)`` (uint16 for datasets with ids above 255).
    """
    return dataset_module(dcfg.name).class_table(dcfg).to_ids(train_ids)


def resolve_num_classes(cfg) -> int:
    """Fills ``cfg.model.num_classes`` from the dataset when it is None (``configs/folder.py``:
    the class count comes from your class file) and checks it otherwise.

    Returns:
      The class count.

    Raises:
      segnode_jax.errors.UserError: the model and the dataset disagree (names the value to set).
    """

    n = get_info(cfg.data).num_classes
    if cfg.model.get("num_classes") is None:
        with cfg.model.ignore_type():
            cfg.model.num_classes = n
    elif int(cfg.model.num_classes) != n:
        raise UserError(
            f"model.num_classes={cfg.model.num_classes} but the {cfg.data.name} dataset has {n} classes; "
            f"set --config.model.num_classes={n} (or None: the dataset's count)."
        )
    return n


def ground_truth_files(dcfg: config_dict.ConfigDict, split: str) -> list[tuple[str, str]]:
    """Ground-truth label files of ``split`` in the dataset's own format.

    Arguments:
      dcfg: data settings (real datasets need ``manual_dir``, extracted).
      split: e.g. ``"val"``.

    Returns:
      ``[(name, path)]`` sorted by name; ``label_to_train_ids(dcfg, path)`` reads each.
    """
    return dataset_module(dcfg.name).ground_truth_files(dcfg, split)


__all__ = [
    "DATASETS",
    "DatasetInfo",
    "PreparationError",
    "colorize",
    "data_config",
    "ensure_prepared",
    "eval_dataset",
    "get_info",
    "ground_truth_files",
    "train_ids_to_dataset_ids",
    "label_to_train_ids",
    "num_examples",
    "prepare",
    "resolve_num_classes",
    "resolve_shard",
    "steps_per_epoch",
    "train_dataset",
    "train_iterator",
]
