"""segnode-jax and the PyTorch + torchdiffeq peer (benchmarks/torch_peer) compute the same
function: the peer's weights, logits, losses and adjoint gradients were written by real torch
and torchdiffeq (benchmarks/torch_peer/make_fixture.py) into tests/fixtures/torch_peer_tiny.npz.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import segnode_jax
from tests.conftest import REPO

FIXTURE = os.path.join(REPO, "tests", "fixtures", "torch_peer_tiny.npz")


def _nested(data, prefix):
    out = {}
    for key in data:
        if key.startswith(prefix + "/"):
            node = out
            *parents, leaf = key[len(prefix) + 1 :].split("/")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = jnp.asarray(data[key])
    return out


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        out.update(_flat(v, key) if isinstance(v, dict) else {key: v})
    return out


@pytest.fixture(scope="module")
def peer():
    with np.load(FIXTURE) as f:
        return {k: f[k] for k in f.files}


def _model_config(peer, setting):
    cfg = segnode_jax.load_config(os.path.join(REPO, "configs", "tiny.py"))
    model = json.loads(str(peer[f"{setting}/model_json"]))
    segnode_jax.config.apply_overrides(cfg, {f"model.{k}": v for k, v in _flat(model).items()})
    return cfg.model


SETTINGS = ["euler_x2", "rk4_x2", "dopri5_1e-6_silu"]


@pytest.mark.slow
@pytest.mark.parametrize("setting", SETTINGS)
def test_same_logits_loss_and_adjoint_gradients_as_torchdiffeq(peer, setting):
    """Eval logits to 1e-4 of their scale; the training loss (BatchNorm on batch statistics) to
    1e-5; every parameter's gradient -- our BacksolveAdjoint against torchdiffeq's
    odeint_adjoint -- to 1e-4 of its own size with fixed steps (both frameworks then solve the
    same discretisation of the adjoint ODE) and to 1e-3 with Dopri5 at tolerance 1e-6 (the two
    step-size controllers choose different steps)."""
    cfg = _model_config(peer, setting)
    variables = {"params": _nested(peer, "variables/params"), "batch_stats": _nested(peer, "variables/batch_stats")}
    images, labels = jnp.asarray(peer["image"]), jnp.asarray(peer["label"])

    logits, _ = segnode_jax.apply(variables, images, cfg)
    want = peer[f"{setting}/logits"]
    scale = float(np.abs(want).max())
    assert float(np.abs(np.asarray(logits) - want).max()) <= 1e-4 * scale

    def loss(params):
        out, aux = segnode_jax.apply(
            {"params": params, "batch_stats": variables["batch_stats"]}, images, cfg, train=True
        )
        return optax.softmax_cross_entropy_with_integer_labels(out, labels).mean()

    value, grads = jax.jit(jax.value_and_grad(loss))(variables["params"])
    assert float(value) == pytest.approx(float(peer[f"{setting}/loss"]), rel=1e-5)
    tol = 1e-3 if setting.startswith("dopri5") else 1e-4
    theirs = _flat(_nested(peer, f"{setting}/grad"))
    ours = _flat(jax.tree_util.tree_map(np.asarray, grads))
    assert sorted(ours) == sorted(theirs) and len(ours) > 30
    for key, want in theirs.items():
        err = float(np.linalg.norm(ours[key] - np.asarray(want)))
        size = float(np.linalg.norm(np.asarray(want)))
        assert err <= tol * size + 1e-7, (key, err, size)
