"""Dataset names, their default settings (``data_config``) and metadata (``get_info``)."""

from __future__ import annotations

import importlib
import os
import types

from ml_collections import config_dict

from segnode_jax import config as config_lib
from segnode_jax.data.builder import DatasetInfo, PlannedBuilder
from segnode_jax.data.classes import IGNORE
from segnode_jax.data.errors import PreparationError

placeholder = config_dict.placeholder

DATASETS = ("cityscapes", "camvid", "lip", "pascal_context", "folder", "synthetic", "imagenet", "image_folder")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def dataset_module(name: str) -> types.ModuleType:
    """The module implementing dataset ``name`` (see ``segnode_jax.data.builder``)."""
    if name not in DATASETS:
        raise PreparationError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")
    return importlib.import_module(f"segnode_jax.data.{name}")


def task_of(name: str) -> str:
    """``"segmentation"`` or ``"classification"`` (ImageNet pretraining) for dataset ``name``."""
    return getattr(dataset_module(name), "TASK", "segmentation")


def is_classification(dcfg: config_dict.ConfigDict) -> bool:
    """Whether ``dcfg`` describes a classification dataset (``imagenet``, ``image_folder``)."""
    return task_of(dcfg.name) == "classification"


def default_data_dir() -> str:
    """``$SEGNODE_DATA_DIR`` if set, else ``~/tensorflow_datasets``."""
    return os.environ.get("SEGNODE_DATA_DIR") or "~/tensorflow_datasets"


def common_config(name: str) -> config_dict.ConfigDict:
    """The fields every dataset has; dataset modules then set their own defaults.

    See ``docs/datasets.md`` for the meaning of every field.
    """
    return config_dict.ConfigDict(
        dict(
            name=name,
            # Where the prepared TFDS (array_record) datasets live.
            data_dir=default_data_dir(),
            # Where the raw download is (archives or extracted folders); prepare() only.
            manual_dir=placeholder(str),
            # TFDS builder-config name; None = derived from the settings.
            variant=placeholder(str),
            train_split="train",
            eval_split="val",
            # Training crop (h, w); padded with ignore where the scaled image is smaller.
            crop_size=(512, 1024),
            # HRNet: the long side is resized to base_size * scale. None = scale the original size.
            base_size=placeholder(int),
            # Resize every training image to (h, w) before random scaling (HRNet's LIP recipe).
            train_resize=placeholder(tuple),
            scale_range=(0.5, 2.0),
            # Scales are drawn from {lo, lo + step, ..., hi} (HRNet: 0.1); 0 = continuous.
            scale_step=0.1,
            flip=True,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            ignore_index=IGNORE,
            # grain worker processes for the training pipeline (0 = in the main process).
            num_workers=2,
            # Batches buffered per worker (or in the main process when num_workers=0).
            prefetch=2,
            # Threads reading/decoding records in each process.
            read_threads=2,
            # Evaluation: images resized to (h, w) (LIP: 473x473); None = original size.
            eval_size=placeholder(tuple),
            eval_scales=(1.0,),
            eval_flip=False,
            # eval.mode="hrnet": HRNet's test windows (its TEST.IMAGE_SIZE; None: crop_size) and
            # which dataset class's rule: "base" (whole if it fits the window, else 2/3-stride
            # padded windows) | "cityscapes" (whole for scales <= 1, else crop-stride windows).
            test_crop_size=placeholder(tuple),
            hrnet_test_rule="base",
            # Use the dataset's class weights in the loss (get_info(dcfg).class_weights).
            class_weights=False,
        )
    )


def data_config(name: str) -> config_dict.ConfigDict:
    """The default data settings of dataset ``name`` (HRNet's recipe where HRNet has one).

    Arguments:
      name: one of ``cityscapes``, ``camvid``, ``lip``, ``pascal_context``, ``folder``,
        ``synthetic``.

    Returns:
      A ``ConfigDict``; optional fields are ``placeholder``s so command-line overrides such
      as ``--config.data.manual_dir=/x`` work.
    """
    module = dataset_module(name)
    cfg = common_config(name)
    module.default_config(cfg)
    return cfg


def check_config(dcfg: config_dict.ConfigDict) -> None:
    """Rejects settings the pipeline cannot honour (with a message naming the field)."""
    if dcfg.ignore_index != IGNORE:
        raise PreparationError(
            f"data.ignore_index must be {IGNORE} (labels use 255 for ignore), got {dcfg.ignore_index}."
        )
    lo, hi = dcfg.scale_range
    if not 0 < lo <= hi:
        raise PreparationError(f"data.scale_range must satisfy 0 < lo <= hi, got {tuple(dcfg.scale_range)}.")
    if len(tuple(dcfg.crop_size)) != 2:
        raise PreparationError(f"data.crop_size must be (height, width), got {dcfg.crop_size}.")


def data_dir(dcfg: config_dict.ConfigDict) -> str:
    """The expanded TFDS data directory of ``dcfg``."""
    return os.path.abspath(os.path.expanduser(dcfg.data_dir or default_data_dir()))


def make_builder(dcfg: config_dict.ConfigDict) -> PlannedBuilder:
    """The TFDS builder for these settings (nothing is read or written)."""
    module = dataset_module(dcfg.name)
    return module.Builder(data_dir=data_dir(dcfg), config=module.builder_config(dcfg))


def get_info(dcfg: config_dict.ConfigDict) -> DatasetInfo:
    """Metadata of the dataset described by ``dcfg``.

    Arguments:
      dcfg: from :func:`data_config` (possibly overridden).

    Returns:
      A :class:`~segnode_jax.data.builder.DatasetInfo`.
    """
    module = dataset_module(dcfg.name)
    table = module.class_table(dcfg)
    weights = None
    if dcfg.get("class_weights"):
        weights = table.class_weights
        if weights is None:
            raise PreparationError(
                f"data.class_weights=True but dataset {dcfg.name!r} has no class weights; set it to False."
            )
    splits: dict[str, int | None] = dict(module.split_sizes(dcfg))
    try:
        builder = make_builder(dcfg)
        if builder.is_prepared():
            splits = {k: v.num_examples for k, v in builder.info.splits.items()}
    except PreparationError:
        pass
    eval_size = config_lib.optional_size(dcfg, "eval_size", section="data")
    return DatasetInfo(
        name=dcfg.name,
        num_classes=table.num_classes,
        class_names=table.class_names,
        palette=table.palette,
        ignore_index=IGNORE,
        class_weights=weights,
        eval_scales=tuple(float(s) for s in dcfg.eval_scales),
        eval_flip=bool(dcfg.eval_flip),
        flip_pairs=tuple(tuple(p) for p in getattr(module, "FLIP_PAIRS", ())),
        eval_size=eval_size,
        splits=splits,
        task=task_of(dcfg.name),
    )
