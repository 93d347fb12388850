"""ImageNet-1k (ILSVRC2012) from its official archives, for pretraining (paper sec. 4.1).

``manual_dir`` holds the archives as image-net.org distributes them::

    ILSVRC2012_img_train.tar        one tar per class: n01440764.tar, ... each holding
                                    n01440764_10026.JPEG, ...
    ILSVRC2012_img_val.tar          ILSVRC2012_val_00000001.JPEG ... (flat)
    and the validation labels, one of:
    ILSVRC2012_devkit_t12.tar.gz    the official devkit: data/meta.mat (the synsets) and
                                    data/ILSVRC2012_validation_ground_truth.txt (ILSVRC2012_IDs)
    LOC_val_solution.csv            Kaggle's: ImageId,PredictionString (the wnid first)
    data.val_labels=FILE            one wnid per line in file-name order (e.g. TFDS'
                                    tensorflow_datasets/datasets/imagenet2012/validation_labels.txt)

Classes are the training archive's wnids in sorted order (class index = position), as
torchvision's ``ImageFolder`` and HRNet-Image-Classification number them; the devkit's words
become the class names. Nothing is extracted to disk: images are read from the nested archives
and stored unchanged.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tarfile
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds
from ml_collections import config_dict

from segnode_jax.data import classification, registry
from segnode_jax.data.builder import Plan, variant_config
from segnode_jax.data.classification import ClassificationBuilder, RawImage
from segnode_jax.data.errors import PreparationError

TASK = classification.TASK
placeholder = config_dict.placeholder
TRAIN_ARCHIVE = "ILSVRC2012_img_train.tar"
VAL_ARCHIVE = "ILSVRC2012_img_val.tar"
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
LOC_CSV = "LOC_val_solution.csv"
CORRUPT_FIX = "download the archive again"
_WNID = re.compile(r"^n\d{8}$")
_VAL_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})\.JPEG$")
# Validation images per planned source (a progress step).
VAL_CHUNK = 1000


def default_config(cfg: config_dict.ConfigDict) -> None:
    """HRNet-Image-Classification's data recipe: random-resized 224 crops and flips for training,
    resize 256 + centre crop 224 for evaluation."""
    classification_defaults(cfg)
    cfg.val_labels = placeholder(str)


def classification_defaults(cfg: config_dict.ConfigDict) -> None:
    """The fields every classification dataset has (see docs/datasets.md)."""
    cfg.crop_size = (224, 224)
    # Random-resized crop (torchvision's RandomResizedCrop): area share and aspect ratio range.
    cfg.rrc_scale = (0.08, 1.0)
    cfg.rrc_ratio = (3.0 / 4.0, 4.0 / 3.0)
    # Evaluation: the short side resized to eval_resize, then a centre crop of crop_size.
    cfg.eval_resize = 256
    cfg.flip = True


def split_sizes(dcfg: config_dict.ConfigDict) -> dict[str, int | None]:
    del dcfg
    return {"train": 1_281_167, "val": 50_000}


class SegnodeImagenet(ClassificationBuilder):
    """ImageNet-1k (ILSVRC2012) from the official archives, for segnode-jax."""

    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="ilsvrc2012", description="ILSVRC2012 (ImageNet-1k) train and val")]


Builder = SegnodeImagenet


def builder_config(dcfg: config_dict.ConfigDict) -> str | tfds.core.BuilderConfig:
    return variant_config(Builder, str(dcfg.get("variant") or "ilsvrc2012"))


def _standard_wnids() -> list[str]:
    """The 1000 ILSVRC2012 wnids, sorted (TFDS ships the list)."""
    path = os.path.join(os.path.dirname(tfds.__file__), "datasets", "imagenet2012", "labels.txt")
    with open(path) as f:
        return sorted(line.strip() for line in f if line.strip())


def class_table(dcfg: config_dict.ConfigDict):
    """The prepared dataset's classes; before preparation ILSVRC2012's 1000 wnids."""

    found = classification.prepared_classes(registry.make_builder(dcfg))
    ids, names = found if found else (_standard_wnids(), None)
    return classification.class_table(ids, names)


def _manual_dir(dcfg) -> str:
    d = dcfg.get("manual_dir")
    if not d:
        raise PreparationError(
            f"imagenet: set --manual_dir to the folder holding {TRAIN_ARCHIVE}, {VAL_ARCHIVE} and {DEVKIT} "
            "(see docs/datasets.md)."
        )
    d = os.path.abspath(os.path.expanduser(d))
    if not os.path.isdir(d):
        raise PreparationError(f"imagenet: manual_dir {d} does not exist.")
    return d


# Open archives (their member index is read once: ILSVRC2012's training tar is 138 GB), keyed
# by path, size and modification time so that a replaced file is opened again.
_OPEN: dict[tuple, tarfile.TarFile] = {}


def _open_tar(path: str, *, what: str) -> tarfile.TarFile:
    stat = os.stat(path)
    key = (path, stat.st_size, stat.st_mtime_ns)
    if key not in _OPEN:
        try:
            tar = tarfile.open(path)
            tar.getmembers()  # reads every header now: a truncated archive fails here
        except (tarfile.TarError, OSError, EOFError) as e:
            raise PreparationError(
                f"{path}: not a readable tar archive ({e}): the {what} is damaged or incomplete; {CORRUPT_FIX}."
            ) from None
        _OPEN[key] = tar
    return _OPEN[key]


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, *, where: str) -> bytes:
    try:
        f = tar.extractfile(member)
        data = f.read() if f is not None else None
    except (tarfile.TarError, OSError, EOFError) as e:
        raise PreparationError(f"{where}: cannot be read ({e}); {CORRUPT_FIX}.") from None
    if data is None or len(data) != member.size:
        raise PreparationError(
            f"{where}: truncated ({0 if data is None else len(data)} of {member.size} bytes); {CORRUPT_FIX}."
        )
    return data


def _devkit_labels(path: str) -> tuple[dict[int, str], dict[str, str], list[int]]:
    """``(ILSVRC2012_ID -> wnid, wnid -> words, validation ILSVRC2012_IDs in file order)`` of
    the official devkit (the layout torchvision's ``parse_devkit_archive`` reads)."""
    import scipy.io

    tar = _open_tar(path, what="devkit")
    members = {m.name.split("/", 1)[-1]: m for m in tar.getmembers() if m.isfile()}
    need = ("data/meta.mat", "data/ILSVRC2012_validation_ground_truth.txt")
    missing = [n for n in need if n not in members]
    if missing:
        raise PreparationError(
            f"{path}: no {', '.join(missing)} inside; is it ILSVRC2012_devkit_t12.tar.gz? {CORRUPT_FIX}."
        )
    try:
        synsets = scipy.io.loadmat(
            io.BytesIO(_read_member(tar, members[need[0]], where=f"{path}:{need[0]}")), squeeze_me=True
        )["synsets"]
        id_to_wnid, words = {}, {}
        for s in synsets:
            if int(s["num_children"]) == 0:
                id_to_wnid[int(s["ILSVRC2012_ID"])] = str(s["WNID"])
                words[str(s["WNID"])] = str(s["words"])
    except PreparationError:
        raise
    except Exception as e:
        raise PreparationError(f"{path}:data/meta.mat cannot be read ({e}); {CORRUPT_FIX}.") from None
    text = _read_member(tar, members[need[1]], where=f"{path}:{need[1]}").decode()
    try:
        val_ids = [int(line) for line in text.split()]
    except ValueError:
        raise PreparationError(f"{path}:{need[1]} is not a list of class ids; {CORRUPT_FIX}.") from None
    return id_to_wnid, words, val_ids


def _val_labels(dcfg, root: str, files: list[str]) -> tuple[list[str], dict[str, str]]:
    """wnid of each validation file (in ``files`` order) and the devkit's words if present."""
    if dcfg.get("val_labels"):
        path = os.path.abspath(os.path.expanduser(dcfg.val_labels))
        if not os.path.isfile(path):
            raise PreparationError(f"imagenet: data.val_labels={path} does not exist.")
        with open(path) as f:
            wnids = [line.strip() for line in f if line.strip()]
        return _check_count(wnids, files, path), {}
    devkit = os.path.join(root, DEVKIT)
    if os.path.isfile(devkit):
        id_to_wnid, words, ids = _devkit_labels(devkit)
        unknown = sorted(set(ids) - set(id_to_wnid))
        if unknown:
            raise PreparationError(
                f"{devkit}: validation labels {unknown[:5]} are not classes of its meta.mat; {CORRUPT_FIX}."
            )
        return _check_count([id_to_wnid[i] for i in ids], files, devkit, numbered=True), words
    loc = os.path.join(root, LOC_CSV)
    if os.path.isfile(loc):
        table = {}
        with open(loc, newline="") as f:
            for row in csv.DictReader(f):
                try:
                    table[row["ImageId"]] = row["PredictionString"].split()[0]
                except (KeyError, IndexError, AttributeError):
                    raise PreparationError(
                        f"{loc}: expected the columns ImageId,PredictionString; {CORRUPT_FIX}."
                    ) from None
        missing = [n for n in files if os.path.splitext(n)[0] not in table]
        if missing:
            raise PreparationError(
                f"{loc}: no label for {len(missing)} validation image(s), e.g. {missing[0]}; {CORRUPT_FIX}."
            )
        return [table[os.path.splitext(n)[0]] for n in files], {}
    raise PreparationError(
        f"imagenet: no validation labels in {root}: put {DEVKIT} (the official devkit) or {LOC_CSV} there, or set "
        "--set val_labels=FILE (one wnid per line in file-name order, e.g. TFDS' "
        "tensorflow_datasets/datasets/imagenet2012/validation_labels.txt)."
    )


def _check_count(wnids: list[str], files: list[str], source: str, *, numbered: bool = False) -> list[str]:
    if numbered:
        # The devkit's line k labels ILSVRC2012_val_{k:08d}: the archive may hold a subset.
        matches = [(n, _VAL_NAME.match(n)) for n in files]
        odd = [n for n, m in matches if m is None]
        if odd:
            raise PreparationError(
                f"{source}: {odd[0]} is not named ILSVRC2012_val_NNNNNNNN.JPEG like the devkit's images."
            )
        numbers = [int(m.group(1)) for _, m in matches if m is not None]
        if max(numbers) > len(wnids):
            raise PreparationError(
                f"{source}: {len(wnids)} validation labels but the archive has image number "
                f"{max(numbers)}; use the devkit of the same release."
            )
        return [wnids[k - 1] for k in numbers]
    if len(wnids) != len(files):
        raise PreparationError(
            f"{source}: {len(wnids)} labels for {len(files)} validation images; they must match one to one."
        )
    return wnids


def plan(dcfg: config_dict.ConfigDict) -> tuple[Plan, tuple[list[str], list[str]]]:
    """Checks the archives and plans one source per class archive and per chunk of validation
    images; returns ``(plan, (class ids, class names))``."""
    root = _manual_dir(dcfg)
    paths = {split: os.path.join(root, name) for split, name in (("train", TRAIN_ARCHIVE), ("val", VAL_ARCHIVE))}
    for path in paths.values():
        if not os.path.isfile(path):
            raise PreparationError(f"imagenet: {path} is missing; download it from image-net.org (ILSVRC2012).")
    train = _open_tar(paths["train"], what="training archive")
    class_tars = sorted(m.name for m in train.getmembers() if m.isfile())
    bad = [n for n in class_tars if not (n.endswith(".tar") and _WNID.match(os.path.basename(n)[:-4]))]
    if bad or not class_tars:
        raise PreparationError(
            f"{paths['train']}: expected one nXXXXXXXX.tar per class, found {bad[:3] or 'nothing'}; "
            f"is it {TRAIN_ARCHIVE}? {CORRUPT_FIX}."
        )
    wnids = [os.path.basename(n)[:-4] for n in class_tars]
    classification.check_class_ids(wnids, where=paths["train"])
    val = _open_tar(paths["val"], what="validation archive")
    val_files = sorted(os.path.basename(m.name) for m in val.getmembers() if m.isfile())
    bad = [n for n in val_files if not _VAL_NAME.match(n)]
    if bad or not val_files:
        raise PreparationError(
            f"{paths['val']}: expected ILSVRC2012_val_NNNNNNNN.JPEG files, found {bad[:3] or 'nothing'}; "
            f"is it {VAL_ARCHIVE}? {CORRUPT_FIX}."
        )
    labels, words = _val_labels(dcfg, root, val_files)
    index = {w: i for i, w in enumerate(wnids)}
    unknown = sorted({w for w in labels if w not in index})
    if unknown:
        raise PreparationError(
            f"imagenet: validation labels name classes that {paths['train']} does not have ({', '.join(unknown[:5])}); "
            "the archives and labels must come from the same release."
        )
    val_refs = [
        ("val", paths["val"], tuple(val_files[i : i + VAL_CHUNK]), tuple(index[w] for w in labels[i : i + VAL_CHUNK]))
        for i in range(0, len(val_files), VAL_CHUNK)
    ]
    train_refs = [("train", paths["train"], name, index[w]) for name, w in zip(class_tars, wnids)]
    return {"train": train_refs, "val": val_refs}, (wnids, [words.get(w, w) for w in wnids])


def load_source(dcfg: config_dict.ConfigDict, ref) -> Iterator[RawImage]:
    """The images of one planned source: a class archive, or a chunk of validation images."""
    del dcfg
    kind, path = ref[0], ref[1]
    if kind == "train":
        name, label = ref[2], ref[3]
        outer = _open_tar(path, what="training archive")
        where = f"{path}:{name}"
        data = _read_member(outer, outer.getmember(name), where=where)
        try:
            inner = tarfile.open(fileobj=io.BytesIO(data))
            members = [m for m in inner.getmembers() if m.isfile()]
        except (tarfile.TarError, OSError, EOFError) as e:
            raise PreparationError(f"{where}: not a readable tar archive ({e}); {CORRUPT_FIX}.") from None
        if not members:
            raise PreparationError(f"{where}: holds no images; {CORRUPT_FIX}.")
        wnid = os.path.basename(name)[:-4]
        for m in sorted(members, key=lambda m: m.name):
            base = os.path.basename(m.name)
            yield RawImage(
                f"{wnid}/{os.path.splitext(base)[0]}",
                _read_member(inner, m, where=f"{where}:{m.name}"),
                f"{where}:{m.name}",
                label,
            )
    else:
        names, labels = ref[2], ref[3]
        tar = _open_tar(path, what="validation archive")
        by_base = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
        for name, label in zip(names, labels):
            yield RawImage(
                os.path.splitext(name)[0],
                _read_member(tar, by_base[name], where=f"{path}:{name}"),
                f"{path}:{name}",
                label,
            )


def label_to_train_ids(dcfg, label) -> np.ndarray:
    raise PreparationError("imagenet is a classification dataset: it has no label images.")


def ground_truth_files(dcfg, split: str):
    raise PreparationError("imagenet is a classification dataset: it has no label images to score.")
