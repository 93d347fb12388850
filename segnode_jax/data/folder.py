"""Your own dataset: a folder of images and masks matched by name, with a small class file.

Layout (``image_dir``/``mask_dir`` are configurable)::

    <root>/images/<split>/<name>.jpg|png...     <root>/masks/<split>/<name><mask_suffix>.png
    or, without split folders:
    <root>/images/<name>.jpg                    <root>/masks/<name><mask_suffix>.png
      (then a deterministic ``val_fraction`` of the images becomes "val", the rest "train")
    <root>/classes.json (or .yaml / .yml, or ``classes_file``)

Class file (JSON or YAML)::

    {"classes": [{"name": "background", "id": 0, "color": [0, 0, 0]},
                 {"name": "crack", "id": 1, "color": [255, 0, 0]},
                 {"name": "unsure", "id": 7, "ignore": true}],
     "ignore_index": 255}

``id`` is the mask value of the class (default: its position), ``color`` its colour (default:
the PASCAL VOC colour map) which is also how RGB masks are read; classes with
``"ignore": true`` and the mask value ``ignore_index`` (file, else ``mask_ignore_index``)
become 255. Train ids follow the order of the non-ignored classes. The short form
``{"classes": ["background", "crack"]}`` is accepted too.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow_datasets as tfds
from ml_collections import config_dict

from segnode_jax.data import common, files
from segnode_jax.data.builder import Plan, RawExample, SegmentationBuilder, variant_config
from segnode_jax.data.classes import IGNORE, ClassEntry, ClassTable, voc_colormap
from segnode_jax.data.errors import PreparationError

placeholder = config_dict.placeholder
CORRUPT_FIX = "replace or remove it"


def default_config(cfg: config_dict.ConfigDict) -> None:
    """Folder defaults: 512x512 crops of the original images scaled by 0.5-2.0."""
    cfg.root = placeholder(str)
    cfg.classes_file = placeholder(str)
    cfg.image_dir = "images"
    cfg.mask_dir = "masks"
    # Mask file of image <name>: <mask_dir>/<split>/<name><mask_suffix>.png
    cfg.mask_suffix = ""
    # Mask value meaning "ignore" (255 in the batches regardless); the class file may override.
    cfg.mask_ignore_index = 255
    # Share of images put in "val" when there are no split folders.
    cfg.val_fraction = 0.1
    cfg.crop_size = (512, 512)
    cfg.scale_range = (0.5, 2.0)


def _root(dcfg: config_dict.ConfigDict) -> str:
    return common.user_root(dcfg, holding="images/ and masks/")


def _classes_file(dcfg: config_dict.ConfigDict) -> str:
    path = dcfg.get("classes_file")
    if path:
        path = os.path.abspath(os.path.expanduser(str(path)))
        if not os.path.isfile(path):
            raise PreparationError(f"folder: classes_file {path} does not exist.")
        return path
    root = _root(dcfg)
    for name in ("classes.json", "classes.yaml", "classes.yml"):
        if os.path.isfile(os.path.join(root, name)):
            return os.path.join(root, name)
    raise PreparationError(
        f"folder: no class file: set data.classes_file (--classes_file) or create {os.path.join(root, 'classes.json')} "
        'like {"classes": [{"name": "background", "id": 0, "color": [0, 0, 0]}, ...]} (see docs/datasets.md).'
    )


def _load_classes(path: str) -> dict:
    try:
        with open(path) as f:
            if path.lower().endswith((".yaml", ".yml")):
                import yaml

                spec = yaml.safe_load(f)
            else:
                spec = json.load(f)
    except Exception as e:
        raise PreparationError(f"{path}: cannot parse the class file ({e}); fix its JSON/YAML syntax.") from None
    if isinstance(spec, list):
        spec = {"classes": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("classes"), list) or not spec["classes"]:
        raise PreparationError(f'{path}: expected {{"classes": [...]}} with at least one class (see docs/datasets.md).')
    return spec


def _number(kind, value, path: str, what: str, want: str):
    """``kind(value)`` (int or float), or one error naming the class file and the field."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return kind(value)
    except (TypeError, ValueError):
        raise PreparationError(f"{path}: {what} {value!r}; use {want}.") from None


def class_table(dcfg: config_dict.ConfigDict) -> ClassTable:
    """The table read from the class file (ids, names, colours, ignore values)."""
    path = _classes_file(dcfg)
    spec = _load_classes(path)
    colors = voc_colormap(256)
    entries, train_id = [], 0
    for pos, c in enumerate(spec["classes"]):
        if isinstance(c, str):
            c = {"name": c}
        if not isinstance(c, dict) or "name" not in c:
            raise PreparationError(f"{path}: class #{pos} needs at least a name, got {c!r}.")
        cid = _number(int, c.get("id", pos), path, f"class {c['name']!r} has id", "an integer")
        raw = c.get("color")
        raw = colors[pos % 256] if raw is None else raw
        if not isinstance(raw, (list, tuple, np.ndarray)) or len(raw) != 3:
            raise PreparationError(f"{path}: class {c['name']!r} has colour {raw!r}; use [r, g, b] with 0..255.")
        r, g, b = (_number(int, v, path, f"class {c['name']!r} has colour {raw!r}:", "[r, g, b]") for v in raw)
        if not all(0 <= v <= 255 for v in (r, g, b)):
            raise PreparationError(f"{path}: class {c['name']!r} has colour {raw!r}; use [r, g, b] with 0..255.")
        if c.get("ignore"):
            entries.append(ClassEntry(str(c["name"]), cid, IGNORE, (r, g, b)))
        else:
            weight = c.get("weight")
            if weight is not None:
                weight = _number(float, weight, path, f"class {c['name']!r} has weight", "a number")
            entries.append(ClassEntry(str(c["name"]), cid, train_id, (r, g, b), weight))
            train_id += 1
    ignore = int(spec.get("ignore_index", dcfg.get("mask_ignore_index", IGNORE)))
    ids = [e.id for e in entries]
    if len(set(ids)) != len(ids):
        raise PreparationError(f"{path}: two classes have the same id; ids must be unique.")
    if train_id == 0 or train_id > 255:
        raise PreparationError(f"{path}: need between 1 and 255 non-ignored classes, got {train_id}.")
    extra = () if ignore in ids else (ignore,)
    return ClassTable(tuple(entries), extra_ignore_ids=extra)


def split_sizes(dcfg: config_dict.ConfigDict) -> dict[str, int | None]:
    del dcfg
    return {}


class SegnodeFolder(SegmentationBuilder):
    """Images and masks from a user folder, for segnode-jax."""


Builder = SegnodeFolder


def variant_name(dcfg: config_dict.ConfigDict) -> str:
    """``variant`` if set, else the root folder's name (letters, digits, ``_``)."""
    return common.root_variant(dcfg, _root(dcfg))


def builder_config(dcfg: config_dict.ConfigDict) -> str | tfds.core.BuilderConfig:
    return variant_config(Builder, variant_name(dcfg))


def _split_folders(tree: files.SourceTree, image_dir: str) -> list[str] | None:
    """Split names if ``image_dir`` has only subfolders with images, else None."""
    names = tree.list(image_dir, suffix=files.IMAGE_EXTENSIONS)
    rel = [n[len(image_dir) + 1 :] for n in names]
    if not rel or any("/" not in r for r in rel):
        return None
    return sorted({r.split("/", 1)[0] for r in rel})


def plan(dcfg: config_dict.ConfigDict) -> Plan:
    """Pairs images and masks by name, per split folder (or a deterministic train/val split)."""
    root = _root(dcfg)
    class_table(dcfg)  # Validates the class file before any work.
    image_dir, mask_dir = dcfg.image_dir.strip("/"), dcfg.mask_dir.strip("/")
    for d in (image_dir, mask_dir):
        if not os.path.isdir(os.path.join(root, d)):
            raise PreparationError(
                f"folder: missing {os.path.join(root, d)}/ . Expected {root}/{image_dir}/[<split>/]<name>.<ext> and "
                f"{root}/{mask_dir}/[<split>/]<name>{dcfg.mask_suffix}.png (set image_dir/mask_dir otherwise)."
            )
    tree = files.SourceTree(root)
    splits = _split_folders(tree, image_dir)
    groups = {s: (f"{image_dir}/{s}", f"{mask_dir}/{s}") for s in splits} if splits else {"": (image_dir, mask_dir)}
    out: Plan = {}
    for split, (idir, mdir) in groups.items():
        images = {
            k[len(idir) + 1 :]: v for k, v in common.stems(tree.list(idir, suffix=files.IMAGE_EXTENSIONS)).items()
        }
        masks = {
            k[len(mdir) + 1 :]: v
            for k, v in common.stems(
                tree.list(mdir, suffix=(".png", ".bmp", ".tif", ".tiff")), strip=dcfg.mask_suffix
            ).items()
        }
        pairs = common.pair(
            images,
            masks,
            image_where=os.path.join(root, idir),
            label_where=os.path.join(root, mdir),
            label_pattern=os.path.join(root, mdir, "{key}" + dcfg.mask_suffix + ".png"),
            fix="Every image needs a mask with the same name (and mask_suffix).",
        )
        refs = [(tree, key, img, msk) for key, img, msk in pairs]
        if split:
            out[split] = refs
        else:
            n_val = int(round(len(refs) * float(dcfg.val_fraction)))
            if float(dcfg.val_fraction) > 0 and len(refs) >= 2:
                n_val = min(max(n_val, 1), len(refs) - 1)
            order = np.random.default_rng(0).permutation(len(refs))
            val_idx = set(order[:n_val].tolist())
            out["train"] = [r for i, r in enumerate(refs) if i not in val_idx]
            if n_val:
                out["val"] = [r for i, r in enumerate(refs) if i in val_idx]
    if not any(out.values()):
        raise PreparationError(f"folder: no images found in {os.path.join(root, image_dir)}.")
    return out


def _mask_to_train_ids(table: ClassTable, mask: np.ndarray, *, source: str) -> np.ndarray:
    if mask.ndim == 2:
        return table.to_train_ids(mask, source=source)
    codes = (mask[..., 0].astype(np.int64) << 16) | (mask[..., 1].astype(np.int64) << 8) | mask[..., 2]
    out = np.full(codes.shape, -1, np.int16)
    for e in table.entries:
        code = (e.color[0] << 16) | (e.color[1] << 8) | e.color[2]
        out[(codes == code) & (out < 0)] = e.train_id
    if (out < 0).any():
        bad = np.unique(mask[out < 0].reshape(-1, 3), axis=0)[:5].tolist()
        raise PreparationError(
            f"{source}: mask colours {bad} are not in the class file; add them as classes (or ignore) or fix the mask."
        )
    return out.astype(np.uint8)


def _read_mask(data: bytes, *, source: str) -> np.ndarray:
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode in ("RGB", "RGBA"):
                return np.asarray(img.convert("RGB"))
    except Exception as e:
        raise PreparationError(f"{source}: corrupt or unreadable mask ({e}); {CORRUPT_FIX}.") from None
    return files.decode_label(data, source=source, fix=CORRUPT_FIX)


def load_example(dcfg: config_dict.ConfigDict, ref) -> RawExample:
    tree, key, img, msk = ref
    table = class_table(dcfg)
    mask = _read_mask(tree.read(msk), source=tree.describe(msk))
    label = _mask_to_train_ids(table, mask, source=tree.describe(msk))
    return RawExample(key, tree.read(img), tree.describe(img), label, tree.describe(msk))


def label_to_train_ids(dcfg: config_dict.ConfigDict, label) -> np.ndarray:
    """A mask in your format (ids or colours; array or path) -> train ids."""
    table = class_table(dcfg)
    if isinstance(label, (str, os.PathLike)):
        path = os.fspath(label)
        with open(path, "rb") as f:
            mask = _read_mask(f.read(), source=path)
        return _mask_to_train_ids(table, mask, source=path).astype(np.int32)
    return _mask_to_train_ids(table, np.asarray(label), source="mask array").astype(np.int32)


def ground_truth_files(dcfg: config_dict.ConfigDict, split: str) -> list[tuple[str, str]]:
    """``[(name, mask path)]`` of ``split`` (as planned for preparation)."""
    refs = plan(dcfg).get(split)
    if refs is None:
        raise PreparationError(f"folder: no split {split!r} in {_root(dcfg)}.")
    return sorted((key, tree.local_path(msk)) for tree, key, _, msk in refs)
