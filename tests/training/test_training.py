"""Training end to end on configs/tiny.py: checkpoints, logs, evaluation, exact resume after
SIGKILL at several moments, the non-finite guard, init_from, remat in the training step, and the CLIs' errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segnode_jax import checkpoints, parallel, training
from tests.conftest import (
    REPO,
    TINY_CHECKPOINT_EVERY,
    TINY_EVAL_EVERY,
    TINY_STEPS,
    read_jsonl,
    run_cli,
    tiny_cli_flags,
    tiny_config,
    train_losses,
)


def test_tiny_run_writes_checkpoints_logs_and_validation(tiny_run):
    workdir, result = tiny_run
    assert result["step"] == TINY_STEPS
    steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")))
    assert steps[-1] == TINY_STEPS and all(s % TINY_CHECKPOINT_EVERY == 0 for s in steps)
    assert all(os.path.isdir(os.path.join(workdir, "checkpoints", str(s), "data_iter")) for s in steps)
    losses = train_losses(workdir)
    assert sorted(losses) == list(range(1, TINY_STEPS + 1))
    assert all(np.isfinite(v) for v in losses.values())
    # The model learns something even at toy size: the loss goes down.
    assert np.mean([losses[s] for s in range(TINY_STEPS - 3, TINY_STEPS + 1)]) < np.mean(
        [losses[s] for s in (1, 2, 3, 4)]
    )
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(os.path.join(workdir, "tensorboard")))
    assert 0.0 <= result["val"]["miou"] <= 1.0
    assert result["best"]["miou"] == pytest.approx(max(result["val"]["miou"], result["best"]["miou"]))
    assert os.path.isdir(os.path.join(workdir, "best", str(result["best"]["step"])))
    assert_best_is_the_argmax_of_the_validations(workdir, result["best"])


@pytest.mark.slow
def test_evaluate_cli_on_the_run_writes_results_and_images(tiny_run, tiny_data_dir):
    workdir, result = tiny_run
    out = os.path.join(workdir, "eval_cli")
    export = os.path.join(workdir, "export_cli")
    proc = run_cli("evaluate.py", f"--ckpt={workdir}", f"--output={out}", "--which=latest", f"--export={export}")
    assert proc.returncode == 0, proc.stderr
    res = json.load(open(os.path.join(out, "results.json")))
    # --export: one label PNG per image in the dataset's ids and the zip; scored again from
    # those files, the same mIoU.
    assert res["export"] == export and res["export_zip"] == export + ".zip" and os.path.isfile(export + ".zip")
    cfg = tiny_config(tiny_data_dir)
    from segnode_jax import evaluation

    assert evaluation.score_predictions(cfg.data, export)["miou"] == pytest.approx(res["miou"], abs=1e-9)
    again = run_cli("evaluate.py", f"--ckpt={workdir}", f"--output={out}", f"--export={export}")
    lines = [line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert again.returncode == 2 and len(lines) == 1 and "--overwrite" in lines[0], again.stderr
    for key in ("miou", "pixel_accuracy", "per_class_iou", "num_images", "mean_nfe"):
        assert key in res, key
    assert res["num_images"] == 4 and res["mean_nfe"] > 0
    assert set(res["per_class_iou"]) == {"background", "disc", "square", "triangle", "ring"}
    # The final validation of training evaluated the same (latest) checkpoint the same way.
    assert res["miou"] == pytest.approx(result["val"]["miou"], abs=1e-6)
    pngs = [f for f in os.listdir(os.path.dirname(res["visualizations"][0])) if f.endswith(".png")]
    assert len(pngs) >= 2


def assert_best_is_the_argmax_of_the_validations(workdir, best=None):
    """Every due validation is logged once, and ``best/<step>`` holds the checkpoint of the
    highest logged validation mIoU (the first of equal maxima: a tie is no improvement)."""
    vals = [r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if r.get("split") == "val"]
    steps = [int(r["step"]) for r in vals]
    assert steps == list(range(TINY_EVAL_EVERY, TINY_STEPS + 1, TINY_EVAL_EVERY)), steps
    mious = [float(r["miou"]) for r in vals]
    best_step = steps[int(np.argmax(mious))]
    assert os.listdir(os.path.join(workdir, "best")) == [str(best_step)]
    if best is not None:
        assert best == {"step": best_step, "miou": pytest.approx(max(mious))}


# SIGKILL at four moments, one after the other on one run (each kill, then a rerun of train.py
# that resumes and is killed at the next moment): (moment, first step it may happen at).
KILLS = (("metrics_append", 6), ("best_save", 8), ("after_commit", 16), ("async_save", 20))


def _kill_at(moment, from_step, flags, workdir):
    env = dict(os.environ, KILL_AT=moment, KILL_FROM_STEP=str(from_step), JAX_DEBUG_LOG_MODULES="jax._src.compiler")
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "training", "kill_at.py"), *flags, f"--workdir={workdir}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def _on_disk(workdir):
    names = {sub: sorted(os.listdir(os.path.join(workdir, sub))) for sub in ("checkpoints", "best")}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        lines = f.read().splitlines()
    return names, lines


@pytest.mark.slow
def test_sigkill_at_four_moments_then_resume_continues_exactly_like_an_uninterrupted_run(
    tiny_run, tiny_data_dir, tmp_path, capsys
):
    """train.py SIGKILLed (tests/training/kill_at.py) in the middle of a metrics.jsonl append,
    during the best checkpoint's save, right after a checkpoint's commit and during an
    asynchronous save, each time resumed by rerunning train.py, and finally resumed to the end
    (in-process: the code path train.py runs, reusing tiny_run's compiled step). Every step's
    loss and every validation equal the uninterrupted run's exactly (the same compiled program
    on the same inputs: the reruns load it from JAX's persistent compilation cache), the best
    checkpoint is the argmax of the validations, and nothing half-written is left."""
    reference = train_losses(tiny_run[0])
    ref_vals = {
        r["step"]: r["miou"] for r in read_jsonl(os.path.join(tiny_run[0], "metrics.jsonl")) if r["split"] == "val"
    }
    workdir = str(tmp_path / "killed")
    flags = tiny_cli_flags(tiny_data_dir)
    for i, (moment, from_step) in enumerate(KILLS):
        proc = _kill_at(moment, from_step, flags, workdir)
        assert proc.returncode == -signal.SIGKILL, (moment, proc.stderr[-3000:])
        if i:  # a rerun: it resumed, and loaded the training step compiled by an earlier process
            assert "resuming" in proc.stderr, proc.stderr[-3000:]
            assert "Persistent compilation cache hit for 'jit_train_step'" in proc.stderr, proc.stderr[-3000:]
        names, lines = _on_disk(workdir)
        whole = [json.loads(line) for line in (lines[:-1] if moment == "metrics_append" else lines)]
        vals = [r["step"] for r in whole if r["split"] == "val"]
        if moment == "metrics_append":
            with pytest.raises(json.JSONDecodeError):
                json.loads(lines[-1])
            assert lines[-1].startswith(f'{{"step": {from_step}, "split": "train"'), lines[-1]
        elif moment == "best_save":
            assert f"{from_step}.orbax-checkpoint-tmp" in names["best"], names
            assert from_step not in vals  # logged only once its best checkpoint is written
        elif moment == "after_commit":
            # (its validation may have run while the commit was being written)
            committed = [int(n) for n in names["checkpoints"] if n.isdigit()]
            assert max(committed) == from_step and len(committed) == len(names["checkpoints"]), names
        else:
            in_flight = [n for n in names["checkpoints"] if not n.isdigit()]
            assert in_flight == [f"{from_step}.orbax-checkpoint-tmp"], names
    capsys.readouterr()
    result = training.train_and_evaluate(tiny_config(tiny_data_dir), workdir)
    assert result["step"] == TINY_STEPS
    err = capsys.readouterr().err
    resumed_from = KILLS[-1][1] - TINY_CHECKPOINT_EVERY
    assert f"resuming {workdir} from step {resumed_from}" in err, err
    names, lines = _on_disk(workdir)
    assert all(n.isdigit() for n in names["checkpoints"] + names["best"]), names  # nothing half-written
    records = [json.loads(line) for line in lines]  # every line whole (the torn one was dropped)
    assert train_losses(workdir) == reference  # exactly, every step
    vals = {r["step"]: r["miou"] for r in records if r["split"] == "val"}
    assert vals == ref_vals and len([r for r in records if r["split"] == "val"]) == len(ref_vals)
    # The best checkpoint is chosen across the kills: validations before and after them compete.
    assert_best_is_the_argmax_of_the_validations(workdir)


@pytest.mark.slow
def test_a_run_stopped_between_a_checkpoint_and_its_validation_validates_that_step_on_resume(
    tiny_run, tiny_data_dir, tmp_path, monkeypatch, capsys
):
    """The process dies after step 16's checkpoint is written and before step 16's validation
    (both due at 16): the resumed run validates step 16 first, so no validation is lost and the
    best checkpoint is chosen among all of them. Without the catch-up step 16 was never validated."""
    from segnode_jax.training import loop

    workdir = str(tmp_path / "run")
    stop_at = 2 * TINY_EVAL_EVERY
    assert stop_at % TINY_CHECKPOINT_EVERY == 0 and stop_at < TINY_STEPS
    validate = loop._validate

    def dies_before_validating(run, step, writer, best):
        if step == stop_at:
            raise KeyboardInterrupt  # as a killed process: the checkpoint is written, the validation is not
        return validate(run, step, writer, best)

    monkeypatch.setattr(loop, "_validate", dies_before_validating)
    with pytest.raises(KeyboardInterrupt):
        training.train_and_evaluate(tiny_config(tiny_data_dir), workdir)
    monkeypatch.setattr(loop, "_validate", validate)
    assert checkpoints.RunCheckpoints(workdir).latest_step() == stop_at
    logged = [int(r["step"]) for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if r.get("split") == "val"]
    assert logged == [TINY_EVAL_EVERY]
    capsys.readouterr()

    result = training.train_and_evaluate(tiny_config(tiny_data_dir), workdir)

    assert f"validating step {stop_at} first" in capsys.readouterr().err
    assert result["step"] == TINY_STEPS
    assert_best_is_the_argmax_of_the_validations(workdir, result["best"])
    # The same weights as the uninterrupted run at that step: the same validation.
    ref = {
        int(r["step"]): r["miou"]
        for r in read_jsonl(os.path.join(tiny_run[0], "metrics.jsonl"))
        if r.get("split") == "val"
    }
    got = {
        int(r["step"]): r["miou"] for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if r.get("split") == "val"
    }
    assert got[stop_at] == pytest.approx(ref[stop_at], abs=1e-3)


@pytest.mark.slow
def test_non_finite_update_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tiny_data_dir, tmp_path):
    """Through train.py: exit status 1, one error line naming the step and the last good
    checkpoint, which stays untouched."""
    workdir = str(tmp_path / "nan")
    # The guard is the training loop's, whatever the model: the straight-line HRNetV2 compiles
    # in about half the time of the ODE model.
    training.train_and_evaluate(
        tiny_config(
            tiny_data_dir,
            **{
                "model.name": "hrnetv2",
                "train.num_steps": 2,
                "train.checkpoint_every_steps": 2,
                "train.eval_every_steps": 0,
            },
        ),
        workdir,
    )
    good = checkpoints.load_variables(workdir)
    proc = run_cli(
        "train.py",
        *tiny_cli_flags(tiny_data_dir),
        "--config.model.name=hrnetv2",
        f"--workdir={workdir}",
        "--config.train.num_steps=4",
        "--config.train.checkpoint_every_steps=1",
        "--config.train.learning_rate=1e39",
        "--config.train.eval_every_steps=0",
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Event loop is closed" not in proc.stderr
    assert "training stopped at step 3" in errors[0] and "last good checkpoint is step 2" in errors[0]
    assert "learning_rate" in errors[0]
    assert sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints"))) == [2]
    after = checkpoints.load_variables(workdir)
    for a, b in zip(jax.tree_util.tree_leaves(good), jax.tree_util.tree_leaves(after)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert np.all(np.isfinite(np.asarray(b)))


@pytest.mark.slow
def test_init_from_a_run_starts_from_its_weights(tiny_run, tiny_data_dir, tmp_path):
    import segnode_jax

    source = checkpoints.load_variables(tiny_run[0])
    workdir = str(tmp_path / "init")
    cfg = tiny_config(
        tiny_data_dir,
        **{"train.num_steps": 1, "train.eval_every_steps": 0, "init_from": tiny_run[0], "train.learning_rate": 1e-12},
    )
    training.train_and_evaluate(cfg, workdir)
    loaded = checkpoints.load_variables(workdir)
    # lr 1e-12: one step leaves the parameters at the source's, far from a fresh initialisation.
    fresh = segnode_jax.init(cfg.model, jax.random.key(int(cfg.seed)), (1, 32, 32, 3))
    for a, b, c in zip(*(jax.tree_util.tree_leaves(v["params"]) for v in (source, loaded, fresh))):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-8)
    distance = sum(
        float(np.abs(np.asarray(a) - np.asarray(c)).sum())
        for a, c in zip(jax.tree_util.tree_leaves(source["params"]), jax.tree_util.tree_leaves(fresh["params"]))
    )
    assert distance > 1.0


@pytest.mark.slow
def test_init_from_a_partial_converted_tree_keeps_the_rest_fresh(tiny_data_dir, tmp_path):
    import orbax.checkpoint as ocp

    import segnode_jax

    cfg = tiny_config(
        tiny_data_dir, **{"train.num_steps": 1, "train.eval_every_steps": 0, "train.learning_rate": 1e-12}
    )
    fresh = segnode_jax.init(cfg.model, jax.random.key(int(cfg.seed)), (1, 32, 32, 3))
    kernel = np.asarray(fresh["params"]["stem"]["conv1"]["kernel"])
    converted = tmp_path / "converted"
    os.makedirs(converted)
    writer = ocp.StandardCheckpointer()
    writer.save(str(converted / "variables"), {"params": {"stem": {"conv1": {"kernel": kernel + 1.0}}}})
    writer.wait_until_finished()
    json.dump(
        {"format": "segnode-jax-converted/1", "model": cfg.model.to_dict()}, open(converted / "conversion.json", "w")
    )
    workdir = str(tmp_path / "run")
    with cfg.ignore_type():
        cfg.init_from = str(converted)
    training.train_and_evaluate(cfg, workdir)
    loaded = checkpoints.load_variables(workdir)
    np.testing.assert_allclose(np.asarray(loaded["params"]["stem"]["conv1"]["kernel"]), kernel + 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(loaded["params"]["stem"]["conv2"]["kernel"]),
        np.asarray(fresh["params"]["stem"]["conv2"]["kernel"]),
        rtol=1e-6,
        atol=1e-8,
    )


@pytest.mark.slow
def test_training_step_honours_remat_on_a_cpu(tmp_path):
    """model.remat lowers the compiled training step's memory on a CPU too: the step is compiled
    with jax.checkpoint's optimisation barriers kept (XLA:CPU would otherwise merge the
    recomputation back into the forward pass and save nothing)."""
    mesh = parallel.make_mesh(jax.devices()[:1])

    def temp_bytes(remat: bool) -> int:
        overrides = {
            "model.remat.stem": remat,
            "model.remat.field": remat,
            "model.ode.solver": "euler",
            "model.ode.num_steps": 2,
        }
        cfg = training.resolve_config(tiny_config(tmp_path, **overrides))
        tx, _ = training.make_optimizer(cfg.train, TINY_STEPS)
        b, (h, w) = cfg.train.batch_size, cfg.data.crop_size
        batch = {
            "image": jax.ShapeDtypeStruct((b, h, w, 3), jnp.float32),
            "label": jax.ShapeDtypeStruct((b, h, w), jnp.int32),
        }
        step = training.make_train_step(cfg, TINY_STEPS, mesh)
        compiled = step.lower(training.abstract_train_state(cfg.model, tx), batch).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    # The tiny model has one Bottleneck and one block per branch, so the gain is modest (~15%);
    # without the barriers the remat step needs as much as the plain one, or more.
    assert temp_bytes(True) < 0.95 * temp_bytes(False)


@pytest.mark.slow
def test_the_dataset_configs_adjoint_trains_with_the_exact_gradient(tmp_path):
    """The dataset configs train Dopri5 with the recursive-checkpoint adjoint: through the
    library's step (finite-update guard, NaN on a failed solve) its update is the one direct
    backprop through the same adaptive solve gives (both exact gradients of the discrete solve),
    and it differs from backsolve's (approximate at these tolerances) -- so the adjoint is applied."""
    mesh = parallel.make_mesh(jax.devices()[:1])
    rng = np.random.default_rng(0)
    b, h, w = 2, 32, 32
    batch = {
        "image": jnp.asarray(rng.standard_normal((b, h, w, 3)), jnp.float32),
        "label": jnp.asarray(rng.integers(0, 4, (b, h, w)), jnp.int32),
    }
    updates, losses = {}, {}
    for adjoint in ("recursive_checkpoint", "direct", "backsolve"):
        # max_steps bounds what the direct adjoint compiles (it backpropagates through every step slot)
        overrides = {
            "model.ode.adjoint": adjoint,
            "model.ode.max_steps": 16,
            "train.batch_size": b,
            "data.crop_size": (h, w),
        }
        cfg = training.resolve_config(tiny_config(tmp_path, **overrides))
        tx, _ = training.make_optimizer(cfg.train, TINY_STEPS)
        state = training.create_train_state(cfg.model, tx, jax.random.key(0), (b, h, w, 3))
        before = jax.tree_util.tree_leaves(jax.tree_util.tree_map(np.array, state.params))
        state, metrics = training.make_train_step(cfg, TINY_STEPS, mesh)(state, batch)
        assert int(metrics["ode_nfe"]) > 4, adjoint  # adaptive Dopri5 did take steps
        losses[adjoint] = float(metrics["loss"])
        after = jax.tree_util.tree_leaves(state.params)
        updates[adjoint] = np.concatenate([np.ravel(np.asarray(a) - o) for o, a in zip(before, after)])
    # the same forward solve in two compiled programs: equal to float32's last bits
    assert np.isfinite(losses["recursive_checkpoint"])
    assert losses["recursive_checkpoint"] == pytest.approx(losses["direct"], rel=1e-6)
    exact, direct, back = updates["recursive_checkpoint"], updates["direct"], updates["backsolve"]
    assert np.abs(exact).max() > 0
    # float32 through the same 25-evaluation solve in two differently compiled programs: measured
    # 2.5e-4 and, in other processes on the same host, 3.8e-3 of the update's norm (same NFE, losses
    # equal to the last bit or one ulp apart) -- against 3.3e-2 for backsolve's update. Both are
    # exact (2026-12-07, this step in float64 with jax_enable_x64: 1e-10 apart): the gap is float32
    # rounding in the solver's own arithmetic (with x64 on, whose float64 times and step sizes
    # leave only the network in float32, the two gradients agree to 4e-6).
    assert np.linalg.norm(exact - direct) <= 1e-2 * np.linalg.norm(exact)
    assert np.linalg.norm(exact - back) > 3 * np.linalg.norm(exact - direct)


def test_workdir_of_another_model_is_refused(tiny_run, tiny_data_dir, tmp_path):
    cfg = tiny_config(tiny_data_dir, **{"model.width": 8})
    with pytest.raises(training.ConfigError, match=r"different model \(model.width\)"):
        training.train_and_evaluate(cfg, tiny_run[0])
    # A run saved by an older segnode-jax lacks the model fields added since (they keep their
    # defaults): it resumes; a field both have with another value is still refused.
    saved = json.load(open(os.path.join(tiny_run[0], "config.json")))
    del saved["model"]["task"], saved["model"]["ode"]["rtol"], saved["model"]["unode"]
    older = tmp_path / "older"
    older.mkdir()
    (older / "config.json").write_text(json.dumps(saved))
    from segnode_jax.training import loop

    loop._check_workdir_config(str(older), tiny_config(tiny_data_dir))
    with pytest.raises(training.ConfigError, match=r"different model \(model.ode.atol\)"):
        loop._check_workdir_config(str(older), tiny_config(tiny_data_dir, **{"model.ode.atol": 0.5}))


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,message",
    [
        (["--config=configs/nope.py", "--workdir=/tmp/x"], "nope.py"),
        (
            ["--config=configs/camvid.py", "--workdir={tmp}/w", "--config.data.data_dir={tmp}/empty"],
            "python -m segnode_jax.data.prepare",
        ),
        (["{tiny}", "--workdir={tmp}/w", "--config.train.batch_size=3"], "batch_size"),
    ],
)
def test_train_cli_errors_are_one_clear_message(args, message, tiny_data_dir, tmp_path):
    tiny = " ".join(tiny_cli_flags(tiny_data_dir))
    argv = []
    for a in args:
        argv += a.format(tmp=tmp_path, tiny=tiny).split(" ")
    proc = run_cli("train.py", *argv)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.slow
def test_evaluate_cli_errors(tmp_path, tiny_data_dir, tiny_run):
    proc = run_cli("evaluate.py", f"--ckpt={tmp_path}/missing")
    assert proc.returncode == 2 and f"{tmp_path}/missing" in proc.stderr and "Traceback" not in proc.stderr
    # A checkpoint evaluated with a config of another width: the mismatch is named, nothing is written.
    out = tmp_path / "eval_out"
    proc = run_cli(
        "evaluate.py",
        f"--ckpt={tiny_run[0]}",
        *tiny_cli_flags(tiny_data_dir),
        "--config.model.width=8",
        f"--output={out}",
    )
    assert proc.returncode == 2, proc.stderr
    assert "different model config" in proc.stderr and "omit --config" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
    # A dataset that is not prepared (the synthetic one builds itself; CamVid cannot): the
    # preparation command is named.
    proc = run_cli(
        "evaluate.py",
        f"--ckpt={tiny_run[0]}",
        "--config=configs/camvid.py",
        f"--config.data.data_dir={tmp_path}/no_data",
    )
    assert proc.returncode == 2 and "segnode_jax.data" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    proc = run_cli("evaluate.py", f"--predictions={tmp_path}")
    assert proc.returncode == 2 and "--config" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_folder_config_prepares_your_data_and_takes_the_class_count_from_its_class_file(tmp_path):
    """configs/folder.py + --config.data.root=DIR: no config file to write, no prepare step."""
    from PIL import Image

    import segnode_jax

    root = tmp_path / "my_data"
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for i in range(n):
            mask = np.zeros((24, 32), np.uint8)
            mask[:, 16:] = 1
            mask[8:16, 4:12] = 2
            Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(
                root / "images" / split / f"{i}.jpg"
            )
            Image.fromarray(mask).save(root / "masks" / split / f"{i}.png")
    (root / "classes.json").write_text(json.dumps({"classes": ["background", "wall", "crack"]}))

    cfg = segnode_jax.load_config(os.path.join(REPO, "configs", "folder.py"))
    assert cfg.model.num_classes is None
    tiny = tiny_config(tmp_path)
    with cfg.unlocked():
        for key in ("width", "stem_width", "layer1_planes", "layer1_blocks", "hrnet"):
            cfg.model[key] = tiny.model[key]
    cfg.model.name = "hrnetv2"
    cfg.data.root = str(root)
    cfg.data.data_dir = str(tmp_path / "tfds")
    cfg.data.crop_size = (24, 32)
    cfg.data.num_workers = 0
    cfg.train.update(dict(num_steps=2, batch_size=4, progress_bar=False, eval_every_steps=0, checkpoint_every_steps=2))
    workdir = tmp_path / "run"
    result = training.train_and_evaluate(cfg, str(workdir))
    assert result["step"] == 2
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["model"]["num_classes"] == 3
    assert os.path.isdir(tmp_path / "tfds" / "segnode_folder")
    # A class count that contradicts the class file is refused, naming the value.
    cfg.model.num_classes = 5
    with pytest.raises(segnode_jax.errors.UserError, match=r"model\.num_classes=3"):
        training.train_and_evaluate(cfg, str(tmp_path / "run2"))


@pytest.mark.slow
def test_ocr_step_weights_the_auxiliary_loss_and_learns(tmp_path):
    """model.head=ocr: the step's loss is 1.0 x main + train.loss.aux_weight x auxiliary
    cross-entropy (HRNet-OCR's BALANCE_WEIGHTS), its dropout draws from the run's seed and
    step, and a few steps on one batch lower the loss."""
    from segnode_jax import api, losses

    mesh = parallel.make_mesh(jax.devices()[:1])
    # SegNode+OCR with one unrolled Euler step: the cheapest model to compile (what is tested is
    # the head and the loss, not the solve).
    overrides = {
        "model.name": "segnode",
        "model.ode.solver": "euler",
        "model.ode.num_steps": 1,
        "model.ode.adjoint": "unrolled",
        "model.head": "ocr",
        "model.ocr.mid_channels": 8,
        "model.ocr.key_channels": 4,
        "model.ocr.dropout": 0.5,
        "seed": 3,
    }
    cfg = training.resolve_config(tiny_config(tmp_path, **overrides))
    tx, _ = training.make_optimizer(cfg.train, TINY_STEPS)
    b, (h, w) = cfg.train.batch_size, cfg.data.crop_size
    rng = np.random.default_rng(0)
    batch = {
        "image": jnp.asarray(rng.standard_normal((b, h, w, 3)), jnp.float32),
        "label": jnp.asarray(np.repeat(np.arange(w) * 5 // w, h * b).reshape(b, w, h).transpose(0, 2, 1), jnp.int32),
    }
    state = training.create_train_state(cfg.model, tx, jax.random.key(0), (b, h, w, 3))
    first = jax.tree_util.tree_map(np.array, state.variables)  # the step donates the state
    step = training.make_train_step(cfg, TINY_STEPS, mesh)
    seen = []
    for _ in range(6):
        state, metrics = step(state, batch)
        seen.append(float(metrics["loss"]))
    # The first step's loss, recomputed from the same variables and the same dropout key.
    logits, aux = api.apply(first, batch["image"], cfg.model, train=True, rng=jax.random.fold_in(jax.random.key(3), 0))
    main = losses.cross_entropy(logits, batch["label"])
    extra = losses.cross_entropy(aux["aux_logits"], batch["label"])
    assert seen[0] == pytest.approx(float(main + 0.4 * extra), rel=1e-5)
    assert float(extra) > 0.1 and seen[0] != pytest.approx(float(main), rel=1e-3)
    # Another dropout key gives another loss (dropout is on in training).
    other, _ = api.apply(first, batch["image"], cfg.model, train=True, rng=jax.random.key(99))
    assert float(jnp.abs(other - logits).max()) > 1e-4
    assert np.mean(seen[-2:]) < seen[0]


@pytest.mark.slow
def test_exported_model_folder_loads_everywhere_a_run_does(tiny_run, tmp_path):
    """checkpoints.export_model -> variables/, config.json, model.json: segnode_jax.load gives the
    best checkpoint's weights, and predict.py --ckpt FOLDER writes what predict() on the run's
    best weights gives; the optimiser state is not shipped."""
    from PIL import Image

    import segnode_jax

    workdir, _ = tiny_run
    out = checkpoints.export_model(workdir, str(tmp_path / "model"), which="best", info={"test_miou": 0.5})
    assert sorted(os.listdir(out)) == ["config.json", "model.json", "variables"]
    meta = json.load(open(os.path.join(out, "model.json")))
    assert meta["test_miou"] == 0.5 and meta["class_names"] == ["background", "disc", "square", "triangle", "ring"]
    assert meta["step"] == int(os.listdir(os.path.join(workdir, "best"))[0]) and len(meta["palette"]) == 5
    variables, cfg = segnode_jax.load(out)
    best = checkpoints.load_variables(workdir, which="best")
    jax.tree_util.tree_map(np.testing.assert_array_equal, variables, best)
    assert cfg.model.to_dict() == segnode_jax.load(workdir)[1].model.to_dict()
    with pytest.raises(checkpoints.CheckpointError, match="already exists"):
        checkpoints.export_model(workdir, out)
    image = (np.random.default_rng(0).uniform(size=(40, 52, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "photo.png")
    proc = run_cli("predict.py", f"--ckpt={out}", f"--input={tmp_path / 'photo.png'}", f"--output={tmp_path / 'pred'}")
    assert proc.returncode == 0, proc.stderr
    written = np.asarray(Image.open(tmp_path / "pred" / "labels" / "photo.png"))
    np.testing.assert_array_equal(written, segnode_jax.predict(best, image, cfg))


def _children(pid: int) -> set[int]:
    """Child processes of ``pid``, whichever of its threads started them."""
    out: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out |= {int(c) for c in f.read().split()}
        except OSError:
            pass
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_sigterm_saves_stops_the_workers_and_the_rerun_continues_exactly(tiny_run, tiny_data_dir, tmp_path):
    """What SLURM or a spot machine sends: train.py finishes the step in flight, checkpoints it,
    ends its grain workers, says where it stopped (exit 143), and the same command resumes with
    the uninterrupted run's losses."""
    reference = train_losses(tiny_run[0])
    workdir = str(tmp_path / "term")
    argv = [
        sys.executable,
        os.path.join(REPO, "train.py"),
        *tiny_cli_flags(tiny_data_dir),
        f"--workdir={workdir}",
        "--config.data.num_workers=2",
    ]
    proc = subprocess.Popen(argv, cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    seen, workers, lines = 0, set(), []
    for line in proc.stderr:
        lines.append(line)
        workers |= _children(proc.pid)
        if line.startswith("step ") and "loss" in line:
            seen = int(line.split()[1])
            if seen >= 6:
                proc.send_signal(signal.SIGTERM)
                break
    err = "".join(lines) + proc.stderr.read()
    assert proc.wait(timeout=300) == 143, err
    stopped = [line for line in err.splitlines() if line.startswith("error: stopped by SIGTERM")]
    assert len(stopped) == 1 and "Rerun the same command to resume" in stopped[0] and "Traceback" not in err, err
    step = int(stopped[0].split(" at step ")[1].split()[0])
    assert step >= 6 and os.path.isdir(os.path.join(workdir, "checkpoints", str(step), "state")), err
    # No grain worker left behind (the bug: both alive a minute after train.py died). multiprocessing's
    # resource tracker leaves by itself once its pipe to the parent closes: allow it a few seconds.
    deadline = time.time() + 10
    while [pid for pid in workers if _alive(pid)] and time.time() < deadline:
        time.sleep(0.2)
    assert workers and not [pid for pid in workers if _alive(pid)], workers
    proc = run_cli("train.py", *tiny_cli_flags(tiny_data_dir), f"--workdir={workdir}", "--config.data.num_workers=2")
    assert proc.returncode == 0 and f"from step {step}" in proc.stderr, proc.stderr
    continued = train_losses(workdir)
    assert sorted(continued) == list(range(1, TINY_STEPS + 1))
    for s in range(1, TINY_STEPS + 1):
        assert continued[s] == pytest.approx(reference[s], rel=1e-6, abs=1e-7), s


def test_a_non_finite_gradient_with_a_finite_loss_names_the_backward_solve_under_backsolve(tiny_data_dir):
    """With ``on_failure="nan"`` a failed backward (adjoint) solve shows only as NaN gradients:
    the training loop's error then names the backward solve's settings (not for other adjoints,
    nor when the loss itself is not finite)."""
    from segnode_jax.training import loop

    cfg = tiny_config(tiny_data_dir, **{"model.ode.adjoint": "backsolve"})
    hint = loop._backward_solve_hint(cfg, {"loss": 0.7, "grad_norm": float("nan")})
    assert "backward (adjoint) solve" in hint and "model.ode.max_steps (now" in hint and "adjoint_rtol" in hint
    assert loop._backward_solve_hint(cfg, {"loss": float("nan"), "grad_norm": float("nan")}) == ""
    other = tiny_config(tiny_data_dir, **{"model.ode.adjoint": "recursive_checkpoint"})
    assert loop._backward_solve_hint(other, {"loss": 0.7, "grad_norm": float("nan")}) == ""
