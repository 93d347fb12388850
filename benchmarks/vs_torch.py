# pyright: reportMissingImports=false
# (torch and torchdiffeq come from benchmarks/torch_peer/requirements.txt, not the project's venv that CI type-checks)
"""segnode-jax against SegNode in PyTorch + torchdiffeq (the paper's stack), side by side.

    pip install -r benchmarks/torch_peer/requirements.txt     # torch (CPU) and torchdiffeq
    python -m benchmarks.vs_torch [--width 8] [--size 64x96] [--batch 2] [--repeats 3]
                                  [--settings dopri5,rk4x2,euler_x2] [--report_only]

Both frameworks run the same network with the same weights (ours, initialised by segnode-jax
and copied into ``benchmarks/torch_peer/segnode_torch.py``) and the same solve settings:
``dopri5`` (the paper's: adaptive Dopri5 at the config's rtol/atol, RMS error norm, adjoint
with the seminorm; ``torchdiffeq.odeint_adjoint``), ``rk4x2`` and ``euler_x2`` (fixed steps,
adjoint method). Before anything is timed the script checks that they compute the same
function: with fixed steps (the same discretisation in both) the eval logits to 1e-4 of their
scale and every gradient to 1e-3 of the gradients' global scale; with Dopri5 it reports how
far apart the two adaptive solves are.

Then, per setting and interleaved in one process: a training step (forward in training mode,
cross-entropy, backward, SGD with momentum and the poly schedule -- ours is
``segnode_jax.training.make_train_step``), inference on one image, and the field evaluations
of each (forward and backward; ours counted by ``segnode_jax.ode.counting_evaluations`` at the
initial weights, since diffrax reports only the forward solve's statistics). Memory: the JAX
step's analysed memory (XLA's buffer assignment, any backend); the PyTorch step's measured peak
on a GPU (``torch.cuda.max_memory_allocated``, reset before each step), not measured on a CPU
(no comparable statistic). The GPU path has not run yet (no GPU lent so far).

Writes ``benchmarks/results/vs_torch.json`` and the table in ``benchmarks/results/vs_torch.md`` (``--report_only``
rewrites the table from the JSON).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if not __package__:  # run by path: the imports below need the repository root, which `python -m` puts on the path
    print(
        "error: run the benchmarks as modules from the repository root: python -m benchmarks.vs_torch ...",
        file=sys.stderr,
    )
    sys.exit(2)

from benchmarks import report  # noqa: E402

SETTINGS = {
    # adjoint_normalise off: torchdiffeq solves the adjoint ODE for the raw cotangent.
    "dopri5": dict(solver="dopri5", num_steps=None, adjoint="backsolve", adjoint_normalise=False),
    "rk4x2": dict(solver="rk4", num_steps=2, adjoint="backsolve"),
    "euler_x2": dict(solver="euler", num_steps=2, adjoint="backsolve"),
}
JSON = "vs_torch.json"


def _need_torch():
    try:
        import torch  # noqa: F401
        import torchdiffeq  # noqa: F401
    except ImportError:
        print(
            "error: benchmarks/vs_torch.py needs torch and torchdiffeq: "
            "pip install -r benchmarks/torch_peer/requirements.txt",
            file=sys.stderr,
        )
        raise SystemExit(2) from None


def make_config(setting: str, width: int, batch: int, size: tuple[int, int]):
    import segnode_jax
    import segnode_jax.config
    from segnode_jax import training

    cfg = segnode_jax.load_config(os.path.join(ROOT, "configs", "camvid.py"))
    overrides = {
        "model.width": width,
        "model.stem_width": max(16, 2 * width),
        "model.layer1_planes": max(16, 2 * width),
        "model.field.groups": min(16, width),
        "train.batch_size": batch,
        "data.crop_size": size,
        "train.loss.ohem": False,
    }
    overrides.update({f"model.ode.{k}": v for k, v in SETTINGS[setting].items()})
    segnode_jax.config.apply_overrides(cfg, overrides)
    return training.resolve_config(cfg)


def _torch_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _to_numpy(tree):
    import jax

    return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))


class Pair:
    """One setting in both frameworks, from the same weights."""

    def __init__(self, setting, variables, images, labels, cfg, num_steps):
        import jax
        import torch

        from benchmarks.torch_peer import segnode_torch
        from segnode_jax import parallel, training

        self.setting, self.cfg = setting, cfg
        self.images, self.labels = images, labels
        mesh = parallel.make_mesh(jax.devices()[:1])
        tx, _ = training.make_optimizer(cfg.train, num_steps)
        self.jax_step = training.make_train_step(cfg, num_steps, mesh)
        # Its own copy: the step donates the state it is given.
        own = jax.tree_util.tree_map(jax.numpy.array, variables)
        state = training.TrainState(
            step=jax.numpy.zeros((), jax.numpy.int32),
            params=own["params"],
            batch_stats=own["batch_stats"],
            opt_state=tx.init(own["params"]),
        )
        # Laid out as the step returns it (as the training loop does): otherwise the second call
        # sees other input shardings and compiles again inside the timed rounds.
        self.state = jax.device_put(state, training.train_state_shardings(cfg.model, tx, mesh, cfg.get("parallel")))
        self.batch = parallel.global_batch({"image": images, "label": labels}, mesh)
        self.variables = variables
        self.device = _torch_device()
        self.peer = segnode_torch.SegNodeTorch(cfg.model.to_dict())
        segnode_torch.load_flax_variables(self.peer, _to_numpy(variables))
        self.peer.to(self.device)
        t = cfg.train
        self.opt = torch.optim.SGD(
            self.peer.parameters(),
            lr=float(t.learning_rate),
            momentum=float(t.momentum),
            weight_decay=float(t.weight_decay),
        )
        power = float(t.get("poly_power", 0.9))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda k: (1 - min(k, num_steps) / num_steps) ** power)
        self.x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(self.device)
        self.y = torch.from_numpy(labels.astype(np.int64)).to(self.device)

    # -- one timed call each --------------------------------------------------------------------
    def jax_train(self):
        import jax

        t = time.perf_counter()
        self.state, metrics = self.jax_step(self.state, self.batch)
        jax.block_until_ready(metrics)
        dt = time.perf_counter() - t
        return dt, {"nfe_forward": int(metrics.get("ode_nfe", -1)), "loss": float(metrics["loss"])}

    def torch_train(self):
        import torch
        import torch.nn.functional as F

        peer = self.peer
        peer.train()
        cuda = self.device.type == "cuda"
        if cuda:  # this step's own peak
            _sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        t = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(peer(self.x), self.y, ignore_index=255)
        forward = peer.last_nfe
        peer.field.nfe = 0
        loss.backward()
        self.opt.step()
        self.sched.step()
        _sync(self.device)
        dt = time.perf_counter() - t
        extra = {"nfe_forward": forward, "nfe_backward": peer.field.nfe, "loss": float(loss.detach())}
        if cuda:
            extra["peak_bytes"] = int(torch.cuda.max_memory_allocated(self.device))
        return dt, extra

    def jax_infer(self):
        import jax

        import segnode_jax

        v = {"params": self.state.params, "batch_stats": self.state.batch_stats}
        t = time.perf_counter()
        logits, aux = segnode_jax.apply(v, self.images[:1], self.cfg.model)
        jax.block_until_ready(logits)
        return time.perf_counter() - t, {"nfe": int(aux["ode"]["nfe"])}

    def torch_infer(self):
        import torch

        self.peer.eval()
        t = time.perf_counter()
        with torch.inference_mode():
            self.peer(self.x[:1])
        _sync(self.device)
        return time.perf_counter() - t, {"nfe": self.peer.last_nfe}


def _jax_outputs(cfg, variables, images, labels):
    """segnode-jax's eval logits, training-mode loss and parameter gradients."""
    import jax
    import optax

    import segnode_jax
    import segnode_jax.config
    from segnode_jax import ode

    logits, _ = segnode_jax.apply(variables, images, cfg.model)
    counted = ode.with_settings(cfg.model, count_evaluations=True)

    def loss(params):
        out, aux = segnode_jax.apply(
            {"params": params, "batch_stats": variables["batch_stats"]}, images, counted, train=True
        )
        return optax.softmax_cross_entropy_with_integer_labels(out, labels).mean(), aux["ode"]["nfe"]

    # Run inside the counter: the forward and backward solves' evaluations.
    with ode.counting_evaluations() as evaluations:
        (value, forward), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
        jax.block_until_ready(grads)
    nfe = {"train_forward": int(forward), "train_backward": evaluations["count"] - int(forward)}
    return np.asarray(logits), float(value), jax.tree_util.tree_leaves(_to_numpy(grads)), nfe


def _torch_outputs(cfg, variables, images, labels):
    """The torch peer's eval logits (NHWC), training-mode loss and gradients (Flax order)."""
    import jax
    import torch
    import torch.nn.functional as F

    from benchmarks.torch_peer import segnode_torch

    device = _torch_device()
    peer = segnode_torch.SegNodeTorch(cfg.model.to_dict())
    segnode_torch.load_flax_variables(peer, _to_numpy(variables))
    peer.to(device).eval()
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)
    with torch.no_grad():
        logits = peer(x).permute(0, 2, 3, 1).cpu().numpy()
    peer.train()
    peer.zero_grad()
    loss = F.cross_entropy(peer(x), torch.from_numpy(labels.astype(np.int64)).to(device))
    forward = peer.last_nfe
    peer.field.nfe = 0
    loss.backward()
    nfe = {"train_forward": int(forward), "train_backward": int(peer.field.nfe)}
    return logits, float(loss.detach()), jax.tree_util.tree_leaves(segnode_torch.flax_grads_of(peer)), nfe


def _apart(a, b) -> tuple[float, float]:
    """(largest logit difference / the logits' scale, global gradient difference / its scale)."""
    logits = float(np.abs(a[0] - b[0]).max() / np.abs(b[0]).max())
    diff = np.sqrt(sum(float(np.sum((x - y) ** 2)) for x, y in zip(a[2], b[2])))
    scale = np.sqrt(sum(float(np.sum(y**2)) for y in b[2]))
    return logits, float(diff / scale)


def reference_config(cfg, steps: int = 32):
    """The same ODE solved finely with exact gradients of the discrete solve: RK4 x ``steps``,
    differentiated through its checkpointed steps (``recursive_checkpoint``)."""
    import copy

    import segnode_jax
    import segnode_jax.config

    ref = copy.deepcopy(cfg)
    segnode_jax.config.apply_overrides(
        ref, {"model.ode.solver": "rk4", "model.ode.num_steps": steps, "model.ode.adjoint": "recursive_checkpoint"}
    )
    return ref


def check_same_function(setting, cfg, variables, images, labels) -> dict:
    """Logits (eval) and gradients (train mode) of both frameworks from the same weights. For an
    adaptive setting both are also compared with a fine fixed-step reference solve (RK4 x 32 with
    exact gradients), which says how accurate each framework's own solve and adjoint are."""
    ours = _jax_outputs(cfg, variables, images, labels)
    theirs = _torch_outputs(cfg, variables, images, labels)
    logits_err, grad_err = _apart(ours, theirs)
    out = {
        "setting": setting,
        "logits_rel_max_diff": logits_err,
        "loss_jax": ours[1],
        "loss_torch": theirs[1],
        "grad_rel_diff": grad_err,
        "nfe_jax": ours[3],
        "nfe_torch": theirs[3],
    }
    if not SETTINGS[setting]["num_steps"]:
        ref = _jax_outputs(reference_config(cfg), variables, images, labels)
        for name, got in (("jax", ours), ("torch", theirs)):
            lg, gr = _apart(got, ref)
            out[f"{name}_vs_reference"] = {"logits_rel_max_diff": lg, "grad_rel_diff": gr}
    return out


def run(args) -> dict:
    import jax
    import torch

    import segnode_jax
    import segnode_jax.config

    h, w = (int(v) for v in args.size.split("x"))
    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.batch, h, w, 3)).astype(np.float32)
    base = make_config("rk4x2", args.width, args.batch, (h, w))
    labels = rng.integers(0, int(base.model.num_classes), (args.batch, h, w)).astype(np.int32)
    variables = segnode_jax.init(base.model, jax.random.key(0), images.shape)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]

    checks = []
    for s in settings:
        c = check_same_function(s, make_config(s, args.width, args.batch, (h, w)), variables, images, labels)
        checks.append(c)
        print(
            f"check {s}: logits differ by {c['logits_rel_max_diff']:.1e} of their scale, gradients by {c['grad_rel_diff']:.1e}",
            flush=True,
        )
        print(
            f"  NFE (train, initial weights) forward/backward: JAX {c['nfe_jax']['train_forward']}/{c['nfe_jax']['train_backward']}, "
            f"PyTorch {c['nfe_torch']['train_forward']}/{c['nfe_torch']['train_backward']}",
            flush=True,
        )
        for name in ("jax", "torch"):
            if f"{name}_vs_reference" in c:
                r = c[f"{name}_vs_reference"]
                print(
                    f"  {name} vs the RK4 x32 reference: logits {r['logits_rel_max_diff']:.1e}, gradients {r['grad_rel_diff']:.1e}",
                    flush=True,
                )
        if SETTINGS[s]["num_steps"] and (c["logits_rel_max_diff"] > 1e-4 or c["grad_rel_diff"] > 1e-3):
            print(
                f"error: with fixed steps ({s}) the torch peer and segnode-jax should compute the same function; "
                "they do not (see the numbers above): fix the peer before timing",
                file=sys.stderr,
            )
            raise SystemExit(1)

    pairs = {
        s: Pair(s, variables, images, labels, make_config(s, args.width, args.batch, (h, w)), args.repeats + 1)
        for s in settings
    }
    # JAX: XLA's analysis of the compiled step, on any backend (one compile each). PyTorch: the
    # step's measured peak on a GPU (reset before each step), not measured on a CPU.
    from segnode_jax import memory as mem

    memory: dict[str, dict[str, Any]] = {
        s: {
            "jax_train_bytes": mem.of_compiled(
                p.jax_step.lower(p.state, p.batch).compile(compiler_options=mem.compiler_options())
            )["total"]
        }
        for s, p in pairs.items()
    }
    times = {s: {k: [] for k in ("jax_train", "torch_train", "jax_infer", "torch_infer")} for s in settings}
    info = {s: {} for s in settings}
    for r in range(args.repeats + 1):  # round 0 compiles / warms up and is dropped
        for s, p in pairs.items():
            for kind in ("jax_train", "torch_train", "jax_infer", "torch_infer"):
                dt, extra = getattr(p, kind)()
                if r:
                    times[s][kind].append(dt)
                    info[s].setdefault(kind, []).append(extra)
            if r:
                print(f"round {r} {s}: " + ", ".join(f"{k} {times[s][k][-1]:.3f}s" for k in times[s]), flush=True)
    for s in settings:
        peaks = [e["peak_bytes"] for e in info[s]["torch_train"] if "peak_bytes" in e]
        memory[s]["torch_train_bytes"] = max(peaks) if peaks else None
        memory[s]["how"] = "JAX: XLA analysis; PyTorch: " + (
            "measured peak of the step (torch.cuda)" if peaks else "not measured (CPU)"
        )
    rows = []
    for s in settings:
        t = {k: statistics.median(v) for k, v in times[s].items()}
        rows.append(
            {
                "setting": s,
                **SETTINGS[s],
                "jax_train_step_seconds": t["jax_train"],
                "torch_train_step_seconds": t["torch_train"],
                "train_ratio_jax_over_torch": t["jax_train"] / t["torch_train"],
                "jax_infer_seconds": t["jax_infer"],
                "torch_infer_seconds": t["torch_infer"],
                "infer_ratio_jax_over_torch": t["jax_infer"] / t["torch_infer"],
                "nfe_train_forward_jax": statistics.median(e["nfe_forward"] for e in info[s]["jax_train"]),
                "nfe_train_forward_torch": statistics.median(e["nfe_forward"] for e in info[s]["torch_train"]),
                "nfe_train_backward_torch": statistics.median(e["nfe_backward"] for e in info[s]["torch_train"]),
                "nfe_infer_jax": statistics.median(e["nfe"] for e in info[s]["jax_infer"]),
                "nfe_infer_torch": statistics.median(e["nfe"] for e in info[s]["torch_infer"]),
                **memory.get(s, {}),
            }
        )
    import torchdiffeq

    return {
        "machine": dict(
            report.machine(),
            torch=torch.__version__,
            torchdiffeq=torchdiffeq.__version__,
            torch_threads=torch.get_num_threads(),
        ),
        "setup": {
            "width": args.width,
            "size": [h, w],
            "batch": args.batch,
            "repeats": args.repeats,
            "model": "segnode (configs/camvid.py, 11 classes)",
        },
        "checks": checks,
        "rows": rows,
    }


def _bwd(result: dict, row: dict) -> str:
    """JAX's backward-solve evaluations (counted at the initial weights by the checks)."""
    check = next((c for c in result["checks"] if c["setting"] == row["setting"]), {})
    return str(check["nfe_jax"]["train_backward"]) if "nfe_jax" in check else "-"


def _verdict(check: dict) -> str:
    """Whether the frameworks' adaptive solves differ by about their own errors (from the numbers)."""
    own = max(check["jax_vs_reference"]["grad_rel_diff"], check["torch_vs_reference"]["grad_rel_diff"])
    if check["grad_rel_diff"] <= 2 * own:
        return "the two frameworks differ by about the solves' own error at this tolerance."
    return "the two frameworks differ by more than either solve's own error (not explained yet)."


def markdown(result: dict) -> str:
    m, s = result["machine"], result["setup"]
    lines = [
        f"Measured {m['date']} on {m['platform']}, {m['cpu_count']} CPU cores, backend {m['backend']} "
        f"(jax {m['jax']}; torch {m['torch']} with {m['torch_threads']} threads, torchdiffeq {m['torchdiffeq']}), "
        f"by `python -m benchmarks.vs_torch`. SegNode width {s['width']}, {s['size'][0]}x{s['size'][1]} images, training "
        f"batch {s['batch']}, inference batch 1; medians of {s['repeats']} interleaved repeats.",
        "",
        "Settings: `dopri5` is the paper's (Dopri5 at configs/camvid.py's rtol and atol, RMS error norm, the adjoint with the "
        "seminorm, ReLU field; our `adjoint_normalise` off, as torchdiffeq has no such option); `rk4x2`, `euler_x2` fixed steps "
        "with the adjoint method.",
        "",
        "Same function first: "
        + "; ".join(
            f"{c['setting']}: logits {c['logits_rel_max_diff']:.0e}, gradients {c['grad_rel_diff']:.0e} apart"
            for c in result["checks"]
        )
        + " (relative; fixed steps must agree to 1e-4 / 1e-3).",
        *[
            f"Adaptive `{c['setting']}` against a fine reference solve (RK4 x 32, exact gradients of its steps): "
            f"JAX logits {c['jax_vs_reference']['logits_rel_max_diff']:.0e} / gradients {c['jax_vs_reference']['grad_rel_diff']:.0e}, "
            f"PyTorch logits {c['torch_vs_reference']['logits_rel_max_diff']:.0e} / gradients {c['torch_vs_reference']['grad_rel_diff']:.0e} "
            f"from it: {_verdict(c)}"
            for c in result["checks"]
            if "jax_vs_reference" in c
        ],
        "",
        "| setting | train step JAX (s) | train step PyTorch (s) | JAX / PyTorch | inference JAX (s) | inference PyTorch (s) | JAX / PyTorch "
        "| NFE train fwd JAX / PyTorch | NFE train bwd JAX / PyTorch | train memory JAX (MiB, analysed) | train memory PyTorch (MiB, peak) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    train = [r["train_ratio_jax_over_torch"] for r in result["rows"]]
    infer = [r["infer_ratio_jax_over_torch"] for r in result["rows"]]
    verdict = (
        f"JAX / PyTorch: training step {min(train):.2f}-{max(train):.2f}, inference {min(infer):.2f}-{max(infer):.2f} "
        + (
            "(segnode-jax faster in every setting measured)."
            if max(train + infer) < 1
            else "(segnode-jax slower where the ratio exceeds 1)."
        )
        + " NFE: the timed steps' medians, but JAX's backward count, taken at the initial weights by the checks "
        "(segnode_jax.ode.counting_evaluations; diffrax reports only the forward statistics). "
        + (
            "PyTorch's memory: the step's measured peak (torch.cuda); JAX's: XLA's analysis of the compiled step."
            if any(r.get("torch_train_bytes") for r in result["rows"])
            else "PyTorch's CPU memory is not measured (no comparable statistic; on a GPU its peak per step is read)."
        )
    )
    for r in result["rows"]:
        mem, tmem = r.get("jax_train_bytes"), r.get("torch_train_bytes")
        lines.append(
            f"| `{r['setting']}` | {r['jax_train_step_seconds']:.3f} | {r['torch_train_step_seconds']:.3f} | "
            f"{r['train_ratio_jax_over_torch']:.2f} | {r['jax_infer_seconds']:.3f} | {r['torch_infer_seconds']:.3f} | "
            f"{r['infer_ratio_jax_over_torch']:.2f} | {r['nfe_train_forward_jax']:.0f} / {r['nfe_train_forward_torch']:.0f} | "
            f"{_bwd(result, r)} / {r['nfe_train_backward_torch']:.0f} | {'-' if mem is None else f'{mem / 2**20:.1f}'} | "
            f"{'-' if tmem is None else f'{tmem / 2**20:.1f}'} |"
        )
    lines += ["", verdict]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--size", default="64x96", help="HxW of the images")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument(
        "--report_only", action="store_true", help="rewrite the table of benchmarks/results/vs_torch.md from the JSON"
    )
    args = parser.parse_args(argv)
    path = os.path.join(report.RESULTS, JSON)
    if args.report_only:
        import json

        with open(path) as f:
            result = json.load(f)
    else:
        _need_torch()
        unknown = [s for s in args.settings.split(",") if s.strip() and s.strip() not in SETTINGS]
        if unknown:
            print(f"error: unknown --settings {unknown}; choose from {sorted(SETTINGS)}", file=sys.stderr)
            raise SystemExit(2)
        result = run(args)
        report.write_json(JSON, result)
    report.replace_block(os.path.join(report.RESULTS, "vs_torch.md"), "vs-torch", markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
