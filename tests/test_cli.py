"""The command-line tools: exit status 2 and exactly one ``error:`` line for bad input, 1 for a
failed run, never a traceback; ``--config.a.b=None`` unsets an optional field. (A non-finite
loss through the CLI: tests/training/test_training.py.)"""

from __future__ import annotations

import json
import os
import textwrap

import pytest
from absl import flags
from ml_collections import config_flags

from segnode_jax import cli
from tests.conftest import REPO, run_cli, tiny_cli_flags

TINY = os.path.join(REPO, "configs", "tiny.py")


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_one_error(proc, code: int, *fragments: str) -> str:
    lines = error_lines(proc.stderr)
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Event loop is closed" not in proc.stderr, proc.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,fragments",
    [
        ([f"--config={TINY}"], ["--workdir", "Usage: python train.py"]),
        (
            [f"--config={TINY}", "--workdir={tmp}/w", "--config.model.name=segnet"],
            ["'segnet'", "segnode", "hrnetv2", "baseline"],
        ),
        (
            [f"--config={TINY}", "--workdir={tmp}/w", "--config.model.ode.max_steps=None"],
            ["model.ode.max_steps", "not optional"],
        ),
        ([f"--config={TINY}", "--workdir={tmp}/w", "--config.model.ode.nope=None"], ["model.ode.nope"]),
        ([f"--config={TINY}", "--workdir={tmp}/w", "--config.model.ode.solver=rk4"], ["model.ode.num_steps"]),
        ([f"--config={TINY}", "--workdir={tmp}/w", "stray"], ["unexpected arguments: stray"]),
        (["--config=configs/nope.py", "--workdir={tmp}/w"], ["nope.py"]),
    ],
    ids=[
        "no-workdir",
        "model-typo",
        "unset-required",
        "unset-unknown",
        "rk4-without-steps",
        "stray-arg",
        "no-config-file",
    ],
)
def test_train_cli_bad_input_exits_2_with_one_error_line(args, fragments, tmp_path, tiny_data_dir):
    argv = [a.format(tmp=tmp_path) for a in args]
    if "--workdir" in " ".join(argv):
        argv.append(f"--config.data.data_dir={tiny_data_dir}")
    assert_one_error(run_cli("train.py", *argv), 2, *fragments)


def test_compilation_cache_folder_follows_the_environment(tmp_path):
    home = os.path.expanduser("~")
    assert cli.compilation_cache_dir({}) == os.path.join(home, ".cache", "segnode_jax", "jax")
    assert cli.compilation_cache_dir({"XDG_CACHE_HOME": "/x"}) == os.path.join("/x", "segnode_jax", "jax")
    assert cli.compilation_cache_dir({"SEGNODE_COMPILATION_CACHE": str(tmp_path)}) == str(tmp_path)
    for off in ("off", "0", "OFF", "none"):
        assert cli.compilation_cache_dir({"SEGNODE_COMPILATION_CACHE": off}) is None
    # JAX's own variable wins (JAX reads it itself).
    both = {"SEGNODE_COMPILATION_CACHE": "off", "JAX_COMPILATION_CACHE_DIR": "/jax"}
    assert cli.compilation_cache_dir(both) == "/jax"


def test_an_unwritable_compilation_cache_folder_turns_the_cache_off_with_one_note(tmp_path, monkeypatch, capsys):
    import jax

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("SEGNODE_COMPILATION_CACHE", str(blocker / "cache"))  # under a file: cannot be made
    before = jax.config.jax_compilation_cache_dir
    assert cli.use_compilation_cache() is None
    assert jax.config.jax_compilation_cache_dir == before  # the session's cache is left as it was
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("note: compilation cache off") and "SEGNODE_COMPILATION_CACHE" in err[0]


def test_none_overrides_are_parsed_and_applied():
    argv = cli.split_none_overrides(
        [
            "prog",
            "--config.model.ode.num_steps=None",
            "--config.model.ode.dt0",
            "none",
            "--config.seed=3",
            "--other=None",
        ]
    )
    assert argv == ["prog", "--config.seed=3", "--other=None"]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True)
    fv(["prog", f"--config={os.path.join(REPO, 'configs', 'synthetic.py')}"])
    cfg = cli.read_config(fv)
    assert cfg.model.ode.num_steps is None and cfg.model.ode.dt0 is None
    assert cli.split_none_overrides(["prog"]) == ["prog"]  # the next parse starts afresh
    assert cli.read_config(fv).model.ode.num_steps is None  # (already applied to the loaded config)


@pytest.mark.slow
def test_train_cli_switches_a_fixed_step_config_back_to_adaptive_and_a_failed_solve_exits_1(tmp_path, tiny_data_dir):
    """The main job's config uses fixed steps; the paper's adaptive Dopri5 solve is one flag
    away (--config.model.ode.num_steps=None). Here that adaptive solve is then made to fail
    (max_steps=1 at tolerance 1e-9): the run ends with exit status 1 and one error line whose
    settings show that the adaptive solve was the one used. On the tests' 4 devices: the step
    returns the failure with its metrics and the host raises it (raised inside the sharded step,
    it once left the other devices waiting in the all-reduce until XLA aborted the process)."""
    fixed = tmp_path / "fixed_steps.py"
    fixed.write_text(
        textwrap.dedent(f"""
        import segnode_jax

        def get_config():
            cfg = segnode_jax.load_config({TINY!r})
            cfg.model.ode.solver = "rk4"
            cfg.model.ode.num_steps = 2
            return cfg
    """)
    )
    work = tmp_path / "run"
    flags_ = [f if not f.startswith("--config=") else f"--config={fixed}" for f in tiny_cli_flags(tiny_data_dir)]
    proc = run_cli(
        "train.py",
        *flags_,
        f"--workdir={work}",
        "--config.train.num_steps=2",
        "--config.train.eval_every_steps=0",
        "--config.model.ode.solver=dopri5",
        "--config.model.ode.num_steps=None",
        "--config.model.ode.max_steps=1",
        "--config.model.ode.rtol=1e-9",
        "--config.model.ode.atol=1e-9",
        devices=4,
    )
    line = assert_one_error(proc, 1, "model.ode.max_steps", "training stopped at step 1:")
    settings = line.split("[settings:")[1].split("]")[0]
    assert "solver=dopri5, rtol=1e-09" in settings and "num_steps" not in settings, line
    saved = json.loads((work / "config.json").read_text())
    assert saved["model"]["ode"]["solver"] == "dopri5" and saved["model"]["ode"]["num_steps"] is None


def test_camvid_main_job_without_data_names_download_and_manual_dir(tmp_path):
    """``bash scripts/main.sh camvid`` on a machine without CamVid: one line naming both ways to get it."""
    import subprocess

    env = dict(os.environ, SEGNODE_DATA_DIR=str(tmp_path / "tfds"), WORKDIR=str(tmp_path / "run"))
    proc = subprocess.run(
        ["bash", "scripts/main.sh", "camvid"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert_one_error(proc, 2, "the camvid dataset is not prepared", "--dataset camvid --download", "--manual_dir")
    assert not (tmp_path / "run" / "checkpoints").exists()


WARNING_LINE = __import__("re").compile(r"^(W\d{4} |WARNING:|.*\w+Warning: )")


@pytest.mark.slow
def test_happy_paths_print_no_warnings(tmp_path):
    """prepare, train, evaluate and predict as a new user first runs them: stderr carries our own
    lines only (no runpy, absl, orbax or Python warning a user cannot act on)."""
    import subprocess
    import sys

    from PIL import Image

    data_dir, run = tmp_path / "tfds", tmp_path / "run"
    procs = [
        subprocess.run(
            [
                sys.executable,
                "-m",
                "segnode_jax.data.prepare",
                "--dataset",
                "synthetic",
                "--set",
                "num_train=4",
                "--set",
                "num_val=2",
                "--set",
                "image_size=(32, 32)",
                "--data_dir",
                str(data_dir),
                "--no_progress",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
    ]
    procs.append(
        run_cli(
            "train.py",
            f"--config={TINY}",
            f"--workdir={run}",
            f"--config.data.data_dir={data_dir}",
            "--config.train.num_steps=2",
            "--config.train.progress_bar=False",
            devices=1,
        )
    )
    procs.append(run_cli("evaluate.py", f"--ckpt={run}", f"--output={run / 'eval'}", devices=1))
    Image.new("RGB", (40, 30), (90, 20, 200)).save(tmp_path / "photo.png")
    procs.append(
        run_cli(
            "predict.py",
            f"--ckpt={run}",
            f"--input={tmp_path / 'photo.png'}",
            f"--output={tmp_path / 'pred'}",
            devices=1,
        )
    )
    for proc in procs:
        assert proc.returncode == 0, proc.stderr
        warnings = [line for line in proc.stderr.splitlines() if WARNING_LINE.match(line)]
        assert warnings == [], (proc.args, warnings)
