"""The training loop: ``train_and_evaluate(cfg, workdir)``.

    cfg = segnode_jax.load_config("configs/synthetic.py")
    result = segnode_jax.training.train_and_evaluate(cfg, "runs/synthetic")

A run is set up once (:func:`_start`: config resolved and checked, dataset prepared, mesh,
train state fresh or restored with the data iterator's position), then the loop applies the
jitted step (``training.step``) and, on their schedules, logs, saves and validates
(:class:`_Schedule`). Everything is laid out for any number of devices and hosts
(``segnode_jax.parallel``); multi-host runs start ``jax.distributed`` first.

Determinism and resume: the model is initialised from ``key(seed)``; the data pipeline draws
its shuffles and augmentations from ``seed`` and the example position; the models have no
other randomness. A checkpoint holds the train state *and* the data iterator's position, so a
run resumed from a checkpoint (automatically, from its workdir) sees the same batches and
computes the same losses as an uninterrupted run.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_dict

from segnode_jax import api, checkpoints, checks, data, evaluation, metrics_log, ode, parallel, weights
from segnode_jax import config as config_lib
from segnode_jax.config import LR_SCHEDULES
from segnode_jax.data import registry
from segnode_jax.errors import RunError
from segnode_jax.models import model_names
from segnode_jax.models.classification import task_of
from segnode_jax.training.optim import ConfigError, make_optimizer, recipe_name, resolve_optimizer
from segnode_jax.training.step import TrainState, create_train_state, make_train_step, train_state_shardings

log = logging.getLogger("segnode_jax")


class NonFiniteLossError(RunError, FloatingPointError):
    """The loss (or gradient) became NaN/inf; training stopped without saving that state."""


# ---------------------------------------------------------------------------------------
# Config.


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

    if cfg.model.name not in model_names():
        raise ConfigError(f"unknown model.name={cfg.model.name!r}; choose one of {', '.join(model_names())}.")
    checks.check_config(cfg)  # every enumerated field, before data or compilation
    _check_task(cfg)
    config_lib.resolve_model_size(cfg.model)
    t = cfg.train
    with t.ignore_type():
        for k, v in resolve_optimizer(t, recipe_name(cfg.model)).items():
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


def _check_task(cfg) -> None:
    """The model's task (``model.task``) must be the dataset's."""

    try:
        task = task_of(cfg.model)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    data_task = registry.task_of(cfg.data.name)
    if task == data_task:
        return
    if task == "classification":
        raise ConfigError(
            f"model.task=classification trains on a classification dataset, not {cfg.data.name}: use configs/imagenet.py "
            "(data.name=imagenet, or image_folder for your own classes); to fine-tune a pretrained classifier on "
            f"{cfg.data.name}, train a segmentation config with --config.init_from=<the classification run>"
        )
    raise ConfigError(
        f"the {cfg.data.name} dataset is for classification (ImageNet pretraining): set --config.model.task=classification "
        "or start from configs/imagenet.py"
    )


def best_metric(cfg) -> str:
    """What picks the best checkpoint: ``"top1"`` for a classifier, else ``"miou"``."""
    return "top1" if cfg.model.get("task", "segmentation") == "classification" else "miou"


def num_train_steps(cfg) -> int:
    """``train.num_steps``, else ``train.num_epochs`` times the steps per epoch of the data."""
    t = cfg.train
    if t.get("num_steps") is not None:
        return int(t.num_steps)

    per_epoch = data.steps_per_epoch(cfg.data, batch_size=int(t.batch_size))
    if per_epoch < 1:
        raise ConfigError(
            f"the {cfg.data.name} {cfg.data.train_split} split has fewer examples than train.batch_size={t.batch_size}"
        )
    return max(1, int(round(float(t.num_epochs) * per_epoch)))


def _check_workdir_config(workdir: str, cfg) -> None:
    """Refuses to resume a workdir that was trained with another model or dataset."""
    path = os.path.join(workdir, config_lib.CONFIG_NAME)
    if not os.path.isfile(path):
        return
    with open(path) as f:
        old = config_lib.config_from_json(f.read())
    new = config_lib.config_from_json(config_lib.config_to_json(cfg))
    problems = []
    if old.get("model") is not None:
        # Fields one side lacks do not count: a run saved by an older segnode-jax lacks the
        # fields added since, which keep their defaults (what the older code did).
        was, now = weights.flatten(old.model.to_dict()), weights.flatten(new.model.to_dict())
        diff = sorted(k.replace("/", ".") for k in set(was) & set(now) if was[k] != now[k])
        if diff:
            problems.append(f"model ({', '.join('model.' + k for k in diff)})")
    for k in ("name", "num_classes"):
        if old.get("data") is not None and old.data.get(k) != new.data.get(k):
            problems.append(f"data.{k}")
    if problems:
        raise ConfigError(
            f"{workdir} holds a run with a different {' and '.join(problems)} than this config; "
            "resume it with its own config (see its config.json) or train in a new --workdir."
        )


class TrainingStopped(RunError):
    """Training stopped on SIGTERM / SIGINT after checkpointing; exit status 128 + the signal
    (143 for SIGTERM, 130 for Ctrl-C), as a process killed by it would report."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + int(signum)


class _StopSignals:
    """SIGTERM and SIGINT (what SLURM, spot machines and Ctrl-C send) ask the loop to stop after
    the step in flight; a second signal ends the process at once (the default action). Handlers
    are installed only from the main thread and restored on exit."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        del frame
        if self.signum is not None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        _say(
            f"{signal.Signals(signum).name} received: stopping after the step in flight and saving a checkpoint "
            "(send it again to stop at once, without saving)"
        )

    def requested(self) -> int | None:
        """The signal any host received (all hosts agree, so that they checkpoint together)."""
        if jax.process_count() == 1:
            return self.signum
        from jax.experimental import multihost_utils

        got = multihost_utils.process_allgather(np.int32(self.signum or 0))
        return int(np.max(got)) or None


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


@dataclasses.dataclass
class _MetricSums:
    """Host-side sums of the step metrics since the last log line (kept in checkpoints, so
    that the logged means of a resumed run equal those of an uninterrupted one)."""

    sums: dict[str, float] = dataclasses.field(default_factory=dict)
    count: int = 0

    def add(self, m: Mapping[str, Any]) -> None:
        for k, v in m.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += 1

    def means(self) -> dict[str, float]:
        if not self.count:
            return {}
        out = {"loss_mean": self.sums["loss"] / self.count}
        if "ode_nfe" in self.sums:
            out["ode_nfe_mean"] = self.sums["ode_nfe"] / self.count
        return out

    def reset(self) -> None:
        self.sums, self.count = {}, 0


@dataclasses.dataclass(frozen=True)
class _Schedule:
    """Which periodic actions are due after a step: log, save, validate."""

    num_steps: int
    log_every: int
    save_every: int
    eval_every: int | None  # None: at the end only; 0: never

    def due(self, step: int) -> tuple[bool, bool, bool]:
        last = step == self.num_steps
        log_now = step % self.log_every == 0 or last
        save_now = step % self.save_every == 0 or last
        eval_now = (bool(self.eval_every) and step % self.eval_every == 0) or (last and self.eval_every != 0)
        return log_now, save_now, eval_now


@dataclasses.dataclass
class _Run:
    """Everything one training run holds between steps."""

    cfg: config_dict.ConfigDict
    workdir: str
    info: Any
    mesh: Any
    num_steps: int
    state: TrainState
    start_step: int
    resumed: bool
    meta: dict[str, Any]
    ckpts: checkpoints.RunCheckpoints
    data_iter: Any
    local_batch: int


def _start(cfg: config_dict.ConfigDict, workdir: str) -> _Run:
    """Resolves and checks the config, prepares the data, and restores or initialises the state."""

    parallel.initialize(cfg.get("parallel"))
    cfg = resolve_config(cfg)
    workdir = os.path.abspath(os.path.expanduser(workdir))
    dcfg = cfg.data
    data.resolve_num_classes(cfg)
    data.ensure_prepared(dcfg)
    info = data.get_info(dcfg)
    num_steps = num_train_steps(cfg)
    with cfg.train.ignore_type():
        cfg.train.num_steps = num_steps
    mesh = parallel.make_mesh()
    local_batch = parallel.local_batch_size(int(cfg.train.batch_size), mesh)
    _check_workdir_config(workdir, cfg)
    config_lib.save_config(workdir, cfg)

    tx, _ = make_optimizer(cfg.train, num_steps)
    crop = tuple(int(v) for v in dcfg.crop_size)
    input_shape = (1, crop[0], crop[1], 3)
    shardings = train_state_shardings(cfg.model, tx, mesh, cfg.get("parallel"))
    abstract = jax.eval_shape(lambda: create_train_state(cfg.model, tx, jax.random.key(int(cfg.seed)), input_shape))
    abstract = jax.tree_util.tree_map(
        lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), abstract, shardings
    )

    ckpts = checkpoints.RunCheckpoints(workdir, max_to_keep=int(cfg.train.max_to_keep))
    data_iter = data.train_iterator(
        dcfg, batch_size=local_batch, seed=int(cfg.seed), worker_count=int(dcfg.num_workers)
    )
    meta: dict[str, Any] = {}
    resumed = ckpts.latest_step() is not None
    if resumed:
        state, meta = ckpts.restore(abstract, data_iter)
        for message in ckpts.set_aside:
            _say(f"warning: {message}")
        _say(f"resuming {workdir} from step {int(state.step)} (checkpoint {ckpts.latest_step()})")
        if cfg.get("init_from"):
            _say(f"init_from={cfg.init_from} is ignored: the run resumes from its own checkpoint")
    else:
        pretrained = _pretrained_classifier(cfg) if cfg.get("init_from") else False  # refuses a misfit before any work
        state = create_train_state(cfg.model, tx, jax.random.key(int(cfg.seed)), input_shape)
        if cfg.get("init_from"):
            state = _init_from(state, cfg, tx, pretrained)
        state = jax.device_put(state, shardings)
    start_step = int(state.step)
    if start_step > num_steps:
        raise ConfigError(f"{workdir} is already at step {start_step}, beyond train.num_steps={num_steps}")
    return _Run(cfg, workdir, info, mesh, num_steps, state, start_step, resumed, meta, ckpts, data_iter, local_batch)


def _announce(run: _Run) -> None:
    cfg = run.cfg
    if not run.resumed:
        _say(
            f"training {cfg.model.name} ({api.count_params(cfg.model):,} parameters) on {cfg.data.name} for "
            f"{run.num_steps} steps of {cfg.train.batch_size} images on {parallel.describe(run.mesh)}; workdir {run.workdir}"
        )
    if jax.process_count() > 1:
        # Every host says which part of the data it reads (shard i of n: examples i, i+n, ...).

        shard, shards = data.resolve_shard(None, None)
        print(
            f"process {jax.process_index()} of {jax.process_count()}: data shard {shard}/{shards}, "
            f"{run.local_batch} of the {cfg.train.batch_size} images of each step",
            file=sys.stderr,
            flush=True,
        )


def _backward_solve_hint(cfg, m: Mapping[str, Any]) -> str:
    """With the backsolve adjoint, a failed backward solve shows as a finite loss with a
    non-finite gradient (its failure is NaN inside the step, see ``ode.on_failure``)."""
    solve = cfg.model.get("ode")
    if not solve or solve.get("adjoint") != "backsolve" or not np.isfinite(m["loss"]):
        return ""
    return (
        " The loss is finite, so the backward (adjoint) solve may have failed: raise "
        f"--config.model.ode.max_steps (now {solve.get('max_steps')}) or loosen "
        "--config.model.ode.adjoint_rtol / adjoint_atol."
    )


def _checked(step: int, device_metrics, run: _Run, last_saved: int | None) -> dict[str, Any]:
    """The step's metrics on the host; a non-finite step stops training (it was not applied)."""
    m = {k: np.asarray(v).item() for k, v in jax.device_get(device_metrics).items()}
    failure = ode.failure_of(m.pop("ode_result", 0), run.cfg.model.ode)
    if failure is not None:
        raise failure  # named with its step by train_and_evaluate
    if not m.pop("finite"):
        where = (
            f"the last good checkpoint is step {last_saved} in {run.ckpts.latest.directory}"
            if last_saved is not None
            else "no checkpoint had been saved yet"
        )
        raise NonFiniteLossError(
            f"training stopped at step {step}: the loss is {m['loss']} (gradient norm {m['grad_norm']}), "
            f"so this update was not applied and nothing was saved after it; {where}. Lower "
            f"--config.train.learning_rate (now {run.cfg.train.learning_rate:g}), clip gradients "
            f"(--config.train.grad_clip_norm=1.0) or add warm-up (--config.train.warmup_steps=500)."
            + _backward_solve_hint(run.cfg, m)
        )
    return m


def _validate(
    run: _Run, step: int, writer, best: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Validation on ``eval`` settings; a new best mIoU (a classifier: top-1) is saved to ``WORKDIR/best``."""
    t = run.cfg.train
    settings = evaluation.EvalSettings.from_config(run.cfg, num_images=t.get("eval_num_images"), num_visualizations=0)
    settings.num_visualizations = 0
    res = evaluation.evaluate(parallel.host_local(run.state.variables), run.cfg, settings=settings)
    metric = best_metric(run.cfg)
    if metric == "top1":
        scalars = {k: res[k] for k in ("top1", "top5", "loss", "mean_nfe") if k in res}
        _say(f"step {step}  val top-1 {100 * res['top1']:.2f}  top-5 {100 * res['top5']:.2f}  loss {res['loss']:.4f}")
    else:
        scalars = {k: res[k] for k in ("miou", "pixel_accuracy", "mean_accuracy", "mean_nfe") if k in res}
        _say(f"step {step}  val mIoU {100 * res['miou']:.2f}  pixel accuracy {100 * res['pixel_accuracy']:.2f}")
    if best is None or res[metric] > best[metric]:
        run.ckpts.save_best(step, run.state, res[metric], metric=metric)
        best = {"step": step, metric: float(res[metric])}
    # Logged after the best checkpoint is written: a run killed in between validates again.
    writer.write(step, scalars, split="val")
    return res, best


def _validation_missed(run: _Run, schedule: _Schedule, writer) -> bool:
    """Whether the step the run resumes from was due for validation but has none logged (the
    run stopped after saving that step's checkpoint and before its validation finished).
    Process 0 reads ``metrics.jsonl`` and tells the others (validation runs on every host)."""
    if not run.resumed or run.start_step == 0 or not schedule.due(run.start_step)[2]:
        return False
    missed = jax.process_index() == 0 and not any(
        r.get("split") == "val" and int(r.get("step", -1)) == run.start_step
        for r in metrics_log.read_jsonl(writer.path)
    )
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        missed = bool(multihost_utils.broadcast_one_to_all(np.asarray(missed)))
    return missed


@dataclasses.dataclass
class _Loop:
    """The training loop between two steps: the step reached, the metrics of the step in
    flight (read one step late, while the next one runs, so that the host never waits for the
    device), the sums since the last log line and the newest saved step."""

    run: _Run
    writer: Any
    sums: _MetricSums
    bar: Any
    step: int
    last_saved: int | None
    m: dict[str, Any] = dataclasses.field(default_factory=dict)  # the newest metrics read
    pending: tuple[int, Any] | None = None  # (step, its metrics still on the device)
    running: int = 0  # the step being computed (named if it fails before its metrics are read)
    clock: float = dataclasses.field(default_factory=time.time)
    steps_since_log: int = 0

    def advance(self, step_fn) -> None:
        """Runs one step, then reads the previous step's metrics while it runs."""
        run = self.run
        self.running = self.step + 1
        run.state, device_metrics = step_fn(run.state, parallel.global_batch(next(run.data_iter), run.mesh))
        self.step, self.steps_since_log = self.step + 1, self.steps_since_log + 1
        self.bar.update(1)
        self.read()
        self.pending = (self.step, device_metrics)

    def read(self) -> None:
        """Reads (and checks) the metrics in flight, if any."""
        if self.pending is not None:
            self.m = _checked(*self.pending, self.run, self.last_saved)
            self.pending = None
            self.sums.add(self.m)

    def log(self) -> None:
        """One log line: the step's metrics, the means since the last line, speed and epoch."""
        t = self.run.cfg.train
        elapsed = time.time() - self.clock
        ips = self.steps_since_log * int(t.batch_size) / elapsed if elapsed > 0 else None
        epoch = self.step * int(t.batch_size) / max(self.run.info.splits.get(self.run.cfg.data.train_split) or 1, 1)
        extra = {"images_per_second": ips} if ips else {}
        self.writer.write(self.step, {**self.m, **self.sums.means(), "epoch": epoch, **extra})
        _say(_format(self.step, self.m, ips))
        self.sums.reset()
        self.clock, self.steps_since_log = time.time(), 0

    def save(self) -> None:
        meta = {"step": self.step, "acc_sum": self.sums.sums, "acc_count": self.sums.count}
        self.run.ckpts.save(self.step, self.run.state, self.run.data_iter, meta)
        self.last_saved = self.step

    def stop(self, signum: int) -> None:
        """Stops on a signal: reads the step in flight, saves it (if not saved yet), waits for
        the write and raises ``TrainingStopped``."""
        self.read()
        if self.last_saved != self.step:
            self.save()
        self.run.ckpts.wait()
        raise TrainingStopped(
            f"stopped by {signal.Signals(signum).name} at step {self.step} of {self.run.num_steps}; checkpoint saved "
            f"in {os.path.join(self.run.workdir, checkpoints.CHECKPOINT_DIR, str(self.step))}. Rerun the same command "
            "to resume from it",
            signum,
        )


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
      checkpoints.CheckpointError: ``init_from`` is unusable, or every checkpoint is damaged.
      checkpoints.CheckpointWriteError: a checkpoint could not be written (e.g. a full disk).
    """
    from tqdm import tqdm

    run = _start(cfg, workdir)
    cfg, t = run.cfg, run.cfg.train
    class_weights = run.info.class_weights if cfg.data.get("class_weights") else None
    step_fn = make_train_step(cfg, run.num_steps, run.mesh, class_weights)
    writer = metrics_log.MetricWriter(run.workdir, resume_step=run.start_step if run.resumed else None)
    if not run.resumed:
        writer.write_text("config", "```\n" + config_lib.config_to_json(cfg) + "\n```")
    _announce(run)
    schedule = _Schedule(
        run.num_steps, int(t.log_every_steps), int(t.checkpoint_every_steps), t.get("eval_every_steps")
    )
    sums = _MetricSums(dict(run.meta.get("acc_sum", {})), int(run.meta.get("acc_count", 0)))
    best, last_val, last_saved = run.ckpts.best_meta(), None, run.ckpts.latest_step()
    bar = tqdm(
        total=run.num_steps,
        initial=run.start_step,
        desc="train",
        unit="step",
        dynamic_ncols=True,
        disable=not t.progress_bar or jax.process_index() != 0,
    )
    loop = _Loop(run, writer, sums, bar, step=run.start_step, last_saved=last_saved, running=run.start_step)
    stop, finished = _StopSignals(), False
    try:
        with ode.solver_errors(cfg.model.ode), stop:
            if _validation_missed(run, schedule, writer):
                _say(f"validating step {loop.step} first: the run stopped after saving it, before its validation")
                last_val, best = _validate(run, loop.step, writer, best)
            while loop.step < run.num_steps:
                loop.advance(step_fn)
                log_now, save_now, eval_now = schedule.due(loop.step)
                if log_now or save_now or eval_now:
                    loop.read()
                    bar.set_postfix(loss=f"{loop.m['loss']:.3f}", nfe=loop.m.get("ode_nfe", "-"))
                if log_now:
                    loop.log()
                if save_now:
                    loop.save()
                if eval_now:
                    last_val, best = _validate(run, loop.step, writer, best)
                    loop.clock = time.time()
                signum = stop.requested()
                if signum is not None and loop.step < run.num_steps:
                    loop.stop(signum)
        finished = True
    except ode.ODESolveError as e:
        # Steps run ahead of the host by one: the failed step is the first one whose metrics
        # were not read yet (a step whose metrics were read had solved).
        failed = loop.pending[0] if loop.pending is not None else loop.running
        raise ode.ODESolveError(f"training stopped at step {failed}: {e}") from None
    finally:
        bar.close()
        writer.close()
        # After another error, a failed write must not replace it (it is logged).
        run.ckpts.close(raise_errors=finished or stop.signum is not None)
        close = getattr(run.data_iter, "close", None)
        if callable(close):
            close()
    return {"step": loop.step, "loss": loop.m.get("loss"), "val": last_val, "best": best}


def _init_from(state: TrainState, cfg, tx, pretrained_classifier: bool = False) -> TrainState:
    """Merges the variables of ``cfg.init_from`` into a fresh state (see
    ``weights.merge_variables``; a pretrained classifier gives its backbone only) and
    re-initialises the optimiser state."""
    loaded = checkpoints.load_variables(cfg.init_from)
    if pretrained_classifier:
        dropped = [f"{k}/head" for k in ("params", "batch_stats") if "head" in loaded.get(k, {})]
        _say(
            f"init_from {cfg.init_from}: a pretrained classifier; using its backbone, not its classification head "
            f"({', '.join(dropped)})"
        )
        loaded = {k: {n: v for n, v in tree.items() if n != "head"} for k, tree in loaded.items()}
    fresh = jax.device_get(state.variables)
    merged, report = weights.merge_variables(
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


def _pretrained_classifier(cfg) -> bool:
    """Whether ``init_from`` is a classification run (ImageNet pretraining) to hand its backbone
    (everything but ``head``, the classification head) to this segmentation model. Refuses one
    whose network differs in design or width (nothing would fit), naming the settings."""
    found = config_lib.find_run_config(cfg.init_from)
    if found is None or cfg.model.get("task", "segmentation") != "segmentation":
        return False
    source = config_lib.load_run_config(cfg.init_from)
    if source.get("model") is None or source.model.get("task", "segmentation") != "classification":
        return False
    src, dst = source.model, cfg.model
    fields = ("name", "width", "stem_width", "layer1_planes", "layer1_blocks")
    differ = [f for f in fields if src.get(f) != dst.get(f)]
    if differ:
        theirs = ", ".join(f"model.{f}={src.get(f)}" for f in differ)
        ours = " ".join(f"--config.model.{f}={src.get(f)}" for f in differ)
        raise ConfigError(
            f"init_from={cfg.init_from} is a pretrained {src.name} classifier with {theirs}, but this model has "
            + ", ".join(f"model.{f}={dst.get(f)}" for f in differ)
            + f": its backbone does not fit. Fine-tune the same network ({ours}) or pretrain one of this width."
        )
    return True
