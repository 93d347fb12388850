"""Every enumerated config field is checked before any work starts: each choice misspelled gives
one ConfigError naming the field and its choices; through the real CLIs, one ``error:`` line,
exit status 2, no traceback and nothing written."""

from __future__ import annotations

import os

import pytest

import segnode_jax
from segnode_jax import checks
from segnode_jax.errors import ConfigError, UserError
from tests.conftest import REPO, run_cli

TINY = os.path.join(REPO, "configs", "tiny.py")


def misspelt(value):
    if value is None or isinstance(value, int):
        return 7  # no depth, stride or count of these lists
    return str(value).upper() + "x"


@pytest.mark.parametrize("path", sorted(checks.choices()))
def test_each_enumerated_field_misspelt_names_the_field_and_its_choices(path):
    allowed = checks.choices()[path]
    cfg = segnode_jax.load_config(TINY)
    checks.check_config(cfg)  # the config as it is passes
    for value in allowed:  # so does every choice
        segnode_jax.config.apply_overrides(cfg, {path: value})
        checks.check_config(cfg)
    bad = misspelt(allowed[-1])
    segnode_jax.config.apply_overrides(cfg, {path: bad})
    with pytest.raises(ConfigError) as e:
        checks.check_config(cfg)
    assert isinstance(e.value, UserError) and f"invalid {path}={bad!r}" in str(e.value)
    for value in allowed:
        assert ("None" if value is None else str(value)) in str(e.value).split("choose one of", 1)[1]


@pytest.mark.parametrize(
    "path,value",
    [("eval.batch_size", 0), ("train.batch_size", -1), ("model.ode.max_steps", 0), ("model.ode.checkpoints", 0)],
)
def test_counts_must_be_positive(path, value):
    cfg = segnode_jax.load_config(TINY)
    segnode_jax.config.apply_overrides(cfg, {path: value})
    with pytest.raises(ConfigError, match=f"invalid {path.replace('.', '[.]')}={value}; give a positive integer"):
        checks.check_config(cfg)


@pytest.mark.parametrize(
    "path,value,fragment",
    [
        ("data.eval_size", "big", "data.eval_size must be (height, width), a single size or None, got 'big'"),
        ("data.eval_size", (360, 480, 3), "data.eval_size must be (height, width)"),
        ("data.eval_size", (360, -480), "data.eval_size must be (height, width)"),
        ("data.eval_size", 0, "data.eval_size must be (height, width), a single size or None, got 0"),
        ("data.num_classes", 11.5, "data.num_classes must be a whole number or None, got 11.5"),
        ("data.num_classes", "11", "data.num_classes must be a whole number or None, got '11'"),
    ],
)
def test_typed_data_fields_are_checked_before_any_work(path, value, fragment):
    cfg = segnode_jax.load_config(TINY)
    segnode_jax.config.apply_overrides(cfg, {path: value})
    with pytest.raises(ConfigError) as e:
        checks.check_config(cfg)
    assert fragment in str(e.value)


def assert_one_error_line(proc, *fragments):
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides,fragments",
    [
        (["--config.eval.mode=slid"], ["invalid eval.mode='slid'", "whole, slide, multiscale, hrnet"]),
        (["--config.eval.miou_over=every"], ["invalid eval.miou_over='every'", "present, all"]),
        (["--config.model.dtype=fp16"], ["invalid model.dtype='fp16'", "float32, bfloat16"]),
        (["--config.model.head=OCR"], ["invalid model.head='OCR'", "default, ocr"]),
        (
            ["--config.model.name=pspnet", "--config.model.resnet.depth=34"],
            ["invalid model.resnet.depth=34", "50, 101, 152"],
        ),
        (["--config.model.field.time_dependence=x"], ["invalid model.field.time_dependence='x'", "none, concat"]),
    ],
)
def test_train_cli_refuses_before_any_work(overrides, fragments, tmp_path):
    workdir = tmp_path / "w"
    proc = run_cli(
        "train.py",
        f"--config={TINY}",
        f"--workdir={workdir}",
        f"--config.data.data_dir={tmp_path / 'd'}",
        *overrides,
        devices=1,
    )
    assert_one_error_line(proc, *fragments)
    assert not workdir.exists() and not (tmp_path / "d").exists()


@pytest.mark.slow
def test_evaluate_and_predict_cli_refuse_before_any_work(tmp_path):
    weights = tmp_path / "weights"
    (weights / "variables").mkdir(parents=True)  # a converted-weights folder: read only after the config is checked
    proc = run_cli(
        "evaluate.py",
        f"--ckpt={weights}",
        f"--config={TINY}",
        "--config.eval.miou_over=every",
        f"--output={tmp_path / 'out'}",
        devices=1,
    )
    assert_one_error_line(proc, "invalid eval.miou_over='every'", "present, all")
    proc = run_cli(
        "predict.py",
        f"--ckpt={weights}",
        f"--config={TINY}",
        "--batch_size=-1",
        f"--input={tmp_path}",
        f"--output={tmp_path / 'pred'}",
        devices=1,
    )
    assert_one_error_line(proc, "--batch_size=-1", "is not a positive integer")
    assert not (tmp_path / "out").exists() and not (tmp_path / "pred").exists()
