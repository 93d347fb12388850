"""A trained model as one serialized inference function (``jax.export``, StableHLO) to deploy
without the training code.

    python -m segnode_jax.export --ckpt runs/camvid --out camvid.jax
    python -m segnode_jax.export --ckpt runs/synthetic --out fast.jax --shape b,128,128 --solver rk4:1
    python -m segnode_jax.export --ckpt runs/synthetic --out model.onnx --solver euler:2   # ONNX

The file holds the function with its weights: uint8 RGB images ``(N, H, W, 3)`` in, float32
logits ``(N, H, W, classes)`` out (the normalisation is inside). The batch ``N`` is symbolic
(any batch size runs); ``H, W`` are fixed (default: the dataset's evaluation size, else its
crop size), because the model's resizing between branches is built for known sizes: export
once per input size. Lowered for CPU and CUDA by default (``--platforms``). A SegNode solve
that fails (more than ``model.ode.max_steps`` steps) gives NaN logits instead of an error.
``<out>.json`` beside it records the classes, palette, input shape and solve.

Loading it needs only ``jax`` (the README's loader)::

    from jax import export
    fn = export.deserialize(bytearray(open("camvid.jax", "rb").read()))
    logits = fn.call(images)            # images: uint8 (N, H, W, 3)

``--format onnx`` (the default for an ``--out`` ending in ``.onnx``) writes the same function as
an ONNX model through jax2onnx (optional packages: ``bash scripts/install_onnx.sh``), to run with
onnxruntime or TensorRT without JAX: same input, output and symbolic batch. ONNX has no loop
that this converter writes from diffrax's, so an ODE model is exported with a fixed-step solve
(``--solver rk4:1``, ``euler:2``; the run's own if it has fixed steps), unrolled into plain
convolutions; an adaptive solve is refused in one line. The model is converted from its traced
program (jax2onnx sees primitives, not Flax modules: its Linen plugins cannot read our norms)
and batched as a whole (``per_image`` vmapping is for adaptive solves, the same numbers here).

    import onnxruntime as ort
    sess = ort.InferenceSession("model.onnx")
    logits = sess.run(None, {sess.get_inputs()[0].name: images})[0]
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Sequence

import numpy as np

from segnode_jax import api, cli, data, ode, scoring, segment
from segnode_jax.errors import UserError
from segnode_jax.evaluation.predictor import predict_logits
from segnode_jax.models import capabilities

PLATFORMS = ("cpu", "cuda")
FORMATS = ("jax", "onnx")
ONNX_INSTALL = "bash scripts/install_onnx.sh (requirements-onnx.txt, then jax2onnx without its dependencies)"


class ExportError(UserError):
    """Bad export settings (shape, platforms, output); the message names the fix."""


def parse_shape(spec: str) -> tuple[str | int, int, int]:
    """``"b,512,1024"`` (symbolic batch) or ``"4,512,1024"`` -> ``("b", 512, 1024)``.

    Raises:
      ExportError: not three entries, or a symbolic height/width.
    """
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) != 3 or not all(parts):
        raise ExportError(f"--shape {spec!r} must be N,H,W, e.g. b,512,1024 (b: any batch size)")
    n: str | int = parts[0] if not parts[0].isdigit() else int(parts[0])
    if not (parts[1].isdigit() and parts[2].isdigit()):
        raise ExportError(
            f"--shape {spec!r}: height and width must be numbers; the model's resizing between "
            "branches is built for known sizes, so export once per input size (the batch may be symbolic)"
        )
    h, w = int(parts[1]), int(parts[2])
    if min(h, w) < 1 or (isinstance(n, int) and n < 1):
        raise ExportError(f"--shape {spec!r}: sizes must be positive")
    return n, h, w


def default_shape(cfg) -> tuple[str, int, int]:
    size = cfg.data.get("eval_size") or cfg.data.crop_size
    return "b", int(size[0]), int(size[1])


def inference_function(variables, cfg, on_failure: str = "raise", per_image: bool | None = None):
    """``uint8 images (N, H, W, 3) -> float32 logits (N, H, W, C)`` with the weights and the
    normalisation inside (a pure function for ``jax.jit`` / ``jax.export``); ``on_failure``: what
    a failed ODE solve does (``model.ode.on_failure``: "nan" for an exported function, which
    cannot call back to raise); ``per_image``: one solve per image (default: for models that solve
    an ODE, see below)."""
    import jax.numpy as jnp

    frozen = api.freeze(ode.with_settings(cfg.model, on_failure=on_failure))
    # SegNode: each image gets its own solve (as in evaluation), which also keeps the adaptive
    # controller's error norm free of the symbolic batch size.
    per_image = capabilities(frozen).solves_ode if per_image is None else per_image
    std = np.asarray(cfg.data.std, np.float32).reshape(1, 1, 1, 3)
    scale = jnp.asarray(1.0 / (255.0 * std), jnp.float32)
    shift = jnp.asarray(np.asarray(cfg.data.mean, np.float32).reshape(1, 1, 1, 3) / std, jnp.float32)

    def fn(images):
        x = images.astype(jnp.float32) * scale - shift
        logits, _ = predict_logits(variables, x, frozen, per_image=per_image)
        return logits

    return fn


def export_model(variables, cfg, *, shape: Sequence[Any] | None = None, platforms: Sequence[str] = PLATFORMS):
    """The model as a ``jax.export.Exported`` (see the module docstring).

    Arguments:
      variables: ``{"params", "batch_stats"}``.
      cfg: the run config (``model`` and ``data`` for the normalisation).
      shape: ``(N, H, W)``; ``N`` may be a name (symbolic). Default :func:`default_shape`.
      platforms: lowering platforms.
    """
    import jax
    from jax import export

    n, h, w = shape or default_shape(cfg)
    unknown = [p for p in platforms if p not in ("cpu", "cuda", "rocm", "tpu")]
    if unknown or not platforms:
        raise ExportError(f"--platforms {','.join(platforms)}: use a comma list of cpu, cuda, rocm, tpu")
    if isinstance(n, str):
        spec = export.symbolic_shape(f"{n}, {h}, {w}, 3")
    else:
        spec = (n, h, w, 3)
    variables = jax.tree_util.tree_map(np.asarray, jax.device_get(variables))
    fn = jax.jit(inference_function(variables, cfg, on_failure="nan"))
    return export.export(fn, platforms=tuple(platforms))(jax.ShapeDtypeStruct(spec, np.uint8))


def onnx_model(variables, cfg, *, shape: Sequence[Any] | None = None):
    """The model as an ``onnx.ModelProto`` (see the module docstring): uint8 ``(N, H, W, 3)`` in,
    float32 logits out; ``N`` symbolic if ``shape[0]`` is a name.

    Raises:
      ExportError: jax2onnx is not installed, or an ODE model with an adaptive solve.
    """
    import logging

    import jax
    import jax.extend

    try:
        from jax2onnx import to_onnx
    except ImportError:
        raise ExportError(f"--format onnx needs the optional ONNX packages: {ONNX_INSTALL}") from None
    if capabilities(cfg.model).solves_ode:
        if not cfg.model.ode.get("num_steps"):
            raise ExportError(
                f"--format onnx needs a fixed-step solve (unrolled into plain convolutions); this run solves with "
                f"{ode.describe_solve(cfg.model.ode)}: pass --solver rk4:1 (or euler:2, ...)"
            )
        cfg = cfg.copy_and_resolve_references()
        with cfg.unlocked():
            cfg.model = ode.with_settings(cfg.model, adjoint="unrolled")
    n, h, w = shape or default_shape(cfg)
    variables = jax.tree_util.tree_map(np.asarray, jax.device_get(variables))
    fn = inference_function(variables, cfg, on_failure="nan", per_image=False)
    if isinstance(n, str):
        traced = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f"{n}, {h}, {w}, 3"), np.uint8)
    else:
        traced = jax.ShapeDtypeStruct((n, h, w, 3), np.uint8)
    # Traced to primitives first: jax2onnx then converts the program, not the Flax modules.
    closed = jax.make_jaxpr(fn)(traced)
    if _has_primitive(closed.jaxpr, "reduce_window_max"):  # U-Net, ResNet stems: see _max_of_slices
        program = lambda x: _evaluate_without_max_pools(closed.jaxpr, closed.consts, x)[0]  # noqa: E731
    else:
        program = lambda x: jax.extend.core.jaxpr_as_fun(closed)(x)[0]  # noqa: E731
    # onnx_ir logs one warning per constant shape it writes without a type: nothing to act on.
    logging.getLogger("onnx_ir.serde").setLevel(logging.ERROR)
    return to_onnx(
        program,
        inputs=[jax.ShapeDtypeStruct((n, h, w, 3), np.uint8)],
        model_name=str(cfg.model.name),
    )


# Call primitives whose inner program is inlined when it holds a max pool to rewrite (the
# exported function is never differentiated: custom derivative rules are not needed).
_INLINED = {
    "pjit": "jaxpr",
    "jit": "jaxpr",
    "closed_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
}


def _subjaxprs(eqn):
    for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            inner = getattr(item, "jaxpr", item)
            if hasattr(inner, "eqns"):
                yield inner


def _has_primitive(jaxpr, name: str) -> bool:
    return any(
        eqn.primitive.name == name or any(_has_primitive(j, name) for j in _subjaxprs(eqn)) for eqn in jaxpr.eqns
    )


def _max_of_slices(x, *, window_dimensions, window_strides, padding, base_dilation, window_dilation):
    """``lax.reduce_window_max`` as the maximum of strided slices of the (edge-padded) input.

    jax2onnx 0.17.1 lowers a max pool over an NHWC array to an ONNX MaxPool with one spatial
    axis per array axis (4), which onnxruntime refuses ("Unsupported pooling size"); slices
    and element-wise maxima are plain ONNX, and the same numbers."""
    import itertools

    import jax.numpy as jnp
    from jax import lax

    if any(d != 1 for d in (*base_dilation, *window_dilation)) or any(
        max(p) >= w for p, w in zip(padding, window_dimensions)
    ):
        raise ExportError("--format onnx: this max pool (dilated, or padded by a window or more) has no ONNX form here")
    # Padding repeats the edge (concatenated slices, not a pad: jax2onnx's pad lowering failed on
    # the symbolic batch in these models): a window reaching into the padding also holds the edge
    # pixel, so its maximum is the same as with -inf padding.
    for axis, (lo, hi) in enumerate(padding):
        if lo or hi:
            size = x.shape[axis]
            first, last = lax.slice_in_dim(x, 0, 1, axis=axis), lax.slice_in_dim(x, size - 1, size, axis=axis)
            x = jnp.concatenate([first] * lo + [x] + [last] * hi, axis=axis)
    out = None
    for offsets in itertools.product(*(range(w) for w in window_dimensions)):
        start, limit = [], []
        for axis, (o, w, s) in enumerate(zip(offsets, window_dimensions, window_strides)):
            size = x.shape[axis]
            start.append(o)
            limit.append(size if (w, s) == (1, 1) else o + ((size - w) // s) * s + 1)
        piece = lax.slice(x, start, limit, window_strides)
        out = piece if out is None else jnp.maximum(out, piece)
    return out


def _evaluate_without_max_pools(jaxpr, consts, *args):
    """Evaluates ``jaxpr`` with every ``reduce_window_max`` (also inside jit / custom_jvp calls,
    which are inlined) computed by :func:`_max_of_slices`: traced by the converter, a program
    without max pools (the slices take their sizes from the converter's own symbolic batch)."""
    from jax.extend.core import Literal

    env: dict = {}

    def read(v):
        return v.val if isinstance(v, Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        values = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name == "reduce_window_max":
            outs = [_max_of_slices(values[0], **eqn.params)]
        elif (
            name in _INLINED
            and _INLINED[name] in eqn.params
            and _has_primitive(eqn.params[_INLINED[name]].jaxpr, "reduce_window_max")
        ):
            inner = eqn.params[_INLINED[name]]
            outs = _evaluate_without_max_pools(inner.jaxpr, inner.consts, *values)
        else:  # as jax's own eval_jaxpr binds an equation
            outs = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(eqn.params))
            outs = outs if eqn.primitive.multiple_results else [outs]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def metadata(cfg, platforms: Sequence[str], shape, fmt: str = "jax") -> dict[str, Any]:

    info = data.get_info(cfg.data)
    return {
        "model": cfg.model.name,
        "dataset": cfg.data.name,
        "input": {
            "shape": [str(shape[0]) if isinstance(shape[0], str) else shape[0], shape[1], shape[2], 3],
            "dtype": "uint8",
            "layout": "NHWC RGB",
        },
        "output": {"shape": ["N", shape[1], shape[2], info.num_classes], "dtype": "float32", "meaning": "logits"},
        "class_names": list(info.class_names),
        "palette": np.asarray(info.palette).tolist(),
        "format": fmt,
        "platforms": list(platforms),
        "solver": ode.describe_solve(cfg.model.ode) if capabilities(cfg.model).solves_ode else None,
        "failed_solve": "NaN logits" if capabilities(cfg.model).solves_ode else None,
    }


def save(blob: bytes | bytearray, path: str, meta: dict[str, Any]) -> tuple[str, str]:
    """Writes the serialized function to ``path`` and ``meta`` to ``path + '.json'``
    (each through a temporary file: an interrupted write leaves no half file)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".partial", "wb") as f:
        f.write(blob)
    os.replace(path + ".partial", path)
    with open(path + ".json.partial", "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(path + ".json.partial", path + ".json")
    return path, path + ".json"


def main(argv: Sequence[str] | None = None) -> int:
    from absl import flags
    from ml_collections import config_flags

    usage = (
        "python -m segnode_jax.export --ckpt RUN --out model.jax|model.onnx [--format jax|onnx] [--shape b,H,W] "
        "[--solver rk4:1] [--platforms cpu,cuda]"
    )
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "Config file; default: the run's config.json.", flag_values=fv, lock_config=True
    )
    flags.DEFINE_string(
        "ckpt", None, "Training workdir, checkpoints/<step> folder or converted-weights folder.", flag_values=fv
    )
    flags.DEFINE_enum(
        "which", "latest", ["latest", "best"], "For a workdir: its newest or best checkpoint.", flag_values=fv
    )
    flags.DEFINE_string(
        "out", None, "Output file (the serialized function); OUT.json gets the metadata.", flag_values=fv
    )
    flags.DEFINE_string(
        "shape", None, "N,H,W of the input; N may be a name (any batch size). Default b,<eval size>.", flag_values=fv
    )
    flags.DEFINE_string("solver", None, "SegNode only: the ODE solve to export, e.g. rk4:1.", flag_values=fv)
    flags.DEFINE_list("platforms", list(PLATFORMS), "Platforms to lower for (jax format).", flag_values=fv)
    flags.DEFINE_enum(
        "format",
        None,
        list(FORMATS),
        "jax (jax.export) or onnx; default: onnx for an --out ending in .onnx.",
        flag_values=fv,
    )
    flags.DEFINE_bool("overwrite", False, "Replace an existing --out file.", flag_values=fv)
    argv = list(sys.argv if argv is None else argv)
    argv = cli.split_none_overrides(argv)

    def body():
        try:
            rest = fv(argv)
        except flags.Error as e:
            raise ExportError(f"{e}. Usage: {usage}") from None
        if len(rest) > 1:
            raise ExportError(f"unexpected arguments: {' '.join(rest[1:])}. Usage: {usage}")
        if not fv.ckpt or not fv.out:
            raise ExportError(f"--ckpt and --out are required. Usage: {usage}")
        if os.path.exists(fv.out) and not fv.overwrite:
            raise ExportError(f"--out {fv.out} exists; pass --overwrite to replace it, or choose another file")
        shape = parse_shape(fv.shape) if fv.shape else None
        cli.quiet_logs()
        cfg, variables, _, description = scoring.load_model(fv.ckpt, cli.read_config(fv), fv.which)
        cfg = segment.with_solver(cfg, fv.solver)
        shape = shape or default_shape(cfg)
        fmt = fv.format or ("onnx" if fv.out.lower().endswith(".onnx") else "jax")
        if fmt == "onnx":
            model = onnx_model(variables, cfg, shape=shape)
            blob, platforms = model.SerializeToString(), ["onnx"]
        else:
            exported = export_model(variables, cfg, shape=shape, platforms=fv.platforms)
            blob, platforms = exported.serialize(), list(exported.platforms)
        meta = {**metadata(cfg, platforms, shape, fmt), "checkpoint": description}
        path, meta_path = save(blob, fv.out, meta)
        size = os.path.getsize(path) / 2**20
        print(
            f"written: {path} ({fmt}, {size:.1f} MiB; input uint8 {','.join(map(str, meta['input']['shape']))}, "
            f"logits out; platforms {','.join(platforms)}) and {meta_path}"
        )
        return 0

    return cli.guarded(body)


if __name__ == "__main__":
    sys.exit(main())
