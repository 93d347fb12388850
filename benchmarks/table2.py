"""The paper's Table 2, measured: parameters, training/inference memory and time (not a test).

For HRNetV2, the Baseline and SegNode (each adjoint, and each memory/speed lever on and off):

* parameters, exact (``segnode_jax.count_params``);
* memory of one training step (the library's own, ``segnode_jax.training.train_step``, with
  configs/camvid.py's recipe; batch 24) and of inference (batch 1) at the
  paper's setting (W48, CamVid 480x360, 11 classes), read from the compiled XLA executable
  (``segnode_jax.memory.analyse``: temp + arguments + outputs - aliases, compiled so that a
  CPU keeps remat's optimisation barriers as accelerators do), so nothing runs and no
  accelerator is needed;
* the largest training batch whose analysed memory fits a budget (``--budget_gib``, default
  32: the paper's "maximum batch size for 32GB" column), a few compiles per variant
  (``segnode_jax.memory.batch_for_budget``);
* on a GPU, the measured peak memory of a training step and, with ``--max_batch``, the largest
  training batch that runs, each step in a fresh process (a device's peak never goes down);
* wall time of a training step and of inference, side by side in one process (interleaved
  repeats, median) at a size a 2-core CPU can run (``--time_width``, ``--time_size``,
  ``--time_batch``), and SegNode's mean number of function evaluations (NFE);
* the ratios SegNode/Baseline (training memory, training time) and SegNode/HRNetV2 (inference
  memory, inference time, parameters) next to the paper's (0.42, 1.9, 0.58, 2.4, 0.32).

Writes ``benchmarks/results/table2.json`` and regenerates the table section of
``benchmarks/README.md``.

    python -m benchmarks.table2                       # everything (about two hours on 2 CPU cores)
    python -m benchmarks.table2 --only hrnetv2 segnode --no_time
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if not __package__:  # run by path: the imports below need the repository root, which `python -m` puts on the path
    print(
        "error: run the benchmarks as modules from the repository root: python -m benchmarks.table2 ...",
        file=sys.stderr,
    )
    sys.exit(2)

import segnode_jax  # noqa: E402
import segnode_jax.config  # noqa: E402
from benchmarks import report  # noqa: E402
from segnode_jax import memory, ode  # noqa: E402
from segnode_jax.models import ode_model_names  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results")
README = os.path.join(ROOT, "benchmarks", "README.md")
BEGIN, END = "<!-- table2:begin -->", "<!-- table2:end -->"

# The paper's Table 2 (CamVid, W48) and its ratios.
PAPER = {
    "params": {"hrnetv2": 65.8e6, "baseline": 70.9e6, "segnode": 20.9e6},
    # "Maximum batch size for 32GB" (V100 32GB).
    "max_batch": {"hrnetv2": 24, "baseline": 24, "segnode": 62},
    # Every row of Table 2 (V100 32GB, CamVid): max batch, training memory (GB), testing memory
    # (GB), training time per epoch (s, at the max batch), testing time per image (ms), params (M).
    "rows": {
        "unet": {
            "max_batch": 36,
            "train_memory_gb": 21.8,
            "test_memory_gb": 0.8,
            "epoch_s": 10,
            "test_ms": 4,
            "params_m": 31.0,
        },
        "pspnet": {
            "max_batch": 24,
            "train_memory_gb": 31.2,
            "test_memory_gb": 0.8,
            "epoch_s": 18,
            "test_ms": 5,
            "params_m": 23.7,
        },
        "deeplabv3": {
            "max_batch": 24,
            "train_memory_gb": 31.3,
            "test_memory_gb": 1.0,
            "epoch_s": 24,
            "test_ms": 16,
            "params_m": 58.6,
        },
        "hrnetv2": {
            "max_batch": 24,
            "train_memory_gb": 31.1,
            "test_memory_gb": 1.2,
            "epoch_s": 18,
            "test_ms": 48,
            "params_m": 65.8,
        },
        "baseline": {
            "max_batch": 24,
            "train_memory_gb": 31.9,
            "test_memory_gb": 1.2,
            "epoch_s": 19,
            "test_ms": 49,
            "params_m": 70.9,
        },
        "segnode": {
            "max_batch": 62,
            "train_memory_gb": 13.4,
            "test_memory_gb": 0.7,
            "epoch_s": 34,
            "test_ms": 117,
            "params_m": 20.9,
        },
    },
    "ratios": {
        "train_memory_vs_baseline": 0.42,
        "train_time_vs_baseline": 1.9,
        "infer_memory_vs_hrnetv2": 0.58,
        "infer_time_vs_hrnetv2": 2.4,
        "params_vs_hrnetv2": 0.32,
        "max_batch_vs_baseline": 62 / 24,
    },
}

# name -> (description, config overrides on cfg.model). "segnode" is the paper's setting.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "hrnetv2": ("HRNetV2-W48 (official)", {"name": "hrnetv2"}),
    "baseline": ("Baseline: 6 residual 4-branch modules", {"name": "baseline"}),
    "segnode": ("SegNode, Dopri5, backsolve adjoint (paper)", {"name": "segnode"}),
    "segnode/recursive_checkpoint": (
        "SegNode, recursive-checkpoint adjoint with the dataset configs' "
        f"{segnode_jax.config.DATASET_SOLVE['checkpoints']} checkpoints",
        {"name": "segnode", **{f"ode.{k}": v for k, v in segnode_jax.config.DATASET_SOLVE.items()}},
    ),
    "segnode/recursive_checkpoint_15": (
        "SegNode, recursive-checkpoint adjoint with diffrax's default checkpoints (15 for max_steps=128)",
        {"name": "segnode", "ode.adjoint": "recursive_checkpoint"},
    ),
    "segnode/direct": ("SegNode, direct backprop through the solver", {"name": "segnode", "ode.adjoint": "direct"}),
    "segnode/no_seminorm": (
        "SegNode, backsolve without the adjoint seminorm",
        {"name": "segnode", "ode.adjoint_seminorm": False},
    ),
    "segnode/adjoint_tol_1e-1": (
        "SegNode, backsolve with a looser backward solve (adjoint rtol = atol = 0.1)",
        {"name": "segnode", "ode.adjoint_rtol": 0.1, "ode.adjoint_atol": 0.1},
    ),
    "segnode+remat_field": (
        "SegNode + remat of the vector field, block by block",
        {"name": "segnode", "remat.field": True},
    ),
    "segnode+remat_stem": (
        "SegNode + remat of the stem, unit by unit (2 convs, 4 Bottlenecks)",
        {"name": "segnode", "remat.stem": True},
    ),
    "segnode+remat_all": (
        "SegNode + remat of field, stem and head",
        {"name": "segnode", "remat.field": True, "remat.stem": True, "remat.head": True},
    ),
    "segnode+remat_all+bf16": (
        "SegNode + remat of field, stem and head + bfloat16 compute (float32 state)",
        {"name": "segnode", "remat.field": True, "remat.stem": True, "remat.head": True, "dtype": "bfloat16"},
    ),
    "segnode+rk4x2": (
        "SegNode, fixed-step RK4 with 2 steps (8 NFE), backsolve",
        {"name": "segnode", "ode.solver": "rk4", "ode.num_steps": 2},
    ),
    "segnode+rk4x2+remat_all": (
        "SegNode, RK4 x2 + remat of field, stem and head",
        {
            "name": "segnode",
            "ode.solver": "rk4",
            "ode.num_steps": 2,
            "remat.field": True,
            "remat.stem": True,
            "remat.head": True,
        },
    ),
    "segnode+euler_x2": (
        "SegNode, fixed-step Euler with 2 steps (2 NFE), backsolve",
        {"name": "segnode", "ode.solver": "euler", "ode.num_steps": 2},
    ),
    "segnode+euler_x2+remat_all": (
        "SegNode, Euler x2 + remat of field, stem and head",
        {
            "name": "segnode",
            "ode.solver": "euler",
            "ode.num_steps": 2,
            "remat.field": True,
            "remat.stem": True,
            "remat.head": True,
        },
    ),
    "segnode+euler_x2/unrolled": (
        "SegNode, Euler x2, unrolled adjoint (steps written out, no loop; plain backprop)",
        {"name": "segnode", "ode.solver": "euler", "ode.num_steps": 2, "ode.adjoint": "unrolled"},
    ),
    "segnode+euler_x2/unrolled+remat_all": (
        "SegNode, Euler x2, unrolled adjoint + remat of field, stem and head",
        {
            "name": "segnode",
            "ode.solver": "euler",
            "ode.num_steps": 2,
            "ode.adjoint": "unrolled",
            "remat.field": True,
            "remat.stem": True,
            "remat.head": True,
        },
    ),
    "segnode+rk4x2/unrolled+remat_all": (
        "SegNode, RK4 x2, unrolled adjoint + remat of field, stem and head",
        {
            "name": "segnode",
            "ode.solver": "rk4",
            "ode.num_steps": 2,
            "ode.adjoint": "unrolled",
            "remat.field": True,
            "remat.stem": True,
            "remat.head": True,
        },
    ),
    "hrnetv2+ocr": ("HRNetV2-W48 + OCR head (HRNet-OCR)", {"name": "hrnetv2", "head": "ocr"}),
    "baseline+ocr": ("Baseline + OCR head", {"name": "baseline", "head": "ocr"}),
    "segnode+ocr": ("SegNode + OCR head, Dopri5, backsolve adjoint", {"name": "segnode", "head": "ocr"}),
    # The paper's comparison models (Table 2; U-Node is Table 1's neural-ODE comparison).
    "unet": ("U-Net (milesial/Pytorch-UNet, transposed convolutions)", {"name": "unet"}),
    "pspnet": ("PSPNet, dilated ResNet-50 (hszhao/semseg's head, with its auxiliary head)", {"name": "pspnet"}),
    "deeplabv3": ("DeepLabv3, dilated ResNet-101 (torchvision's deeplabv3_resnet101)", {"name": "deeplabv3"}),
    "unode": ("U-Node (the authors' ConvODEUNet, 16 filters), Dopri5, backsolve adjoint", {"name": "unode"}),
    "nodes_unet": (
        "NODEs-UNet (our reading: U-Net + an ODE block after each of its 9 double convolutions), Dopri5, backsolve",
        {"name": "nodes_unet"},
    ),
    "baseline+remat_stem": (
        "Baseline + remat of the stem (reference: the stem lever applied to the Baseline)",
        {"name": "baseline", "remat.stem": True},
    ),
}


def model_config(overrides: dict[str, Any], **extra: Any):
    """``configs/camvid.py``'s model section with the library's solve (the paper's backsolve
    adjoint; the dataset configs train with :data:`segnode_jax.config.DATASET_SOLVE`) and
    ``overrides`` (dotted keys) applied."""
    cfg = segnode_jax.load_config(os.path.join(ROOT, "configs", "camvid.py")).model
    library = segnode_jax.config.ode_config()
    paper = {f"ode.{k}": library[k] for k in segnode_jax.config.DATASET_SOLVE}
    segnode_jax.config.apply_overrides(cfg, {**paper, **overrides, **extra})
    return segnode_jax.freeze(cfg)


# Which training step a row was measured with (``memory_step``/``time_step`` in table2.json):
# "library" = segnode_jax.training.train_step with configs/camvid.py's recipe; rows without the
# field were measured before 2026-12-02 with a plain step (SGD, momentum 0.9, lr 0.01, no weight
# decay, plain cross-entropy + 0.4 x OCR aux loss).
STEP_KIND = "library"


def make_train_step(mc) -> tuple[Callable, Any]:
    """The library's own training step (``segnode_jax.training.train_step``: loss with the
    config's OHEM / OCR auxiliary weight, BatchNorm updates, the finite-update guard) with
    ``configs/camvid.py``'s optimiser recipe for this model (SGD with momentum and weight decay,
    poly schedule): ``(step(state, images, labels) -> (state, metrics), tx)``."""
    from segnode_jax import training

    cfg = segnode_jax.load_config(os.path.join(ROOT, "configs", "camvid.py"))
    cfg.model = segnode_jax.config.config_dict.ConfigDict(mc.to_dict() if hasattr(mc, "to_dict") else dict(mc))
    cfg = training.resolve_config(cfg)
    tx, schedule = training.make_optimizer(cfg.train, 1000)
    fn = functools.partial(
        training.train_step, model_cfg=mc, tx=tx, schedule=schedule, loss_cfg=cfg.train.loss, class_weights=None
    )

    def step(state, images, labels):
        return fn(state, {"image": images, "label": labels})

    return step, tx


def train_inputs(mc, shape: tuple[int, int, int, int]):
    """``(step, state, images, labels)`` of a real training step at ``shape`` (random images
    and labels, freshly initialised model)."""
    from segnode_jax import training

    step, tx = make_train_step(mc)
    # Parameters and BatchNorm statistics do not depend on the batch: initialise at batch 1 so
    # that initialisation never needs more memory than the step.
    state = training.create_train_state(mc, tx, jax.random.key(0), (1, *shape[1:]))
    images = jax.random.normal(jax.random.key(1), shape)
    labels = jax.random.randint(jax.random.key(2), shape[:3], 0, int(mc.num_classes))
    return step, state, images, labels


def make_infer(mc) -> Callable:
    def infer(variables, images):
        logits, aux = segnode_jax.apply(variables, images, mc)
        return logits, aux.get("ode", {}).get("nfe", jnp.zeros((), jnp.int32))

    return infer


def _abstract_state(mc, shape):
    variables = jax.eval_shape(lambda: segnode_jax.init(mc, jax.random.key(0), shape))
    return variables


def train_memory(mc, batch: int, size: tuple[int, int]) -> dict[str, int]:
    from segnode_jax import training

    shape = (batch, *size, 3)
    step, tx = make_train_step(mc)
    state = jax.eval_shape(lambda: training.create_train_state(mc, tx, jax.random.key(0), (1, *size, 3)))
    images = jax.ShapeDtypeStruct(shape, jnp.float32)
    labels = jax.ShapeDtypeStruct(shape[:3], jnp.int32)
    return memory.analyse(step, state, images, labels, donate_argnums=(0,))


def infer_memory(mc, size: tuple[int, int]) -> dict[str, int]:
    shape = (1, *size, 3)
    variables = _abstract_state(mc, shape)
    images = jax.ShapeDtypeStruct(shape, jnp.float32)
    return memory.analyse(make_infer(mc), variables, images)


def max_train_batch(
    mc, size: tuple[int, int], budget: int, known: dict[int, int] | None = None
) -> tuple[int, dict[int, int]]:
    """The largest training batch whose analysed memory fits ``budget`` bytes (a few compiles;
    ``known``: ``{batch: bytes}`` readings already taken)."""
    return memory.batch_for_budget(lambda b: train_memory(mc, b, size)["total"], budget, known=known)


# A child process runs one training step (``--_run_step``) and prints its result after this tag.
STEP_TAG = "TABLE2_STEP "


def _out_of_memory(e: BaseException) -> bool:
    text = str(e)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


def _run_step(name: str, batch: int, size: tuple[int, int]) -> None:
    """Child: one training step of variant ``name`` at ``batch``; prints whether it fitted and
    the device's peak memory (this process ran nothing else, so the peak is the step's)."""
    mc = model_config(VARIANTS[name][1], num_classes=11)
    device = jax.local_devices()[0]
    try:
        step, state, images, labels = train_inputs(mc, (batch, *size, 3))
        with ode.solver_errors(mc.ode):
            jax.block_until_ready(jax.jit(step, donate_argnums=(0,))(state, images, labels))
        fits = True
    except Exception as e:  # noqa: BLE001 - out of memory surfaces as several error types
        if not _out_of_memory(e):
            raise
        fits = False
    stats = device.memory_stats() or {}
    result = {
        "fits": fits,
        "peak_bytes": stats.get("peak_bytes_in_use") if fits else None,
        "bytes_limit": stats.get("bytes_limit"),
    }
    print(STEP_TAG + json.dumps(result), flush=True)


def run_step_in_child(name: str, batch: int, size: tuple[int, int]) -> dict[str, Any]:
    """Runs one training step in a fresh process, so that its peak is not another variant's
    (a device's peak statistic never goes down). JAX may take 95% of the device's memory there
    (unless ``XLA_PYTHON_CLIENT_MEM_FRACTION`` says otherwise), so the largest batch is the
    device's, not the default 75% pool's."""
    env = dict(os.environ)
    fraction = env.get("XLA_PYTHON_CLIENT_MEM_FRACTION") or env.get("XLA_CLIENT_MEM_FRACTION") or "0.95"
    env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = env["XLA_CLIENT_MEM_FRACTION"] = fraction
    cmd = [sys.executable, "-m", "benchmarks.table2", "--_run_step", name, str(batch), str(size[0]), str(size[1])]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith(STEP_TAG):
            return json.loads(line[len(STEP_TAG) :])
    raise RuntimeError(
        f"the training step of {name} at batch {batch} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    )


def gpu_measurements(
    name: str, batch: int, size: tuple[int, int], find_max_batch: bool, guess: int | None = None
) -> dict[str, Any]:
    """Measured peak memory of a training step at ``batch`` on the accelerator, and with
    ``find_max_batch`` the largest batch that runs (searched from ``guess``), each step in a
    fresh process."""
    first = run_step_in_child(name, batch, size)
    out: dict[str, Any] = {"peak_bytes": first["peak_bytes"], "device_memory_bytes": first["bytes_limit"]}
    if find_max_batch:
        runs = {batch: first["fits"]}

        def fits(b: int) -> bool:
            if b not in runs:
                runs[b] = run_step_in_child(name, b, size)["fits"]
                print(f"  {name}: batch {b} {'fits' if runs[b] else 'does not fit'}", flush=True)
            return runs[b]

        out["max_batch_measured"] = memory.largest_batch(fits, guess=guess or batch, limit=4096)
    return out


def time_models(names: list[str], *, width: int, size: tuple[int, int], batch: int, repeats: int) -> dict[str, dict]:
    """Median seconds per training step and per inference batch, interleaved across models."""
    prepared = {}
    for name in names:
        small = {
            "width": width,
            "stem_width": max(16, 2 * width),
            "layer1_planes": max(16, 2 * width),
            "field.groups": min(16, width),
            # The OCR head scaled with the width (512 and 256 channels at W48).
            "ocr.mid_channels": max(8, 512 * width // 48),
            "ocr.key_channels": max(4, 256 * width // 48),
            # The comparison models scaled by the same factor (width / 48 of their channels).
            "unet.base_width": max(4, 64 * width // 48),
            "resnet.stem_width": max(4, 64 * width // 48),
            "pspnet.channels": max(8, 512 * width // 48),
            "pspnet.aux_channels": max(4, 256 * width // 48),
            "deeplabv3.channels": max(8, 256 * width // 48),
            "deeplabv3.aux_channels": max(4, 256 * width // 48),
            "unode.num_filters": max(4, 16 * width // 48),
            "nodes_unet.base_width": max(4, 64 * width // 48),
            "nodes_unet.groups": min(32, max(1, 64 * width // 48)),
        }
        mc = model_config(VARIANTS[name][1], **small)
        step, state, images, labels = train_inputs(mc, (batch, *size, 3))
        variables = state.variables
        t = time.perf_counter()
        # Compiled as for the memory analysis: on a CPU, remat's recomputation then runs (and
        # costs time) as it does on an accelerator.
        options = memory.compiler_options()
        # Not donated: every repeat runs from the same state.
        train = jax.jit(step).lower(state, images, labels).compile(compiler_options=options)
        infer = jax.jit(make_infer(mc)).lower(variables, images[:1]).compile(compiler_options=options)
        compile_s = time.perf_counter() - t
        prepared[name] = (mc, train, infer, state, variables, images, labels)
        print(f"  compiled {name} for timing in {compile_s:.0f}s", flush=True)
    times = {n: {"train": [], "infer": [], "train_nfe": [], "infer_nfe": []} for n in names}
    for r in range(repeats + 1):  # the first round warms up and is dropped
        for name in names:
            mc, train, infer, state, variables, images, labels = prepared[name]
            with ode.solver_errors(mc.ode):
                t = time.perf_counter()
                out = train(state, images, labels)
                jax.block_until_ready(out)
                dt_train = time.perf_counter() - t
                t = time.perf_counter()
                logits, nfe_i = infer(variables, images[:1])
                jax.block_until_ready(logits)
                dt_infer = time.perf_counter() - t
            if r:
                times[name]["train"].append(dt_train)
                times[name]["infer"].append(dt_infer)
                times[name]["train_nfe"].append(int(out[1].get("ode_nfe", 0)))
                times[name]["infer_nfe"].append(int(nfe_i))
    return {
        n: {
            "train_step_seconds": statistics.median(v["train"]),
            "infer_seconds": statistics.median(v["infer"]),
            "nfe": float(np.mean(v["infer_nfe"])) if n.startswith(tuple(ode_model_names())) else None,
        }
        for n, v in times.items()
    }


REFERENCE_ROWS = ("hrnetv2", "baseline", "segnode")


def references(time_references: dict | list | None) -> list[dict]:
    """``time_references`` as a list, one entry per day (older table2.json files hold one dict)."""
    if not time_references:
        return []
    return [time_references] if isinstance(time_references, dict) else list(time_references)


def timed_beside(models: dict[str, dict], time_references: dict | list | None, name: str) -> tuple[dict, dict]:
    """The HRNetV2 and Baseline timings to compare row ``name`` with: those timed in the same
    process -- the ``time_references`` of the day the row was timed, else the table's own rows."""
    measured = models.get(name, {}).get("time_measured")
    for refs in references(time_references):
        if name not in REFERENCE_ROWS and measured == refs.get("date"):
            return refs["hrnetv2"], refs["baseline"]
    return models.get("hrnetv2", {}), models.get("baseline", {})


def keep_references(previous: dict, retimed: list[str], today: str) -> list[dict]:
    """The ``time_references`` after re-timing the rows ``retimed`` today: when HRNetV2, the
    Baseline and SegNode are re-timed, their earlier timings are kept as the references of the
    day they were timed, for the rows timed beside them then that are not re-timed now."""
    refs = references(previous.get("time_references"))
    models = previous.get("models", {})
    day = models.get("baseline", {}).get("time_measured")
    others = [
        n for n, m in models.items() if n not in REFERENCE_ROWS and n not in retimed and m.get("time_measured") == day
    ]
    if (
        day
        and day != today
        and set(REFERENCE_ROWS) <= set(retimed)
        and others
        and all(n in models for n in REFERENCE_ROWS)
        and not any(r.get("date") == day for r in refs)
    ):
        kept = {n: {k: models[n][k] for k in ("train_step_seconds", "infer_seconds")} for n in REFERENCE_ROWS}
        refs.append({"date": day, "cpu": models["baseline"].get("time_cpu"), **kept})
    return refs


def ratios(models: dict[str, dict], time_references: dict | None = None) -> dict[str, dict[str, float | None]]:
    """SegNode variants over the Baseline / HRNetV2. Times are compared within one process: a row
    timed on the day of ``time_references`` against the Baseline and HRNetV2 timed beside it."""

    def r(a, b):
        return None if a is None or b is None or not b else a / b

    base, hr = models.get("baseline", {}), models.get("hrnetv2", {})
    out = {}
    for name, m in models.items():
        if not name.startswith("segnode"):
            continue
        hr_t, base_t = timed_beside(models, time_references, name)
        out[name] = {
            "train_memory_vs_baseline": r(m.get("train_memory_bytes"), base.get("train_memory_bytes")),
            "train_time_vs_baseline": r(m.get("train_step_seconds"), base_t.get("train_step_seconds")),
            "infer_memory_vs_hrnetv2": r(m.get("infer_memory_bytes"), hr.get("infer_memory_bytes")),
            "infer_time_vs_hrnetv2": r(m.get("infer_seconds"), hr_t.get("infer_seconds")),
            "params_vs_hrnetv2": r(m.get("params"), hr.get("params")),
            "max_batch_vs_baseline": r(m.get("max_batch_analysed"), base.get("max_batch_analysed")),
        }
    return out


def _gib(x):
    return "-" if x is None else f"{x / 2**30:.2f}"


def _f(x, fmt="{:.2f}"):
    return "-" if x is None else fmt.format(x)


def _measured_with_the_old_step(result: dict) -> list[str]:
    """Rows whose memory or time was measured with the plain step of before 2026-12-02."""
    return [
        n
        for n, m in result["models"].items()
        if ("train_memory_bytes" in m and m.get("memory_step") != STEP_KIND)
        or ("train_step_seconds" in m and m.get("time_step") != STEP_KIND)
    ]


def _when(result: dict) -> str:
    """The measurement dates of the rows (a range when they differ)."""
    dates = sorted({m.get(k) for m in result["models"].values() for k in ("memory_measured", "time_measured")} - {None})
    if len(dates) < 2:
        return result["date"]
    return f"{dates[0]} to {dates[-1]} (each row's dates: `memory_measured`, `time_measured` in table2.json)"


def markdown(result: dict) -> str:
    """benchmarks/README.md's Table 2 section: how it was measured, the models, the ratios."""
    return "\n".join(
        [
            *_settings_lines(result),
            *_models_table(result),
            *_ratios_table(result),
            *_time_references_note(result),
            "",
            *paper_rows_markdown(result),
            "",
            "Variants:",
            "",
            *(f"* `{n}`: {VARIANTS[n][0]}" for n in result["models"]),
        ]
    )


def _has_device_measurements(result: dict) -> bool:
    return any(m.get("peak_bytes") is not None or "max_batch_measured" in m for m in result["models"].values())


def _settings_lines(result: dict) -> list[str]:
    """How the table was measured: memory, time, device columns and the training step."""
    s = result["settings"]
    lines = [
        f"Measured {_when(result)} on {result['machine']} (jax {result['jax']}, backend {result['backend']}).",
        f"Memory: W{s['width']}, CamVid {s['size'][1]}x{s['size'][0]}, {s['num_classes']} classes, training batch "
        f"{s['train_batch']}, inference batch 1, from XLA's memory analysis of the compiled step"
        + (
            f"; max batch: the largest training batch whose analysed memory fits {s['max_batch_budget_gib']:g} GiB "
            f"(paper, V100 32GB: HRNetV2 {PAPER['max_batch']['hrnetv2']}, Baseline {PAPER['max_batch']['baseline']}, "
            f"SegNode {PAPER['max_batch']['segnode']})."
            if s.get("max_batch_budget_gib")
            else "."
        ),
        f"Time: width {s['time_width']}, {s['time_size'][1]}x{s['time_size'][0]} images, training batch "
        f"{s['time_batch']}, inference batch 1, median of {s['repeats']} interleaved repeats; NFE at "
        "initialisation on random images (a trained field may need more or fewer).",
    ]
    if _has_device_measurements(result):
        lines.append(
            "Measured peak: the device's peak memory over one training step at the memory batch, each step in a "
            "fresh process; measured max batch: the largest training batch that ran (JAX allowed 95% of the memory)."
        )
    old_step = _measured_with_the_old_step(result)
    lines.append(
        "Training step: the library's own (`segnode_jax.training.train_step`, configs/camvid.py's recipe: SGD with "
        "momentum, weight decay and the poly schedule, the config's loss)"
        + (
            "."
            if not old_step
            else f"; rows marked * ({len(old_step)}) were measured before 2026-12-02 with a plain step (SGD, plain "
            "cross-entropy) and are not yet remeasured, so ratios between marked and unmarked rows mix the two."
        )
    )
    return lines + [""]


def _models_table(result: dict) -> list[str]:
    """One row per model: parameters, memory (analysed; measured on a device), time, NFE."""
    budget = result["settings"].get("max_batch_budget_gib")
    measured = _has_device_measurements(result)
    old_step = _measured_with_the_old_step(result)
    head = "| model | params (M) | train mem (GiB) | infer mem (GiB) |"
    rule = "|---|---:|---:|---:|"
    if budget:
        head += f" max batch in {budget:g} GiB |"
        rule += "---:|"
    if measured:
        head += " measured peak (GiB) | measured max batch |"
        rule += "---:|---:|"
    lines = [head + " train step (s) | inference (s) | NFE |", rule + "---:|---:|---:|"]
    for name, m in result["models"].items():
        row = (
            f"| `{name}`{' *' if name in old_step else ''} | {_f(m.get('params') and m['params'] / 1e6)} | {_gib(m.get('train_memory_bytes'))} | "
            f"{_gib(m.get('infer_memory_bytes'))} |"
        )
        if budget:
            row += f" {_f(m.get('max_batch_analysed'), '{:d}')} |"
        if measured:
            row += f" {_gib(m.get('peak_bytes'))} | {_f(m.get('max_batch_measured'), '{:d}')} |"
        lines.append(
            row
            + f" {_f(m.get('train_step_seconds'), '{:.3f}')} | {_f(m.get('infer_seconds'), '{:.3f}')} | {_f(m.get('nfe'), '{:.0f}')} |"
        )
    return lines


def _ratios_table(result: dict) -> list[str]:
    """The SegNode variants against the Baseline and HRNetV2, the paper's ratios in the header."""
    p = PAPER["ratios"]
    lines = [
        "",
        "Ratios (paper in the header):",
        "",
        f"| SegNode variant | train mem / Baseline ({p['train_memory_vs_baseline']}) | train time / Baseline "
        f"({p['train_time_vs_baseline']}) | infer mem / HRNetV2 ({p['infer_memory_vs_hrnetv2']}) | infer time / "
        f"HRNetV2 ({p['infer_time_vs_hrnetv2']}) | params / HRNetV2 ({p['params_vs_hrnetv2']}) | max batch / Baseline "
        f"({p['max_batch_vs_baseline']:.2f}) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in result["ratios"].items():
        lines.append(
            f"| `{name}` | {_f(r['train_memory_vs_baseline'])} | {_f(r['train_time_vs_baseline'])} | "
            f"{_f(r['infer_memory_vs_hrnetv2'])} | {_f(r['infer_time_vs_hrnetv2'])} | {_f(r['params_vs_hrnetv2'])} | "
            f"{_f(r.get('max_batch_vs_baseline'))} |"
        )
    return lines


def _time_references_note(result: dict) -> list[str]:
    """For rows timed on another day: the times of the three main models in that process."""
    hrnet_measured = result["models"].get("hrnetv2", {}).get("time_measured")
    lines = []
    for refs in references(result.get("time_references")):
        rows = [
            n for n, m in result["models"].items() if n not in REFERENCE_ROWS and m.get("time_measured") == refs["date"]
        ]
        lines += [
            "",
            (
                f"Rows timed on {refs['date']}"
                + (f" on {refs['cpu']}" if refs.get("cpu") else "")
                + f" ({', '.join(f'`{n}`' for n in rows)}) ran interleaved with HRNetV2, the "
                "Baseline and SegNode in one process; those three then took "
                + ", ".join(
                    f"`{n}` {refs[n]['train_step_seconds']:.3f} s per training step and {refs[n]['infer_seconds']:.3f} s "
                    "per inference"
                    for n in ("hrnetv2", "baseline", "segnode")
                )
                + " (the ratios of those rows use these; the table's own rows of the three are timed "
                + ("on " + hrnet_measured + " " if hrnet_measured else "")
                + "with the SegNode variants timed that day, so that ratios stay within one measurement)."
            ),
        ]
    return lines


def paper_rows_markdown(result: dict) -> list[str]:
    """Every row of the paper's Table 2 beside ours (its V100 numbers; ours from the analysis),
    with SegNode's training-memory ratio to each model, ours and the paper's."""
    models, rows = result["models"], PAPER["rows"]
    seg = models.get("segnode", {}).get("train_memory_bytes")

    def infer_vs_hrnetv2(name):
        """Inference time over HRNetV2's, HRNetV2 timed in the same process as the row."""
        t = models.get(name, {}).get("infer_seconds")
        hr = timed_beside(models, result.get("time_references"), name)[0].get("infer_seconds")
        return t / hr if t and hr else None

    lines = [
        "The paper's Table 2 beside ours (paper: measured on a V100 32GB; ours: XLA's analysis, training batch "
        f"{result['settings']['train_batch']}; the paper's training-memory column presumably at batch 24, the "
        "batch its HRNetV2 row fits; inference time: ours on this CPU with every network's channels scaled to "
        f"width {result['settings']['time_width']}/48, over HRNetV2's timed in the same process, the paper's from its "
        "V100 milliseconds per image):",
        "",
        "| model | params (M) | paper | train mem (GiB) | paper (GB) | infer mem (GiB) | paper (GB) | max batch | paper "
        "| SegNode train mem / model's | paper | infer time / HRNetV2's (CPU, width "
        f"{result['settings']['time_width']}) | paper (V100) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, p in rows.items():
        m = models.get(name, {})
        mem = m.get("train_memory_bytes")
        ours_ratio = seg / mem if seg and mem else None
        lines.append(
            f"| `{name}` | {_f(m.get('params') and m['params'] / 1e6)} | {p['params_m']} | {_gib(mem)} | {p['train_memory_gb']} | "
            f"{_gib(m.get('infer_memory_bytes'))} | {p['test_memory_gb']} | {_f(m.get('max_batch_analysed'), '{:d}')} | "
            f"{p['max_batch']} | {_f(ours_ratio)} | {rows['segnode']['train_memory_gb'] / p['train_memory_gb']:.2f} | "
            f"{_f(infer_vs_hrnetv2(name))} | {p['test_ms'] / rows['hrnetv2']['test_ms']:.2f} |"
        )
    lines += [
        "",
        "PSPNet's 23.7M matches no PSPNet configuration we could identify (ours is the authors' PSPNet on "
        "ResNet-50; docs/reproduction.md), so its row compares different networks.",
    ]
    return lines


# The short version of Table 2 (benchmarks/results/table2.md): (variant in table2.json, label).
SUMMARY_ROWS = (
    ("hrnetv2", "HRNetV2-W48"),
    ("baseline", "Baseline"),
    ("segnode", "SegNode (Dopri5, backsolve)"),
    ("segnode+remat_all", "SegNode + `model.remat.stem/field/head=True`"),
    ("segnode+euler_x2/unrolled+remat_all", "SegNode, Euler x2, `model.ode.adjoint=unrolled` + remat"),
    ("hrnetv2+ocr", "HRNetV2-W48 + OCR"),
    ("baseline+ocr", "Baseline + OCR"),
    ("segnode+ocr", "SegNode + OCR (Dopri5, backsolve)"),
    ("unet", "U-Net"),
    ("pspnet", "PSPNet (ResNet-50)"),
    ("deeplabv3", "DeepLabv3 (ResNet-101)"),
    ("unode", "U-Node (Dopri5, backsolve)"),
    ("nodes_unet", "NODEs-UNet (Dopri5, backsolve)"),
)


def summary_markdown(result: dict) -> str:
    """The Table 2 summary of benchmarks/results/table2.md, generated from ``table2.json`` (never typed by hand)."""
    s, models, r = result["settings"], result["models"], result["ratios"]
    paper = {
        n: f"{p['params_m']}M, batch {p['max_batch']}, {p['train_memory_gb']} GB" for n, p in PAPER["rows"].items()
    }
    lines = [
        f"Measured {_when(result)} on {result['machine']} (`python -m benchmarks.table2`; full table, method "
        f"and findings in `benchmarks/README.md`). W{s['width']}, CamVid {s['size'][1]}x{s['size'][0]}, "
        f"{s['num_classes']} classes; memory from XLA's analysis of the compiled step (training batch "
        f"{s['train_batch']}, inference batch 1; max batch: the largest training batch whose analysed memory "
        f"fits {s['max_batch_budget_gib']:g} GiB, the paper's V100 column):",
        "",
        f"| | params | train memory | infer memory | max batch in {s['max_batch_budget_gib']:g} GiB | paper |",
        "|---|---:|---:|---:|---:|---|",
    ]
    old_step = _measured_with_the_old_step(result)
    for name, label in SUMMARY_ROWS:
        m = models.get(name)
        if m is None:
            continue
        lines.append(
            f"| {label}{' *' if name in old_step else ''} | {m['params'] / 1e6:.2f}M | {_gib(m.get('train_memory_bytes'))} GiB | "
            f"{_gib(m.get('infer_memory_bytes'))} GiB | {_f(m.get('max_batch_analysed'), '{:d}')} | {paper.get(name, '')} |"
        )
    pr = PAPER["ratios"]
    train_ratios = "; ".join(
        f"{_f(r[n]['train_memory_vs_baseline'])} {label}"
        for n, label in (
            ("segnode", "Dopri5 backsolve"),
            ("segnode+remat_all", "with remat"),
            ("segnode+euler_x2/unrolled+remat_all", "Euler x2 unrolled + remat"),
        )
        if n in r
    )
    infer_times = [
        r[n]["infer_time_vs_hrnetv2"]
        for n in ("segnode", "segnode/recursive_checkpoint", "segnode/adjoint_tol_1e-1")
        if n in r and r[n]["infer_time_vs_hrnetv2"]
    ]
    lines += [
        f"| SegNode / Baseline, training memory | | {train_ratios} | | | {pr['train_memory_vs_baseline']} |",
        f"| SegNode / HRNetV2, inference memory | | | {_f(r['segnode']['infer_memory_vs_hrnetv2'])} | | {pr['infer_memory_vs_hrnetv2']} |",
        "",
        f"Inference with adaptive Dopri5 takes {min(infer_times):.2f}-{max(infer_times):.2f}x HRNetV2's time at width "
        f"{s['time_width']} on this machine (paper {pr['infer_time_vs_hrnetv2']}x); training with the adaptive "
        f"backsolve takes {_f(r['segnode']['train_time_vs_baseline'], '{:.0f}')}x the Baseline's step time here (paper "
        f"{pr['train_time_vs_baseline']}x), Euler x2 unrolled "
        f"{_f(r.get('segnode+euler_x2/unrolled', {}).get('train_time_vs_baseline'))}x.",
    ]
    if any(name in old_step for name, _ in SUMMARY_ROWS):
        lines += [
            "",
            "Training step: the library's own (`segnode_jax.training.train_step`); rows marked * were measured "
            "before 2026-12-02 with a plain step (SGD, plain cross-entropy) and are not yet remeasured.",
        ]
    return "\n".join(lines)


def write_readme(table: str) -> None:
    text = open(README).read() if os.path.exists(README) else "# Benchmarks\n\n" + BEGIN + "\n" + END + "\n"
    if BEGIN not in text:
        text += "\n" + BEGIN + "\n" + END + "\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(README + ".tmp", "w") as f:
        f.write(head + BEGIN + "\n" + table + "\n" + END + tail)
    os.replace(README + ".tmp", README)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), help="variants to measure (default: all)")
    parser.add_argument("--train_batch", type=int, default=24)
    parser.add_argument("--size", type=int, nargs=2, default=(360, 480), metavar=("H", "W"))
    parser.add_argument("--no_memory", action="store_true", help="skip the W48 memory analysis")
    parser.add_argument("--no_time", action="store_true", help="skip the wall-time measurements")
    parser.add_argument("--time_width", type=int, default=16)
    parser.add_argument("--time_size", type=int, nargs=2, default=(96, 128), metavar=("H", "W"))
    parser.add_argument("--time_batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--time_only", nargs="+", choices=list(VARIANTS), help="variants to time (default: --only)")
    parser.add_argument(
        "--budget_gib",
        type=float,
        default=32.0,
        help="memory budget (GiB) for the largest training batch by XLA's analysis, any backend "
        "(default 32: the paper's V100 32GB column; about 3 more compiles per variant); 0 skips it",
    )
    parser.add_argument(
        "--max_batch",
        action="store_true",
        help="GPU only: also search the largest training batch that runs (fresh process per try)",
    )
    parser.add_argument("--_run_step", nargs=4, metavar=("NAME", "BATCH", "H", "W"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=os.path.join(RESULTS, "table2.json"))
    parser.add_argument("--no_readme", action="store_true", help="do not rewrite benchmarks/README.md")
    parser.add_argument(
        "--report_only",
        action="store_true",
        help="measure nothing: regenerate the tables of benchmarks/README.md and README.md from --out",
    )
    return parser


def _memory_row(name: str, args, size: tuple[int, int], infer_cache: dict, backend: str) -> dict[str, Any]:
    """The memory columns of one variant at W48: XLA's analysis of a training step and of
    inference (inference once per settings that change it), the largest batch within the budget
    and, on a GPU, what the device measured."""
    mc = model_config(VARIANTS[name][1], num_classes=11)
    m: dict[str, Any] = {}
    t = time.perf_counter()
    m["train_memory_bytes"] = train_memory(mc, args.train_batch, size)["total"]
    # Inference does not depend on the adjoint (but for the unrolled solve, which runs
    # without diffrax's loop): measure once per remaining settings.
    adjoint = "unrolled" if mc.ode.adjoint == "unrolled" else "direct"
    key = model_config(VARIANTS[name][1], num_classes=11, **{"ode.adjoint": adjoint, "ode.adjoint_seminorm": True})
    if key not in infer_cache:
        infer_cache[key] = infer_memory(mc, size)
    m["infer_memory_bytes"] = infer_cache[key]["total"]
    if args.budget_gib:
        known = {args.train_batch: m["train_memory_bytes"]}
        m["max_batch_analysed"], _ = max_train_batch(mc, size, int(args.budget_gib * 2**30), known)
    print(
        f"{name}: train {_gib(m['train_memory_bytes'])} GiB  infer {_gib(m['infer_memory_bytes'])} GiB  "
        f"max batch {m.get('max_batch_analysed', '-')}  ({time.perf_counter() - t:.0f}s)",
        flush=True,
    )
    m["memory_measured"], m["memory_step"] = time.strftime("%Y-%m-%d"), STEP_KIND
    if backend == "gpu":
        m.update(gpu_measurements(name, args.train_batch, size, args.max_batch, guess=m.get("max_batch_analysed")))
    return m


def _settings(args, previous: dict) -> dict[str, Any]:
    """The run's settings; for the columns skipped (--no_memory, --no_time) the previous run's,
    whose numbers the table keeps."""
    memory_settings = {
        "size": list(args.size),
        "num_classes": 11,
        "train_batch": args.train_batch,
        "max_batch_budget_gib": args.budget_gib or None,
    }
    if args.no_memory and "settings" in previous:
        memory_settings = {k: previous["settings"].get(k) for k in memory_settings}
    time_settings = {
        "time_width": args.time_width,
        "time_size": list(args.time_size),
        "time_batch": args.time_batch,
        "repeats": args.repeats,
    }
    if args.no_time and "settings" in previous:
        time_settings = {k: previous["settings"].get(k) for k in time_settings}
    return {"width": 48, **memory_settings, **time_settings}


def _publish(result: dict, out: str, readme: bool) -> None:
    """Writes the JSON (ratios derived again), prints the table and regenerates the pages."""
    result["ratios"] = ratios(result["models"], result.get("time_references"))
    report.write_json_at(out, result, indent=2)
    table = markdown(result)
    print(table)
    if readme:
        write_readme(table)
        report.replace_block(os.path.join(report.RESULTS, "table2.md"), "table2-summary", summary_markdown(result))


def main(argv=None) -> dict:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.report_only:
        result = json.load(open(args.out))
        _publish(result, args.out, readme=True)
        return result
    if args._run_step:
        name, batch, h, w = args._run_step
        _run_step(name, int(batch), (int(h), int(w)))
        return {}
    backend = jax.default_backend()
    if args.max_batch and backend != "gpu":
        parser.error(
            f"--max_batch runs training steps until the device runs out of memory and needs a GPU (backend here: {backend}); "
            "the largest batch by XLA's analysis is measured on any backend (--budget_gib, default 32)"
        )
    if args.budget_gib < 0:
        parser.error(f"--budget_gib must be positive (or 0 to skip), got {args.budget_gib}")

    names = args.only or list(VARIANTS)
    size = tuple(args.size)
    previous = json.load(open(args.out)) if os.path.exists(args.out) else {"models": {}}
    models: dict[str, dict] = {n: dict(previous["models"].get(n, {})) for n in names}
    infer_cache: dict[Any, dict] = {}
    for name in names:
        models[name]["params"] = segnode_jax.count_params(model_config(VARIANTS[name][1], num_classes=11))
        if not args.no_memory:
            models[name].pop("max_batch_analysed", None)
            models[name].update(_memory_row(name, args, size, infer_cache, backend))
    if not args.no_time:
        timed = time_models(
            args.time_only or names,
            width=args.time_width,
            size=tuple(args.time_size),
            batch=args.time_batch,
            repeats=args.repeats,
        )
        for name, t in timed.items():
            models.setdefault(name, dict(previous["models"].get(name, {}))).update(
                t, time_measured=time.strftime("%Y-%m-%d"), time_step=STEP_KIND, time_cpu=report.cpu_model()
            )
            print(
                f"{name}: train step {t['train_step_seconds']:.3f}s  inference {t['infer_seconds']:.3f}s  NFE {t['nfe']}"
            )
    merged = {**previous["models"], **models}
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores"
        + (f", {jax.devices()[0].device_kind}" if backend == "gpu" else ""),
        "backend": backend,
        "jax": jax.__version__,
        "settings": _settings(args, previous),
        "paper": PAPER,
        "models": {n: merged[n] for n in VARIANTS if n in merged},
    }
    # The same-process timings of rows timed on other days (kept, and added to when the three are re-timed).
    refs = (
        previous
        if args.no_time
        else {"time_references": keep_references(previous, list(args.time_only or names), time.strftime("%Y-%m-%d"))}
    )
    if refs.get("time_references"):
        result["time_references"] = refs["time_references"]
    _publish(result, args.out, readme=not args.no_readme)
    return result


if __name__ == "__main__":
    main()
