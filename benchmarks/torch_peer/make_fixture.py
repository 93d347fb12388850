# pyright: reportMissingImports=false
# (torch and torchdiffeq come from benchmarks/torch_peer/requirements.txt, not the project's venv that CI type-checks)
"""Writes tests/fixtures/torch_peer_<size>.npz: the torch peer's outputs for tests/test_torch_peer.py
to compare segnode-jax against (no torch needed by the tests), at two sizes: ``tiny`` (width 4,
GroupNorm of 2 groups, 48x56 images) and ``main`` (the main job's network: width 12, 4 groups,
64x72 images).

    pip install torch torchdiffeq numpy          # a separate environment is fine (CPU wheels)
    python -m benchmarks.torch_peer.make_fixture --size tiny   # from the repository root; --size main

The peer draws its own weights (seeded); they go into the fixture in the Flax layout, with a
batch of images and labels and, per solve setting: the eval-mode logits, the train-mode loss,
the gradient of every parameter (torchdiffeq's adjoint for ``backsolve``) and the numbers of
field evaluations. The tests load the same weights into segnode_jax and compare.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

if not __package__:  # run by path: the imports below need the repository root, which `python -m` puts on the path
    print(
        "error: run it as a module from the repository root: python -m benchmarks.torch_peer.make_fixture",
        file=sys.stderr,
    )
    sys.exit(2)

from benchmarks.torch_peer.segnode_torch import SegNodeTorch, flax_grads_of, flax_variables_of  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures")

# The model: configs/tiny.py's SegNode (these are the fields the tests set on it).
MODEL = {
    "name": "segnode",
    "width": 4,
    "stem_width": 8,
    "layer1_planes": 4,
    "layer1_blocks": 1,
    "num_classes": 5,
    "segnode": {"modules_per_field": 1, "blocks_per_branch": 1},
    "field": {"groups": 2, "activation": "relu", "time_dependence": "none", "norm": "group"},
    "bn_eps": 1e-5,
    "bn_momentum": 0.9,
    "align_corners": False,
    "dtype": "float32",
    "head": "default",
    "ode": {
        "t0": 0.0,
        "t1": 1.0,
        "solver": "dopri5",
        "rtol": 1e-3,
        "atol": 1e-3,
        "num_steps": None,
        "adjoint": "backsolve",
        "error_norm": "rms",
        "adjoint_seminorm": True,
        "adjoint_rtol": None,
        "adjoint_atol": None,
        "max_steps": 4096,
    },
}

# Solve settings compared: fixed steps compute the same discretisation in both frameworks
# (forward and adjoint); Dopri5 at a tight tolerance, so that step-size control differences
# stay below the comparison's tolerance -- with a smooth activation (silu): with ReLU the
# adjoint's right-hand side jumps wherever a unit switches, and gradients of two adaptive
# solvers then differ by ~1% even at 1e-6 (measured; both as far from a fine fixed-step
# reference).
SETTINGS = {
    "euler_x2": {"ode": {"solver": "euler", "num_steps": 2}},
    "rk4_x2": {"ode": {"solver": "rk4", "num_steps": 2}},
    "dopri5_1e-6_silu": {
        "ode": {"solver": "dopri5", "num_steps": None, "rtol": 1e-6, "atol": 1e-6},
        "field": {"activation": "silu"},
    },
    # The exact gradient of the discrete RK4 x2 solve (torchdiffeq's odeint, autograd through
    # the steps): the reference both frameworks' adjoints are compared with at the main size.
    "rk4_x2_direct": {"ode": {"solver": "rk4", "num_steps": 2, "adjoint": "direct"}},
}


def _flatten(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}" if prefix else k
        out.update(_flatten(v, key) if isinstance(v, dict) else {key: np.asarray(v)})
    return out


# Per size: model fields over MODEL, the image size, the settings written.
SIZES = {
    "tiny": ({}, (48, 56), ("euler_x2", "rk4_x2", "dopri5_1e-6_silu")),
    "main": (
        {"width": 12, "stem_width": 16, "layer1_planes": 8, "field": dict(MODEL["field"], groups=4)},
        (64, 72),
        # Not rk4_x2 here: at this width the backsolve gradient of RK4 x2 is ill-conditioned in
        # float32 (tests/test_torch_peer.py says how), so the exact gradient of the same
        # discrete solve is compared instead.
        ("dopri5_1e-6_silu", "rk4_x2_direct"),
    ),
}


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=list(SIZES), default="tiny")
    parser.add_argument("--out", default=None, help="default: tests/fixtures/torch_peer_<size>.npz")
    args = parser.parse_args(argv)
    fields, (h, w), names = SIZES[args.size]
    model = dict(MODEL, **fields)
    out_path = args.out or os.path.join(FIXTURES, f"torch_peer_{args.size}.npz")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((2, h, w, 3)).astype(np.float32)
    labels = rng.integers(0, model["num_classes"], (2, h, w)).astype(np.int64)
    base = SegNodeTorch(model)
    # Non-trivial normalisation parameters and running statistics (fresh ones are 1 and 0).
    with torch.no_grad():
        for mod in base.modules():
            if isinstance(mod, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)):
                mod.weight.copy_(1.0 + 0.2 * torch.rand_like(mod.weight))
                mod.bias.copy_(0.1 * torch.randn_like(mod.bias))
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.copy_(0.1 * torch.randn_like(mod.running_mean))
                mod.running_var.copy_(1.0 + 0.2 * torch.rand_like(mod.running_var))
    variables = flax_variables_of(base)
    out = {"image": images, "label": labels.astype(np.int32)}
    out.update({f"variables/{k}": v for k, v in _flatten(variables).items()})
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(labels)
    for name in names:
        setting = SETTINGS[name]
        model_cfg = dict(
            model, ode=dict(model["ode"], **setting["ode"]), field=dict(model["field"], **setting.get("field", {}))
        )
        peer = SegNodeTorch(model_cfg)
        peer.load_state_dict(base.state_dict())
        out[f"{name}/model_json"] = np.array(json.dumps(model_cfg))
        peer.eval()
        with torch.no_grad():
            out[f"{name}/logits"] = peer(x).permute(0, 2, 3, 1).numpy()
        out[f"{name}/nfe_eval"] = np.array(peer.last_nfe)
        peer.train()
        peer.zero_grad()
        loss = F.cross_entropy(peer(x), y)
        nfe_forward = peer.last_nfe
        peer.field.nfe = 0
        loss.backward()
        out[f"{name}/loss"] = np.array(loss.item())
        out[f"{name}/nfe_forward"] = np.array(nfe_forward)
        out[f"{name}/nfe_backward"] = np.array(peer.field.nfe)
        out.update({f"{name}/grad/{k}": v for k, v in _flatten(flax_grads_of(peer)).items()})
        print(
            f"{name}: loss {float(loss):.6f}, NFE eval {out[f'{name}/nfe_eval']}, train forward {nfe_forward}, backward {peer.field.nfe}"
        )
    out["torch_version"] = np.array(torch.__version__)
    import torchdiffeq

    out["torchdiffeq_version"] = np.array(torchdiffeq.__version__)
    out["size"] = np.array(args.size)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    np.savez_compressed(out_path, **out)
    print("written:", os.path.abspath(out_path))


if __name__ == "__main__":
    main()
