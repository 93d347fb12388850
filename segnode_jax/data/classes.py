"""Class tables: the single source of a dataset's ids, train ids, names, colours and weights.

Every dataset module defines one :class:`ClassTable`; the id -> train id lookup, the class
names, the palette and the optional class weights are all derived from it.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from segnode_jax.data.errors import PreparationError
from segnode_jax.labels import IGNORE_INDEX as IGNORE  # noqa: E402 - the one home of 255


def rgb(values: Sequence[int] | np.ndarray) -> tuple[int, int, int]:
    """An ``(r, g, b)`` colour from any 3-sequence (a palette row)."""
    r, g, b = (int(v) for v in values)
    return r, g, b


@dataclasses.dataclass(frozen=True)
class ClassEntry:
    """One row of a class table.

    Attributes:
      name: human-readable class name.
      id: the value this class has in the dataset's own label files.
      train_id: the training id (0..num_classes-1), or 255 when the class is ignored.
      color: RGB colour used for visualisation.
      weight: optional loss weight of the class (only meaningful for train ids < 255).
    """

    name: str
    id: int
    train_id: int
    color: tuple[int, int, int]
    weight: float | None = None


@dataclasses.dataclass(frozen=True)
class ClassTable:
    """All classes of a dataset, in the dataset's own id space.

    Attributes:
      entries: one :class:`ClassEntry` per id that may appear in the dataset's label files.
      extra_ignore_ids: further raw values that are legal in label files and mean "ignore"
        (e.g. a folder dataset's ignore value); they map to 255.
    """

    entries: tuple[ClassEntry, ...]
    extra_ignore_ids: tuple[int, ...] = ()

    def __post_init__(self):
        train_ids = sorted({e.train_id for e in self.entries if e.train_id != IGNORE})
        if train_ids != list(range(len(train_ids))):
            raise ValueError(f"train ids must be 0..N-1 without gaps, got {train_ids}")
        ids = [e.id for e in self.entries]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate ids in class table")

    @property
    def num_classes(self) -> int:
        """Number of trained classes (train ids 0..num_classes-1)."""
        return len({e.train_id for e in self.entries if e.train_id != IGNORE})

    def _first_entry_per_train_id(self) -> list[ClassEntry]:
        out: dict[int, ClassEntry] = {}
        for e in self.entries:
            if e.train_id != IGNORE and e.train_id not in out:
                out[e.train_id] = e
        return [out[t] for t in range(self.num_classes)]

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of the trained classes, indexed by train id."""
        return tuple(e.name for e in self._first_entry_per_train_id())

    @property
    def palette(self) -> np.ndarray:
        """``(num_classes, 3)`` uint8 colours, indexed by train id."""
        return np.array([e.color for e in self._first_entry_per_train_id()], dtype=np.uint8)

    @property
    def class_weights(self) -> np.ndarray | None:
        """``(num_classes,)`` float32 loss weights indexed by train id, or None if the table has none."""
        entries = self._first_entry_per_train_id()
        if any(e.weight is None for e in entries):
            return None
        return np.array([e.weight for e in entries], dtype=np.float32)

    @property
    def valid_ids(self) -> tuple[int, ...]:
        """Every raw value that may legally appear in the dataset's label files."""
        return tuple(sorted({e.id for e in self.entries} | set(self.extra_ignore_ids)))

    def lookup(self) -> np.ndarray:
        """Returns a lookup table ``lut`` with ``lut[raw_id] = train_id`` and -1 for illegal values.

        Returns:
          int16 array long enough for every raw id (at least 256 entries).
        """
        size = max(256, max(self.valid_ids) + 1)
        lut = np.full(size, -1, dtype=np.int16)
        for e in self.entries:
            if e.id >= 0:
                lut[e.id] = e.train_id
        for v in self.extra_ignore_ids:
            lut[v] = IGNORE
        return lut

    def to_ids(self, train_ids: np.ndarray) -> np.ndarray:
        """Maps train ids back to the dataset's own ids (Cityscapes trainIds -> labelIds): each
        train id becomes the id of its first class-table entry; 255 becomes the dataset's own
        "ignore" id (its first ignored entry, e.g. Cityscapes 0 "unlabeled", CamVid 11 "void"),
        or stays 255 where the dataset has none.

        Returns:
          uint8 array, or uint16 when the dataset has ids above 255.
        """
        entries = self._first_entry_per_train_id()
        ignored = [e.id for e in self.entries if e.train_id == IGNORE and e.id >= 0] + list(self.extra_ignore_ids)
        void = ignored[0] if ignored else IGNORE
        dtype = np.uint16 if max([e.id for e in entries] + [void]) > 255 else np.uint8
        lut = np.full(IGNORE + 1, void, dtype=np.int64)
        lut[: len(entries)] = [e.id for e in entries]
        train_ids = np.asarray(train_ids).astype(np.int64)
        if train_ids.size and (train_ids.min() < 0 or train_ids.max() > IGNORE):
            raise ValueError(f"train ids must be 0..{IGNORE}, got values from {train_ids.min()} to {train_ids.max()}")
        return lut[train_ids].astype(dtype)

    def to_train_ids(self, raw: np.ndarray, *, source: str = "label") -> np.ndarray:
        """Maps a label image in the dataset's own ids to train ids.

        Arguments:
          raw: integer array of raw ids.
          source: what the array came from (a file name), used in the error message.

        Returns:
          uint8 array of train ids, 255 where ignored.

        Raises:
          PreparationError: if ``raw`` holds a value that is not in the class table.
        """
        raw = np.asarray(raw)
        lut = self.lookup()
        if raw.size and (raw.min() < 0 or raw.max() >= lut.size):
            bad = np.unique(raw[(raw < 0) | (raw >= lut.size)])
        else:
            mapped = lut[raw]
            if not (mapped < 0).any():
                return mapped.astype(np.uint8)
            bad = np.unique(raw[mapped < 0])
        raise PreparationError(
            f"{source}: label values {bad[:10].tolist()} are not in the class table "
            f"(allowed: {list(self.valid_ids)}). Check that this is the right label file "
            "(the dataset's own raw ids, not colour images or already converted train ids), "
            "or fix the class list."
        )


def voc_colormap(n: int) -> np.ndarray:
    """The PASCAL VOC colour map (bit-interleaved RGB) for ``n`` indices.

    Arguments:
      n: number of colours.

    Returns:
      ``(n, 3)`` uint8 colours; index 0 is black.
    """
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def colorize(train_id_label: np.ndarray, palette: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """Colours a train-id label map.

    Arguments:
      train_id_label: integer array ``(H, W)`` of train ids; 255 (or any id without a colour)
        is drawn black.
      palette: ``(num_classes, 3)`` colours, e.g. ``get_info(dcfg).palette``.

    Returns:
      uint8 RGB image ``(H, W, 3)``.
    """
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:IGNORE]
    table = np.zeros((IGNORE + 1, 3), dtype=np.uint8)
    table[: len(palette)] = palette
    label = np.asarray(train_id_label).astype(np.int64)
    # Ignore (255), negative values and ids without a colour are drawn black.
    label = np.where((label < 0) | (label >= len(palette)), IGNORE, label)
    return table[label]
