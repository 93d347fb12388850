"""Test-wide JAX settings: several virtual CPU devices and strict promotion rules.

Set before JAX initialises its backends (conftest is imported before the test modules).
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# XLA:CPU's LLVM backend at optimisation level 0: the suite's tiny models spend their time
# compiling, not running, and this compiles ~35% faster (measured on the model tests). XLA's
# own HLO passes (fusion, layouts, buffer assignment, remat's barriers, hence every analysed
# memory) are unchanged; only the machine code is less optimised, and float results may differ
# from the default build in the last bits. Subprocesses get the same flags (xla_flags()).
# XLA:CPU's older (non-MLIR) fusion emitters compile the suite's tiny models faster again
# (about a quarter on the training-step tests, 2026-12-02). They do change the analysed
# memory a little (a 128x128 SegNode training step with remat: 71.6 MB of temporaries instead
# of 77.8 MB): the memory tests compare settings within one build, and the benchmarks'
# numbers (benchmarks/, README) come from the default build.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"


def xla_flags(devices: int) -> str:
    """XLA_FLAGS for a process of the suite that sees ``devices`` virtual CPU devices."""
    return f"--xla_force_host_platform_device_count={devices} {TEST_XLA_FLAGS}"


_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    _flags = (_flags + " --xla_force_host_platform_device_count=4").strip()
if "xla_backend_optimization_level" not in _flags:
    _flags = f"{_flags} {TEST_XLA_FLAGS}"
os.environ["XLA_FLAGS"] = _flags

# One persistent compilation cache for the whole session (the xdist workers and every CLI
# subprocess inherit it): a function compiled once -- the tiny training step, its evaluation --
# loads from it in the next process instead of compiling again. Fresh per session (removed at
# exit by the process that made it): no test depends on what an earlier run left.
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    import atexit
    import shutil
    import tempfile

    _cache = tempfile.mkdtemp(prefix="segnode-jax-test-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, True)

import jax  # noqa: E402

# Catch silent dtype/rank promotions in our code (diffrax, flax and optax run under them too).
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


# ---------------------------------------------------------------------------------------
# Training/evaluation fixtures (tests/training/, tests/evaluation/test_evaluation.py, tests/test_cli.py).

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tiny run every training test shares: long enough to kill a CLI run in the middle.
TINY_STEPS = 24
TINY_CHECKPOINT_EVERY = 4
# Validations during the run (so that the best checkpoint is chosen among several).
TINY_EVAL_EVERY = 8


def tiny_config(data_dir, **overrides):
    """configs/tiny.py on a test data dir, with ``{"train.num_steps": 8}``-style overrides."""
    import segnode_jax

    cfg = segnode_jax.load_config(os.path.join(REPO, "configs", "tiny.py"))
    cfg.data.data_dir = str(data_dir)
    cfg.train.num_steps = TINY_STEPS
    cfg.train.checkpoint_every_steps = TINY_CHECKPOINT_EVERY
    cfg.train.eval_every_steps = TINY_EVAL_EVERY
    return segnode_jax.config.apply_overrides(cfg, overrides)


def tiny_cli_flags(data_dir):
    """The command-line flags equivalent to ``tiny_config(data_dir)``."""
    return [
        f"--config={os.path.join(REPO, 'configs', 'tiny.py')}",
        f"--config.data.data_dir={data_dir}",
        f"--config.train.num_steps={TINY_STEPS}",
        f"--config.train.checkpoint_every_steps={TINY_CHECKPOINT_EVERY}",
        f"--config.train.eval_every_steps={TINY_EVAL_EVERY}",
    ]


# The test files that use the tiny_run fixture run on one xdist worker: the run is trained
# once, and the tests that continue it in-process reuse its compiled step. scripts/test.sh
# distributes by file (--dist loadfile); the scheduler below makes these files one unit, and
# they are collected first, as the largest unit, so that the other worker takes the remaining
# files meanwhile. (xdist's own --dist loadgroup does not group under pytest 9: it renames
# items through an attribute that pytest 9 no longer reads.)
TINY_RUN_FILES = (
    "tests/training/test_training.py",
    "tests/training/test_parallel.py",
    "tests/training/test_checkpoint_failures.py",
    "tests/training/test_trajectory.py",
)


def _unit(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return "tiny_run" if path in TINY_RUN_FILES else path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FilesAndTinyRun(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return _unit(nodeid)

    return FilesAndTinyRun(config, log)


# Fixtures that train or prepare for a minute or more: a test that needs one is slow, whatever
# its own call takes (scripts/mark_slow.py marks the rest from measured times).
SLOW_FIXTURES = {"tiny_run", "pretrained", "one_step_results", "demo_model"}


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: _unit(item.nodeid) != "tiny_run")
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def run_cli(script, *args, timeout=600, devices=None):
    """Runs ``python <script> args`` from the repository root; returns the CompletedProcess.
    ``devices``: the number of (virtual CPU) devices it sees (default: the tests' 4)."""
    env = None
    if devices is not None:
        env = dict(os.environ, XLA_FLAGS=xla_flags(devices))
    return subprocess.run(
        [sys.executable, os.path.join(REPO, script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def random_model_dir(out, seed: int = 3):
    """A tiny SegNode's random weights in the converter's layout (``out/variables``) with a
    config.json: what ``--ckpt`` takes. ``(path, cfg, variables)``. For tests of the plumbing
    (prediction, export, the demo), not of accuracy."""
    import orbax.checkpoint as ocp

    import segnode_jax

    cfg = tiny_config(out / "unused_data")
    variables = segnode_jax.init(cfg.model, jax.random.key(seed), (1, 32, 32, 3))
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(str(out / "variables"), jax.device_get(variables))
    ckpt.wait_until_finished()
    (out / "conversion.json").write_text(json.dumps({"note": "test weights"}))
    segnode_jax.config.save_config(str(out), cfg)
    return str(out), cfg, jax.device_get(variables)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def train_losses(workdir):
    """Per-step training loss from a run's metrics.jsonl (the last record of each step wins)."""
    out = {}
    for rec in read_jsonl(os.path.join(workdir, "metrics.jsonl")):
        if rec.get("split", "train") == "train" and "loss" in rec:
            out[int(rec["step"])] = float(rec["loss"])
    return out


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """A data dir holding the tiny synthetic dataset (built once per session)."""
    from segnode_jax import data

    root = tmp_path_factory.mktemp("tiny_data")
    data.ensure_prepared(tiny_config(root).data)
    return root


@pytest.fixture(scope="session")
def tiny_run(tiny_data_dir, tmp_path_factory):
    """One uninterrupted tiny SegNode run (in this process): ``(workdir, result)``."""
    from segnode_jax import training

    workdir = tmp_path_factory.mktemp("tiny_run") / "run"
    result = training.train_and_evaluate(tiny_config(tiny_data_dir), str(workdir))
    return str(workdir), result


@pytest.fixture(autouse=True)
def _data_dir_in_tmp(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's ~/tensorflow_datasets: the default data dir
    (``$SEGNODE_DATA_DIR``) is a temporary folder shared by the session."""
    monkeypatch.setenv("SEGNODE_DATA_DIR", str(tmp_path_factory.getbasetemp() / "default_data_dir"))
