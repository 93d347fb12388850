import pytest

import segnode_jax


def test_base_config_has_paper_defaults():
    cfg = segnode_jax.base_config()
    assert cfg.model.width == 48
    assert cfg.model.ode.solver == "dopri5"
    assert cfg.model.ode.adjoint == "backsolve"


def test_load_config_missing_file_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="configs/camvid.py"):
        segnode_jax.load_config(tmp_path / "nope.py")


def test_load_config_without_get_config(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("x = 1\n")
    with pytest.raises(ValueError, match="no get_config"):
        segnode_jax.load_config(path)
