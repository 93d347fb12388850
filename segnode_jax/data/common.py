"""Helpers shared by the dataset modules: locating downloads, pairing files, label input,
exporting ground truth."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Callable, Iterable

import numpy as np
from ml_collections import config_dict

from segnode_jax.data import files, registry, transforms
from segnode_jax.data.classes import ClassTable
from segnode_jax.data.errors import PreparationError
from segnode_jax.data.prepare import ensure_prepared


def warn(message: str) -> None:
    """Prints a preparation warning on stderr."""
    print(f"warning: {message}", file=sys.stderr)


def manual_dir(dcfg: config_dict.ConfigDict, *, expected: str) -> str:
    """The existing raw-download folder of ``dcfg``.

    Arguments:
      dcfg: data settings (``manual_dir``).
      expected: description of the expected layout, for the error message.

    Raises:
      PreparationError: ``manual_dir`` unset or not a folder.
    """
    path = dcfg.get("manual_dir")
    if not path:
        raise PreparationError(
            f"{dcfg.name}: no raw download given. Pass --manual_dir (or set data.manual_dir) to the "
            f"folder holding:\n{expected}"
        )
    path = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isdir(path):
        raise PreparationError(f"{dcfg.name}: manual_dir {path} does not exist. It should hold:\n{expected}")
    return path


def user_root(dcfg: config_dict.ConfigDict, *, holding: str) -> str:
    """The absolute ``data.root`` of a user's own dataset (``folder``, ``image_folder``); the
    message names what the folder must hold."""
    root = dcfg.get("root")
    if not root:
        raise PreparationError(f"{dcfg.name}: set data.root (or --root) to the folder holding {holding}.")
    root = os.path.abspath(os.path.expanduser(str(root)))
    if not os.path.isdir(root):
        raise PreparationError(f"{dcfg.name}: root {root} does not exist.")
    return root


def root_variant(dcfg: config_dict.ConfigDict, root: str) -> str:
    """``variant`` if set, else the root folder's name (letters, digits, ``_``)."""
    import re

    name = str(dcfg.get("variant") or os.path.basename(root.rstrip(os.sep)))
    return re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_").lower() or str(dcfg.name)


def stems(names: Iterable[str], *, strip: str = "") -> dict[str, str]:
    """``{relative path without extension (and without suffix ``strip``): name}``."""
    out = {}
    for n in names:
        stem = os.path.splitext(n)[0]
        if strip and stem.endswith(strip):
            stem = stem[: -len(strip)]
        out[stem] = n
    return out


def pair(
    images: dict[str, str],
    labels: dict[str, str],
    *,
    image_where: str,
    label_where: str,
    label_pattern: str,
    fix: str,
) -> list[tuple[str, str, str]]:
    """Pairs images and labels by key; any unpaired file is an error.

    Arguments:
      images, labels: ``{key: member}`` of each side.
      image_where, label_where: folder descriptions for messages.
      label_pattern: how the label of image ``<key>`` is named (``{key}`` placeholder).
      fix: what to do when files are missing.

    Returns:
      ``[(key, image_member, label_member)]`` sorted by key.
    """
    missing_labels = sorted(set(images) - set(labels))
    if missing_labels:
        examples = ", ".join(label_pattern.format(key=k) for k in missing_labels[:3])
        raise PreparationError(
            f"incomplete download: {len(missing_labels)} image(s) in {image_where} have no label in "
            f"{label_where} (expected e.g. {examples}). {fix}"
        )
    missing_images = sorted(set(labels) - set(images))
    if missing_images:
        raise PreparationError(
            f"incomplete download: {len(missing_images)} label(s) in {label_where} have no image in "
            f"{image_where} (e.g. {', '.join(labels[k] for k in missing_images[:3])}). {fix}"
        )
    return [(k, images[k], labels[k]) for k in sorted(images)]


def check_count(name: str, split: str, found: int, official: int | None) -> None:
    """Warns when a split's size differs from the official one (a partial download?)."""
    if official is not None and found != official:
        warn(f"{name} {split}: found {found} examples, the official split has {official}.")


def read_label_input(label) -> tuple[np.ndarray, str]:
    """An array, or the raw values of a label image file at a path."""
    if isinstance(label, (str, os.PathLike)):
        path = os.fspath(label)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise PreparationError(f"{path}: cannot read label file ({e}).") from None
        return files.decode_label(data, source=path), path
    return np.asarray(label), "label array"


def table_label_to_train_ids(table: ClassTable, label) -> np.ndarray:
    """Label (array or path) in the dataset's own ids -> int32 train ids (255 = ignore)."""
    array, source = read_label_input(label)
    return table.to_train_ids(array, source=source).astype(np.int32)


def export_ground_truth(
    dcfg: config_dict.ConfigDict,
    split: str,
    *,
    encode: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[tuple[str, str]]:
    """Writes a split's labels as PNG files (once) and lists them.

    Used where the dataset's own ground truth is not a set of files (synthetic data, the
    PASCAL-Context json). Files go to ``<data_dir>/segnode_ground_truth/<builder>/<variant>/
    <split>/<name>.png``; a folder is only renamed into place once complete.

    Arguments:
      dcfg: data settings.
      split: a single split name.
      encode: train ids (uint8) -> the dataset's own label values; default identity.

    Returns:
      ``[(name, path)]`` sorted by name.
    """

    builder = ensure_prepared(dcfg)
    if split not in builder.info.splits:
        raise PreparationError(f"split {split!r} is not in {builder.data_path} (has {', '.join(builder.info.splits)}).")
    config = builder.builder_config
    assert config is not None, "every segnode builder has a config (its variant)"
    root = os.path.join(
        registry.data_dir(dcfg),
        "segnode_ground_truth",
        builder.name,
        config.name,
        str(builder.version),
        split,
    )
    if not os.path.isdir(root):
        os.makedirs(os.path.dirname(root), exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{split}.incomplete.", dir=os.path.dirname(root))
        try:
            for rec in builder.as_data_source(split=split):  # pyright: ignore[reportCallIssue]  # signature hidden by tfds_logging
                ex = transforms.decode_record(rec)
                label = ex["label"] if encode is None else encode(ex["label"])
                path = os.path.join(tmp, ex["name"] + ".png")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(files.encode_png(np.asarray(label, np.uint8)))
            os.rename(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    out = []
    for dirpath, _, names in os.walk(root):
        for n in names:
            full = os.path.join(dirpath, n)
            out.append((os.path.splitext(os.path.relpath(full, root))[0].replace(os.sep, "/"), full))
    return sorted(out)
