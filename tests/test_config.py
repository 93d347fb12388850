import os

import pytest

import segnode_jax


def test_base_config_has_paper_defaults():
    cfg = segnode_jax.base_config()
    assert cfg.model.width == 48
    assert cfg.model.ode.solver == "dopri5"
    assert cfg.model.ode.adjoint == "backsolve"


@pytest.mark.parametrize("name", ["camvid", "cityscapes", "pascal_context", "lip", "folder"])
def test_dataset_configs_train_the_papers_solve_with_the_recursive_checkpoint_adjoint(name):
    # benchmarks/README.md "Where a solve's time goes": exact gradients at a quarter of backsolve's
    # step; Table 2's rows keep the paper's backsolve.
    from benchmarks import table2

    ode = segnode_jax.load_config(f"configs/{name}.py").model.ode
    assert (ode.solver, ode.num_steps, ode.adjoint) == ("dopri5", None, "recursive_checkpoint")
    assert table2.model_config(table2.VARIANTS["segnode"][1]).ode.adjoint == "backsolve"
    assert table2.model_config(table2.VARIANTS["segnode/recursive_checkpoint"][1]).ode.adjoint == "recursive_checkpoint"


def test_load_config_missing_file_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="configs/camvid.py"):
        segnode_jax.load_config(tmp_path / "nope.py")


def test_load_config_without_get_config(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("x = 1\n")
    with pytest.raises(ValueError, match="no get_config"):
        segnode_jax.load_config(path)


def test_model_size_sets_the_fields_together_and_explicit_fields_win():
    from segnode_jax.config import MODEL_SIZES, resolve_model_size

    cfg = segnode_jax.load_config("configs/camvid.py")
    cfg.model.size = "small"
    resolve_model_size(cfg.model)
    m = cfg.model
    got = (
        m.width,
        m.stem_width,
        m.layer1_planes,
        m.layer1_blocks,
        m.segnode.modules_per_field,
        m.segnode.blocks_per_branch,
        m.field.groups,
    )
    assert got == (16, 32, 16, 2, 1, 2, 4)
    assert resolve_model_size(m) is m and (m.width, m.stem_width) == (16, 32)  # idempotent
    cfg = segnode_jax.load_config("configs/camvid.py")
    cfg.model.size, cfg.model.width = "small", 24
    resolve_model_size(cfg.model)
    assert (cfg.model.width, cfg.model.stem_width) == (24, 32)
    assert set(MODEL_SIZES) == {"w48", "w32", "w18", "small", "tiny"}


def test_model_size_reaches_the_network_through_the_api():
    """count_params of size=tiny equals that of the same fields written out (configs/synthetic.py's network)."""
    cfg = segnode_jax.load_config("configs/camvid.py")
    cfg.model.num_classes = 8
    cfg.model.size = "tiny"
    explicit = segnode_jax.load_config("configs/synthetic.py").model
    assert explicit.get("size") is None
    assert segnode_jax.count_params(cfg.model) == segnode_jax.count_params(explicit)
    assert (
        segnode_jax.count_params(cfg.model)
        < segnode_jax.count_params(segnode_jax.load_config("configs/camvid.py").model) / 50
    )


def test_unknown_model_size_is_one_error_line(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            "--config",
            "configs/synthetic.py",
            "--workdir",
            str(tmp_path / "w"),
            "--config.model.size=huge",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: invalid model.size='huge'; choose one of w48")
    assert not (tmp_path / "w").exists()


def test_typed_config_reads_return_the_value_with_its_type_or_name_the_field():
    from ml_collections import config_dict

    from segnode_jax import config as config_lib
    from segnode_jax.errors import ConfigError

    cfg = config_dict.ConfigDict({"a": 3, "b": 4.0, "c": None, "size": (360, 480), "sq": 512, "ode": {"rtol": 1e-3}})
    assert config_lib.optional_int(cfg, "a") == 3 and config_lib.optional_int(cfg, "b") == 4
    assert type(config_lib.optional_int(cfg, "b")) is int and config_lib.optional_int(cfg, "c") is None
    assert config_lib.optional_size(cfg, "size") == (360, 480) and config_lib.optional_size(cfg, "sq") == (512, 512)
    assert config_lib.optional_size(cfg, "c") is None and config_lib.optional_size(cfg, "missing") is None
    frozen = config_lib.snapshot(cfg)
    assert config_lib.optional_section(frozen, "ode") == frozen.ode and config_lib.optional_section(cfg, "c") is None
    for read, key, message in [
        (config_lib.optional_int, "size", "data.size must be a whole number or None, got (360, 480)"),
        (config_lib.optional_size, "b", None),  # a whole float is a square size
        (config_lib.optional_section, "a", "a must be a config section, got 3"),
    ]:
        if message is None:
            assert read(cfg, key, section="data") == (4, 4)
            continue
        with pytest.raises(ConfigError, match=message.replace("(", "[(]").replace(")", "[)]")):
            read(cfg, key, **({"section": "data"} if read is not config_lib.optional_section else {}))
    with pytest.raises(ConfigError, match="data.n must be a whole number or None, got True"):
        config_lib.optional_int(config_dict.ConfigDict({"n": True}), "n", section="data")
