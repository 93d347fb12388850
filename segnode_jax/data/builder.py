"""Shared pieces of every dataset: the TFDS builder, planned examples and dataset metadata.

Each dataset module (``cityscapes.py``, ``camvid.py``, ...) provides:

* ``CLASSES`` or ``class_table(dcfg)``: its :class:`~segnode_jax.data.classes.ClassTable`;
* ``default_config(cfg)``: fills in the dataset's defaults on the common config;
* ``Builder``: a :class:`SegmentationBuilder` subclass (the TFDS dataset name);
* ``builder_config(dcfg)``: the TFDS ``BuilderConfig`` (variant) for these settings;
* ``plan(dcfg)``: checks the raw download and lists the examples of each split;
* ``load_example(dcfg, ref)``: reads one planned example as a :class:`RawExample`;
* ``label_to_train_ids(dcfg, array)`` and ``ground_truth_files(dcfg, split)``.

The records hold the image exactly as downloaded (PNG/JPEG bytes), the label as a PNG of
train ids (uint8, 255 = ignore) at the original resolution, the example name and its size.
Decoding happens with PIL in the grain map step; TensorFlow is never imported.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from tqdm import tqdm

from segnode_jax.data import files
from segnode_jax.data.errors import PreparationError

Plan = dict[str, list[Any]]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and its training/evaluation code need to know about a dataset.

    Attributes:
      name: dataset name as given to ``data_config`` (e.g. ``"cityscapes"``).
      num_classes: number of trained classes (train ids ``0..num_classes-1``).
      class_names: names indexed by train id.
      palette: ``(num_classes, 3)`` uint8 colours indexed by train id.
      ignore_index: label value of ignored pixels (always 255).
      class_weights: ``(num_classes,)`` float32 loss weights, or None when not used.
      eval_scales: HRNet's multi-scale test scales for this dataset.
      eval_flip: whether HRNet's multi-scale test also averages horizontal flips.
      flip_pairs: train-id pairs swapped by a horizontal flip (LIP's left/right parts).
      eval_size: ``(h, w)`` the eval images are resized to, or None (original size).
      splits: split name -> number of examples (from the prepared dataset when it exists,
        otherwise the official sizes; None when unknown).
      task: "segmentation", or "classification" (ImageNet pretraining; labels are class
        indices, the palette only for display).
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    palette: np.ndarray
    ignore_index: int
    class_weights: np.ndarray | None
    eval_scales: tuple[float, ...]
    eval_flip: bool
    flip_pairs: tuple[tuple[int, int], ...]
    eval_size: tuple[int, int] | None
    splits: dict[str, int | None]
    task: str = "segmentation"


@dataclasses.dataclass(frozen=True)
class RawExample:
    """One example read from the raw download, before it is written as a record.

    Attributes:
      name: relative id, unique within its split (e.g. ``frankfurt/frankfurt_000000_000294``).
      image: the encoded image file (PNG/JPEG bytes), stored unchanged.
      image_source: where the image came from (for error messages).
      label: uint8 ``(H, W)`` train ids (255 = ignore) at the image's resolution.
      label_source: where the label came from (for error messages).
    """

    name: str
    image: bytes
    image_source: str
    label: np.ndarray
    label_source: str


def check_image(example: RawExample, *, fix: str) -> tuple[int, int]:
    """Decodes the example's image and checks it matches its label.

    Arguments:
      example: the example to check.
      fix: what the user should do about a corrupt image.

    Returns:
      ``(height, width)`` of the image.

    Raises:
      PreparationError: the image is corrupt or its size differs from the label's.
    """
    image = files.decode_image(example.image, source=example.image_source, fix=fix)
    h, w = image.shape[:2]
    if example.label.shape != (h, w):
        lh, lw = example.label.shape[:2]
        raise PreparationError(
            f"size mismatch: image {example.image_source} is {w}x{h} but its label "
            f"{example.label_source} is {lw}x{lh} (width x height). The two files do not belong "
            "together: check the pairing (file names) or re-extract the label archive."
        )
    return h, w


class PlannedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A TFDS builder that writes what a preparation run planned (array_record).

    A preparation run sets :meth:`set_plan` first; reading needs nothing but the data dir.
    Subclasses define the features (``_info``) and how planned references become records
    (``_generate_examples``).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}

    def __init__(self, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)
        self._plan: Plan | None = None
        self._load: Callable[[Any], Any] | None = None
        self._progress = True
        self._fix = "re-download or re-extract it"

    def set_plan(self, plan: Plan, load: Callable[[Any], Any], *, progress: bool = True, fix: str = "") -> None:
        """Sets what a following ``download_and_prepare`` writes.

        Arguments:
          plan: split name -> planned example references.
          load: reads one reference (into a :class:`RawExample`, or the records of a
            classification source).
          progress: show a tqdm progress bar per split.
          fix: advice appended to "corrupt image" messages.
        """
        self._plan, self._load, self._progress = plan, load, progress
        if fix:
            self._fix = fix

    # TFDS prints "Downloading and preparing dataset Unknown size (download: Unknown size, ...)"
    # before building and "... downloaded and prepared to ..." after it (private methods, see
    # segnode_jax.compat.TFDS_LOG_METHODS). Nothing is downloaded here: say what happens.
    def _log_download_bytes(self) -> None:
        sizes = ", ".join(f"{len(refs)} {split}" for split, refs in (self._plan or {}).items())
        variant = getattr(self.builder_config, "name", "default")
        print(
            f"[segnode-jax] building the {self.name} dataset ({variant}: {sizes} {self.PLAN_UNIT}) "
            f"into {self.data_dir} ...",
            file=sys.stderr,
            flush=True,
        )

    def _log_download_done(self) -> None:
        print(f"[segnode-jax] {self.name} is ready in {self.data_dir}", file=sys.stderr, flush=True)

    # What one planned reference is, for messages ("examples"; "sources" where one reference
    # holds many images, e.g. a per-class archive).
    PLAN_UNIT = "examples"

    def _split_generators(self, dl_manager):
        del dl_manager
        if self._plan is None:
            raise PreparationError(
                f"{self.name}: use `python -m segnode_jax.data.prepare` (or data.prepare) to "
                "build this dataset; TFDS' own download does not know the raw files."
            )
        return {split: self._generate_examples(split=split, refs=refs) for split, refs in self._plan.items()}


class SegmentationBuilder(PlannedBuilder, skip_registration=True):
    """TFDS builder writing (image bytes, train-id PNG, name, size) records as array_record."""

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(self.__doc__ or "").strip().splitlines()[0],
            features=tfds.features.FeaturesDict(
                {
                    # The image file as downloaded (PNG or JPEG bytes).
                    "image": tfds.features.Tensor(shape=(), dtype=np.object_),
                    # PNG (uint8) of train ids, 255 = ignore, original resolution.
                    "label": tfds.features.Tensor(shape=(), dtype=np.object_),
                    "name": tfds.features.Text(),
                    "height": tfds.features.Scalar(dtype=np.int32),
                    "width": tfds.features.Scalar(dtype=np.int32),
                }
            ),
            supervised_keys=None,
        )

    def _generate_examples(self, split: str, refs: Sequence[Any]) -> Iterator[tuple[str, dict]]:
        load = self._load
        assert load is not None, "set_plan comes before download_and_prepare"
        seen: set[str] = set()
        for ref in tqdm(refs, desc=f"{self.name} {split}", unit="img", disable=not self._progress):
            ex = load(ref)
            if ex.name in seen:
                raise PreparationError(f"{ex.image_source}: duplicate example name {ex.name!r} in split {split}.")
            seen.add(ex.name)
            h, w = check_image(ex, fix=self._fix)
            label = np.asarray(ex.label, dtype=np.uint8)
            yield (
                ex.name,
                {
                    "image": ex.image,
                    "label": files.encode_png(label),
                    "name": ex.name,
                    "height": h,
                    "width": w,
                },
            )


def variant_config(builder_cls: type[tfds.core.DatasetBuilder], name: str) -> str | tfds.core.BuilderConfig:
    """The builder's predefined config ``name``, else a custom ``BuilderConfig`` of that name.

    Arguments:
      builder_cls: the dataset's builder class.
      name: variant (TFDS builder-config) name.

    Returns:
      What ``builder_cls(config=...)`` takes.
    """
    if name in builder_cls.builder_configs:
        return name
    return tfds.core.BuilderConfig(name=name, description=f"{builder_cls.name} variant {name}")


def split_names(split: str) -> list[str]:
    """``"train+val"`` -> ``["train", "val"]``."""
    parts = [s.strip() for s in split.split("+") if s.strip()]
    if not parts:
        raise PreparationError(f"empty split name {split!r}; use e.g. 'train', 'val' or 'train+val'.")
    return parts
