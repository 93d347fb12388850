"""Shared pieces of the image-classification datasets (ImageNet pretraining, paper sec. 4.1).

A classification dataset module (``imagenet.py``, ``image_folder.py``) provides what a
segmentation one does (see ``segnode_jax.data.builder``) with ``TASK = "classification"``, a
``Builder`` subclassing :class:`ClassificationBuilder`, and ``plan(dcfg)`` whose references are
*sources* (a per-class archive, a chunk of a folder) that ``load_source(dcfg, ref)`` turns into
:class:`RawImage` s. ``plan_classes(dcfg, plan)`` names the classes, written into the prepared
dataset's TFDS metadata (``metadata.json``) so that reading needs nothing but the data dir.

Records: the image file exactly as downloaded (JPEG/PNG bytes), its class index (int64, the
position of its class in the sorted class ids), its name and size. Decoding happens with PIL in
the grain map step; TensorFlow is never imported.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from tqdm import tqdm

from segnode_jax.data import files
from segnode_jax.data.builder import PlannedBuilder
from segnode_jax.data.classes import voc_colormap
from segnode_jax.data.errors import PreparationError

TASK = "classification"


@dataclasses.dataclass(frozen=True)
class RawImage:
    """One image read from the raw download.

    Attributes:
      name: relative id, unique within its split (e.g. ``n01440764/n01440764_10026``).
      image: the encoded image file, stored unchanged.
      source: where it came from (for error messages).
      label: class index.
    """

    name: str
    image: bytes
    source: str
    label: int


class ClassificationBuilder(PlannedBuilder, skip_registration=True):
    """TFDS builder writing (image bytes, class index, name, size) records as array_record; the
    class ids and names go into the dataset's metadata."""

    PLAN_UNIT = "sources"

    def set_classes(self, class_ids: Sequence[str], class_names: Sequence[str]) -> None:
        """The classes a following ``download_and_prepare`` records (index = position)."""
        metadata = self.info.metadata
        assert metadata is not None, "_info declares a MetadataDict"
        metadata["class_ids"] = [str(c) for c in class_ids]
        metadata["class_names"] = [str(c) for c in class_names]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(self.__doc__ or "").strip().splitlines()[0],
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(), dtype=np.object_),
                    "label": tfds.features.Scalar(dtype=np.int64),
                    "name": tfds.features.Text(),
                    "height": tfds.features.Scalar(dtype=np.int32),
                    "width": tfds.features.Scalar(dtype=np.int32),
                }
            ),
            metadata=tfds.core.MetadataDict(),
            supervised_keys=None,
        )

    def _generate_examples(self, split: str, refs: Sequence[Any]) -> Iterator[tuple[str, dict]]:
        seen: set[str] = set()
        metadata, load = self.info.metadata, self._load
        assert metadata is not None and load is not None, "_info declares metadata; set_plan comes first"
        num_classes = len(metadata.get("class_ids", ()))
        for ref in tqdm(refs, desc=f"{self.name} {split}", unit="source", disable=not self._progress):
            for ex in load(ref):
                if ex.name in seen:
                    raise PreparationError(f"{ex.source}: duplicate image name {ex.name!r} in split {split}.")
                seen.add(ex.name)
                if not 0 <= ex.label < num_classes:
                    raise PreparationError(f"{ex.source}: class index {ex.label} outside 0..{num_classes - 1}.")
                h, w = files.decode_image(ex.image, source=ex.source, fix=self._fix).shape[:2]
                yield ex.name, {"image": ex.image, "label": int(ex.label), "name": ex.name, "height": h, "width": w}


@dataclasses.dataclass(frozen=True)
class ClassList:
    """The classes of a classification dataset, with what ``registry.get_info`` reads of a
    segmentation :class:`~segnode_jax.data.classes.ClassTable` (any number of classes: no label
    value is reserved for "ignore")."""

    class_ids: tuple[str, ...]
    class_names: tuple[str, ...]
    class_weights = None

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)

    @property
    def palette(self) -> np.ndarray:
        """Display colours (the PASCAL VOC colour map, repeated)."""
        colors = np.asarray(voc_colormap(256), np.uint8)
        return colors[np.arange(self.num_classes) % 256]


def class_table(class_ids: Sequence[str], class_names: Sequence[str] | None = None) -> ClassList:
    """The class list of a classification dataset: class index = position."""
    ids = tuple(str(c) for c in class_ids)
    return ClassList(ids, tuple(str(n) for n in (class_names or ids)))


def prepared_classes(builder) -> tuple[list[str], list[str]] | None:
    """``(class_ids, class_names)`` recorded in a prepared dataset, or None when not prepared."""
    if not builder.is_prepared():
        return None
    meta = builder.info.metadata or {}
    ids = list(meta.get("class_ids", ()))
    if not ids:
        raise PreparationError(
            f"{builder.data_path} has no class list in its metadata (metadata.json); rebuild it with "
            "python -m segnode_jax.data.prepare ... --overwrite."
        )
    return ids, list(meta.get("class_names", ids))


def check_class_ids(ids: Sequence[str], *, where: str) -> None:
    """Classes must be at least two and unique."""
    if len(ids) < 2:
        raise PreparationError(f"{where}: found {len(ids)} class(es); a classification dataset needs at least 2.")
    if len(set(ids)) != len(ids):
        raise PreparationError(f"{where}: duplicate class names.")
