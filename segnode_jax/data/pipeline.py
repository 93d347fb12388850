"""grain pipelines over the prepared TFDS (array_record) datasets.

Training (per host)::

    source[shard_index::shard_count] -> shuffle (new order every epoch) -> random augmentation
    -> batch(drop_remainder=True, per epoch) -> repeat -> worker processes (mp_prefetch)

Everything is a function of ``seed``, so a run is reproducible, and the iterator's state
(``get_state``/``set_state``, or orbax through ``grain.checkpoint``) resumes exactly.
"""

from __future__ import annotations

from typing import Any

import grain
from ml_collections import config_dict

from segnode_jax import config as config_lib
from segnode_jax.data import registry
from segnode_jax.data.builder import split_names
from segnode_jax.data.errors import PreparationError
from segnode_jax.data.prepare import ensure_prepared
from segnode_jax.data.transforms import (
    ClassificationEvalTransform,
    ClassificationTrainTransform,
    EvalTransform,
    TrainTransform,
)


def split_source(dcfg: config_dict.ConfigDict, split: str) -> grain.MapDataset:
    """The records of ``split`` (``"a+b"`` concatenates splits), preparing synthetic data if needed.

    Arguments:
      dcfg: data settings.
      split: split name, e.g. ``"train"`` or ``"train+val"``.

    Returns:
      A ``grain.MapDataset`` of stored records (encoded image/label bytes, name, size).
    """
    builder = ensure_prepared(dcfg)
    available = sorted(builder.info.splits.keys())
    parts = []
    for name in split_names(split):
        if name not in builder.info.splits:
            raise PreparationError(
                f"split {name!r} is not in the prepared {dcfg.name} dataset at {builder.data_path} "
                f"(it has {', '.join(available)}). Fix the split name in the config"
                + (" or prepare with use_coarse=True." if name == "train_extra" else ".")
            )
        source = builder.as_data_source(split=name)  # pyright: ignore[reportCallIssue]  # signature hidden by tfds_logging
        parts.append(grain.MapDataset.source(source))
    return parts[0] if len(parts) == 1 else grain.MapDataset.concatenate(parts)


def resolve_shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
    """``(index, count)`` of this host's shard: explicit values, else JAX's process index/count."""
    if shard_index is None or shard_count is None:
        import jax  # Only needed for the default; imported lazily.

        shard_index = jax.process_index() if shard_index is None else shard_index
        shard_count = jax.process_count() if shard_count is None else shard_count
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index must be in [0, shard_count), got {shard_index} of {shard_count}")
    return int(shard_index), int(shard_count)


def train_transform(dcfg: config_dict.ConfigDict, **overrides: Any) -> TrainTransform | ClassificationTrainTransform:
    """The training augmentation described by ``dcfg`` (keyword overrides for tests): HRNet's
    for segmentation, random-resized crops and flips for classification."""
    if registry.is_classification(dcfg):
        kwargs: dict[str, Any] = dict(
            crop_size=tuple(dcfg.crop_size),
            scale=tuple(dcfg.rrc_scale),
            ratio=tuple(dcfg.rrc_ratio),
            flip=dcfg.flip,
            mean=tuple(dcfg.mean),
            std=tuple(dcfg.std),
        )
        kwargs.update(overrides)
        return ClassificationTrainTransform(**kwargs)
    module = registry.dataset_module(dcfg.name)
    kwargs = dict(
        crop_size=tuple(dcfg.crop_size),
        base_size=dcfg.get("base_size"),
        train_resize=dcfg.get("train_resize"),
        scale_range=tuple(dcfg.scale_range),
        scale_step=dcfg.scale_step,
        flip=dcfg.flip,
        flip_pairs=getattr(module, "FLIP_PAIRS", ()),
        mean=tuple(dcfg.mean),
        std=tuple(dcfg.std),
        ignore_index=dcfg.ignore_index,
    )
    kwargs.update(overrides)
    return TrainTransform(**kwargs)


def train_dataset(
    dcfg: config_dict.ConfigDict,
    *,
    batch_size: int,
    seed: int = 0,
    shard_index: int | None = None,
    shard_count: int | None = None,
    num_epochs: int | None = None,
    transform: TrainTransform | ClassificationTrainTransform | None = None,
) -> grain.MapDataset:
    """The batched training ``MapDataset`` of this host (before worker processes).

    Arguments:
      dcfg: data settings.
      batch_size: examples per batch on this host.
      seed: seeds the per-epoch shuffles and every random augmentation.
      shard_index, shard_count: this host's shard; default ``jax.process_index()/count()``.
      num_epochs: None repeats forever.
      transform: replaces the augmentation built from ``dcfg``.

    Returns:
      A ``grain.MapDataset`` of ``{'image': float32 (B,H,W,3), 'label': int32 (B,H,W)}``
      (classification datasets: ``'label'`` int32 ``(B,)`` class indices).
    """
    registry.check_config(dcfg)
    index, count = resolve_shard(shard_index, shard_count)
    ds = split_source(dcfg, dcfg.train_split)[index::count]
    if len(ds) < batch_size:
        raise PreparationError(
            f"{dcfg.name} split {dcfg.train_split!r} has {len(ds)} examples on shard {index}/{count}, "
            f"fewer than batch_size={batch_size}: lower the batch size or use more data."
        )
    transform = transform or train_transform(dcfg)
    ds = ds.seed(seed).shuffle().random_map(transform)
    # MapDataset.batch batches each epoch separately, so drop_remainder drops the last
    # partial batch of every epoch and repeat() then reshuffles (new permutation per epoch).
    return ds.batch(batch_size, drop_remainder=True).repeat(num_epochs)


def train_iterator(
    dcfg: config_dict.ConfigDict,
    *,
    batch_size: int,
    seed: int = 0,
    shard_index: int | None = None,
    shard_count: int | None = None,
    worker_count: int | None = None,
    num_epochs: int | None = None,
) -> grain.DatasetIterator:
    """A checkpointable iterator over training batches.

    Arguments:
      dcfg: data settings (``data_config(name)`` plus overrides).
      batch_size: examples per batch on this host.
      seed: seeds shuffling and augmentation (same seed -> same batches).
      shard_index, shard_count: this host's shard; default ``jax.process_index()/count()``.
      worker_count: grain worker processes; None = ``dcfg.num_workers``; 0 = main process.
      num_epochs: None repeats forever.

    Returns:
      A ``grain.DatasetIterator``: ``next(it)`` gives ``{'image': float32 (B,H,W,3)``
      normalised, ``'label': int32 (B,H,W)`` with 255 ignored``}``; ``it.get_state()`` /
      ``it.set_state(state)`` checkpoint it (a restored iterator needs the same settings and
      ``worker_count``); save it with orbax through ``grain.checkpoint.CheckpointSave``.
    """
    ds = train_dataset(
        dcfg,
        batch_size=batch_size,
        seed=seed,
        shard_index=shard_index,
        shard_count=shard_count,
        num_epochs=num_epochs,
    )
    workers = dcfg.num_workers if worker_count is None else worker_count
    it_ds = ds.to_iter_dataset(
        grain.ReadOptions(num_threads=int(dcfg.read_threads), prefetch_buffer_size=max(int(dcfg.prefetch), 1))
    )
    if workers and workers > 0:
        _absl_flags_parsed()
        it_ds = it_ds.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=int(workers), per_worker_buffer_size=max(int(dcfg.prefetch), 1))
        )
    return iter(it_ds)


def _absl_flags_parsed() -> None:
    """grain's worker processes read absl flags; outside ``absl.app.run`` (pytest, notebooks,
    plain scripts) nobody parsed them, so use their defaults. A later ``app.run`` still parses
    the command line as usual."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def eval_dataset(
    dcfg: config_dict.ConfigDict,
    *,
    split: str | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
) -> grain.MapDataset:
    """Per-image evaluation examples of this host's shard, in a fixed order.

    Arguments:
      dcfg: data settings.
      split: defaults to ``dcfg.eval_split``; ``"a+b"`` concatenates.
      shard_index, shard_count: this host's shard; default ``jax.process_index()/count()``.

    Returns:
      A ``grain.MapDataset`` of dicts: ``image`` float32 ``(H, W, 3)`` normalised (resized to
      ``dcfg.eval_size`` if set), ``label`` int32 ``(H0, W0)`` at the original resolution,
      ``raw_image`` uint8 ``(H, W, 3)``, ``name`` str. Use it directly, or with
      ``.to_iter_dataset().mp_prefetch(...)`` for background decoding. Classification
      datasets: the image resized (short side ``data.eval_resize``) and centre-cropped to
      ``data.crop_size``, ``label`` an int32 class index.
    """
    index, count = resolve_shard(shard_index, shard_count)
    ds = split_source(dcfg, split or dcfg.eval_split)[index::count]
    if registry.is_classification(dcfg):
        return ds.map(
            ClassificationEvalTransform(
                short_side=int(dcfg.eval_resize),
                crop_size=tuple(dcfg.crop_size),
                mean=tuple(dcfg.mean),
                std=tuple(dcfg.std),
            )
        )
    return ds.map(
        EvalTransform(
            eval_size=config_lib.optional_size(dcfg, "eval_size", section="data"),
            mean=tuple(dcfg.mean),
            std=tuple(dcfg.std),
        )
    )


def steps_per_epoch(dcfg: config_dict.ConfigDict, *, batch_size: int, shard_count: int = 1) -> int:
    """Training batches per epoch on one host (the last partial batch is dropped)."""
    n = len(split_source(dcfg, dcfg.train_split))
    return (n // shard_count) // batch_size


def num_examples(dcfg: config_dict.ConfigDict, split: str) -> int:
    """Number of examples of ``split`` in the prepared dataset."""
    return len(split_source(dcfg, split))


__all__ = [
    "eval_dataset",
    "num_examples",
    "resolve_shard",
    "split_source",
    "steps_per_epoch",
    "train_dataset",
    "train_iterator",
    "train_transform",
]
