"""Damaged checkpoints and a full disk: one clear line, the newest intact checkpoint used, nothing
already written lost."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys

import pytest

from segnode_jax import checkpoints, training, weights
from tests.conftest import (
    REPO,
    TINY_CHECKPOINT_EVERY,
    TINY_STEPS,
    run_cli,
    tiny_cli_flags,
    tiny_config,
    train_losses,
    xla_flags,
)


def _damage(step_dir: str) -> str:
    """Truncates the largest data file of a checkpoint's train state (as a broken copy would)."""
    files = glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True)
    victim = max(files, key=os.path.getsize)
    with open(victim, "r+b") as f:
        f.truncate(64)
    return victim


@pytest.mark.slow
def test_resume_skips_a_damaged_newest_checkpoint_and_continues_exactly(tiny_run, tiny_data_dir, tmp_path, capsys):
    workdir = str(tmp_path / "run")
    shutil.copytree(tiny_run[0], workdir)
    newest = os.path.join(workdir, "checkpoints", str(TINY_STEPS))
    _damage(newest)
    previous = TINY_STEPS - TINY_CHECKPOINT_EVERY
    before = train_losses(tiny_run[0])

    result = training.train_and_evaluate(tiny_config(tiny_data_dir), workdir)

    err = capsys.readouterr().err
    assert f"checkpoint {TINY_STEPS} in" in err and "is damaged" in err and f"step {previous}" in err, err
    assert result["step"] == TINY_STEPS
    # Set aside, not deleted; the steps after the intact checkpoint are trained again, exactly.
    assert os.path.isdir(os.path.join(workdir, checkpoints.DAMAGED_DIR, str(TINY_STEPS), "state"))
    assert os.path.isdir(os.path.join(workdir, "checkpoints", str(TINY_STEPS)))
    after = train_losses(workdir)
    for step in range(previous + 1, TINY_STEPS + 1):
        assert after[step] == before[step], step


def test_every_checkpoint_damaged_is_one_clear_error(tiny_run, tiny_data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(tiny_run[0], workdir)
    for step_dir in glob.glob(os.path.join(workdir, "checkpoints", "*")):
        _damage(step_dir)
    with pytest.raises(checkpoints.CheckpointError, match="every checkpoint in .* is damaged"):
        training.train_and_evaluate(tiny_config(tiny_data_dir), workdir)
    assert not os.path.exists(os.path.join(workdir, checkpoints.DAMAGED_DIR))  # nothing moved


@pytest.mark.slow
def test_evaluate_uses_the_newest_intact_checkpoint_or_names_the_damaged_one(tiny_run, tiny_data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(tiny_run[0], workdir)
    newest = os.path.join(workdir, "checkpoints", str(TINY_STEPS))
    _damage(newest)
    previous = os.path.join(workdir, "checkpoints", str(TINY_STEPS - TINY_CHECKPOINT_EVERY))
    loaded = checkpoints.load_variables(workdir)
    intact = checkpoints.load_variables(previous)
    assert weights.flatten(loaded).keys() == weights.flatten(intact).keys()
    assert all(
        (a == intact_leaf).all()
        for a, intact_leaf in zip(weights.flatten(loaded).values(), weights.flatten(intact).values())
    )
    # What evaluate.py reports (results.json's "checkpoint" and "step") is the one it read.
    from segnode_jax import scoring

    _, _, pytree_dir, description = scoring.load_model(workdir)
    assert (
        scoring._step_of(pytree_dir) == TINY_STEPS - TINY_CHECKPOINT_EVERY and description == f"checkpoint {previous}"
    )
    # The damaged step named explicitly: one error line naming it, exit status 2.
    proc = run_cli("evaluate.py", f"--ckpt={newest}", f"--output={tmp_path}/out")
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(lines) == 1 and newest in lines[0] and "damaged" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and "Event loop is closed" not in proc.stderr


def _mount_tmpfs(path: str, size: str) -> bool:
    os.makedirs(path, exist_ok=True)
    try:
        return (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], capture_output=True
            ).returncode
            == 0
        )
    except OSError:
        return False


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_a_rerun_after_freeing_space_resumes(tiny_data_dir, tmp_path):
    disk = str(tmp_path / "disk")
    flags = [
        *tiny_cli_flags(tiny_data_dir),
        f"--workdir={disk}/run",
        "--config.model.name=hrnetv2",
        "--config.train.num_steps=12",
        "--config.train.checkpoint_every_steps=2",
        "--config.train.eval_every_steps=0",
    ]
    # Room for one or two checkpoints of this model (about 1 MB each), not for six.
    if not _mount_tmpfs(disk, "2600k"):
        pytest.skip(
            "mounting a small tmpfs is refused on this host (needs root / CAP_SYS_ADMIN): the real full disk "
            "is not tested here; test_a_disk_full_in_orbax_is_one_line_through_the_cli covers the message"
        )
    try:
        proc = run_cli("train.py", *flags, devices=1)
        lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 1 and len(lines) == 1, proc.stderr
        assert "Traceback" not in proc.stderr and "Event loop is closed" not in proc.stderr, proc.stderr
        assert "the disk is full" in lines[0] and f"{disk}/run/checkpoints" in lines[0]
        good = re.search(r"last good checkpoint is step (\d+)", lines[0])
        assert good and int(good.group(1)) in (2, 4) and "rerunning the same command resumes" in lines[0], lines[0]
        assert os.path.isdir(f"{disk}/run/checkpoints/{good.group(1)}/state")
        # Free space; the same command resumes from that checkpoint and finishes.
        assert subprocess.run(["mount", "-o", "remount,size=64m", disk]).returncode == 0
        proc = run_cli("train.py", *flags, devices=1)
        assert proc.returncode == 0, proc.stderr
        assert f"from step {good.group(1)}" in proc.stderr, proc.stderr
        assert sorted(train_losses(f"{disk}/run")) == list(range(1, 13))
    finally:
        subprocess.run(["umount", "-l", disk])


@pytest.mark.slow
def test_a_disk_full_in_orbax_is_one_line_through_the_cli(tiny_data_dir, tmp_path):
    """Where no tmpfs can be mounted too: ENOSPC raised inside orbax's save (from the second
    checkpoint on; tests/training/full_disk_after_first_save.py) ends train.py with the one line."""
    workdir = str(tmp_path / "sim")
    flags = [
        *tiny_cli_flags(tiny_data_dir),
        f"--workdir={workdir}",
        "--config.model.name=hrnetv2",
        "--config.train.num_steps=12",
        "--config.train.checkpoint_every_steps=2",
        "--config.train.eval_every_steps=0",
    ]
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "training", "full_disk_after_first_save.py"), *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, XLA_FLAGS=xla_flags(1)),
    )
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Event loop is closed" not in proc.stderr, proc.stderr
    assert "the disk is full" in lines[0] and "last good checkpoint is step 2" in lines[0], lines[0]
    assert "rerunning the same command resumes" in lines[0] and os.path.isdir(f"{workdir}/checkpoints/2/state")
