"""Training: the train state, the optimiser recipe, pure jitted steps and the training loop.

    cfg = segnode_jax.load_config("configs/synthetic.py")
    result = train_lib.train_and_evaluate(cfg, "runs/synthetic")

Everything is laid out for any number of devices and hosts (``segnode_jax.parallel``): a 1-D
``data`` mesh over all devices, batches sharded over it, parameters and optimiser state
replicated (or split, ``parallel.param_sharding="fsdp"``); ``train_step(state, batch) ->
(state, metrics)`` is jitted once, donating the state. BatchNorm statistics are computed over
the global batch (SyncBN, as HRNet). Multi-host runs start ``jax.distributed`` first
(``parallel.initialize``); each host reads its own shard of the data.

Determinism and resume: the model is initialised from ``key(seed)``; the data pipeline draws
its shuffles and augmentations from ``seed`` and the example position; the models have no
other randomness. A checkpoint holds the train state *and* the data iterator's position, so a
run resumed from a checkpoint (automatically, from its workdir) sees the same batches and
computes the same losses as an uninterrupted run.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import os
import sys
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from ml_collections import config_dict

from segnode_jax import api, checkpoints, evaluation, losses, memory, metrics_log, ode, parallel
from segnode_jax.config import LR_SCHEDULES, OPTIMIZERS

log = logging.getLogger("segnode_jax")

OPTIMIZER_FIELDS = ("optimizer", "learning_rate", "momentum", "weight_decay")


class ConfigError(ValueError):
    """Settings that cannot work together; the message names the config field."""


class NonFiniteLossError(FloatingPointError):
    """The loss (or gradient) became NaN/inf; training stopped without saving that state."""


class TrainState(struct.PyTreeNode):
    """What a training step updates (and a checkpoint holds).

    Attributes:
      step: int32 scalar, the number of updates applied so far.
      params: model parameters.
      batch_stats: BatchNorm running statistics.
      opt_state: the optax optimiser state.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any

    @property
    def variables(self) -> dict[str, Any]:
        return {"params": self.params, "batch_stats": self.batch_stats}


# ---------------------------------------------------------------------------------------
# Config resolution.


def resolve_optimizer(train_cfg, model_name: str) -> dict[str, Any]:
    """The optimiser settings in effect: explicit ``train.*`` values, else the recipe of
    ``model_name`` in ``train.recipes``."""
    recipes = train_cfg.get("recipes") or {}
    recipe = recipes.get(model_name)
    out = {}
    for field in OPTIMIZER_FIELDS:
        value = train_cfg.get(field)
        if value is None or value == "auto":
            if recipe is None or recipe.get(field) is None:
                raise ConfigError(
                    f"train.{field} is {value!r} (from the recipe) but train.recipes has no recipe for "
                    f"model.name={model_name!r} with that field; set --config.train.{field} explicitly "
                    f"(recipes exist for: {', '.join(sorted(recipes)) or 'none'})."
                )
            value = recipe.get(field)
        out[field] = value
    if out["optimizer"] not in OPTIMIZERS:
        raise ConfigError(f"invalid train.optimizer={out['optimizer']!r}; use one of {', '.join(OPTIMIZERS)} (or auto)")
    if not out["learning_rate"] > 0:
        raise ConfigError(f"train.learning_rate must be positive, got {out['learning_rate']}")
    return out


def resolve_config(cfg: config_dict.ConfigDict) -> config_dict.ConfigDict:
    """A copy of ``cfg`` with the optimiser recipe of ``model.name`` filled in and the
    settings checked (everything but the number of steps, which needs the dataset)."""
    cfg = copy.deepcopy(cfg)
    for section in ("model", "train", "eval", "data"):
        if section not in cfg:
            raise ConfigError(
                f"the config has no '{section}' section; start from segnode_jax.config.base_config() "
                "and set cfg.data = segnode_jax.data.data_config(NAME) (see configs/)."
            )
    t = cfg.train
    with t.ignore_type():
        for k, v in resolve_optimizer(t, cfg.model.name).items():
            t[k] = v
    if t.lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"invalid train.lr_schedule={t.lr_schedule!r}; use one of {', '.join(LR_SCHEDULES)}")
    if t.get("num_steps") is None and t.get("num_epochs") is None:
        raise ConfigError("set the training length: --config.train.num_steps=N or --config.train.num_epochs=E")
    if int(t.batch_size) < 1:
        raise ConfigError(f"train.batch_size must be positive, got {t.batch_size}")
    for field in ("log_every_steps", "checkpoint_every_steps"):
        if int(t[field]) < 1:
            raise ConfigError(f"train.{field} must be positive, got {t[field]}")
    return cfg


def num_train_steps(cfg) -> int:
    """``train.num_steps``, else ``train.num_epochs`` times the steps per epoch of the data."""
    t = cfg.train
    if t.get("num_steps") is not None:
        return int(t.num_steps)
    from segnode_jax import data

    per_epoch = data.steps_per_epoch(cfg.data, batch_size=int(t.batch_size))
    if per_epoch < 1:
        raise ConfigError(
            f"the {cfg.data.name} {cfg.data.train_split} split has fewer examples than train.batch_size={t.batch_size}"
        )
    return max(1, int(round(float(t.num_epochs) * per_epoch)))


def learning_rate_schedule(train_cfg, num_steps: int):
    """``step -> learning rate`` (float32): poly (HRNet), cosine or constant, with an optional
    linear warm-up. ``step`` counts the updates applied so far."""
    base = float(train_cfg.learning_rate)
    end = float(train_cfg.get("end_learning_rate", 0.0) or 0.0)
    power = float(train_cfg.get("poly_power", 0.9))
    warmup = int(train_cfg.get("warmup_steps", 0) or 0)
    kind = train_cfg.lr_schedule
    total = float(max(int(num_steps), 1))

    def schedule(count):
        step = jnp.asarray(count).astype(jnp.float32)
        frac = jnp.clip(step / jnp.float32(total), 0.0, 1.0)
        if kind == "poly":
            lr = jnp.float32(base - end) * (1.0 - frac) ** jnp.float32(power) + jnp.float32(end)
        elif kind == "cosine":
            lr = jnp.float32(end) + jnp.float32(base - end) * 0.5 * (1.0 + jnp.cos(jnp.float32(math.pi) * frac))
        else:
            lr = jnp.full_like(step, base)
        if warmup > 0:
            lr = lr * jnp.minimum(1.0, (step + 1.0) / jnp.float32(warmup))
        return lr

    return schedule


def make_optimizer(train_cfg, num_steps: int) -> tuple[optax.GradientTransformation, Any]:
    """The optax optimiser of a resolved ``cfg.train`` and its learning-rate schedule.

    SGD adds ``weight_decay * params`` to the gradient before momentum (PyTorch's SGD, as the
    paper and HRNet use it); AdamW decays decoupled, scaled by the learning rate (PyTorch's
    AdamW). Weight decay applies to every parameter, as PyTorch's default.
    """
    schedule = learning_rate_schedule(train_cfg, num_steps)
    parts = []
    if train_cfg.get("grad_clip_norm"):
        parts.append(optax.clip_by_global_norm(float(train_cfg.grad_clip_norm)))
    wd = float(train_cfg.weight_decay or 0.0)
    if train_cfg.optimizer == "sgd":
        if wd:
            parts.append(optax.add_decayed_weights(wd))
        momentum = float(train_cfg.momentum or 0.0)
        parts.append(optax.sgd(schedule, momentum=momentum or None, nesterov=bool(train_cfg.get("nesterov", False))))
    elif train_cfg.optimizer == "adamw":
        parts.append(
            optax.adamw(
                schedule, b1=float(train_cfg.adam_b1), b2=float(train_cfg.adam_b2),
                eps=float(train_cfg.adam_eps), weight_decay=wd,
            )
        )
    else:
        raise ConfigError(f"invalid train.optimizer={train_cfg.optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
    return optax.chain(*parts), schedule


# ---------------------------------------------------------------------------------------
# Devices.


# ---------------------------------------------------------------------------------------
# State and steps.


def create_train_state(model_cfg, tx: optax.GradientTransformation, rng: jax.Array, input_shape) -> TrainState:
    """A freshly initialised train state (host/default-device arrays)."""
    variables = api.init(model_cfg, rng, input_shape)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params)
    )


def train_step(state: TrainState, batch, *, model_cfg, tx, schedule, loss_cfg, class_weights):
    """One optimisation step (pure; jit it with :func:`make_train_step`).

    Arguments:
      state: the train state.
      batch: ``{"image": (B, H, W, 3) float32, "label": (B, H, W) int32}``.
      model_cfg, tx, schedule, loss_cfg, class_weights: static settings.

    Returns:
      ``(new_state, metrics)``. When the loss or the gradient norm is not finite the state is
      returned unchanged (``metrics["finite"] == 0``): a bad update is never applied.
    """
    images, labels = batch["image"], batch["label"]

    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        logits, aux = api.apply(variables, images, model_cfg, train=True)
        loss = losses.segmentation_loss(logits, labels, class_weights, loss_cfg)
        return loss, (logits, aux)

    (loss, (logits, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
        step=state.step + 1, params=params, batch_stats=aux.get("batch_stats", state.batch_stats), opt_state=opt_state
    )
    grad_norm = optax.global_norm(grads)
    # The update itself must be finite too (e.g. a NaN learning rate, an overflowing step).
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.global_norm(params))
    new_state = jax.tree_util.tree_map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    valid = labels != losses.IGNORE_INDEX
    pred = jnp.argmax(losses.logits_at_label_size(logits, labels), axis=-1)
    correct = jnp.sum((pred == labels) & valid).astype(jnp.float32)
    metrics = {
        "loss": loss,
        "grad_norm": grad_norm,
        "param_norm": optax.global_norm(new_state.params),
        "learning_rate": schedule(state.step),
        "pixel_accuracy": correct / jnp.maximum(jnp.sum(valid).astype(jnp.float32), 1.0),
        "finite": finite.astype(jnp.int32),
    }
    if isinstance(aux.get("ode"), Mapping):
        for k in ("nfe", "num_steps", "num_accepted_steps", "num_rejected_steps"):
            if k in aux["ode"]:
                metrics[f"ode_{k}"] = jnp.asarray(aux["ode"][k], jnp.int32)
    return new_state, metrics


def _freeze(c):
    return api.freeze(c) if c is not None else None


def abstract_train_state(model_cfg, tx: optax.GradientTransformation, seed: int = 0):
    """Shapes and dtypes of the train state (nothing computed). Parameter shapes do not depend
    on the image size, so a small input stands in for the crop."""
    return jax.eval_shape(lambda: create_train_state(model_cfg, tx, jax.random.key(seed), (1, 64, 64, 3)))


def train_state_shardings(model_cfg, tx, mesh, parallel_cfg=None):
    """The sharding of every leaf of the train state (see ``parallel.state_shardings``)."""
    return parallel.state_shardings(abstract_train_state(model_cfg, tx), mesh, parallel_cfg)


@functools.lru_cache(maxsize=16)
def _train_step_jit(model_cfg, train_cfg, parallel_cfg, num_steps: int, class_weights: tuple | None, mesh):
    tx, schedule = make_optimizer(train_cfg, num_steps)
    weights = None if class_weights is None else np.asarray(class_weights, np.float32)
    fn = functools.partial(
        train_step, model_cfg=model_cfg, tx=tx, schedule=schedule, loss_cfg=train_cfg.loss, class_weights=weights
    )
    state_sharding = train_state_shardings(model_cfg, tx, mesh, parallel_cfg)
    rep = parallel.replicated(mesh)
    # With remat on, a CPU compile must keep jax.checkpoint's barriers to save memory at all.
    remat = any(bool(v) for v in model_cfg.get("remat", {}).values())
    return jax.jit(
        fn,
        donate_argnums=0,
        in_shardings=(state_sharding, parallel.batch_sharding(mesh)),
        out_shardings=(state_sharding, rep),
        compiler_options=memory.compiler_options(mesh.devices.flat[0].platform) if remat else None,
    )


def make_train_step(cfg, num_steps: int, mesh, class_weights=None):
    """The jitted ``train_step(state, batch) -> (state, metrics)`` for ``mesh`` (state donated,
    laid out as ``cfg.parallel`` says; cached per config, so several runs in one process
    compile once). The same function serves every device and host count."""
    cw = None if class_weights is None else tuple(float(v) for v in np.asarray(class_weights).ravel())
    return _train_step_jit(_freeze(cfg.model), _freeze(cfg.train), _freeze(cfg.get("parallel")), int(num_steps), cw, mesh)


# ---------------------------------------------------------------------------------------
# The training loop.


def _host(x) -> dict[str, Any]:
    return {k: np.asarray(v).item() for k, v in jax.device_get(x).items()}


def _check_workdir_config(workdir: str, cfg) -> None:
    """Refuses to resume a workdir that was trained with another model or dataset."""
    path = os.path.join(workdir, checkpoints.CONFIG_NAME)
    if not os.path.isfile(path):
        return
    with open(path) as f:
        old = checkpoints.config_from_json(f.read())
    new = checkpoints.config_from_json(checkpoints.config_to_json(cfg))
    problems = []
    if old.get("model") is not None and old.model.to_dict() != new.model.to_dict():
        diff = [k for k in sorted(set(old.model.keys()) | set(new.model.keys())) if old.model.get(k) != new.model.get(k)]
        problems.append(f"model ({', '.join('model.' + k for k in diff)})")
    for k in ("name", "num_classes"):
        if old.get("data") is not None and old.data.get(k) != new.data.get(k):
            problems.append(f"data.{k}")
    if problems:
        raise ConfigError(
            f"{workdir} holds a run with a different {' and '.join(problems)} than this config; "
            "resume it with its own config (see its config.json) or train in a new --workdir."
        )


def _say(message: str) -> None:
    if jax.process_index() == 0:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)


def _format(step: int, m: Mapping[str, Any], ips: float | None) -> str:
    parts = [f"step {step}", f"loss {m['loss']:.4f}", f"lr {m['learning_rate']:.3g}", f"|g| {m['grad_norm']:.3g}"]
    if "ode_nfe" in m:
        parts.append(f"nfe {m['ode_nfe']}")
    if ips:
        parts.append(f"{ips:.1f} img/s")
    return "  ".join(parts)


def train_and_evaluate(cfg: config_dict.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains (resuming from ``workdir`` if it holds a checkpoint) and validates.

    Arguments:
      cfg: the run config (``configs/*.py``), with ``model``, ``data``, ``train`` and ``eval``.
      workdir: where checkpoints, logs and the resolved ``config.json`` go.

    Returns:
      ``{"step", "loss", "val"}``: the final step, the last training loss and the last
      validation metrics (None if validation is off), plus ``"best"`` (``{"step", "miou"}``).

    Raises:
      ConfigError: inconsistent settings (the message names the field).
      segnode_jax.data.PreparationError: the dataset is not prepared (names the command).
      segnode_jax.ODESolveError: an ODE solve failed (names the solver settings to change).
      NonFiniteLossError: the loss became NaN/inf (names the step; nothing was saved after it).
      checkpoints.CheckpointError: ``init_from`` is unusable.
    """
    from tqdm import tqdm

    from segnode_jax import data

    parallel.initialize(cfg.get("parallel"))
    cfg = resolve_config(cfg)
    workdir = os.path.abspath(os.path.expanduser(workdir))
    dcfg = cfg.data
    info = data.get_info(dcfg)
    if int(cfg.model.num_classes) != info.num_classes:
        raise ConfigError(
            f"model.num_classes={cfg.model.num_classes} but the {dcfg.name} dataset has {info.num_classes} "
            f"classes; set --config.model.num_classes={info.num_classes}."
        )
    data.ensure_prepared(dcfg)
    num_steps = num_train_steps(cfg)
    with cfg.train.ignore_type():
        cfg.train.num_steps = num_steps
    mesh = parallel.make_mesh()
    local_batch = parallel.local_batch_size(int(cfg.train.batch_size), mesh)
    _check_workdir_config(workdir, cfg)
    checkpoints.save_config(workdir, cfg)

    tx, _ = make_optimizer(cfg.train, num_steps)
    crop = tuple(int(v) for v in dcfg.crop_size)
    input_shape = (1, crop[0], crop[1], 3)
    shardings = train_state_shardings(cfg.model, tx, mesh, cfg.get("parallel"))
    abstract = jax.eval_shape(lambda: create_train_state(cfg.model, tx, jax.random.key(int(cfg.seed)), input_shape))
    abstract = jax.tree_util.tree_map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), abstract, shardings)

    ckpts = checkpoints.RunCheckpoints(workdir, max_to_keep=int(cfg.train.max_to_keep))
    data_iter = data.train_iterator(dcfg, batch_size=local_batch, seed=int(cfg.seed), worker_count=int(dcfg.num_workers))
    meta: dict[str, Any] = {}
    resumed = ckpts.latest_step() is not None
    if resumed:
        state, meta = ckpts.restore(abstract, data_iter)
        _say(f"resuming {workdir} from step {int(state.step)} (checkpoint {ckpts.latest_step()})")
        if cfg.get("init_from"):
            _say(f"init_from={cfg.init_from} is ignored: the run resumes from its own checkpoint")
    else:
        state = create_train_state(cfg.model, tx, jax.random.key(int(cfg.seed)), input_shape)
        if cfg.get("init_from"):
            state = _init_from(state, cfg, tx)
        state = jax.device_put(state, shardings)
    start_step = int(state.step)
    if start_step > num_steps:
        raise ConfigError(f"{workdir} is already at step {start_step}, beyond train.num_steps={num_steps}")

    class_weights = info.class_weights if dcfg.get("class_weights") else None
    step_fn = make_train_step(cfg, num_steps, mesh, class_weights)
    writer = metrics_log.MetricWriter(workdir, resume_step=start_step if resumed else None)
    if not resumed:
        writer.write_text("config", "```\n" + checkpoints.config_to_json(cfg) + "\n```")
        _say(
            f"training {cfg.model.name} ({api.count_params(cfg.model):,} parameters) on {dcfg.name} for "
            f"{num_steps} steps of {cfg.train.batch_size} images on {parallel.describe(mesh)}; workdir {workdir}"
        )
    if jax.process_count() > 1:
        # Every host says which part of the data it reads (shard i of n: examples i, i+n, ...).
        shard, shards = data.resolve_shard(None, None)
        print(
            f"process {jax.process_index()} of {jax.process_count()}: data shard {shard}/{shards}, "
            f"{local_batch} of the {cfg.train.batch_size} images of each step", file=sys.stderr, flush=True,
        )
    t = cfg.train
    eval_every = t.get("eval_every_steps")
    best = ckpts.best_meta()
    last_val = None
    last_saved = ckpts.latest_step()
    # Host-side sums of the metrics since the last log line (restored on resume, so that the
    # logged means equal those of an uninterrupted run).
    acc = {"sum": dict(meta.get("acc_sum", {})), "count": int(meta.get("acc_count", 0))}
    bar = tqdm(
        total=num_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True,
        disable=not t.progress_bar or jax.process_index() != 0,
    )
    timer = {"t": time.time(), "steps": 0}
    last_metrics: dict[str, Any] = {}

    def handle(step: int, device_metrics) -> dict[str, Any]:
        m = _host(device_metrics)
        if not m.pop("finite"):
            where = (
                f"the last good checkpoint is step {last_saved} in {ckpts.latest.directory}"
                if last_saved is not None else "no checkpoint had been saved yet"
            )
            raise NonFiniteLossError(
                f"training stopped at step {step}: the loss is {m['loss']} (gradient norm {m['grad_norm']}), "
                f"so this update was not applied and nothing was saved after it; {where}. Lower "
                f"--config.train.learning_rate (now {t.learning_rate:g}), clip gradients "
                f"(--config.train.grad_clip_norm=1.0) or add warm-up (--config.train.warmup_steps=500)."
            )
        for k, v in m.items():
            acc["sum"][k] = acc["sum"].get(k, 0.0) + float(v)
        acc["count"] += 1
        return m

    def write_log(step: int, m: Mapping[str, Any]) -> None:
        elapsed = time.time() - timer["t"]
        ips = timer["steps"] * int(t.batch_size) / elapsed if elapsed > 0 and timer["steps"] else None
        record = dict(m)
        if acc["count"]:
            record["loss_mean"] = acc["sum"]["loss"] / acc["count"]
            if "ode_nfe" in acc["sum"]:
                record["ode_nfe_mean"] = acc["sum"]["ode_nfe"] / acc["count"]
        if ips:
            record["images_per_second"] = ips
        record["epoch"] = step * int(t.batch_size) / max(info.splits.get(dcfg.train_split) or 1, 1)
        writer.write(step, record)
        _say(_format(step, m, ips))
        acc["sum"], acc["count"] = {}, 0
        timer["t"], timer["steps"] = time.time(), 0

    def validate(step: int) -> dict[str, Any]:
        nonlocal best
        settings = evaluation.EvalSettings.from_config(cfg, num_images=t.get("eval_num_images"), num_visualizations=0)
        settings.num_visualizations = 0
        res = evaluation.evaluate(parallel.host_local(state.variables), cfg, settings=settings)
        scalars = {k: res[k] for k in ("miou", "pixel_accuracy", "mean_accuracy") if k in res}
        scalars.update({k: res[k] for k in ("mean_nfe",) if k in res})
        writer.write(step, scalars, split="val")
        _say(f"step {step}  val mIoU {100 * res['miou']:.2f}  pixel accuracy {100 * res['pixel_accuracy']:.2f}")
        if best is None or res["miou"] > best["miou"]:
            ckpts.save_best(step, state, res["miou"])
            best = {"step": step, "miou": float(res["miou"])}
        timer["t"] = time.time()
        return res

    step = start_step
    pending = None
    try:
        with ode.solver_errors(cfg.model.ode):
            while step < num_steps:
                batch = parallel.global_batch(next(data_iter), mesh)
                state, device_metrics = step_fn(state, batch)
                step += 1
                timer["steps"] += 1
                bar.update(1)
                # Read the previous step's metrics while this one runs (one step of lag).
                if pending is not None:
                    last_metrics = handle(*pending)
                pending = (step, device_metrics)
                log_now = step % int(t.log_every_steps) == 0 or step == num_steps
                save_now = step % int(t.checkpoint_every_steps) == 0 or step == num_steps
                eval_now = (bool(eval_every) and step % int(eval_every) == 0) or (step == num_steps and eval_every != 0)
                if log_now or save_now or eval_now:
                    last_metrics = handle(*pending)
                    pending = None
                    bar.set_postfix(loss=f"{last_metrics['loss']:.3f}", nfe=last_metrics.get("ode_nfe", "-"))
                if log_now:
                    write_log(step, last_metrics)
                if save_now:
                    ckpts.save(step, state, data_iter, {"step": step, "acc_sum": acc["sum"], "acc_count": acc["count"]})
                    last_saved = step
                if eval_now:
                    last_val = validate(step)
    except ode.ODESolveError as e:
        raise ode.ODESolveError(f"training stopped at step {step}: {e}") from None
    finally:
        bar.close()
        writer.close()
        ckpts.close()
        close = getattr(data_iter, "close", None)
        if callable(close):
            close()
    return {"step": step, "loss": last_metrics.get("loss"), "val": last_val, "best": best}


def _init_from(state: TrainState, cfg, tx) -> TrainState:
    """Merges the variables of ``cfg.init_from`` into a fresh state (see
    ``checkpoints.merge_variables``) and re-initialises the optimiser state."""
    loaded = checkpoints.load_variables(cfg.init_from)
    fresh = jax.device_get(state.variables)
    merged, report = checkpoints.merge_variables(
        fresh, loaded, num_classes=int(cfg.model.num_classes), source=f"init_from={cfg.init_from}"
    )
    _say(
        f"init_from {cfg.init_from}: loaded {len(report['loaded'])} variables, kept the initialisation of "
        f"{len(report['missing'])} missing and {len(report['reinitialised'])} class-count-dependent ones "
        f"({', '.join(report['reinitialised'][:4]) or 'none'}), ignored {len(report['unused'])} unused"
    )
    for kind in ("missing", "reinitialised", "unused"):
        if report[kind]:
            log.info("init_from %s: %s", kind, ", ".join(report[kind]))
    params = jax.tree_util.tree_map(jnp.asarray, merged["params"])
    batch_stats = jax.tree_util.tree_map(jnp.asarray, merged.get("batch_stats", {}))
    return state.replace(params=params, batch_stats=batch_stats, opt_state=tx.init(params))
