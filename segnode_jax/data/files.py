"""Reading raw downloads: folders or zip archives, images and label files, with clear errors."""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np
from PIL import Image

from segnode_jax.data.errors import PreparationError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class SourceTree:
    """A folder or a zip archive read through one interface (relative POSIX paths).

    Arguments:
      path: a directory or a ``.zip`` file.
      prefix: a folder inside ``path`` that member names are relative to (optional).
    """

    def __init__(self, path: str | os.PathLike, *, prefix: str = ""):
        self.path = os.fspath(path)
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._zip: zipfile.ZipFile | None = None
        self._names: list[str] | None = None
        if self.is_zip:
            try:
                self._zip = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError) as e:
                raise PreparationError(
                    f"{self.path}: not a readable zip archive ({e}). The download is probably "
                    "incomplete: download it again."
                ) from None

    @property
    def is_zip(self) -> bool:
        return self.path.lower().endswith(".zip") and os.path.isfile(self.path)

    def describe(self, member: str = "") -> str:
        """A human-readable location of ``member`` (for messages)."""
        if self.is_zip:
            return f"{self.path}:{self.prefix}{member}" if member else self.path
        return os.path.join(self.path, self.prefix, member) if member else os.path.join(self.path, self.prefix)

    def names(self) -> list[str]:
        """All file names below the tree (relative, POSIX separators), sorted."""
        if self._names is None:
            if self._zip is not None:
                all_names = [n for n in self._zip.namelist() if not n.endswith("/")]
            else:
                root = os.path.join(self.path, self.prefix)
                all_names = []
                for dirpath, _, files in os.walk(root):
                    rel = os.path.relpath(dirpath, root)
                    for f in files:
                        all_names.append(f if rel == "." else f"{rel.replace(os.sep, '/')}/{f}")
                all_names = [self.prefix + n for n in all_names]
            p = self.prefix
            self._names = sorted(n[len(p) :] for n in all_names if n.startswith(p))
        return self._names

    def list(self, folder: str, *, suffix: str | tuple[str, ...] = "") -> list[str]:
        """Files below ``folder`` (recursive) whose names end with ``suffix``."""
        folder = folder.strip("/") + "/" if folder.strip("/") else ""
        suffixes = (suffix,) if isinstance(suffix, str) else suffix
        return [
            n for n in self.names() if n.startswith(folder) and n.lower().endswith(tuple(s.lower() for s in suffixes))
        ]

    def has_dir(self, folder: str) -> bool:
        folder = folder.strip("/") + "/"
        return any(n.startswith(folder) for n in self.names())

    def exists(self, member: str) -> bool:
        if self._zip is None:
            return os.path.isfile(os.path.join(self.path, self.prefix, member))
        return member in set(self.names())

    def read(self, member: str) -> bytes:
        """The bytes of ``member``."""
        try:
            if self._zip is not None:
                return self._zip.read(self.prefix + member)
            with open(os.path.join(self.path, self.prefix, member), "rb") as f:
                return f.read()
        except (OSError, KeyError, zipfile.BadZipFile) as e:
            raise PreparationError(
                f"{self.describe(member)}: cannot be read ({e}). Re-extract or re-download it."
            ) from None

    def local_path(self, member: str) -> str | None:
        """Filesystem path of ``member`` when the tree is a folder, else None."""
        return None if self._zip is not None else os.path.join(self.path, self.prefix, member)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_zip"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.is_zip:
            self._zip = zipfile.ZipFile(self.path)


def decode_image(data: bytes, *, source: str, fix: str = "re-download or re-extract it") -> np.ndarray:
    """Decodes an encoded image to RGB uint8 ``(H, W, 3)``.

    Arguments:
      data: the encoded file (PNG, JPEG, ...).
      source: file name for the error message.
      fix: what the user should do if the file is corrupt.

    Returns:
      The decoded RGB image.

    Raises:
      PreparationError: naming ``source`` if the file cannot be decoded.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode != "RGB":
                img = img.convert("RGB")
            return np.asarray(img)
    except Exception as e:  # PIL raises many types for corrupt data.
        raise PreparationError(f"{source}: corrupt or unreadable image ({e}); {fix}.") from None


def decode_label(data: bytes, *, source: str, fix: str = "re-download or re-extract it") -> np.ndarray:
    """Decodes a single-channel label image to its raw integer values ``(H, W)``.

    Palette ('P') images give their indices, grey images their values, 16-bit images
    their 16-bit values. Colour (RGB) label files are rejected: they need a colour table.

    Raises:
      PreparationError: naming ``source`` if the file is corrupt or not single-channel.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            mode = img.mode
            arr = np.asarray(img)
    except Exception as e:
        raise PreparationError(f"{source}: corrupt or unreadable label image ({e}); {fix}.") from None
    if arr.ndim != 2:
        raise PreparationError(
            f"{source}: label image has mode {mode} with {arr.shape[-1]} channels; expected a "
            "single-channel (grey or palette) PNG of class ids. Use the id-coded label files, "
            "not the colour visualisations."
        )
    return arr.astype(np.int32) if arr.dtype != np.uint8 else arr


def encode_png(array: np.ndarray) -> bytes:
    """Losslessly encodes a uint8 ``(H, W)`` or ``(H, W, 3)`` array as PNG."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def image_size(data: bytes) -> tuple[int, int] | None:
    """``(height, width)`` of an encoded image from its header, or None if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size[1], img.size[0]
    except Exception:
        return None
