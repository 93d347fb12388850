"""Evaluating a classifier (``model.task="classification"``, ImageNet pretraining): top-1 and
top-5 accuracy and the mean cross-entropy over a split, the way HRNet-Image-Classification
validates (resize 256, centre crop 224; ``data.eval_resize`` and ``data.crop_size``).

Images are batched (the last batch padded and masked), sharded over this host's devices; several
hosts each evaluate their shard of the split and sum their counts.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np

from segnode_jax import api, data, ode, parallel
from segnode_jax.errors import ConfigError
from segnode_jax.evaluation.predictor import _predict_jit, local_mesh, raise_failed_solves
from segnode_jax.evaluation.settings import EvalSettings, sum_over_hosts
from segnode_jax.models import has_ode


def _counts(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``[top-1 hits, top-5 hits, summed cross-entropy]`` of a batch (float64)."""
    logits = logits.astype(np.float64)
    k = min(5, logits.shape[-1])
    top = np.argsort(-logits, axis=-1)[:, :k]
    shifted = logits - logits.max(axis=-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    nll = -logp[np.arange(len(labels)), labels]
    return np.array([(top[:, 0] == labels).sum(), (top == labels[:, None]).any(axis=-1).sum(), nll.sum()], np.float64)


def evaluate_classification(variables, cfg, *, settings=None, progress: bool = False, devices=None) -> dict[str, Any]:
    """Top-1 / top-5 accuracy (0..1) and mean loss of a classifier on ``settings.split``.

    Arguments:
      variables: ``{"params", "batch_stats"}``.
      cfg: the run config (``model.task="classification"``, a classification dataset).
      settings: :class:`~segnode_jax.evaluation.settings.EvalSettings` (split, num_images,
        batch_size, per_image_solve); default from ``cfg``.
      progress: show a tqdm bar.
      devices: this host's devices to run on (default: all).

    Returns:
      ``{"task": "classification", "top1", "top5", "loss", "num_images", "split", "seconds"}``
      plus ``mean_nfe`` for SegNode.
    """
    import grain
    from tqdm import tqdm

    s = settings or EvalSettings.from_config(cfg)
    info = data.get_info(cfg.data)
    if int(cfg.model.num_classes) != info.num_classes:
        raise ConfigError(
            f"model.num_classes={cfg.model.num_classes} but the {cfg.data.name} dataset has {info.num_classes} classes"
        )
    ds = data.eval_dataset(cfg.data, split=s.split)
    if s.num_images is not None:
        ds = ds[: int(s.num_images)]
    count = len(ds)
    mesh = local_mesh(devices)
    n_dev = mesh.devices.size
    batch = int(s.batch_size or 32)
    batch = -(-batch // n_dev) * n_dev  # a multiple of the local devices
    predict = _predict_jit(api.freeze(cfg.model), bool(s.per_image_solve), mesh)
    totals = np.zeros(3, np.float64)
    nfe_sum, images = 0.0, 0
    start = time.time()
    bar = tqdm(total=count, desc=f"eval {s.split}", unit="img", disable=not progress or jax.process_index() != 0)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=2 * batch)).batch(batch)
    with ode.solver_errors(cfg.model.get("ode")):
        for b in it:
            x, y = np.asarray(b["image"]), np.asarray(b["label"]).astype(np.int64)
            n = len(y)
            if n < batch:  # the last batch: pad with copies, count only the real images
                x = np.concatenate([x, np.repeat(x[-1:], batch - n, axis=0)])
            # Placed explicitly: in a multi-host run a sharded jit does not place NumPy inputs itself.
            logits, nfe, result = predict(variables, jax.device_put(x, parallel.batch_sharding(mesh)))
            raise_failed_solves(result, n, cfg.model.get("ode"))
            logits, nfe = np.asarray(jax.device_get(logits))[:n], np.asarray(jax.device_get(nfe))[:n]
            totals += _counts(logits, y)
            nfe_sum += float(nfe.sum())
            images += n
            bar.update(n)
    bar.close()
    summed = sum_over_hosts(np.concatenate([totals, [nfe_sum, images]]))
    total = max(summed[4], 1.0)
    out: dict[str, Any] = {
        "task": "classification",
        "top1": float(summed[0] / total),
        "top5": float(summed[1] / total),
        "loss": float(summed[2] / total),
        "num_images": int(summed[4]),
        "split": s.split,
        "seconds": time.time() - start,
    }

    if has_ode(cfg.model):
        out["mean_nfe"] = float(summed[3] / total)
    return out
