# pyright: reportMissingImports=false
# (torch and torchdiffeq come from benchmarks/torch_peer/requirements.txt, not the project's venv that CI type-checks)
"""SegNode in PyTorch + torchdiffeq: the performance peer of segnode-jax (benchmarks/vs_torch.py).

The same network as ``segnode_jax.models.segnode.SegNode`` (stem, transition to four branches,
the ODE over the four-resolution state with a GroupNorm pre-activation HRNet module as its
vector field, the per-branch head), written the way the paper's authors would have written it
in their stack: ``torchdiffeq.odeint_adjoint`` (or ``odeint`` for fixed-step solves), state as
a tuple of tensors. Every module is named after the Flax parameter path it mirrors (a
``ModuleDict`` key per path component), so that ``load_flax_variables`` /
``flax_variables_of`` map weights one to one (convolutions OIHW <-> HWIO).

Only the autonomous field (``model.field.time_dependence="none"``) and the model's own head
are mirrored; ``check_config`` refuses the rest. No JAX here: this file runs where only torch
and torchdiffeq are installed (tests/fixtures are written that way).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": F.relu, "silu": F.silu, "softplus": F.softplus, "gelu": lambda x: F.gelu(x, approximate="tanh")}


# Our solver names -> torchdiffeq methods. torchdiffeq's own "rk4" is the 3/8-rule variant;
# ours (and the paper's fixed-step baseline) is the classical one, registered below.
TORCHDIFFEQ_METHODS = {"dopri5": "dopri5", "euler": "euler", "rk4": "rk4_classical"}


def _register_classical_rk4() -> None:
    """Adds the classical RK4 to torchdiffeq's solver table (a private dict: torchdiffeq has no
    public registry; odeint and odeint_adjoint both read it)."""
    import importlib

    odeint_module = importlib.import_module("torchdiffeq._impl.odeint")
    from torchdiffeq._impl.rk_common import rk4_step_func
    from torchdiffeq._impl.solvers import FixedGridODESolver

    if "rk4_classical" in odeint_module.SOLVERS:
        return

    class ClassicalRK4(FixedGridODESolver):
        order = 4

        def _step_func(self, func, t0, dt, t1, y0):
            f0 = func(t0, y0)
            return rk4_step_func(func, t0, dt, t1, y0, f0=f0), f0

    odeint_module.SOLVERS["rk4_classical"] = ClassicalRK4


def group_count(channels: int, groups: int) -> int:
    """The largest divisor of ``channels`` <= ``groups`` (as segnode_jax.models.layers)."""
    return max(g for g in range(1, min(groups, channels) + 1) if channels % g == 0)


def conv(cin: int, cout: int, k: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias)


class Settings:
    """The model fields the peer needs, read from a plain dict (``cfg.model.to_dict()``)."""

    def __init__(self, m: Mapping):
        self.width = int(m["width"])
        self.widths = (self.width, 2 * self.width, 4 * self.width, 8 * self.width)
        self.stem_width = int(m["stem_width"])
        self.planes = int(m["layer1_planes"])
        self.layer1_blocks = int(m["layer1_blocks"])
        self.num_classes = int(m["num_classes"])
        self.modules_per_field = int(m["segnode"]["modules_per_field"])
        self.blocks_per_branch = int(m["segnode"]["blocks_per_branch"])
        self.groups = int(m["field"]["groups"])
        self.activation = str(m["field"]["activation"])
        self.bn_eps = float(m["bn_eps"])
        # flax momentum is the running average's decay; torch's is the new value's weight.
        self.bn_momentum = 1.0 - float(m["bn_momentum"])
        self.align_corners = bool(m["align_corners"])
        check_config(m)


def check_config(m: Mapping) -> None:
    problems = []
    if m["name"] != "segnode":
        problems.append(f"model.name={m['name']!r} (the peer is SegNode)")
    if m["field"]["time_dependence"] != "none":
        problems.append("a time-dependent field")
    if m["field"]["norm"] != "group":
        problems.append(f"field norm {m['field']['norm']!r}")
    if m.get("head", "default") != "default":
        problems.append(f"head {m['head']!r}")
    if m["ode"]["solver"] not in TORCHDIFFEQ_METHODS:
        problems.append(f"solver {m['ode']['solver']!r} (the peer has {sorted(TORCHDIFFEQ_METHODS)})")
    if m["ode"]["adjoint"] not in ("backsolve", "direct"):
        problems.append(f"adjoint {m['ode']['adjoint']!r} (the peer has backsolve = odeint_adjoint, direct = odeint)")
    if m["dtype"] != "float32":
        problems.append(f"dtype {m['dtype']!r}")
    if problems:
        raise ValueError(
            "the torch peer mirrors SegNode with its own head, an autonomous GroupNorm field in float32; not "
            + ", ".join(problems)
        )


class Bottleneck(nn.Module):
    def __init__(self, cin: int, planes: int, s: Settings):
        super().__init__()
        bn = lambda c: nn.BatchNorm2d(c, eps=s.bn_eps, momentum=s.bn_momentum)  # noqa: E731
        self.conv1, self.bn1 = conv(cin, planes, 1), bn(planes)
        self.conv2, self.bn2 = conv(planes, planes, 3), bn(planes)
        self.conv3, self.bn3 = conv(planes, 4 * planes, 1), bn(4 * planes)
        self.project = cin != 4 * planes
        if self.project:
            self.downsample_0, self.downsample_1 = conv(cin, 4 * planes, 1), bn(4 * planes)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        if self.project:
            x = self.downsample_1(self.downsample_0(x))
        return F.relu(y + x)


class Stem(nn.Module):
    def __init__(self, s: Settings):
        super().__init__()
        bn = lambda c: nn.BatchNorm2d(c, eps=s.bn_eps, momentum=s.bn_momentum)  # noqa: E731
        self.conv1, self.bn1 = conv(3, s.stem_width, 3, 2), bn(s.stem_width)
        self.conv2, self.bn2 = conv(s.stem_width, s.stem_width, 3, 2), bn(s.stem_width)
        cin = s.stem_width
        for k in range(s.layer1_blocks):
            setattr(self, f"layer1_{k}", Bottleneck(cin, s.planes, s))
            cin = 4 * s.planes
        self.out_channels = cin
        self.blocks = s.layer1_blocks

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for k in range(self.blocks):
            x = getattr(self, f"layer1_{k}")(x)
        return x


class Transition(nn.Module):
    """transition1: branch 0 (3x3 conv-BN-ReLU if the width changes), branches 1-3 chains of
    3x3 stride-2 conv-BN-ReLU from the stem output (its width until the last conv)."""

    def __init__(self, cin: int, s: Settings):
        super().__init__()
        bn = lambda c: nn.BatchNorm2d(c, eps=s.bn_eps, momentum=s.bn_momentum)  # noqa: E731
        self.layers = nn.ModuleDict()
        self.plan = []
        for i, c in enumerate(s.widths):
            if i == 0:
                names = []
                if c != cin:
                    self.layers[f"transition1_{i}_0"], self.layers[f"transition1_{i}_1"] = conv(cin, c, 3), bn(c)
                    names = [(f"transition1_{i}_0", f"transition1_{i}_1")]
            else:
                names = []
                for j in range(i):
                    width = c if j == i - 1 else cin
                    self.layers[f"transition1_{i}_{j}_0"] = conv(cin, width, 3, 2)
                    self.layers[f"transition1_{i}_{j}_1"] = bn(width)
                    names.append((f"transition1_{i}_{j}_0", f"transition1_{i}_{j}_1"))
            self.plan.append(names)

    def forward(self, x):
        out = []
        for names in self.plan:
            z = x
            for c, n in names:
                z = F.relu(self.layers[n](self.layers[c](z)))
            out.append(z)
        return out


class Field(nn.Module):
    """f(h): ``modules_per_field`` pre-activation HRNet modules (GroupNorm, no ReLU after the
    fuse sums), named ``module_{m}/branches_{i}_{k}/...`` and ``module_{m}/fuse_layers_...``."""

    def __init__(self, s: Settings):
        super().__init__()
        self.s = s
        self.act = ACTIVATIONS[s.activation]
        gn = lambda c: nn.GroupNorm(group_count(c, s.groups), c, eps=s.bn_eps)  # noqa: E731
        w = s.widths
        self.mods = nn.ModuleDict()
        for m in range(s.modules_per_field):
            d = nn.ModuleDict()
            for i in range(4):
                for k in range(s.blocks_per_branch):
                    d[f"branches_{i}_{k}"] = nn.ModuleDict(
                        dict(norm1=gn(w[i]), conv1=conv(w[i], w[i], 3), norm2=gn(w[i]), conv2=conv(w[i], w[i], 3))
                    )
            for i in range(4):
                for j in range(4):
                    if j > i:
                        d[f"fuse_layers_{i}_{j}_0"], d[f"fuse_layers_{i}_{j}_1"] = conv(w[j], w[i], 1), gn(w[i])
                    elif j < i:
                        for k in range(i - j):
                            width = w[i] if k == i - j - 1 else w[j]
                            d[f"fuse_layers_{i}_{j}_{k}_0"] = conv(w[j], width, 3, 2)
                            d[f"fuse_layers_{i}_{j}_{k}_1"] = gn(width)
            self.mods[f"module_{m}"] = d
        self.nfe = 0

    def forward(self, t, y):
        self.nfe += 1
        xs = list(y)
        act, s = self.act, self.s
        for m in range(s.modules_per_field):
            d = self.mods[f"module_{m}"]
            for i in range(4):
                for k in range(s.blocks_per_branch):
                    b = d[f"branches_{i}_{k}"]
                    z = b["conv1"](act(b["norm1"](xs[i])))
                    z = b["conv2"](act(b["norm2"](z)))
                    xs[i] = xs[i] + z
            outs = []
            for i in range(4):
                total = None
                for j in range(4):
                    if j == i:
                        z = xs[j]
                    elif j > i:
                        z = d[f"fuse_layers_{i}_{j}_1"](d[f"fuse_layers_{i}_{j}_0"](xs[j]))
                        z = F.interpolate(z, size=xs[i].shape[2:], mode="bilinear", align_corners=s.align_corners)
                    else:
                        z = xs[j]
                        for k in range(i - j):
                            z = d[f"fuse_layers_{i}_{j}_{k}_1"](d[f"fuse_layers_{i}_{j}_{k}_0"](z))
                            if k != i - j - 1:
                                z = act(z)
                    total = z if total is None else total + z
                outs.append(total)
            xs = outs
        return tuple(xs)


class Head(nn.Module):
    """Per branch: BN, ReLU, 1x1 conv (bias) to the classes, bilinear to the image size; summed."""

    def __init__(self, s: Settings):
        super().__init__()
        self.s = s
        for i, c in enumerate(s.widths):
            setattr(self, f"norm_{i}", nn.BatchNorm2d(c, eps=s.bn_eps, momentum=s.bn_momentum))
            setattr(self, f"classifier_{i}", conv(c, s.num_classes, 1, bias=True))

    def forward(self, xs, size):
        total = None
        for i, x in enumerate(xs):
            z = getattr(self, f"classifier_{i}")(F.relu(getattr(self, f"norm_{i}")(x)))
            z = F.interpolate(z, size=size, mode="bilinear", align_corners=self.s.align_corners)
            total = z if total is None else total + z
        return total


def rms_norm(x) -> torch.Tensor:
    """The RMS over every element of a tensor or a tuple of tensors (torchdiffeq hands a tuple
    state's user norm the tuple)."""
    parts = x if isinstance(x, (tuple, list)) else (x,)
    total = sum(p.pow(2).sum() for p in parts)
    return (total / sum(p.numel() for p in parts)).sqrt()  # pyright: ignore[reportAttributeAccessIssue]  # a tensor


class SegNodeTorch(nn.Module):
    """SegNode. ``ode``: the solve, as ``model.ode`` (``solver``, ``rtol``, ``atol``, ``t0``,
    ``t1``, ``num_steps``, ``adjoint`` backsolve|direct, ``error_norm`` rms|max_rms,
    ``adjoint_seminorm``). ``forward(images NCHW) -> logits NCHW``; ``last_nfe`` after it."""

    def __init__(self, model: Mapping):
        super().__init__()
        self.s = s = Settings(model)
        self.ode_cfg = dict(model["ode"])
        self.stem = Stem(s)
        self.transition = Transition(self.stem.out_channels, s)
        self.field = Field(s)
        self.head = Head(s)

    def solve(self, y0):
        import torchdiffeq

        _register_classical_rk4()
        o = self.ode_cfg
        t = torch.tensor([float(o["t0"]), float(o["t1"])], dtype=y0[0].dtype)
        kwargs: dict = dict(method=TORCHDIFFEQ_METHODS[str(o["solver"])])
        if o.get("num_steps"):
            kwargs["options"] = dict(step_size=(float(o["t1"]) - float(o["t0"])) / int(o["num_steps"]))
        else:
            kwargs.update(rtol=float(o["rtol"]), atol=float(o["atol"]))
            if o.get("error_norm", "rms") == "rms":
                # RMS over every element of the state (optimistix.rms_norm; diffrax's default).
                # torchdiffeq's default for a tuple state is the largest per-tensor RMS (max_rms).
                kwargs["options"] = dict(norm=rms_norm)
        if o.get("adjoint", "backsolve") == "backsolve":
            from torchdiffeq import odeint_adjoint

            if not o.get("num_steps"):
                rtol = o.get("adjoint_rtol") or o["rtol"]
                atol = o.get("adjoint_atol") or o["atol"]
                kwargs.update(adjoint_rtol=float(rtol), adjoint_atol=float(atol))
                if o.get("adjoint_seminorm", True):
                    kwargs["adjoint_options"] = dict(norm="seminorm")
            else:
                kwargs["adjoint_options"] = dict(kwargs.get("options", {}))
            ys = odeint_adjoint(self.field, tuple(y0), t, adjoint_params=tuple(self.field.parameters()), **kwargs)
        else:
            ys = torchdiffeq.odeint(self.field, tuple(y0), t, **kwargs)
        return tuple(y[-1] for y in ys)

    def forward(self, images):
        self.field.nfe = 0
        x = self.stem(images)
        y0 = self.transition(x)
        y1 = self.solve(y0)
        self.last_nfe = self.field.nfe
        return self.head(y1, images.shape[2:])


# ---------------------------------------------------------------------------------------------
# Weights: torch parameter/buffer name <-> Flax variable path ("params"/"batch_stats" trees).


def _flax_path(torch_name: str) -> tuple[str, tuple[str, ...]]:
    """``stem.layer1_0.conv1.weight`` -> ("params", ("stem", "layer1_0", "conv1", "kernel"))."""
    parts = torch_name.split(".")
    leaf = parts[-1]
    mods = [p for p in parts[:-1] if p not in ("layers", "mods")]
    if mods and mods[0] == "field":
        mods = ["ode", "field", *mods[1:]]
    if mods and mods[0] == "transition":
        mods = mods[1:]
    collection = "batch_stats" if leaf in ("running_mean", "running_var") else "params"
    name = {"weight": None, "bias": "bias", "running_mean": "mean", "running_var": "var"}[leaf]
    return collection, tuple(mods) + ((name,) if name else ())


def _is_conv(module) -> bool:
    return isinstance(module, nn.Conv2d)


def named_tensors(model: nn.Module):
    """(torch name, tensor, owning module) for every parameter and running statistic."""
    for mod_name, mod in model.named_modules():
        for leaf, tensor in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
            if leaf == "num_batches_tracked":
                continue
            yield (f"{mod_name}.{leaf}" if mod_name else leaf), tensor, mod


def flax_key(torch_name: str, module) -> tuple[str, tuple[str, ...]]:
    collection, path = _flax_path(torch_name)
    if torch_name.endswith(".weight"):
        path = path + ("kernel" if _is_conv(module) else "scale",)
    return collection, path


def _get(tree: Mapping, collection: str, path: tuple[str, ...]):
    node = tree[collection]
    for p in path:
        node = node[p]
    return node


def load_flax_variables(model: nn.Module, variables: Mapping) -> None:
    """Copies ``{"params", "batch_stats"}`` (nested dicts of arrays, Flax layout) into ``model``;
    every tensor of the model must be found."""
    with torch.no_grad():
        for name, tensor, mod in named_tensors(model):
            collection, path = flax_key(name, mod)
            value = np.asarray(_get(variables, collection, path))
            if value.ndim == 4:  # HWIO -> OIHW
                value = value.transpose(3, 2, 0, 1)
            if tuple(value.shape) != tuple(tensor.shape):
                raise ValueError(
                    f"{name}: shape {tuple(value.shape)} in the variables, {tuple(tensor.shape)} in the peer"
                )
            tensor.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(tensor.dtype))


def flax_variables_of(model: nn.Module) -> dict:
    """The model's weights as ``{"params", "batch_stats"}`` nested dicts of numpy arrays."""
    out: dict = {"params": {}, "batch_stats": {}}
    for name, tensor, mod in named_tensors(model):
        collection, path = flax_key(name, mod)
        value = tensor.detach().cpu().numpy()
        if value.ndim == 4:
            value = value.transpose(2, 3, 1, 0)
        node = out[collection]
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = value
    return out


def flax_grads_of(model: nn.Module) -> dict:
    """The parameters' ``.grad`` in the Flax layout (a nested dict like ``params``)."""
    out: dict = {}
    for name, tensor, mod in named_tensors(model):
        collection, path = flax_key(name, mod)
        if collection != "params":
            continue
        value = tensor.grad.detach().cpu().numpy()
        if value.ndim == 4:
            value = value.transpose(2, 3, 1, 0)
        node = out
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = value
    return out
