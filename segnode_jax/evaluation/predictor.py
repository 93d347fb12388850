"""The model as a prediction function on the local devices (:class:`Predictor`): jitted,
batch-sharded over a ``data`` mesh, per-image ODE solves when asked."""

from __future__ import annotations

import functools
import math
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from segnode_jax import api, ode, parallel
from segnode_jax.evaluation.metrics import score_batch
from segnode_jax.models import has_ode


def local_mesh(devices=None) -> jax.sharding.Mesh:
    """A 1-D ``data`` mesh over this host's devices (evaluation runs per host), or over
    ``devices``."""
    return parallel.make_mesh(jax.local_devices() if devices is None else list(devices))


def predict_logits(
    variables, images: Float[Array, "b h w 3"], model_cfg, *, per_image: bool = True, with_result: bool = False
):
    """Logits and per-image solver NFE of a batch (pure; call inside ``jax.jit``).

    Arguments:
      variables: ``{"params", "batch_stats"}``.
      images: normalised images.
      model_cfg: ``cfg.model``.
      per_image: vmap the model over the images, so that each image's ODE gets its own
        adaptive steps and the result does not depend on the rest of the batch.
      with_result: also return each image's solver result code (0: solved; see
        ``segnode_jax.ode.failure_of``), for a ``model_cfg`` with ``ode.on_failure="nan"``.

    Returns:
      ``(logits (B, h, w, C) float32, nfe (B,) int32)`` (``nfe`` is 0 for models without ODE),
      plus ``result (B,) int32`` with ``with_result``.
    """

    def stat(aux, key, n):
        stats = aux.get("ode") if isinstance(aux, Mapping) else None
        if stats is None or key not in stats:
            return jnp.zeros((n,), jnp.int32)
        return jnp.broadcast_to(jnp.asarray(stats[key], jnp.int32), (n,))

    keys = ("nfe", "result") if with_result else ("nfe",)
    if per_image:

        def one(x):
            logits, aux = api.apply(variables, x[None], model_cfg, train=False)
            return (logits[0], *(stat(aux, k, 1)[0] for k in keys))

        return jax.vmap(one)(images)
    logits, aux = api.apply(variables, images, model_cfg, train=False)
    return (logits, *(stat(aux, k, images.shape[0]) for k in keys))


def nan_on_failure(frozen_model_cfg):
    """The model config whose failed solves give NaN and a result code instead of raising
    through a host callback (a model without an ODE: unchanged). Functions compiled from it
    have no host callback, so JAX's persistent compilation cache can keep them; the host
    raises the failure from the result code (:meth:`Predictor.device_call`)."""

    if "ode" not in frozen_model_cfg:
        return frozen_model_cfg
    return ode.with_settings(frozen_model_cfg, on_failure="nan")


@functools.lru_cache(maxsize=32)
def _predict_jit(frozen_model_cfg, per_image: bool, mesh):
    """``(variables, images) -> (logits, nfe, result)``, jitted and sharded over ``mesh``."""
    data, rep = parallel.batch_sharding(mesh), parallel.replicated(mesh)
    return jax.jit(
        functools.partial(
            predict_logits, model_cfg=nan_on_failure(frozen_model_cfg), per_image=per_image, with_result=True
        ),
        in_shardings=(rep, data),
        out_shardings=(data, data, data),
    )


def raise_failed_solves(result, n: int, ode_settings) -> None:
    """Raises the :class:`~segnode_jax.ODESolveError` of the first of the ``n`` real inputs
    whose solve failed (``result``: the per-input result codes of :func:`predict_logits`)."""

    codes = np.asarray(result)[:n]
    failed = np.flatnonzero(codes)
    error = ode.failure_of(int(codes[failed[0]]), ode_settings) if failed.size else None
    if error is not None:
        raise error


@functools.lru_cache(maxsize=8)
def _score_jit(mesh):
    data, rep = parallel.batch_sharding(mesh), parallel.replicated(mesh)
    return jax.jit(score_batch, in_shardings=(data, data, data, data), out_shardings=(rep, data))


class Predictor:
    """A batched prediction function on this host's devices: numpy images in, logits out.

    Build one with :meth:`for_model` (a segnode-jax model) or :meth:`from_function` (any
    JAX function ``images -> logits``, e.g. another model or a test oracle). Calls are split
    into batches of ``batch_size`` (the last one padded), sharded over the local devices, so a
    fixed window size compiles once. ``solver_stats()`` gives the mean number of vector-field
    evaluations per forward solve of one input (an image, a window, a scale or a flipped view).

    Arguments:
      fn: jittable ``images (B, h, w, 3) -> (logits (B, h, w, C), nfe (B,) int32)``.
      ode_settings: ``model.ode`` (named in the error of a failed solve).
      batch_size: inputs per call (rounded up to a multiple of the local device count);
        None: one per local device.
      is_ode: whether ``nfe`` is meaningful (SegNode, U-Node, NODEs-UNet).
      args: leading arguments of ``fn`` (e.g. the variables), replicated on the devices.
      devices: the devices to run on (default: all of this host's).
    """

    def __init__(
        self,
        fn,
        *,
        batch_size: int | None = None,
        is_ode: bool = False,
        args: tuple = (),
        devices=None,
        ode_settings=None,
        _jitted=None,
    ):
        self.mesh = local_mesh(devices)
        n_dev = self.mesh.size
        bs = n_dev if not batch_size else int(batch_size)
        self.batch_size = int(math.ceil(bs / n_dev) * n_dev)
        self.is_ode = is_ode
        rep = parallel.replicated(self.mesh)
        self._args = jax.device_put(tuple(args), rep)
        if _jitted is None:
            data = parallel.batch_sharding(self.mesh)

            def with_result(*a):
                logits, nfe = fn(*a)
                return logits, nfe, jnp.zeros_like(nfe)

            _jitted = jax.jit(with_result, in_shardings=(rep,) * len(args) + (data,), out_shardings=(data, data, data))
        self._fn = _jitted
        self._ode_settings = ode_settings
        self._nfe: list[tuple[jax.Array, int]] = []
        # Input shapes called so far: a new one compiles (``num_shapes`` counts them).
        self._shapes: set[tuple[int, ...]] = set()

    @classmethod
    def for_model(
        cls, variables, model_cfg, *, batch_size: int | None = None, per_image_solve: bool = True, devices=None
    ) -> "Predictor":
        """A predictor running a segnode-jax model (see :func:`predict_logits`)."""

        frozen = api.freeze(model_cfg)
        mesh = local_mesh(devices)
        return cls(
            None,
            batch_size=batch_size,
            is_ode=has_ode(frozen),
            args=(variables,),
            devices=devices,
            ode_settings=frozen.get("ode"),
            _jitted=_predict_jit(frozen, bool(per_image_solve), mesh),
        )

    @classmethod
    def from_function(cls, fn: Callable[[jax.Array], jax.Array], *, batch_size: int | None = None) -> "Predictor":
        """A predictor from a JAX function ``images -> logits`` (no solver statistics)."""

        def wrapped(images):
            logits = fn(images)
            return logits, jnp.zeros((images.shape[0],), jnp.int32)

        return cls(wrapped, batch_size=batch_size)

    def device_call(self, images: np.ndarray) -> jax.Array:
        """Logits on device for one batch (``len(images) <= batch_size``; padded with zeros).

        Waits for the batch's solves: a failed one raises
        :class:`~segnode_jax.ODESolveError` (every caller reads the logits at once anyway)."""
        n = len(images)
        if n > self.batch_size:
            raise ValueError(f"device_call takes at most batch_size={self.batch_size} images, got {n}")
        batch = np.asarray(images, np.float32)
        if n < self.batch_size:
            pad = np.zeros((self.batch_size - n,) + batch.shape[1:], np.float32)
            batch = np.concatenate([batch, pad])
        self._shapes.add(batch.shape)
        logits, nfe, result = self._fn(*self._args, self.put(batch))
        if self.is_ode:
            raise_failed_solves(result, n, self._ode_settings)
            self._nfe.append((nfe, n))
        return logits

    def put(self, batch: np.ndarray) -> jax.Array:
        """A host batch (leading axis = batch) split over this predictor's devices (explicit:
        in a multi-host run JAX does not place NumPy inputs of a sharded ``jit`` itself)."""
        return jax.device_put(batch, parallel.batch_sharding(self.mesh))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            out.append(np.asarray(self.device_call(chunk))[: len(chunk)])
        return np.concatenate(out)

    @property
    def num_shapes(self) -> int:
        """How many input shapes this predictor has run (each compiled once)."""
        return len(self._shapes)

    def nfe_mark(self) -> int:
        """A position in the solver log; :meth:`nfe_since` gives the NFE of the inputs after it."""
        return len(self._nfe)

    def nfe_since(self, mark: int) -> np.ndarray:
        """Per-input NFE (int) of the calls since ``mark``, padding excluded (empty for models
        without ODE)."""
        parts = [np.asarray(v)[:n] for v, n in self._nfe[mark:]]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros((0,), np.int64)

    def solver_stats(self) -> dict[str, float]:
        """``mean_nfe`` and ``num_solves`` so far (empty for models without ODE)."""
        if not self.is_ode or not self._nfe:
            return {}
        total = sum(int(np.asarray(v)[:n].sum()) for v, n in self._nfe)
        count = sum(n for _, n in self._nfe)
        return {"mean_nfe": total / count, "num_solves": count}
