"""Model variables as trees: flattening, merging loaded weights into fresh ones, and checking
that a checkpoint fits a model config.

``merge_variables`` serves ``--config.init_from`` (another run, converted HRNet weights);
``check_compatible`` serves evaluation (a checkpoint must be exactly the model's).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from flax import traverse_util

from segnode_jax.errors import UserError

VARIABLE_COLLECTIONS = ("params", "batch_stats")


class WeightsError(UserError):
    """Loaded variables that do not fit the model (other shapes, nothing shared)."""


def flatten(tree: Mapping) -> dict[str, Any]:
    """``{"a/b/kernel": leaf}`` for a nested dict."""
    return traverse_util.flatten_dict(tree, sep="/") if tree else {}


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The nested dict of :func:`flatten`'s output."""
    return traverse_util.unflatten_dict(dict(flat), sep="/") if flat else {}


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
      WeightsError: shapes differ where they should match, or nothing matches at all.
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
            num_classes is not None
            and len(shape) == value.ndim
            and shape[:-1] == value.shape[:-1]
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
        raise WeightsError(
            f"{source} does not fit the model: {len(mismatched)} variable(s) have other shapes: "
            + "; ".join(mismatched[:8])
            + more
            + ". Use a checkpoint of the same architecture (model.name, width, blocks), or "
            "change the model config to the checkpoint's."
        )
    if not report["loaded"]:
        example_ckpt = ", ".join(sorted(loaded_flat)[:3]) or "nothing"
        example_model = ", ".join(sorted(fresh_flat)[:3])
        raise WeightsError(
            f"nothing in {source} matches the model: no variable path is shared (the checkpoint "
            f"has e.g. {example_ckpt}; the model has e.g. {example_model}). Is it a checkpoint of "
            "this model (model.name)?"
        )
    out = unflatten(merged)
    return {k: out.get(k, {}) for k in VARIABLE_COLLECTIONS if k in fresh}, report


def check_compatible(expected: Mapping[str, Any], loaded: Mapping[str, Any], *, source: str) -> None:
    """Raises :class:`WeightsError` unless ``loaded`` has exactly the expected variables.

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
        raise WeightsError(
            f"{source} was trained with a different model config: "
            + "; ".join(problems[:5])
            + more
            + ". Evaluate it with the config it was trained with (omit --config to use the run's "
            "config.json)."
        )
