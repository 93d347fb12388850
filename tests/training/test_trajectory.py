"""evaluate.py --trajectory on the tiny SegNode run: mIoU along the solve, the solver sweep,
the recommendation, and the files it writes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from segnode_jax import checkpoints, evaluation
from segnode_jax.evaluation import trajectory
from tests.conftest import run_cli, tiny_cli_flags, tiny_config


def test_recommend_picks_the_fastest_within_the_allowed_drop():
    rows = [
        {"setting": "a", "miou": 0.50, "seconds_per_image": 3.0},
        {"setting": "b", "miou": 0.495, "seconds_per_image": 1.0},
        {"setting": "c", "miou": 0.40, "seconds_per_image": 0.1},
        {"setting": "hrnetv2 (same width)", "seconds_per_image": 2.0},
    ]
    rec = trajectory.recommend(rows, 0.01)
    assert rec["setting"] == "b" and rec["best_miou"] == 0.50 and rec["time_vs_hrnetv2"] == 0.5
    assert trajectory.recommend(rows, 0.2)["setting"] == "c"


@pytest.mark.slow
def test_trajectory_cli_writes_the_curve_sweep_plot_and_strips(tiny_run, tiny_data_dir, tmp_path):
    out = tmp_path / "traj"
    proc = run_cli(
        "evaluate.py",
        f"--ckpt={tiny_run[0]}",
        "--trajectory",
        "--num_images=2",
        "--split=train",
        *tiny_cli_flags(tiny_data_dir),
        "--config.eval.trajectory.num_times=3",
        "--config.eval.trajectory.sweep=('euler:1','rk4:1')",
        f"--output={out}",
    )
    assert proc.returncode == 0, proc.stderr
    assert "fast inference:" in proc.stdout
    res = json.loads((out / "trajectory.json").read_text())
    along = res["along_trajectory"]
    assert res["split"] == "train"  # --split reaches the trajectory
    assert along["t"] == pytest.approx([1 / 3, 2 / 3, 1.0]) and along["num_images"] == 2
    assert [r["setting"] for r in res["sweep"]] == ["euler:1", "rk4:1", "hrnetv2 (same width)"]
    assert [r["mean_nfe"] for r in res["sweep"][:2]] == [1.0, 4.0]
    # The recommendation is recommend()'s answer on the written sweep and the configured drop.
    assert res["recommended"] == trajectory.recommend(res["sweep"], 0.01)
    assert res["recommended"]["setting"] in ("euler:1", "rk4:1")
    assert (out / "trajectory.png").stat().st_size > 0
    assert len(os.listdir(out / "strips")) == 2
    # The last point of the trajectory is the model's own prediction: it equals a plain
    # evaluation of the same images.
    cfg = tiny_config(tiny_data_dir)
    settings = evaluation.EvalSettings.from_config(cfg, split="train", num_images=2, batch_size=1)
    settings.num_visualizations = 0
    plain = evaluation.evaluate(checkpoints.load_variables(tiny_run[0]), cfg, settings=settings)
    assert along["miou"][-1] == pytest.approx(plain["miou"], abs=1e-9)
    assert along["mean_nfe"] == pytest.approx(plain["mean_nfe"])
    assert np.all(np.isfinite(along["miou"]))


def test_trajectory_of_a_model_without_ode_is_refused(tiny_run, tiny_data_dir, tmp_path):
    proc = run_cli(
        "evaluate.py",
        f"--ckpt={tiny_run[0]}",
        "--trajectory",
        *tiny_cli_flags(tiny_data_dir),
        "--config.model.name=hrnetv2",
    )
    assert (
        proc.returncode == 2
        and "needs a model that saves its predictions along the ODE solve (segnode)" in proc.stderr
        and "Traceback" not in proc.stderr
    ), proc.stderr
