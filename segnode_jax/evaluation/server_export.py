"""Benchmark-server export: every image of a split predicted at full resolution, in the
dataset's own ids (Cityscapes labelIds), named as its server wants, plus the zip to upload.

Cityscapes: ``<city>/<city>_<seq>_<frame>_leftImg8bit.png`` (the name cityscapesScripts and
the test server look for). The other datasets have no file-naming rule of their own: their
predictions are ``<example name>.png`` in their own ids (what ``evaluate.py --predictions``
and their usual evaluation scripts read).
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from segnode_jax import data
from segnode_jax.errors import UserError


class ExportError(UserError):
    """An export folder that would overwrite earlier files."""


class ExportWriter:
    """Writes one label PNG per prediction (call it with ``(example, train-id prediction)``)
    and, with :meth:`finish`, ``<out_dir>.zip``.

    Arguments:
      dcfg: data settings (the dataset decides ids and names).
      out_dir: the folder; it must be empty or absent unless ``overwrite``.
    """

    def __init__(self, dcfg, out_dir: str, *, overwrite: bool = False):

        self.dcfg = dcfg
        self.out_dir = os.path.abspath(out_dir)
        if os.path.isdir(self.out_dir) and os.listdir(self.out_dir) and not overwrite:
            raise ExportError(
                f"--export {out_dir} already holds files; pass --overwrite to replace them, or choose another folder"
            )
        module = data.dataset_module(dcfg.name)
        self._name = getattr(module, "export_name", lambda name: name + ".png")
        self.written: list[str] = []

    def __call__(self, example, pred: np.ndarray) -> None:
        from PIL import Image

        rel = self._name(example["name"])
        path = os.path.join(self.out_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path[: -len(".png")] + ".partial.png"
        Image.fromarray(data.train_ids_to_dataset_ids(self.dcfg, pred)).save(tmp)
        os.replace(tmp, path)
        self.written.append(rel)

    def finish(self) -> str | None:
        """Writes ``<out_dir>.zip`` with every PNG of the folder (all hosts' shards; on
        process 0 after the others finished) and returns its path (None on other hosts)."""
        import jax

        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("segnode_jax export written")
            if jax.process_index() != 0:
                return None
        zip_path = self.out_dir.rstrip(os.sep) + ".zip"
        tmp = zip_path + ".partial"
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for root, dirs, files in sorted(os.walk(self.out_dir)):
                dirs.sort()
                for f in sorted(files):
                    if f.endswith(".png") and not f.endswith(".partial.png"):
                        full = os.path.join(root, f)
                        z.write(full, os.path.relpath(full, self.out_dir))
        os.replace(tmp, zip_path)
        return zip_path
