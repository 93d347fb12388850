"""Seeded values for a state_dict layout, the same in NumPy and in the fixture scripts.

The fixtures written by the official model code (``make_official_fixtures.py``) store the
layout of the official module's ``state_dict()`` -- key, shape, dtype, in its order -- and
the outputs of its forward pass, not the weights: the weights are drawn from
``numpy.random.default_rng(seed)`` by :func:`values`, loaded into the official module with
``load_state_dict(strict=True)`` there, and drawn again here by the tests. PCG64 and NumPy's
normal sampler give the same numbers on every platform, so a few kilobytes stand for
networks of millions of weights.
"""

from __future__ import annotations

import collections
import json

import numpy as np


def values(layout, seed: int) -> collections.OrderedDict:
    """``key -> array`` for ``layout`` (``[(key, shape, dtype), ...]``).

    Weights of convolutions and linear layers (2 or more dimensions): normal / sqrt(fan-in);
    norm scales (1-D ``weight``): 1 + 0.2 normal; biases: 0.2 normal; running means: 0.2
    normal; running variances: 1 + 0.5 uniform; ``num_batches_tracked``: 1000. Varied norm
    statistics keep a wrong mapping of one of them visible in the outputs.
    """
    rng = np.random.default_rng(seed)
    out = collections.OrderedDict()
    for key, shape, dtype in layout:
        shape = tuple(int(s) for s in shape)
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            out[key] = np.full(shape, 1000, np.dtype(dtype))
            continue
        if leaf == "running_mean":
            v = 0.2 * rng.standard_normal(shape)
        elif leaf == "running_var":
            v = 1.0 + 0.5 * rng.random(shape)
        elif len(shape) >= 2:
            v = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        elif leaf == "weight":
            v = 1.0 + 0.2 * rng.standard_normal(shape)
        elif leaf == "bias":
            v = 0.2 * rng.standard_normal(shape)
        else:
            raise ValueError(f"no rule for {key} {shape}")
        out[key] = v.astype(np.dtype(dtype))
    return out


def load(path: str):
    """A fixture file: ``(arrays, layout, source)``; ``values(layout, source["seed"])``
    gives its weights."""
    data = np.load(path)
    arrays = {k: data[k] for k in data.files if k not in ("layout", "source")}
    layout = [tuple(entry) for entry in json.loads(str(data["layout"]))]
    return arrays, layout, json.loads(str(data["source"]))
