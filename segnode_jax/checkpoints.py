"""Checkpoints: orbax managers for a run's workdir, resume, the saved config, foreign weights.

A training workdir looks like::

    WORKDIR/config.json              the resolved config of the run (evaluate.py reads it)
    WORKDIR/checkpoints/<step>/      newest `train.max_to_keep` checkpoints:
        state/                       TrainState (step, params, batch_stats, opt_state)
        data_iter/                   the grain iterator's position, one JSON per host
        meta/                        {"step": ..., "best_miou": ...}
    WORKDIR/best/<step>/             the checkpoint with the best validation mIoU (state, meta)
    WORKDIR/metrics.jsonl, WORKDIR/tensorboard/

Saves are asynchronous (orbax writes in the background while training goes on) and atomic:
orbax writes into a temporary directory that is renamed once complete, so a run killed at any
moment (even ``kill -9`` in the middle of a save) leaves the previous checkpoints intact, and
:meth:`RunCheckpoints.restore` picks up the newest complete one.

:func:`load_variables` reads ``{"params", "batch_stats"}`` from a training workdir, a step
directory, or a directory written by the weight converter (``variables/`` -- an orbax PyTree
checkpoint of a possibly partial tree -- and ``conversion.json``); :func:`merge_variables`
merges such a tree into a freshly initialised one (``--config.init_from=PATH``).
"""

from __future__ import annotations

import copy
import json
import logging
import os
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from ml_collections import config_dict

log = logging.getLogger("segnode_jax")

CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"
CONFIG_NAME = "config.json"
CONVERTED_VARIABLES = "variables"
CONVERSION_INFO = "conversion.json"
VARIABLE_COLLECTIONS = ("params", "batch_stats")


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or does not fit the model config."""


# ---------------------------------------------------------------------------------------
# The resolved config of a run.


def _tuples(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def config_to_json(cfg: config_dict.ConfigDict) -> str:
    """The config as indented, key-sorted JSON (tuples become lists)."""
    return cfg.to_json(indent=2, sort_keys=True)


def config_from_json(text: str) -> config_dict.ConfigDict:
    """A ConfigDict from :func:`config_to_json` output (lists become tuples again)."""
    return config_dict.ConfigDict(_tuples(json.loads(text)))


def save_config(workdir: str, cfg: config_dict.ConfigDict) -> str:
    """Writes ``WORKDIR/config.json`` (process 0) and returns its path."""
    path = os.path.join(workdir, CONFIG_NAME)
    if jax.process_index() == 0:
        cfg = copy.deepcopy(cfg)
        if "parallel" in cfg:
            # How this launch was started (process 0's id, ...) is not part of the run.
            with cfg.unlocked():
                for key in ("coordinator_address", "num_processes", "process_id"):
                    if key in cfg.parallel:
                        cfg.parallel[key] = None
        os.makedirs(workdir, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(config_to_json(cfg) + "\n")
        os.replace(tmp, path)
    return path


def find_run_config(path: str) -> str | None:
    """The ``config.json`` of the run a checkpoint path belongs to (searched upwards)."""
    path = os.path.abspath(path)
    for _ in range(4):
        candidate = os.path.join(path, CONFIG_NAME)
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return None


def load_run_config(path: str) -> config_dict.ConfigDict:
    """The config saved with the run at ``path`` (a workdir or a checkpoint inside one)."""
    found = find_run_config(path)
    if found is None:
        raise CheckpointError(
            f"no {CONFIG_NAME} found at {path} or its parent folders, so the model config is "
            "unknown: pass the run's config with --config configs/<dataset>.py (plus the "
            "overrides used in training)."
        )
    with open(found) as f:
        return config_from_json(f.read())


# ---------------------------------------------------------------------------------------
# The checkpoints of a training run.


class _IteratorSnapshot:
    """The position of a grain iterator frozen at save time (what grain's orbax handler
    writes), so an asynchronous save never sees a later position."""

    def __init__(self, iterator):
        self._state = json.dumps(iterator.get_state(), indent=4).encode()

    def get_state(self) -> bytes:
        return self._state


def _manager(directory: str, *, max_to_keep: int | None, items: tuple[str, ...], asynchronous: bool) -> ocp.CheckpointManager:
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
        self.latest = _manager(
            os.path.join(workdir, CHECKPOINT_DIR), max_to_keep=max_to_keep,
            items=("state", "data_iter", "meta"), asynchronous=asynchronous,
        )
        self.best = _manager(os.path.join(workdir, BEST_DIR), max_to_keep=1, items=("state", "meta"), asynchronous=asynchronous)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self.latest.latest_step()

    def restore(self, abstract_state, data_iter) -> tuple[Any, dict[str, Any]]:
        """Restores the newest checkpoint: the train state (shaped and sharded as
        ``abstract_state``) and, in place, the data iterator's position.

        Returns:
          ``(state, meta)``.
        """
        step = self.latest.latest_step()
        if step is None:
            raise CheckpointError(f"no complete checkpoint in {self.latest.directory}")
        args = dict(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
        if data_iter is not None and self.has_data_position(step):
            import grain

            args["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
        elif data_iter is not None:
            log.warning(
                "checkpoint %d was written by another number of processes than %d: the data order "
                "restarts (the train state is restored exactly)", step, jax.process_count(),
            )
        restored = self.latest.restore(step, args=ocp.args.Composite(**args))
        return restored["state"], dict(restored["meta"])

    def has_data_position(self, step: int) -> bool:
        """Whether checkpoint ``step`` holds this process's data-iterator position (it does not
        when it was written by a different number of processes: each host reads its own shard)."""
        name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        return os.path.exists(os.path.join(self.latest.directory, str(step), "data_iter", name))

    def save(self, step: int, state, data_iter, meta: Mapping[str, Any]) -> None:
        """Starts an asynchronous save of the state and the iterator position at ``step``."""
        import grain

        args = dict(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta)))
        if data_iter is not None:
            args["data_iter"] = grain.checkpoint.CheckpointSave(_IteratorSnapshot(data_iter))
        self.latest.save(int(step), args=ocp.args.Composite(**args), force=True)

    def best_meta(self) -> dict[str, Any] | None:
        """``{"step", "miou"}`` of the best checkpoint so far, or None."""
        step = self.best.latest_step()
        if step is None:
            return None
        restored = self.best.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def save_best(self, step: int, state, miou: float) -> None:
        """Saves ``state`` as the new best checkpoint (the previous best is then deleted)."""
        meta = {"step": int(step), "miou": float(miou)}
        self.best.save(int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

    def wait(self) -> None:
        """Blocks until every save has been written."""
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self.latest.close()
        self.best.close()


# ---------------------------------------------------------------------------------------
# Reading variables from any checkpoint.


def _is_step_dir(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "state"))


def _latest_step_dir(directory: str) -> str | None:
    """The newest complete ``<step>`` directory of an orbax CheckpointManager directory."""
    if not os.path.isdir(directory):
        return None
    steps = []
    for name in os.listdir(directory):
        full = os.path.join(directory, name)
        if name.isdigit() and os.path.isdir(full) and _is_step_dir(full):
            steps.append(int(name))
    return os.path.join(directory, str(max(steps))) if steps else None


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
        tree = metadata.item_metadata
        tree = tree.tree if hasattr(tree, "tree") else tree
        restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        return checkpointer.restore(pytree_dir, args=ocp.args.PyTreeRestore(restore_args=restore_args))
    except (FileNotFoundError, ValueError, KeyError, OSError) as e:
        raise CheckpointError(f"cannot read the checkpoint at {pytree_dir} ({type(e).__name__}: {e}).") from None


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
    pytree_dir, description = resolve_checkpoint(path, which=which)
    tree = _restore_numpy(pytree_dir)
    if not isinstance(tree, Mapping) or not any(k in tree for k in VARIABLE_COLLECTIONS):
        keys = sorted(tree) if isinstance(tree, Mapping) else type(tree).__name__
        raise CheckpointError(f"{description} holds no 'params' or 'batch_stats' (top-level keys: {keys}).")
    out = {k: _as_dict(tree.get(k) or {}) for k in VARIABLE_COLLECTIONS}
    info = os.path.join(os.path.dirname(pytree_dir), CONVERSION_INFO)
    if os.path.isfile(info):
        log.info("init_from: %s (conversion info in %s)", description, info)
    return out


def _as_dict(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {str(k): _as_dict(v) for k, v in tree.items()}
    return tree


def flatten(tree: Mapping) -> dict[str, Any]:
    """``{"a/b/kernel": leaf}`` for a nested dict."""
    out = {}

    def visit(prefix, node):
        if isinstance(node, Mapping):
            for k, v in node.items():
                visit(f"{prefix}/{k}" if prefix else str(k), v)
        else:
            out[prefix] = node

    visit("", tree)
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, leaf in flat.items():
        node = out
        parts = path.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = leaf
    return out


def merge_variables(
    fresh: Mapping[str, Any], loaded: Mapping[str, Any], *, num_classes: int | None = None, source: str = "checkpoint"
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Merges loaded variables into freshly initialised ones, leaf by leaf.

    A fresh leaf takes the loaded value when the loaded tree has the same path with the same
    shape. A leaf whose only difference is its last dimension, which in the fresh model is
    ``num_classes`` (a classifier for another class count), keeps its initialisation. Any
    other shape difference is an error: the checkpoint belongs to another architecture.

    Arguments:
      fresh: ``{"params", "batch_stats"}`` of the model being trained.
      loaded: from :func:`load_variables`.
      num_classes: the model's number of classes.
      source: the checkpoint's name, for messages.

    Returns:
      ``(merged, report)``; ``report`` lists the paths ``loaded``, ``reinitialised`` (class
      count differs), ``missing`` (not in the checkpoint) and ``unused`` (not in the model).

    Raises:
      CheckpointError: shapes differ where they should match, or nothing matches at all.
    """
    fresh_flat = flatten({k: fresh.get(k, {}) for k in VARIABLE_COLLECTIONS})
    loaded_flat = flatten({k: loaded.get(k, {}) for k in VARIABLE_COLLECTIONS})
    merged, report = {}, {"loaded": [], "reinitialised": [], "missing": [], "unused": []}
    mismatched = []
    for path, leaf in fresh_flat.items():
        if path not in loaded_flat:
            merged[path] = leaf
            report["missing"].append(path)
            continue
        value = np.asarray(loaded_flat[path])
        shape = tuple(leaf.shape)
        if value.shape == shape:
            merged[path] = np.asarray(value, dtype=leaf.dtype)
            report["loaded"].append(path)
        elif (
            num_classes is not None and len(shape) == value.ndim and shape[:-1] == value.shape[:-1]
            and shape[-1] == num_classes
        ):
            merged[path] = leaf
            report["reinitialised"].append(path)
        else:
            merged[path] = leaf
            mismatched.append(f"{path}: {value.shape} in the checkpoint, {shape} in the model")
    report["unused"] = sorted(set(loaded_flat) - set(fresh_flat))
    if mismatched:
        more = f" (and {len(mismatched) - 8} more)" if len(mismatched) > 8 else ""
        raise CheckpointError(
            f"{source} does not fit the model: {len(mismatched)} variable(s) have other shapes: "
            + "; ".join(mismatched[:8]) + more
            + ". Use a checkpoint of the same architecture (model.name, width, blocks), or "
            "change the model config to the checkpoint's."
        )
    if not report["loaded"]:
        example_ckpt = ", ".join(sorted(loaded_flat)[:3]) or "nothing"
        example_model = ", ".join(sorted(fresh_flat)[:3])
        raise CheckpointError(
            f"nothing in {source} matches the model: no variable path is shared (the checkpoint "
            f"has e.g. {example_ckpt}; the model has e.g. {example_model}). Is it a checkpoint of "
            "this model (model.name)?"
        )
    out = unflatten(merged)
    return {k: out.get(k, {}) for k in VARIABLE_COLLECTIONS if k in fresh}, report


def check_compatible(expected: Mapping[str, Any], loaded: Mapping[str, Any], *, source: str) -> None:
    """Raises :class:`CheckpointError` unless ``loaded`` has exactly the expected variables.

    Arguments:
      expected: shapes of ``{"params", "batch_stats"}`` (arrays or ShapeDtypeStructs).
      loaded: from :func:`load_variables`.
      source: the checkpoint's name, for messages.
    """
    want = {p: tuple(v.shape) for p, v in flatten({k: expected.get(k, {}) for k in VARIABLE_COLLECTIONS}).items()}
    have = {p: tuple(np.shape(v)) for p, v in flatten({k: loaded.get(k, {}) for k in VARIABLE_COLLECTIONS}).items()}
    problems = []
    for path in sorted(set(want) | set(have)):
        if path not in have:
            problems.append(f"{path} is missing from the checkpoint")
        elif path not in want:
            problems.append(f"{path} is in the checkpoint but not in the model")
        elif want[path] != have[path]:
            problems.append(f"{path} has shape {have[path]} in the checkpoint but {want[path]} in the model")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CheckpointError(
            f"{source} was trained with a different model config: " + "; ".join(problems[:5]) + more
            + ". Evaluate it with the config it was trained with (omit --config to use the run's "
            "config.json)."
        )
