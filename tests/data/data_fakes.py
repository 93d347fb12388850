"""Writers of tiny fake downloads in each dataset's real on-disk layout and naming (test helpers)."""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from segnode_jax import data

H, W = 16, 24  # every fake image is 24 wide, 16 high

tfds.disable_progress_bar()


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array)).save(buf, format="PNG")
    return buf.getvalue()


def jpg_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write(path: str, content: bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)
    return path


def rand_image(rng: np.random.Generator, h: int = H, w: int = W) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def rand_label(rng: np.random.Generator, values, h: int = H, w: int = W) -> np.ndarray:
    return np.asarray(values, np.uint8)[rng.integers(0, len(values), (h, w))]


def config(name: str, tmp: str, **overrides):
    dcfg = data.data_config(name)
    dcfg.data_dir = os.path.join(tmp, "tfds")
    for k, v in overrides.items():
        dcfg[k] = v
    return dcfg


# --------------------------------------------------------------------------- Cityscapes
CITIES = {"train": ["aachen", "bochum"], "val": ["frankfurt"], "test": ["berlin"]}


def cityscapes_files(rng, *, per_city: int = 2, extra: bool = False) -> dict[str, dict[str, bytes]]:
    """Members of the official archives: {archive name: {member path: bytes}}."""
    from cityscapesscripts.helpers import labels as cs

    ids = [lab.id for lab in cs.labels if lab.id >= 0]
    archives = {"leftImg8bit_trainvaltest.zip": {}, "gtFine_trainvaltest.zip": {}}
    for split, cities in CITIES.items():
        for city in cities:
            for i in range(per_city):
                stem = f"{city}_{i:06d}_000019"
                archives["leftImg8bit_trainvaltest.zip"][f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"] = png_bytes(rand_image(rng))
                lab = rand_label(rng, ids)
                gt = archives["gtFine_trainvaltest.zip"]
                gt[f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png"] = png_bytes(lab)
                gt[f"gtFine/{split}/{city}/{stem}_gtFine_color.png"] = png_bytes(rand_image(rng))
                gt[f"gtFine/{split}/{city}/{stem}_gtFine_polygons.json"] = b"{}"
    for a in archives.values():
        a["README"] = b"cityscapes"
    if extra:
        archives["leftImg8bit_trainextra.zip"] = {}
        archives["gtCoarse.zip"] = {}
        for i in range(3):
            stem = f"augsburg_{i:06d}_000000"
            archives["leftImg8bit_trainextra.zip"][f"leftImg8bit/train_extra/augsburg/{stem}_leftImg8bit.png"] = png_bytes(rand_image(rng))
            archives["gtCoarse.zip"][f"gtCoarse/train_extra/augsburg/{stem}_gtCoarse_labelIds.png"] = png_bytes(rand_label(rng, ids))
    return archives


def write_zips(root: str, archives: dict[str, dict[str, bytes]]) -> str:
    os.makedirs(root, exist_ok=True)
    for name, members in archives.items():
        with zipfile.ZipFile(os.path.join(root, name), "w") as z:
            for m, b in members.items():
                z.writestr(m, b)
    return root


def write_extracted(root: str, archives: dict[str, dict[str, bytes]]) -> str:
    for members in archives.values():
        for m, b in members.items():
            write(os.path.join(root, m), b)
    return root


# --------------------------------------------------------------------------- CamVid
def write_camvid(root: str, rng, *, sizes=(("train", 5), ("val", 2), ("test", 3))) -> str:
    for split, n in sizes:
        for i in range(n):
            name = f"0001TP_{split}{i:04d}"
            write(os.path.join(root, split, name + ".png"), png_bytes(rand_image(rng)))
            write(os.path.join(root, split + "annot", name + ".png"), png_bytes(rand_label(rng, range(12))))
    return root


# --------------------------------------------------------------------------- LIP
def write_lip(root: str, rng, *, nested: bool = False, n_train: int = 4, n_val: int = 2) -> str:
    img_root = os.path.join(root, "TrainVal_images", "TrainVal_images" if nested else "")
    seg_root = os.path.join(root, "TrainVal_parsing_annotations", "TrainVal_parsing_annotations" if nested else "")
    for split, n in (("train", n_train), ("val", n_val)):
        ids = [f"{100 + i}_{rng.integers(100000, 999999)}" for i in range(n)]
        for i in ids:
            write(os.path.join(img_root, f"{split}_images", i + ".jpg"), jpg_bytes(rand_image(rng)))
            lab = Image.fromarray(rand_label(rng, range(20))).convert("P")
            buf = io.BytesIO()
            lab.save(buf, format="PNG")
            write(os.path.join(seg_root, f"{split}_segmentations", i + ".png"), buf.getvalue())
        write(os.path.join(root, "TrainVal_images", f"{split}_id.txt"), ("\n".join(ids) + "\n").encode())
    return root


# --------------------------------------------------------------------------- PASCAL-Context
def pascal_fake(rng, *, n_train: int = 3, n_val: int = 2):
    """Images and their Detail-category masks: [(phase, image_id, file, image, detail_mask)]."""
    from segnode_jax.data.pascal_context import DETAIL_TO_CONTEXT60

    cats = sorted(DETAIL_TO_CONTEXT60)[1:]
    out = []
    k = 0
    for phase, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            image_id = 2008000000 + k
            k += 1
            name = f"2008_{k:06d}"
            mask = np.zeros((H, W), np.int32)
            mask[2:9, 3:15] = cats[(3 * k) % len(cats)]
            mask[8:14, 10:22] = cats[(5 * k + 1) % len(cats)]
            out.append((phase, image_id, name, rand_image(rng), mask))
    return out


def write_pascal_detail(root: str, fake) -> str:
    from pycocotools import mask as mask_utils

    voc = os.path.join(root, "VOCdevkit", "VOC2010")
    images, annos, aid = [], [], 1
    for phase, image_id, name, image, mask in fake:
        write(os.path.join(voc, "JPEGImages", name + ".jpg"), jpg_bytes(image))
        images.append({"image_id": image_id, "file_name": name + ".jpg", "height": H, "width": W, "phase": phase})
        for cat in [int(c) for c in np.unique(mask) if c]:
            rle = mask_utils.encode(np.asfortranarray((mask == cat).astype(np.uint8)))
            annos.append({"id": aid, "image_id": image_id, "category_id": cat, "iscrowd": 0,
                          "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}, "parts": []})
            aid += 1
    doc = {"images": images, "annos_segmentation": annos, "categories": [], "annos_occlusion": [],
           "annos_boundary": [], "annos_joints": [], "parts": [], "info": {}}
    write(os.path.join(voc, "trainval_merged.json"), json.dumps(doc).encode())
    return root


def write_pascal_png(root: str, fake) -> str:
    from segnode_jax.data.pascal_context import DETAIL_TO_CONTEXT60

    voc = os.path.join(root, "VOCdevkit", "VOC2010")
    lists = {"train": [], "val": []}
    for phase, _, name, image, mask in fake:
        write(os.path.join(voc, "JPEGImages", name + ".jpg"), jpg_bytes(image))
        c60 = np.vectorize(DETAIL_TO_CONTEXT60.get)(mask).astype(np.uint8)
        write(os.path.join(voc, "SegmentationClassContext", name + ".png"), png_bytes(c60))
        lists[phase].append(name)
    for phase, names in lists.items():
        write(os.path.join(voc, "ImageSets", "SegmentationContext", f"{phase}.txt"), ("\n".join(names) + "\n").encode())
    return root

