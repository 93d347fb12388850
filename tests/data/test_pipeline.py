"""grain pipeline: batches, determinism, per-epoch shuffling, orbax checkpointing, sharding, no TF."""

from __future__ import annotations

import os
import subprocess
import sys

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest
from data_fakes import config

from segnode_jax import data

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    dcfg = config(
        "synthetic",
        str(tmp_path_factory.mktemp("syn")),
        image_size=(32, 48),
        num_train=10,
        num_val=7,
        crop_size=(24, 32),
        generator="shapes",
        num_classes=5,
    )
    data.ensure_prepared(dcfg)
    return dcfg


class ExampleId(grain.transforms.RandomMap):
    """Replaces the augmentation: returns which stored example this is (and a random draw)."""

    def random_map(self, element, rng):
        return {"id": np.int32(int(element["name"])), "draw": rng.random()}


def ids_of(dcfg, *, batch_size, steps, seed=0, shard_index=0, shard_count=1):
    ds = data.train_dataset(
        dcfg, batch_size=batch_size, seed=seed, shard_index=shard_index, shard_count=shard_count, transform=ExampleId()
    )
    return [ds[i]["id"].tolist() for i in range(steps)]


def test_batches(syn):
    it = data.train_iterator(syn, batch_size=4, seed=0, shard_index=0, shard_count=1, worker_count=0)
    b = next(it)
    assert set(b) == {"image", "label"}
    assert b["image"].shape == (4, 24, 32, 3) and b["image"].dtype == np.float32
    assert b["label"].shape == (4, 24, 32) and b["label"].dtype == np.int32
    assert set(np.unique(b["label"])) <= set(range(5)) | {255}
    assert -2.2 < b["image"].min() < 0 < b["image"].max() < 2.7  # ImageNet-normalised
    assert data.steps_per_epoch(syn, batch_size=4) == 2


def test_same_seed_same_batches_other_seed_differs(syn):
    def first(seed):
        it = data.train_iterator(syn, batch_size=2, seed=seed, shard_index=0, shard_count=1, worker_count=0)
        return [next(it) for _ in range(3)]

    a, b, c = first(0), first(0), first(1)
    assert all((x["image"] == y["image"]).all() and (x["label"] == y["label"]).all() for x, y in zip(a, b))
    assert not all(x["image"].shape == y["image"].shape and (x["image"] == y["image"]).all() for x, y in zip(a, c))


def test_epochs_reshuffle_and_drop_remainder(syn):
    # 10 examples, batch 4: two batches per epoch, each epoch 8 distinct examples.
    batches = ids_of(syn, batch_size=4, steps=6)
    epochs = [sum(batches[i : i + 2], []) for i in range(0, 6, 2)]
    for e in epochs:
        assert len(set(e)) == 8 and set(e) <= set(range(10))
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]  # a new order every epoch
    # Augmentation randomness differs between epochs even for the same example.
    ds = data.train_dataset(syn, batch_size=10, seed=0, shard_index=0, shard_count=1, transform=ExampleId())
    e0 = dict(zip(ds[0]["id"].tolist(), ds[0]["draw"].tolist()))
    e1 = dict(zip(ds[1]["id"].tolist(), ds[1]["draw"].tolist()))
    assert sorted(e0) == sorted(e1) == list(range(10)) and all(e0[k] != e1[k] for k in e0)


def test_train_shards_disjoint_and_cover(syn):
    # Shard i of 3 holds examples i, i+3, ...: its first epoch (batch 1) lists exactly those.
    seen = []
    for i in range(3):
        size = len(range(i, 10, 3))
        first_epoch = sum(ids_of(syn, batch_size=1, steps=size, shard_index=i, shard_count=3), [])
        assert len(set(first_epoch)) == size
        seen.append(set(first_epoch))
    assert sum(len(s) for s in seen) == 10 and set().union(*seen) == set(range(10))


def test_eval_shards_disjoint_and_cover(syn):
    names = [[ex["name"] for ex in data.eval_dataset(syn, shard_index=i, shard_count=3)] for i in range(3)]
    flat = sum(names, [])
    assert len(flat) == len(set(flat)) == 7 and sorted(flat) == [f"{i:05d}" for i in range(7)]
    ex = data.eval_dataset(syn, split="val", shard_index=0, shard_count=1)[0]
    assert ex["image"].dtype == np.float32 and ex["image"].shape == (32, 48, 3)
    assert ex["raw_image"].dtype == np.uint8 and ex["label"].dtype == np.int32 and ex["label"].shape == (32, 48)


def test_default_shard_is_jax_process(syn):
    import jax

    assert jax.process_count() == 1
    default = [ex["name"] for ex in data.eval_dataset(syn)]
    assert default == [ex["name"] for ex in data.eval_dataset(syn, shard_index=0, shard_count=1)]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_orbax_checkpoint_restores_exact_batches(syn, tmp_path, workers):
    k = 3
    it = data.train_iterator(syn, batch_size=3, seed=7, shard_index=0, shard_count=1, worker_count=workers)
    for _ in range(k):
        next(it)
    mgr = ocp.CheckpointManager(str(tmp_path / "ckpt"), options=ocp.CheckpointManagerOptions(create=True))
    mgr.save(k, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(it)))
    mgr.wait_until_finished()
    expected = [next(it) for _ in range(4)]  # crosses an epoch boundary (3 batches per epoch)
    if workers:
        it.close()
    fresh = data.train_iterator(syn, batch_size=3, seed=7, shard_index=0, shard_count=1, worker_count=workers)
    mgr2 = ocp.CheckpointManager(str(tmp_path / "ckpt"))
    assert mgr2.latest_step() == k
    mgr2.restore(k, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointRestore(fresh)))
    got = [next(fresh) for _ in range(4)]
    for a, b in zip(expected, got):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
    # Not trivially equal: consecutive batches differ.
    assert not np.array_equal(got[0]["image"], got[1]["image"])
    if workers:
        fresh.close()


def test_get_set_state_roundtrip(syn):
    it = data.train_iterator(syn, batch_size=2, seed=3, shard_index=0, shard_count=1, worker_count=0)
    next(it)
    state = it.get_state()
    want = [next(it)["label"] for _ in range(2)]
    it2 = data.train_iterator(syn, batch_size=2, seed=3, shard_index=0, shard_count=1, worker_count=0)
    it2.set_state(state)
    got = [next(it2)["label"] for _ in range(2)]
    assert all((a == b).all() for a, b in zip(want, got))


@pytest.mark.slow
def test_tensorflow_is_never_imported(tmp_path):
    code = f"""
import sys
from segnode_jax import data
d = data.data_config("synthetic")
d.data_dir = {str(tmp_path)!r}; d.image_size = (32, 32); d.num_train = 4; d.num_val = 2; d.crop_size = (16, 16)
data.prepare(d, progress=False)
next(data.train_iterator(d, batch_size=2, shard_index=0, shard_count=1, worker_count=0))
list(data.eval_dataset(d, shard_index=0, shard_count=1))
data.ground_truth_files(d, "val")
import segnode_jax.data.cityscapes, segnode_jax.data.camvid, segnode_jax.data.lip
import segnode_jax.data.pascal_context, segnode_jax.data.folder
assert "tensorflow" not in sys.modules, sorted(m for m in sys.modules if m.startswith("tensorflow") and "datasets" not in m)
print("TF-FREE")
"""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "TF-FREE" in proc.stdout
