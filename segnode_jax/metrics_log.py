"""Scalar logs of a run: a JSON-lines file and TensorBoard event files (process 0 only).

``WORKDIR/metrics.jsonl`` holds one JSON object per logged step, e.g.
``{"step": 100, "split": "train", "loss": 0.73, "learning_rate": 0.099, ...}``; validation
records have ``"split": "val"``. TensorBoard events go to ``WORKDIR/tensorboard`` (written with
tensorboardX, no TensorFlow needed): ``tensorboard --logdir WORKDIR/tensorboard``.

On resume from step ``s`` the records of later steps (written by the interrupted run after its
last checkpoint) are dropped from the JSONL file and TensorBoard is told to purge them, so the
logs read as one uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any, Mapping

import jax
import numpy as np

from segnode_jax import compat

log = logging.getLogger(__name__)
JSONL_NAME = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def _plain(value: Any) -> Any:
    """A JSON-able Python scalar (non-finite floats become strings "nan"/"inf"/"-inf")."""
    if isinstance(value, (np.ndarray, jax.Array)):
        value = np.asarray(value).item() if np.asarray(value).size == 1 else np.asarray(value).tolist()
    if isinstance(value, (np.floating, float)):
        value = float(value)
        if not math.isfinite(value):
            return str(value)
        return value
    if isinstance(value, (np.integer,)):
        return int(value)
    return value


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (a torn last line is skipped)."""
    records = []
    if not os.path.exists(path):
        return records
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # the line an interrupted run was writing
    return records


class MetricWriter:
    """Writes scalars to ``WORKDIR/metrics.jsonl`` and TensorBoard; a no-op off process 0.

    Arguments:
      workdir: the run's directory.
      resume_step: the step the run resumes from (records of later steps are dropped), or
        None for a fresh run.
      tensorboard: also write TensorBoard event files.
    """

    def __init__(self, workdir: str, *, resume_step: int | None = None, tensorboard: bool = True):
        self.active = jax.process_index() == 0
        self.path = os.path.join(workdir, JSONL_NAME)
        self._tb = None
        if not self.active:
            return
        os.makedirs(workdir, exist_ok=True)
        if resume_step is not None:
            kept = [r for r in read_jsonl(self.path) if int(r.get("step", 0)) <= resume_step]
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                for r in kept:
                    f.write(json.dumps(r) + "\n")
            os.replace(tmp, self.path)
        elif os.path.exists(self.path):
            os.remove(self.path)
        self._file = open(self.path, "a")
        if tensorboard:
            from tensorboardX import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self._tb = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR), purge_step=purge)

    def write(self, step: int, scalars: Mapping[str, Any], *, split: str = "train") -> None:
        """Writes one record (``split`` prefixes the TensorBoard tags: ``train/loss``)."""
        if not self.active:
            return
        record = {"step": int(step), "split": split}
        record.update({k: _plain(v) for k, v in scalars.items()})
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in record.items():
                if k in ("step", "split"):
                    continue
                if isinstance(v, str):
                    v = float(v)
                if isinstance(v, (int, float)):
                    self._tb.add_scalar(f"{split}/{k}", v, global_step=int(step))

    def write_text(self, tag: str, text: str, step: int = 0) -> None:
        """A text note in TensorBoard (e.g. the resolved config)."""
        if self.active and self._tb is not None:
            self._tb.add_text(tag, text, global_step=step)

    def flush(self) -> None:
        if self.active:
            self._file.flush()
            if self._tb is not None:
                self._tb.flush()

    def close(self) -> None:
        if self.active:
            self._file.close()
            if self._tb is not None:
                try:
                    self._tb.close()
                except OSError as e:
                    # TensorBoard's copy could not be written (e.g. a full disk): say so, and
                    # keep tensorboardX's exit hook from failing again; metrics.jsonl is complete.

                    log.warning(
                        "TensorBoard events in %s could not be written (%s); metrics.jsonl has every value",
                        os.path.dirname(self.path),
                        e,
                    )
                    compat.tensorboardx_abandon(self._tb)
                self._tb = None
            self.active = False
