"""Scale-out: the same step on 4 devices and on 1, 4 -> 1 device restore, two processes.

conftest gives this process 4 virtual CPU devices; subprocesses choose their own count.
"""

import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from segnode_jax import data, evaluation, parallel, training
from tests.conftest import REPO, TINY_STEPS, read_jsonl, tiny_cli_flags, tiny_config, train_losses, xla_flags

# Differences between a 4-device and a 1-device computation come only from the order of
# float32 reductions (sums over the batch split in 4 partial sums): ~1e-7 relative per sum.
TOL = 1e-5


def _mesh(n):
    return parallel.make_mesh(jax.devices()[:n])


def _batch(cfg, n):
    rng = np.random.default_rng(0)
    h, w = cfg.data.crop_size
    labels = rng.integers(0, cfg.model.num_classes, (n, h, w)).astype(np.int32)
    labels[:, :4] = 255  # some ignored pixels
    return {"image": rng.normal(size=(n, h, w, 3)).astype(np.float32), "label": labels}


@pytest.fixture(scope="module")
def one_step_results(tmp_path_factory):
    """One training step of the tiny SegNode from the same state and batch: on 1 device, on 4
    devices (replicated state) and on 4 devices with the state split (fsdp).

    The ODE is solved with fixed RK4 steps (backsolve adjoint). With adaptive steps the
    comparison would measure the solver, not the sharding: at the tiny config's loose
    tolerances (1e-2) a roundoff-level change of the forward state can flip an accept/reject
    decision of the backward solve, which moves gradients by the tolerance (measured: up to
    6e-4 in the gradient norm) -- as any roundoff change (another GPU, another XLA version)
    would.
    """
    cfg = tiny_config(tmp_path_factory.mktemp("unused"), **{"model.ode.solver": "rk4", "model.ode.num_steps": 2})
    cfg = training.resolve_config(cfg)
    tx, _ = training.make_optimizer(cfg.train, TINY_STEPS)
    batch = _batch(cfg, int(cfg.train.batch_size))
    host_state = jax.device_get(training.create_train_state(cfg.model, tx, jax.random.key(0), (1, 32, 32, 3)))
    out = {}
    for name, n, sharding in (("1", 1, "replicated"), ("4", 4, "replicated"), ("4fsdp", 4, "fsdp")):
        c = cfg.copy_and_resolve_references()
        c.parallel.param_sharding = sharding
        c.parallel.fsdp_min_size = 64
        mesh = _mesh(n)
        shardings = training.train_state_shardings(c.model, tx, mesh, c.parallel)
        state = jax.device_put(host_state, shardings)
        step = training.make_train_step(c, TINY_STEPS, mesh)
        new_state, metrics = step(state, parallel.global_batch(batch, mesh))
        out[name] = dict(state=new_state, metrics=jax.device_get(metrics), shardings=shardings)
    return out


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(tree))]


@pytest.mark.slow
@pytest.mark.parametrize("other", ["4", "4fsdp"])
def test_one_step_on_4_devices_equals_1_device(one_step_results, other):
    ref, got = one_step_results["1"], one_step_results[other]
    assert got["metrics"]["finite"] == 1
    for key in ("loss", "grad_norm", "pixel_accuracy"):
        np.testing.assert_allclose(got["metrics"][key], ref["metrics"][key], rtol=TOL, err_msg=key)
    # The SGD momentum trace after one step is the gradient itself: compare every gradient,
    # to 1e-5 of the gradient's scale (entries that are zero in exact arithmetic, such as a
    # bias before a normalisation, are roundoff noise with no relative precision).
    grads_got, grads_ref = _leaves(got["state"].opt_state), _leaves(ref["state"].opt_state)
    scale = max(float(np.abs(g).max()) for g in grads_ref if g.size)
    assert scale > 0
    for a, b in zip(grads_got, grads_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL * scale)
    # Parameters and BatchNorm running statistics (from the global batch of 4, not from each
    # device's 1), each array to 1e-5 of its own scale.
    stats_got, stats_ref = _leaves(got["state"].batch_stats), _leaves(ref["state"].batch_stats)
    assert stats_ref, "the tiny model has BatchNorm layers"
    params_got, params_ref = _leaves(got["state"].params), _leaves(ref["state"].params)
    for a, b in zip(params_got + stats_got, params_ref + stats_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL * float(np.abs(b).max(initial=0.0)))


def test_fsdp_splits_large_arrays_and_replication_does_not(one_step_results):
    rep = jax.tree_util.tree_leaves(one_step_results["4"]["state"].params)
    assert all(x.sharding.is_fully_replicated for x in rep)
    fsdp = jax.tree_util.tree_leaves(one_step_results["4fsdp"]["state"].params)
    split = [x for x in fsdp if not x.sharding.is_fully_replicated]
    assert split and all(x.size >= 64 for x in split)
    # Each device holds a quarter of a split array.
    x = split[0]
    assert x.addressable_shards[0].data.size * 4 == x.size


def test_batch_that_does_not_divide_over_the_devices_names_the_fix():
    with pytest.raises(
        parallel.ParallelConfigError, match=r"train.batch_size=6 does not divide .* 4 devices.*batch_size=4"
    ):
        parallel.local_batch_size(6, _mesh(4))
    assert parallel.local_batch_size(8, _mesh(4)) == 8  # one host: its share is the whole batch


@pytest.mark.slow
def test_evaluation_on_4_devices_gives_the_confusion_matrix_of_1(tiny_run, tiny_data_dir):
    from segnode_jax import checkpoints

    cfg = tiny_config(tiny_data_dir)
    variables = checkpoints.load_variables(tiny_run[0])
    settings = evaluation.EvalSettings.from_config(cfg, batch_size=4)
    settings.num_visualizations = 0
    four = evaluation.evaluate(variables, cfg, settings=settings)
    one = evaluation.evaluate(variables, cfg, settings=settings, devices=jax.local_devices()[:1])
    assert four["num_images"] == one["num_images"] == cfg.data.num_val
    np.testing.assert_array_equal(np.asarray(four["confusion_matrix"]), np.asarray(one["confusion_matrix"]))
    assert np.asarray(four["confusion_matrix"]).sum() == cfg.data.num_val * 32 * 32


def _env(devices):
    env = dict(os.environ)
    env["XLA_FLAGS"] = xla_flags(devices)
    env["PYTHONPATH"] = REPO
    return env


def restore_train_state(workdir: str, data_dir: str) -> list[np.ndarray]:
    """The newest train state of a tiny run restored on every local device, as host arrays."""
    from segnode_jax import checkpoints

    cfg = training.resolve_config(tiny_config(data_dir))
    tx, _ = training.make_optimizer(cfg.train, TINY_STEPS)
    mesh = parallel.make_mesh()
    abstract = training.abstract_train_state(cfg.model, tx)
    shardings = training.train_state_shardings(cfg.model, tx, mesh)
    abstract = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    ckpts = checkpoints.RunCheckpoints(workdir)
    try:
        state, _ = ckpts.restore(abstract, None)
    finally:
        ckpts.close()
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(state))]


# The 4 -> 1 device run solves with fixed steps: what is compared is the restored state and
# data position, and the first loss after the restore is then equal up to the order of float32
# reductions. With the tiny config's adaptive Dopri5 at tolerance 1e-2, roundoff-level
# differences between 1 and 4 devices move its step sizes, and that first loss by 2e-6 to 2e-4
# (measured, depending on compiler flags and error norm), which would hide the comparison.
FIXED_STEPS = {"model.ode.solver": "euler", "model.ode.num_steps": 2}


@pytest.mark.slow
def test_checkpoint_written_on_4_devices_restores_on_1_and_continues(tiny_data_dir, tmp_path):
    src = tmp_path / "source"
    training.train_and_evaluate(tiny_config(tiny_data_dir, **FIXED_STEPS), str(src))
    reference = train_losses(src)
    workdir = tmp_path / "to_one_device"
    shutil.copytree(src, workdir)
    steps = sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit())
    resume_at = steps[0]
    assert resume_at < TINY_STEPS
    for s in steps[1:]:
        shutil.rmtree(workdir / "checkpoints" / str(s))
    # The train state restored on 1 device equals, array by array and exactly, the state
    # restored here on the 4 devices that wrote it.
    restored = tmp_path / "restored_on_one.npz"
    script = f"""
import numpy as np
from tests.training.test_parallel import restore_train_state
np.savez({str(restored)!r}, *restore_train_state({str(workdir)!r}, {str(tiny_data_dir)!r}))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=_env(1), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    on_four = restore_train_state(str(workdir), str(tiny_data_dir))
    with np.load(restored) as f:
        on_one = [f[f"arr_{i}"] for i in range(len(f.files))]
    assert len(on_one) == len(on_four) > 10
    for i, (a, b) in enumerate(zip(on_one, on_four)):
        np.testing.assert_array_equal(a, b, err_msg=f"leaf {i}")
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "train.py"),
            *tiny_cli_flags(tiny_data_dir),
            f"--workdir={workdir}",
            *(f"--config.{k}={v}" for k, v in FIXED_STEPS.items()),
        ],
        cwd=REPO,
        env=_env(1),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"from step {resume_at}" in proc.stderr
    continued = train_losses(str(workdir))
    assert sorted(continued) == list(range(1, TINY_STEPS + 1))
    # The first loss after the restore is computed from the restored state on the restored
    # data position: equal up to reduction order.
    assert continued[resume_at + 1] == pytest.approx(reference[resume_at + 1], rel=TOL)
    # Later steps follow the same trajectory (roundoff differences grow through training).
    for step in range(resume_at + 2, TINY_STEPS + 1):
        assert continued[step] == pytest.approx(reference[step], rel=1e-2), step


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_on_localhost_train_on_disjoint_shards(tiny_data_dir, tmp_path):
    workdir = tmp_path / "two_hosts"
    port = _free_port()
    steps = 4
    # What is tested is the hosts' coordination, not the model: the straight-line HRNetV2
    # compiles in about half the time of the ODE model (three processes compile here).
    model = "--config.model.name=hrnetv2"
    common = [
        sys.executable,
        os.path.join(REPO, "train.py"),
        *tiny_cli_flags(tiny_data_dir),
        model,
        f"--workdir={workdir}",
        f"--config.train.num_steps={steps}",
        "--config.train.checkpoint_every_steps=2",
        f"--config.parallel.coordinator_address=127.0.0.1:{port}",
        "--config.parallel.num_processes=2",
        "--config.parallel.initialization_timeout=120",
    ]
    procs = [
        subprocess.Popen(
            common + [f"--config.parallel.process_id={i}"],
            cwd=REPO,
            env=_env(2),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=900))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err
    err0, err1 = outputs[0][1], outputs[1][1]
    assert "4 device(s) (cpu) on 2 host(s)" in err0
    assert "process 0 of 2: data shard 0/2, 2 of the 4 images" in err0
    assert "process 1 of 2: data shard 1/2, 2 of the 4 images" in err1
    # The two shards are disjoint and together cover the split.
    dcfg = tiny_config(tiny_data_dir).data
    names = [
        [ex["name"] for ex in data.eval_dataset(dcfg, split="train", shard_index=i, shard_count=2)] for i in range(2)
    ]
    assert names[0] and names[1] and not set(names[0]) & set(names[1])
    assert len(names[0]) + len(names[1]) == dcfg.num_train
    # Only process 0 logs: one record per step.
    train_steps = [r["step"] for r in read_jsonl(workdir / "metrics.jsonl") if r["split"] == "train" and "loss" in r]
    assert train_steps == list(range(1, steps + 1))
    # Checkpoints from both processes (the data position of each host is saved).
    ckpt = workdir / "checkpoints" / str(steps)
    saved = {f for f in os.listdir(ckpt / "data_iter") if f.startswith("process_")}
    assert saved == {"process_0-of-2.json", "process_1-of-2.json"}
    # The validation (each host scores half of the images, the confusion matrices are summed)
    # equals a one-process evaluation of the saved weights.
    val = [r for r in read_jsonl(workdir / "metrics.jsonl") if r.get("split") == "val"][-1]
    from segnode_jax import checkpoints

    cfg = tiny_config(tiny_data_dir, **{"model.name": "hrnetv2"})
    settings = evaluation.EvalSettings.from_config(cfg)
    settings.num_visualizations = 0
    here = evaluation.evaluate(checkpoints.load_variables(str(workdir)), cfg, settings=settings)
    assert val["miou"] == pytest.approx(here["miou"], abs=1e-6)
    # The same workdir continues in one process: the state is restored exactly; the data
    # position of two hosts' shards cannot carry over, which is said.
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "train.py"),
            *tiny_cli_flags(tiny_data_dir),
            model,
            f"--workdir={workdir}",
            f"--config.train.num_steps={steps + 2}",
            "--config.train.checkpoint_every_steps=2",
        ],
        cwd=REPO,
        env=_env(4),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"from step {steps}" in proc.stderr and "another number of processes" in proc.stderr, proc.stderr
    assert sorted(train_losses(str(workdir))) == list(range(1, steps + 3))
