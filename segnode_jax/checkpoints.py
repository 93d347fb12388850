"""Checkpoints: orbax managers for a run's workdir, resume, the saved config, foreign weights.

A training workdir looks like::

    WORKDIR/config.json              the resolved config of the run (evaluate.py reads it)
    WORKDIR/checkpoints/<step>/      newest `train.max_to_keep` checkpoints:
        state/                       TrainState (step, params, batch_stats, opt_state)
        data_iter/                   the grain iterator's position, one JSON per host
        meta/                        {"step", "acc_sum", "acc_count"}: the step and the running
                                     sums of the metrics since the last log line
    WORKDIR/best/<step>/             the checkpoint with the best validation mIoU (state, and
                                     meta {"step", "miou"})
    WORKDIR/metrics.jsonl, WORKDIR/tensorboard/

Saves are asynchronous (orbax writes in the background while training goes on) and atomic:
orbax writes into a temporary directory that is renamed once complete, so a run killed at any
moment (even ``kill -9`` in the middle of a save) leaves the previous checkpoints intact, and
:meth:`RunCheckpoints.restore` picks up the newest complete one.

:func:`load_variables` reads ``{"params", "batch_stats"}`` from a training workdir, a step
directory, or a directory written by the weight converter (``variables/`` -- an orbax PyTree
checkpoint of a possibly partial tree -- and ``conversion.json``);
``segnode_jax.weights.merge_variables`` merges such a tree into a freshly initialised one
(``--config.init_from=PATH``). The run's ``config.json`` is read and written by
``segnode_jax.config`` (``save_config``, ``load_run_config``).

A damaged checkpoint (files truncated or corrupted) is set aside: resuming and evaluating a
workdir use the newest intact one and say so; a failed write (a full disk) is one
:class:`CheckpointWriteError` naming the last good checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from segnode_jax import compat, data
from segnode_jax import config as config_lib
from segnode_jax.errors import RunError, UserError
from segnode_jax.weights import VARIABLE_COLLECTIONS

log = logging.getLogger("segnode_jax")

CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"
CONVERTED_VARIABLES = "variables"
CONVERSION_INFO = "conversion.json"
DAMAGED_DIR = "damaged_checkpoints"


class CheckpointError(UserError):
    """A checkpoint that is missing, incomplete or does not fit the model config."""


class CheckpointWriteError(RunError):
    """A checkpoint could not be written (a full disk, a lost mount); earlier ones are intact."""


def _is_disk_full(error: BaseException) -> bool:
    text = str(error)
    return (
        getattr(error, "errno", None) == errno.ENOSPC
        or "No space left on device" in text
        or "RESOURCE_EXHAUSTED" in text
        or "ENOSPC" in text
    )


# ---------------------------------------------------------------------------------------
# The checkpoints of a training run.


def damage_reason(error: BaseException) -> str:
    """One short line saying why a checkpoint could not be read."""
    text = " ".join(str(error).split()) or type(error).__name__
    text = text.split(" See full TensorStore details")[0]
    return text if len(text) <= 200 else text[:197] + "..."


class _IteratorSnapshot:
    """The position of a grain iterator frozen at save time (what grain's orbax handler
    writes), so an asynchronous save never sees a later position."""

    def __init__(self, iterator):
        self._state = json.dumps(iterator.get_state(), indent=4).encode()

    def get_state(self) -> bytes:
        return self._state


_ARRAY_HANDLER_SET = [False]


class _DropMessage(logging.Filter):
    """Drops log records whose message starts with ``prefix``."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record):
        return not str(record.msg).startswith(self.prefix)


def _save_replicated_arrays_once() -> None:
    """Registers (once per process) orbax's array handler with replica-parallel saving off:
    each replicated array is written once, by its first replica, instead of being sliced per
    replica through a jitted ``slice`` per shape (which cost ~7 s of compilation at the first
    save on 4 CPU devices). orbax's own default on GPUs; it applies to every orbax save in this
    process."""
    if not _ARRAY_HANDLER_SET[0]:
        # Replacing the default handler is the point: orbax's warning that it is replaced is dropped.
        absl_logger = logging.getLogger("absl")
        quiet = _DropMessage('Type handler registry type "')
        absl_logger.addFilter(quiet)
        try:
            ocp.type_handlers.register_type_handler(
                jax.Array, compat.orbax_array_handler_without_replica_parallel(), override=True
            )
        finally:
            absl_logger.removeFilter(quiet)
        _ARRAY_HANDLER_SET[0] = True


def _manager(
    directory: str, *, max_to_keep: int | None, items: tuple[str, ...], asynchronous: bool
) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=True,
        enable_async_checkpointing=asynchronous,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=items)


class RunCheckpoints:
    """The checkpoints of one training run (``WORKDIR/checkpoints`` and ``WORKDIR/best``).

    Arguments:
      workdir: the run's directory.
      max_to_keep: newest checkpoints kept in ``checkpoints/``.
      asynchronous: write in the background (orbax async checkpointing).
    """

    def __init__(self, workdir: str, *, max_to_keep: int = 3, asynchronous: bool = True):
        self.workdir = workdir
        _save_replicated_arrays_once()
        self.latest = _manager(
            os.path.join(workdir, CHECKPOINT_DIR),
            max_to_keep=max_to_keep,
            items=("state", "data_iter", "meta"),
            asynchronous=asynchronous,
        )
        self.best = _manager(
            os.path.join(workdir, BEST_DIR), max_to_keep=1, items=("state", "meta"), asynchronous=asynchronous
        )
        # Messages about damaged checkpoints set aside by the last restore().
        self.set_aside: list[str] = []

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self.latest.latest_step()

    def restore(self, abstract_state, data_iter) -> tuple[Any, dict[str, Any]]:
        """Restores the newest *intact* checkpoint: the train state (shaped and sharded as
        ``abstract_state``) and, in place, the data iterator's position.

        A checkpoint whose files cannot be read (truncated or corrupted by disk trouble or an
        interrupted copy) is moved to ``WORKDIR/damaged_checkpoints/<step>`` (nothing is
        deleted) and the next older one is tried; a warning says which and why.

        Returns:
          ``(state, meta)``.

        Raises:
          CheckpointError: there is no checkpoint, or every one is damaged (nothing is moved then).
        """
        steps = sorted(self.latest.all_steps(), reverse=True)
        if not steps:
            raise CheckpointError(f"no complete checkpoint in {self.latest.directory}")
        damaged: list[tuple[int, str]] = []
        for step in steps:
            try:
                state, meta = self._restore_step(step, abstract_state, data_iter)
            except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types for bad files
                damaged.append((step, damage_reason(e)))
                continue
            if damaged:
                moved = self._set_aside([s for s, _ in damaged])
                self.set_aside = [
                    f"checkpoint {bad} in {self.latest.directory} is damaged ({why}): moved to {dest}; resuming "
                    f"from the newest intact checkpoint, step {step}"
                    for (bad, why), dest in zip(damaged, moved)
                ]
            return state, meta
        listing = "; ".join(f"step {s}: {why}" for s, why in damaged)
        raise CheckpointError(
            f"every checkpoint in {self.latest.directory} is damaged ({listing}). Restore the folder from a "
            f"backup, or move {self.latest.directory} away to train {self.workdir} from the start."
        )

    def _restore_step(self, step: int, abstract_state, data_iter) -> tuple[Any, dict[str, Any]]:
        args: dict[str, ocp.args.CheckpointArgs] = dict(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
        )
        if data_iter is not None and self.has_data_position(step):
            import grain

            args["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
        elif data_iter is not None:
            log.warning(
                "checkpoint %d was written by another number of processes than %d: the data order "
                "restarts (the train state is restored exactly)",
                step,
                jax.process_count(),
            )
        restored = self.latest.restore(step, args=ocp.args.Composite(**args))
        return restored["state"], dict(restored["meta"])

    def _set_aside(self, steps) -> list[str]:
        """Moves damaged step folders out of the manager's directory (process 0; all wait);
        returns where they went."""
        target = os.path.join(self.workdir, DAMAGED_DIR)
        moved = []
        for step in steps:
            dest = os.path.join(target, str(step))
            n = 1
            while os.path.exists(dest):
                dest, n = os.path.join(target, f"{step}.{n}"), n + 1
            moved.append(dest)
            if jax.process_index() == 0:
                os.makedirs(target, exist_ok=True)
                os.replace(os.path.join(self.latest.directory, str(step)), dest)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("segnode_set_aside_damaged")
        self.latest.reload()
        return moved

    def has_data_position(self, step: int) -> bool:
        """Whether checkpoint ``step`` holds this process's data-iterator position (it does not
        when it was written by a different number of processes: each host reads its own shard)."""
        name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        return os.path.exists(os.path.join(self.latest.directory, str(step), "data_iter", name))

    @contextlib.contextmanager
    def _writing(self, directory: str | os.PathLike[str]):
        """Turns a failed write (now, or of an earlier asynchronous save that surfaces now)
        into one :class:`CheckpointWriteError` naming the folder, the cause and the newest
        intact checkpoint, from which a rerun resumes."""
        try:
            yield
        except CheckpointWriteError:
            raise
        except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types
            last = _latest_step_dir(self.latest.directory)
            keep = (
                f"the last good checkpoint is step {os.path.basename(last)} ({last}); rerunning the same command "
                "resumes from it"
                if last
                else "no checkpoint had been completed yet; rerunning starts from the beginning"
            )
            if _is_disk_full(e):
                raise CheckpointWriteError(
                    f"cannot write a checkpoint into {directory}: the disk is full. Nothing already saved was lost: "
                    f"{keep} once you free space (or choose another --workdir)."
                ) from None
            raise CheckpointWriteError(
                f"cannot write a checkpoint into {directory} ({damage_reason(e)}). Nothing already saved was lost: {keep}."
            ) from None

    def save(self, step: int, state, data_iter, meta: Mapping[str, Any]) -> None:
        """Starts an asynchronous save of the state and the iterator position at ``step``.

        Raises:
          CheckpointWriteError: this save, or an earlier asynchronous one, failed to write.
        """
        import grain

        args: dict[str, ocp.args.CheckpointArgs] = dict(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta))
        )
        if data_iter is not None:
            args["data_iter"] = grain.checkpoint.CheckpointSave(_IteratorSnapshot(data_iter))
        with self._writing(self.latest.directory):
            self.latest.save(int(step), args=ocp.args.Composite(**args), force=True)

    def best_meta(self) -> dict[str, Any] | None:
        """``{"step", "miou"}`` (a classifier: ``"top1"``) of the best checkpoint so far, or None."""
        step = self.best.latest_step()
        if step is None:
            return None
        restored = self.best.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def save_best(self, step: int, state, score: float, *, metric: str = "miou") -> None:
        """Saves ``state`` as the new best checkpoint (the previous best is then deleted), with
        ``{"step", metric: score}`` (``metric``: "miou", or "top1" for a classifier).

        Returns once it is written: the training loop logs the validation after it, so a logged
        validation always has its best checkpoint (a run killed during this save has neither,
        and validates that step again when it resumes from it)."""
        meta = {"step": int(step), metric: float(score)}
        with self._writing(self.best.directory):
            self.best.save(
                int(step),
                args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                force=True,
            )
            self.best.wait_until_finished()

    def wait(self) -> None:
        """Blocks until every save has been written (raises :class:`CheckpointWriteError` if
        one failed)."""
        with self._writing(self.latest.directory):
            self.latest.wait_until_finished()
        with self._writing(self.best.directory):
            self.best.wait_until_finished()

    def close(self, *, raise_errors: bool = True) -> None:
        """Waits for the saves in flight and closes the managers. With ``raise_errors=False``
        (closing after another error) a failed write is only logged."""
        try:
            self.wait()
        except CheckpointWriteError as e:
            if raise_errors:
                raise
            log.warning("%s", e)
        finally:
            for manager in (self.latest, self.best):
                with contextlib.suppress(Exception):
                    manager.close()


# ---------------------------------------------------------------------------------------
# Reading variables from any checkpoint.


def _is_step_dir(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "state"))


def _step_dirs(directory: str | os.PathLike[str]) -> list[str]:
    """The complete ``<step>`` directories of an orbax CheckpointManager directory, newest first."""
    if not os.path.isdir(directory):
        return []
    steps = []
    for name in os.listdir(directory):
        full = os.path.join(directory, name)
        if name.isdigit() and os.path.isdir(full) and _is_step_dir(full):
            steps.append(int(name))
    return [os.path.join(directory, str(s)) for s in sorted(steps, reverse=True)]


def _latest_step_dir(directory: str | os.PathLike[str]) -> str | None:
    """The newest complete ``<step>`` directory of an orbax CheckpointManager directory."""
    dirs = _step_dirs(directory)
    return dirs[0] if dirs else None


def resolve_checkpoint(path: str, *, which: str = "latest") -> tuple[str, str]:
    """Finds the PyTree directory holding the variables that ``path`` names.

    Arguments:
      path: a training workdir, its ``checkpoints/`` or ``best/`` folder, a step directory
        (``checkpoints/<step>``), a state directory, or a converted-weights directory.
      which: for a workdir, ``"latest"`` or ``"best"``.

    Returns:
      ``(pytree_dir, description)``.

    Raises:
      CheckpointError: nothing usable at ``path``.
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not os.path.exists(path):
        raise CheckpointError(
            f"no checkpoint at {path}: the path does not exist. Pass a training workdir "
            "(python train.py ... --workdir DIR), one of its checkpoints/<step> folders, or a "
            "converted-weights folder."
        )
    if os.path.isdir(os.path.join(path, CONVERTED_VARIABLES)):
        return os.path.join(path, CONVERTED_VARIABLES), f"converted weights {path}"
    if os.path.isdir(os.path.join(path, CHECKPOINT_DIR)) or os.path.isdir(os.path.join(path, BEST_DIR)):
        sub = BEST_DIR if which == "best" else CHECKPOINT_DIR
        step_dir = _latest_step_dir(os.path.join(path, sub))
        if step_dir is None and which == "best":
            raise CheckpointError(f"{path} has no best checkpoint yet (it is written at validation time).")
        if step_dir is None:
            raise CheckpointError(
                f"no complete checkpoint in {os.path.join(path, sub)}: the run has not saved one yet "
                "(a run killed before its first save leaves none; only complete saves are used)."
            )
        return os.path.join(step_dir, "state"), f"{which} checkpoint {step_dir}"
    if _is_step_dir(path):
        return os.path.join(path, "state"), f"checkpoint {path}"
    step_dir = _latest_step_dir(path)
    if step_dir is not None:
        return os.path.join(step_dir, "state"), f"checkpoint {step_dir}"
    if any(os.path.exists(os.path.join(path, m)) for m in ("_METADATA", "manifest.ocdbt", "_sharding")):
        return path, f"checkpoint {path}"
    raise CheckpointError(
        f"no checkpoint at {path}: it is neither a training workdir (with {CHECKPOINT_DIR}/), a "
        f"checkpoint step folder (with state/), nor a converted-weights folder (with "
        f"{CONVERTED_VARIABLES}/ and {CONVERSION_INFO})."
    )


def _restore_numpy(pytree_dir: str) -> Any:
    """Restores an orbax PyTree checkpoint as numpy arrays, whatever devices wrote it."""
    checkpointer = ocp.PyTreeCheckpointer()
    try:
        metadata = checkpointer.metadata(pytree_dir)
        if metadata is None:
            raise FileNotFoundError("no PyTree metadata")
        tree = metadata.item_metadata
        if tree is None:
            raise FileNotFoundError("no item metadata")
        tree = tree.tree if hasattr(tree, "tree") else tree
        restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        return checkpointer.restore(pytree_dir, args=ocp.args.PyTreeRestore(restore_args=restore_args))
    except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types for damaged files
        raise CheckpointError(
            f"the checkpoint at {pytree_dir} cannot be read, it is damaged or incomplete ({damage_reason(e)}). "
            "Evaluate another checkpoint (for a workdir, the newest intact one is used) or restore it from a backup."
        ) from None


def load_variables(path: str, *, which: str = "latest") -> dict[str, Any]:
    """Reads model variables from a checkpoint, as numpy arrays.

    Arguments:
      path: a training workdir (its newest checkpoint, or the best with ``which="best"``), a
        ``checkpoints/<step>`` folder, or a directory written by the weight converter
        (``variables/`` holding an orbax PyTree of a possibly partial ``{"params": ...,
        "batch_stats": ...}`` tree, and ``conversion.json``).
      which: ``"latest"`` or ``"best"`` (workdirs only).

    Returns:
      ``{"params": ..., "batch_stats": ...}`` nested dicts of numpy arrays (a collection the
      checkpoint lacks is an empty dict).

    Raises:
      CheckpointError: nothing readable at ``path``, or no variables in it.
    """
    return read_checkpoint(path, which=which)[0]


def read_checkpoint(path: str, *, which: str = "latest") -> tuple[dict[str, Any], str, str]:
    """:func:`load_variables` that also says what it read: ``(variables, pytree_dir,
    description)`` of the checkpoint actually used (the newest intact one of a workdir whose
    newest is damaged)."""
    pytree_dir, description = resolve_checkpoint(path, which=which)
    try:
        tree = _restore_numpy(pytree_dir)
    except CheckpointError:
        # A workdir's newest checkpoint is damaged: use the newest intact one, saying so.
        step_dir = os.path.dirname(pytree_dir)
        older = (
            [
                d
                for d in _step_dirs(os.path.dirname(step_dir))
                if int(os.path.basename(d)) < int(os.path.basename(step_dir))
            ]
            if (os.path.basename(step_dir).isdigit() and _names_a_run(path))
            else []
        )
        tree = None
        for d in older:
            try:
                tree = _restore_numpy(os.path.join(d, "state"))
            except CheckpointError:
                continue
            log.warning(
                "%s cannot be read (damaged or incomplete); using the newest intact checkpoint %s", description, d
            )
            description = f"checkpoint {d}"
            pytree_dir = os.path.join(d, "state")
            break
        if tree is None:
            raise
    if not isinstance(tree, Mapping) or not any(k in tree for k in VARIABLE_COLLECTIONS):
        keys = sorted(tree) if isinstance(tree, Mapping) else type(tree).__name__
        raise CheckpointError(f"{description} holds no 'params' or 'batch_stats' (top-level keys: {keys}).")
    out = {k: _as_dict(tree.get(k) or {}) for k in VARIABLE_COLLECTIONS}
    info = os.path.join(os.path.dirname(pytree_dir), CONVERSION_INFO)
    if os.path.isfile(info):
        log.info("init_from: %s (conversion info in %s)", description, info)
    return out, pytree_dir, description


def _names_a_run(path: str) -> bool:
    """Whether ``path`` is a workdir or its checkpoints/best folder (not one chosen step)."""
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    return (
        os.path.isdir(os.path.join(path, CHECKPOINT_DIR))
        or os.path.isdir(os.path.join(path, BEST_DIR))
        or os.path.basename(path) in (CHECKPOINT_DIR, BEST_DIR)
    )


def _as_dict(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {str(k): _as_dict(v) for k, v in tree.items()}
    return tree


MODEL_INFO = "model.json"


@contextlib.contextmanager
def folder_written_whole(out_dir: str):
    """Yields a temporary folder beside ``out_dir`` to fill; when the block ends normally it
    becomes ``out_dir`` (an existing one is replaced, and removed only after the rename), on an
    error it is removed: ``out_dir`` is never half-written."""
    import shutil
    import tempfile

    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.", dir=parent)
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide a shared folder from other users
        if os.path.exists(out_dir):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old.", dir=parent)
            os.rename(out_dir, os.path.join(old, "x"))
            os.rename(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out_dir)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def export_model(
    path: str, out_dir: str, *, which: str = "best", info: Mapping[str, Any] | None = None, overwrite: bool = False
) -> str:
    """Writes a trained model as a small folder others can use: weights, config, classes, palette.

    ``out_dir`` gets ``variables/`` (an orbax PyTree of ``{"params", "batch_stats"}``: no
    optimiser state, no data iterator), ``config.json`` (the run's config) and ``model.json``
    (``info`` plus the dataset's class names and palette, the checkpoint's step and when it was
    exported). ``evaluate.py --ckpt``, ``predict.py --ckpt``, ``python -m segnode_jax.export
    --ckpt`` and :func:`segnode_jax.load` read it as they read a run.

    Arguments:
      path: a training workdir or checkpoint (as for :func:`load_variables`).
      out_dir: the folder to write; written whole in a temporary folder, then renamed.
      which: ``"best"`` or ``"latest"`` checkpoint of a workdir.
      info: what to record beside the weights (scores, the command that reproduces them, licence).
      overwrite: replace an existing ``out_dir`` (only after the new one is complete).

    Returns:
      ``out_dir``.

    Raises:
      CheckpointError: nothing readable at ``path`` or ``out_dir`` exists without ``overwrite``.
    """
    import datetime

    out_dir = os.path.abspath(os.path.expanduser(out_dir))
    if os.path.exists(out_dir) and not overwrite:
        raise CheckpointError(f"{out_dir} already exists; pass overwrite=True to replace it, or choose another folder")
    variables, pytree_dir, description = read_checkpoint(path, which=which)
    cfg = config_lib.load_run_config(pytree_dir)
    # Where the data lived on the training machine means nothing elsewhere: the folder's users
    # get their own $SEGNODE_DATA_DIR (or ~/tensorflow_datasets).
    with cfg.ignore_type():
        for key in ("data_dir", "manual_dir", "root"):
            if key in cfg.data:
                cfg.data[key] = None
        if "init_from" in cfg:
            cfg.init_from = None

    dinfo = data.get_info(cfg.data)
    meta = dict(info or {})
    meta.update(
        checkpoint=description,
        step=_step_of(pytree_dir),
        exported=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        dataset=dinfo.name,
        class_names=list(dinfo.class_names),
        palette=[list(map(int, c)) for c in dinfo.palette],
    )
    with folder_written_whole(out_dir) as tmp:
        ckpt = ocp.StandardCheckpointer()
        ckpt.save(os.path.join(tmp, CONVERTED_VARIABLES), {k: v for k, v in variables.items() if v})
        ckpt.wait_until_finished()
        config_lib.save_config(tmp, cfg)
        with open(os.path.join(tmp, MODEL_INFO), "w") as f:
            json.dump(meta, f, indent=1)
            f.write("\n")
    return out_dir


def _step_of(pytree_dir: str) -> int | None:
    step = os.path.basename(os.path.dirname(pytree_dir))
    return int(step) if step.isdigit() else None
