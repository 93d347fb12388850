"""PASCAL-Context, 59 classes (background ignored), as HRNet / PyTorch-Encoding train it.

Two routes to the same dataset (pick with ``source``; ``auto`` uses the json if present):

1. Detail API json (HRNet, PyTorch-Encoding)::

       <manual_dir>/VOCdevkit/VOC2010/JPEGImages/<id>.jpg       (VOC2010 trainval tar)
       <manual_dir>/VOCdevkit/VOC2010/trainval_merged.json      (PASCAL in Detail annotations)

   The per-pixel class is the ``category_id`` of the last segmentation annotation covering
   the pixel (COCO run-length masks, decoded with pycocotools) and 0 elsewhere; the 59
   category ids of the 60-class set are mapped, in ascending id order, to 1..59.

2. Pre-converted label PNGs (e.g. mmsegmentation's ``pascal_context.py`` converter)::

       <manual_dir>/VOCdevkit/VOC2010/JPEGImages/<id>.jpg
       <manual_dir>/VOCdevkit/VOC2010/SegmentationClassContext/<id>.png   (values 0..59, 0 = background)
       <manual_dir>/VOCdevkit/VOC2010/ImageSets/SegmentationContext/{train,val}.txt

Either way, 60-class value ``v`` becomes train id ``v - 1`` and background (0) is ignored.
Splits: train 4998, val 5105. ``VOCdevkit/`` may be omitted (``<manual_dir>/VOC2010/...`` or
``<manual_dir>/...`` directly).
"""

from __future__ import annotations

import collections
import json
import os
import warnings
from typing import TYPE_CHECKING

import numpy as np
import tensorflow_datasets as tfds
from ml_collections import config_dict

from segnode_jax.data import common, files
from segnode_jax.data.builder import Plan, RawExample, SegmentationBuilder, variant_config
from segnode_jax.data.classes import IGNORE, ClassEntry, ClassTable, rgb, voc_colormap
from segnode_jax.data.errors import PreparationError

if TYPE_CHECKING:  # pycocotools' stubs name the RLE dict it decodes; nothing to import at run time
    from pycocotools import _EncodedRLE

# (PASCAL in Detail category_id, name) of the 59 classes, in ascending id order: the n-th
# row is 60-class value n (1..59) and train id n - 1.
_DETAIL_CLASSES = (
    (2, "aeroplane"),
    (9, "bag"),
    (18, "bed"),
    (19, "bedclothes"),
    (22, "bench"),
    (23, "bicycle"),
    (25, "bird"),
    (31, "boat"),
    (33, "book"),
    (34, "bottle"),
    (44, "building"),
    (45, "bus"),
    (46, "cabinet"),
    (59, "car"),
    (65, "cat"),
    (68, "ceiling"),
    (72, "chair"),
    (80, "cloth"),
    (85, "computer"),
    (98, "cow"),
    (104, "cup"),
    (105, "curtain"),
    (113, "dog"),
    (115, "door"),
    (144, "fence"),
    (158, "floor"),
    (159, "flower"),
    (162, "food"),
    (187, "grass"),
    (189, "ground"),
    (207, "horse"),
    (220, "keyboard"),
    (232, "light"),
    (258, "motorbike"),
    (259, "mountain"),
    (260, "mouse"),
    (284, "person"),
    (295, "plate"),
    (296, "platform"),
    (308, "pottedplant"),
    (324, "road"),
    (326, "rock"),
    (347, "sheep"),
    (349, "shelves"),
    (354, "sidewalk"),
    (355, "sign"),
    (360, "sky"),
    (366, "snow"),
    (368, "sofa"),
    (397, "table"),
    (415, "track"),
    (416, "train"),
    (420, "tree"),
    (424, "truck"),
    (427, "tvmonitor"),
    (440, "wall"),
    (445, "water"),
    (454, "window"),
    (458, "wood"),
)
_COLORS = voc_colormap(len(_DETAIL_CLASSES) + 1)
# Own ids = the 60-class values of the label PNGs (0 = background, ignored).
CLASSES = ClassTable(
    (ClassEntry("background", 0, IGNORE, (0, 0, 0)),)
    + tuple(ClassEntry(name, i + 1, i, rgb(_COLORS[i + 1])) for i, (_, name) in enumerate(_DETAIL_CLASSES))
)
# Detail category id -> 60-class value (0 = background / unannotated).
DETAIL_TO_CONTEXT60 = {0: 0, **{cid: i + 1 for i, (cid, _) in enumerate(_DETAIL_CLASSES)}}
SPLIT_SIZES = {"train": 4998, "val": 5105}
CORRUPT_FIX = "re-extract it from the VOC2010 trainval tar"
EXPECTED = (
    "  VOCdevkit/VOC2010/JPEGImages/<id>.jpg and either\n"
    "  VOCdevkit/VOC2010/trainval_merged.json (Detail API annotations), or\n"
    "  VOCdevkit/VOC2010/SegmentationClassContext/<id>.png + ImageSets/SegmentationContext/{train,val}.txt"
)


def class_table(dcfg: config_dict.ConfigDict) -> ClassTable:
    del dcfg
    return CLASSES


def default_config(cfg: config_dict.ConfigDict) -> None:
    """HRNetV2's PASCAL-Context recipe: 480x480 crops, long side 520 scaled by 0.5-2.1 (HRNet's
    SCALE_FACTOR 16, upper end included), multi-scale (0.5-2.0) + flip testing."""
    cfg.crop_size = (480, 480)
    cfg.base_size = 520
    cfg.scale_range = (0.5, 2.1)
    cfg.eval_scales = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
    cfg.eval_flip = True
    cfg.test_crop_size = (520, 520)  # HRNet's TEST.IMAGE_SIZE
    # "auto" (json if present, else PNGs) | "detail" (trainval_merged.json) | "png".
    cfg.source = "auto"


def split_sizes(dcfg: config_dict.ConfigDict) -> dict[str, int]:
    del dcfg
    return dict(SPLIT_SIZES)


class SegnodePascalContext(SegmentationBuilder):
    """PASCAL-Context, 59 classes (background ignored), for segnode-jax."""

    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="context59", description="59 classes, background ignored")]


Builder = SegnodePascalContext


def builder_config(dcfg: config_dict.ConfigDict):
    return variant_config(Builder, str(dcfg.get("variant") or "context59"))


def _voc_root(dcfg: config_dict.ConfigDict) -> str:
    base = common.manual_dir(dcfg, expected=EXPECTED)
    for cand in (os.path.join(base, "VOCdevkit", "VOC2010"), os.path.join(base, "VOC2010"), base):
        if os.path.isdir(os.path.join(cand, "JPEGImages")):
            return cand
    raise PreparationError(f"pascal_context: missing download: no JPEGImages/ folder in {base}. Expected:\n{EXPECTED}")


def _route(dcfg: config_dict.ConfigDict, voc: str) -> str:
    source = dcfg.get("source", "auto")
    has_json = os.path.isfile(os.path.join(voc, "trainval_merged.json"))
    has_png = os.path.isdir(os.path.join(voc, "SegmentationClassContext"))
    if source == "auto":
        if not (has_json or has_png):
            raise PreparationError(
                f"pascal_context: missing annotations in {voc}: neither trainval_merged.json nor "
                f"SegmentationClassContext/. Expected:\n{EXPECTED}"
            )
        return "detail" if has_json else "png"
    if source == "detail" and not has_json:
        raise PreparationError(
            f"pascal_context: {os.path.join(voc, 'trainval_merged.json')} not found (source='detail'). Download the PASCAL in Detail trainval_merged.json there."
        )
    if source == "png" and not has_png:
        raise PreparationError(
            f"pascal_context: {os.path.join(voc, 'SegmentationClassContext')}/ not found (source='png'). Convert the labels first or use source='detail'."
        )
    if source not in ("detail", "png"):
        raise PreparationError(f"pascal_context: source must be 'auto', 'detail' or 'png', got {source!r}.")
    return source


class _DetailIndex:
    """The parts of trainval_merged.json needed for semantic masks."""

    def __init__(self, path: str):
        try:
            with open(path, "rb") as f:
                data = json.load(f)
            self.images = {img["image_id"]: img for img in data["images"]}
            self.annos = collections.defaultdict(list)
            for seg in data["annos_segmentation"]:
                self.annos[seg["image_id"]].append(seg)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise PreparationError(
                f"{path}: not a readable PASCAL in Detail annotation file ({type(e).__name__}: {e}); download "
                "trainval_merged.json again."
            ) from None
        self.path = path

    def mask(self, image_id) -> np.ndarray:
        """Detail category ids per pixel (0 where no annotation)."""
        from pycocotools import mask as mask_utils

        img = self.images[image_id]
        h, w = int(img["height"]), int(img["width"])
        out = np.zeros((h, w), np.int32)
        for ann in self.annos.get(image_id, ()):
            seg = ann["segmentation"]
            try:
                if isinstance(seg, list):  # polygons
                    rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
                elif isinstance(seg.get("counts"), list):  # uncompressed RLE
                    rle = mask_utils.frPyObjects(seg, h, w)
                else:  # compressed RLE: pycocotools decodes bytes counts
                    counts = seg["counts"]
                    rle: _EncodedRLE = {
                        "size": [int(n) for n in seg["size"]],
                        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
                    }
                with warnings.catch_warnings():  # pycocotools' numpy-2 copy= notice
                    warnings.simplefilter("ignore", DeprecationWarning)
                    m = mask_utils.decode(rle)
            except Exception as e:
                raise PreparationError(
                    f"{self.path}: segmentation {ann.get('id')} of image {img.get('file_name')} cannot be decoded "
                    f"({e}); download trainval_merged.json again."
                ) from None
            if m.shape != (h, w):
                raise PreparationError(
                    f"size mismatch: {self.path} annotation {ann.get('id')} is {m.shape[1]}x{m.shape[0]} but image "
                    f"{img.get('file_name')} is {w}x{h}; the json does not belong to these images."
                )
            out[m > 0] = int(ann["category_id"])
        return out


def _to_context60(detail_mask: np.ndarray, *, source: str) -> np.ndarray:
    values = np.unique(detail_mask)
    bad = [int(v) for v in values if int(v) not in DETAIL_TO_CONTEXT60]
    if bad:
        raise PreparationError(
            f"{source}: category ids {bad[:10]} are not among the 59 PASCAL-Context classes (allowed: 0 and "
            f"{sorted(DETAIL_TO_CONTEXT60)[1:4]}...). Use the 60-class trainval_merged.json of PASCAL in Detail."
        )
    lut = np.zeros(max(DETAIL_TO_CONTEXT60) + 1, np.uint8)
    for k, v in DETAIL_TO_CONTEXT60.items():
        lut[k] = v
    return lut[detail_mask]


def plan(dcfg: config_dict.ConfigDict) -> Plan:
    """Train/val examples of the chosen route."""
    voc = _voc_root(dcfg)
    route = _route(dcfg, voc)
    jpeg = files.SourceTree(os.path.join(voc, "JPEGImages"))
    available = set(jpeg.names())
    out: Plan = {}
    if route == "detail":
        index = _DetailIndex(os.path.join(voc, "trainval_merged.json"))
        for split in SPLIT_SIZES:
            imgs = sorted(
                (img for img in index.images.values() if img.get("phase") == split), key=lambda i: i["file_name"]
            )
            lacking = [i["file_name"] for i in imgs if i["file_name"] not in available]
            if lacking:
                raise PreparationError(
                    f"pascal_context: incomplete download: {len(lacking)} image(s) of {index.path} are missing in "
                    f"{jpeg.describe()} (e.g. {', '.join(lacking[:3])}). Extract the VOC2010 trainval tar there."
                )
            out[split] = [("detail", jpeg, index, img["file_name"], img["image_id"]) for img in imgs]
    else:
        sets = os.path.join(voc, "ImageSets", "SegmentationContext")
        labels = files.SourceTree(os.path.join(voc, "SegmentationClassContext"))
        label_names = set(labels.names())
        for split in SPLIT_SIZES:
            list_file = os.path.join(sets, f"{split}.txt")
            if not os.path.isfile(list_file):
                raise PreparationError(
                    f"pascal_context: missing split list {list_file} (one image id per line). Expected:\n{EXPECTED}"
                )
            with open(list_file) as f:
                ids = [line.strip() for line in f if line.strip()]
            for what, have, where, ext in (
                ("image", available, jpeg.describe(), ".jpg"),
                ("label", label_names, labels.describe(), ".png"),
            ):
                lacking = [i for i in ids if i + ext not in have]
                if lacking:
                    raise PreparationError(
                        f"pascal_context: incomplete download: {len(lacking)} id(s) of {list_file} have no {what} in "
                        f"{where} (e.g. {', '.join(i + ext for i in lacking[:3])})."
                    )
            out[split] = [("png", jpeg, labels, i + ".jpg", i + ".png") for i in ids]
    for split, refs in out.items():
        common.check_count("pascal_context", split, len(refs), SPLIT_SIZES[split])
    return out


def load_example(dcfg: config_dict.ConfigDict, ref) -> RawExample:
    route, jpeg, second, image_name, label_ref = ref
    name = os.path.splitext(image_name)[0]
    if route == "detail":
        source = f"{second.path} (image {image_name})"
        context60 = _to_context60(second.mask(label_ref), source=source)
    else:
        source = second.describe(label_ref)
        context60 = files.decode_label(second.read(label_ref), source=source, fix="convert it again")
    label = CLASSES.to_train_ids(context60, source=source)
    return RawExample(name, jpeg.read(image_name), jpeg.describe(image_name), label, source)


def label_to_train_ids(dcfg: config_dict.ConfigDict, label) -> np.ndarray:
    """A 60-class label (values 0..59, 0 = background; array or PNG path) -> train ids."""
    del dcfg
    return common.table_label_to_train_ids(CLASSES, label)


def _train_to_context60(train_ids: np.ndarray) -> np.ndarray:
    return np.where(train_ids == IGNORE, 0, train_ids.astype(np.int32) + 1).astype(np.uint8)


def ground_truth_files(dcfg: config_dict.ConfigDict, split: str) -> list[tuple[str, str]]:
    """``[(id, 60-class PNG)]``: the converted PNGs of the PNG route, or (json route) PNGs
    written once from the prepared records in the same 60-class format."""
    voc = _voc_root(dcfg)
    if _route(dcfg, voc) == "png":
        list_file = os.path.join(voc, "ImageSets", "SegmentationContext", f"{split}.txt")
        if not os.path.isfile(list_file):
            raise PreparationError(f"pascal_context: no split list {list_file}.")
        with open(list_file) as f:
            ids = sorted(line.strip() for line in f if line.strip())
        return [(i, os.path.join(voc, "SegmentationClassContext", i + ".png")) for i in ids]
    return common.export_ground_truth(dcfg, split, encode=_train_to_context60)
