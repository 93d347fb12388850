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


def cityscapes_files(rng, *, per_city: int = 2, extra: bool = False, train_ids=None) -> dict[str, dict[str, bytes]]:
    """Members of the official archives: {archive name: {member path: bytes}}; labels drawn from
    every labelId, or from those of ``train_ids`` only (classes absent from the whole split)."""
    from cityscapesscripts.helpers import labels as cs

    ids = [lab.id for lab in cs.labels if lab.id >= 0 and (train_ids is None or lab.trainId in train_ids)]
    archives = {"leftImg8bit_trainvaltest.zip": {}, "gtFine_trainvaltest.zip": {}}
    for split, cities in CITIES.items():
        for city in cities:
            for i in range(per_city):
                stem = f"{city}_{i:06d}_000019"
                archives["leftImg8bit_trainvaltest.zip"][f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"] = (
                    png_bytes(rand_image(rng))
                )
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
            archives["leftImg8bit_trainextra.zip"][f"leftImg8bit/train_extra/augsburg/{stem}_leftImg8bit.png"] = (
                png_bytes(rand_image(rng))
            )
            archives["gtCoarse.zip"][f"gtCoarse/train_extra/augsburg/{stem}_gtCoarse_labelIds.png"] = png_bytes(
                rand_label(rng, ids)
            )
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
            annos.append(
                {
                    "id": aid,
                    "image_id": image_id,
                    "category_id": cat,
                    "iscrowd": 0,
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                    "parts": [],
                }
            )
            aid += 1
    doc = {
        "images": images,
        "annos_segmentation": annos,
        "categories": [],
        "annos_occlusion": [],
        "annos_boundary": [],
        "annos_joints": [],
        "parts": [],
        "info": {},
    }
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


# ---------------------------------------------------------------------------------------
# ImageNet (ILSVRC2012) archives, and its class-per-folder layout.

FAKE_WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361")
FAKE_WORDS = ("tench, Tinca tinca", "goldfish, Carassius auratus", "great white shark", "tiger shark")
# Each class has its own dominant colour: learnable by a tiny network in a few steps.
FAKE_COLOURS = ((220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 210, 40))


def class_image(rng: np.random.Generator, label: int) -> np.ndarray:
    """An image of class ``label``: its colour with noise and a random darker rectangle,
    at a random size between 36 and 60 pixels a side."""
    h, w = (int(v) for v in rng.integers(36, 61, size=2))
    base = np.asarray(FAKE_COLOURS[label], np.float32)
    img = base * rng.uniform(0.6, 1.0) + rng.normal(0, 25, size=(h, w, 3))
    y, x = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
    img[y : y + h // 3, x : x + w // 3] *= 0.5
    return np.clip(img, 0, 255).astype(np.uint8)


def tar_bytes(members: dict[str, bytes], *, gz: bool = False) -> bytes:
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def meta_mat_bytes(wnids, words) -> bytes:
    """The devkit's data/meta.mat: a ``synsets`` struct array with its real fields (leaf synsets
    1..n with num_children 0, one parent synset after them)."""
    import scipy.io

    fields = [
        "ILSVRC2012_ID",
        "WNID",
        "words",
        "gloss",
        "num_children",
        "children",
        "wordnet_height",
        "num_train_images",
    ]
    dtype = [(f, object) for f in fields]
    rows = [
        (i + 1, w, t, f"gloss of {w}", 0, np.zeros((0,), np.uint16), 0, 1300)
        for i, (w, t) in enumerate(zip(wnids, words))
    ]
    rows.append(
        (
            len(wnids) + 1,
            "n00001740",
            "entity",
            "that which exists",
            len(wnids),
            np.arange(1, len(wnids) + 1, dtype=np.uint16),
            18,
            0,
        )
    )
    synsets = np.array(rows, dtype=dtype)
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"synsets": synsets})
    return buf.getvalue()


def write_imagenet(
    root: str, rng, *, per_class: int = 6, n_val: int = 8, labels: str = "devkit", wnids=FAKE_WNIDS
) -> dict:
    """ILSVRC2012_img_train.tar (a tar per class), ILSVRC2012_img_val.tar and the validation
    labels (``labels``: "devkit" | "loc" | "none") in ``root``. The devkit numbers the classes
    in an order that is *not* sorted (as the real one's ILSVRC2012_IDs are not), so a reader
    that confuses ILSVRC2012_ID with the sorted class index fails the tests.

    Returns ``{"val_labels": [class index of each validation image], "train_counts": [...]}``."""
    os.makedirs(root, exist_ok=True)
    sorted_wnids = sorted(wnids)
    per_class_tars = {}
    for w in wnids:
        label = sorted_wnids.index(w)
        per_class_tars[f"{w}.tar"] = tar_bytes(
            {f"{w}_{1000 + i}.JPEG": jpg_bytes(class_image(rng, label)) for i in range(per_class)}
        )
    write(os.path.join(root, "ILSVRC2012_img_train.tar"), tar_bytes(per_class_tars))
    val_labels = [int(v) for v in rng.integers(0, len(wnids), size=n_val)]
    val = {f"ILSVRC2012_val_{k + 1:08d}.JPEG": jpg_bytes(class_image(rng, c)) for k, c in enumerate(val_labels)}
    write(os.path.join(root, "ILSVRC2012_img_val.tar"), tar_bytes(val))
    devkit_order = list(reversed(sorted_wnids))  # ILSVRC2012_ID k -> devkit_order[k - 1]
    if labels == "devkit":
        words = [FAKE_WORDS[list(wnids).index(w)] for w in devkit_order]
        truth = "\n".join(str(devkit_order.index(sorted_wnids[c]) + 1) for c in val_labels) + "\n"
        write(
            os.path.join(root, "ILSVRC2012_devkit_t12.tar.gz"),
            tar_bytes(
                {
                    "ILSVRC2012_devkit_t12/data/meta.mat": meta_mat_bytes(devkit_order, words),
                    "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt": truth.encode(),
                    "ILSVRC2012_devkit_t12/readme.txt": b"devkit\n",
                },
                gz=True,
            ),
        )
    elif labels == "loc":
        rows = ["ImageId,PredictionString"] + [
            f"ILSVRC2012_val_{k + 1:08d},{sorted_wnids[c]} 1 2 30 40 {sorted_wnids[c]} 3 4 20 20"
            for k, c in enumerate(val_labels)
        ]
        write(os.path.join(root, "LOC_val_solution.csv"), ("\n".join(rows) + "\n").encode())
    return {"val_labels": val_labels, "train_counts": [per_class] * len(wnids)}


def write_image_folder(root: str, rng, *, classes=("cat", "dog", "fox"), per_class: int = 4, n_val: int = 2) -> str:
    """<root>/train/<class>/*.jpg and <root>/val/<class>/*.png."""
    for c, name in enumerate(classes):
        for i in range(per_class):
            write(os.path.join(root, "train", name, f"img_{i}.jpg"), jpg_bytes(class_image(rng, c)))
        for i in range(n_val):
            write(os.path.join(root, "val", name, f"v_{i}.png"), png_bytes(class_image(rng, c)))
    return root
