"""Configuration: the defaults every config file starts from, and loading config files.

Every file in ``configs/`` exposes ``get_config()`` returning an ``ml_collections.ConfigDict``
built on :func:`base_config`. The model section (``cfg.model``) holds everything a network
needs (architecture, normalisation, the ODE solver); ``segnode_jax.init/apply/count_params``
take it directly.

Paper readings (see ``docs/reproduction.md``): HRNetV2-W48 is the official network; the
Baseline repeats the 4-branch module ``baseline.num_modules=6`` times with
``baseline.blocks_per_branch=2`` BasicBlocks per branch; SegNode's vector field is
``segnode.modules_per_field=2`` modules with ``segnode.blocks_per_branch=2``.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from ml_collections import config_dict

placeholder = config_dict.placeholder

MODEL_NAMES = ("hrnetv2", "baseline", "segnode")
SOLVERS = ("dopri5", "tsit5", "heun", "euler", "rk4")
ADAPTIVE_SOLVERS = ("dopri5", "tsit5", "heun")
ADJOINTS = ("backsolve", "recursive_checkpoint", "direct")


def ode_config() -> config_dict.ConfigDict:
    """Settings of SegNode's ODE solve (``cfg.model.ode``)."""
    return config_dict.ConfigDict(
        dict(
            # Integration interval [t0, t1] of the neural ODE.
            t0=0.0,
            t1=1.0,
            # dopri5 (paper: torchdiffeq's default RK) | tsit5 | heun: embedded error estimates,
            # adaptive steps unless `num_steps` is set. euler | rk4: need `num_steps`.
            solver="dopri5",
            rtol=1e-3,
            atol=1e-3,
            # Initial step for adaptive solvers; None lets diffrax pick it (2 extra evaluations).
            dt0=placeholder(float),
            # Step-size floor for adaptive solvers; None = no floor (a collapse then shows up
            # as `max_steps` reached).
            dtmin=placeholder(float),
            # None: adaptive steps. An int: that many equal steps over [t0, t1].
            num_steps=placeholder(int),
            max_steps=128,
            # backsolve: the adjoint method (paper), O(1) memory in the number of steps.
            # recursive_checkpoint: discretise-then-optimise with binomial checkpointing.
            # direct: plain backprop through every step (most memory; for reference).
            adjoint="backsolve",
            # Use diffrax's adjoint seminorm (Kidger et al. 2021) on the backward solve:
            # parameter cotangents do not drive step sizes -> fewer backward steps.
            adjoint_seminorm=True,
            # Backsolve: solve the adjoint ODE for the cotangent divided by its RMS and rescale
            # (exact), so that atol does not depend on the loss scale (batch, image size).
            adjoint_normalise=True,
            # Tolerances of the backward (adjoint) solve; None = the forward's rtol/atol.
            # Gradients for SGD need less accuracy than the forward pass (see docs/architecture.md).
            adjoint_rtol=placeholder(float),
            adjoint_atol=placeholder(float),
            # Extra output times inside [t0, t1] for trajectory analysis (paper sec. 4.8).
            # Empty: only the final state. With times, `aux["ode"]["ys"]` holds the states.
            saveat=(),
        )
    )


def model_config() -> config_dict.ConfigDict:
    """Architecture defaults (``cfg.model``): W48, the paper's readings of Table 2."""
    return config_dict.ConfigDict(
        dict(
            name="segnode",
            num_classes=19,
            # HRNet width: branch widths are (w, 2w, 4w, 8w); W18 / W32 / W48.
            width=48,
            stem_width=64,
            # layer1: Bottlenecks with `layer1_planes` planes (output 4x planes).
            layer1_blocks=4,
            layer1_planes=64,
            bn_momentum=0.9,  # PyTorch momentum 0.1
            bn_eps=1e-5,
            # Bilinear resizes with half-pixel centres (PyTorch align_corners=False).
            align_corners=False,
            # Compute dtype of convolutions ("float32" | "bfloat16"); parameters stay float32.
            dtype="float32",
            # HRNetV2: modules and BasicBlocks per branch of stages 2, 3, 4 (official W18/32/48).
            hrnet=dict(stage_modules=(1, 4, 3), stage_blocks=(4, 4, 4)),
            # Baseline (paper sec. 3.1): HRNetV2 up to stage 3, then the 4-branch module
            # repeated `num_modules` times as residual units.
            baseline=dict(num_modules=6, blocks_per_branch=2, stage_modules=(1, 4), stage_blocks=(4, 4)),
            # SegNode (paper sec. 3.2): stem -> transition to 4 branches -> ODE block whose
            # vector field is `modules_per_field` 4-branch modules -> 4 classifiers -> sum.
            segnode=dict(modules_per_field=2, blocks_per_branch=2),
            # The vector field. norm: must be a pure function of its input: "group" (GroupNorm
            # with `groups` groups, clipped to divide each width) | "none". activation: relu
            # (paper) | silu | softplus | gelu. time_dependence: "none" (autonomous, paper) |
            # "concat" (t as an extra input channel of every block convolution).
            field=dict(norm="group", groups=16, activation="relu", time_dependence="none"),
            ode=ode_config(),
            # Rematerialisation (jax.checkpoint) of parts of the network, trading compute
            # for training memory.
            remat=dict(field=False, stem=False, head=False),
        )
    )


def base_config() -> config_dict.ConfigDict:
    """Everything a run needs; dataset config files override parts of it."""
    cfg = config_dict.ConfigDict()
    cfg.seed = 0
    cfg.model = model_config()
    return cfg


def load_config(path: str | os.PathLike) -> config_dict.ConfigDict:
    """Loads a config file (a Python file exposing ``get_config()``).

    Arguments:
      path: path of the config file, e.g. ``"configs/camvid.py"``. A ``:arg`` suffix is passed
        to ``get_config(arg)`` as ``ml_collections`` config files allow.

    Returns:
      The ``ConfigDict`` returned by the file's ``get_config()``.
    """
    path = os.fspath(path)
    arg = None
    if ":" in os.path.basename(path):
        path, arg = path.rsplit(":", 1)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"config file {path!r} does not exist; pass a file such as configs/camvid.py "
            "(see the configs/ folder)"
        )
    name = "segnode_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path!r} has no get_config() function")
    return module.get_config() if arg is None else module.get_config(arg)
