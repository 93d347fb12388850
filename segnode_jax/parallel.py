"""Devices and hosts: the mesh, multi-host start-up, and how arrays are laid out on them.

One code path for 1 CPU, 1 GPU, N GPUs and many hosts (no ``pmap``):

* :func:`initialize` starts ``jax.distributed`` when ``cfg.parallel`` asks for it or a cluster
  launcher is detected (SLURM with several tasks, Open MPI, ``JAX_COORDINATOR_ADDRESS``);
* :func:`make_mesh` is a 1-D ``data`` mesh over every device of every host;
* batches are sharded over ``data`` (:func:`global_batch` assembles each host's part with
  ``jax.make_array_from_process_local_data``); the train state is replicated, or with
  ``parallel.param_sharding="fsdp"`` its large arrays are split over ``data`` too
  (:func:`state_shardings`) and XLA gathers them where the step needs them;
* BatchNorm statistics come out of the jitted step computed over the global batch: the
  arrays are global, so a mean over the batch axis *is* the cross-device mean (what
  SyncBatchNorm does in PyTorch), with no extra configuration.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from segnode_jax import compat
from segnode_jax.errors import UserError

DATA_AXIS = "data"
PARAM_SHARDINGS = ("replicated", "fsdp")

log = logging.getLogger(__name__)


class ParallelConfigError(UserError):
    """Inconsistent device, host or batch settings; the message names the field to change."""


def _distributed_started() -> bool:
    return compat.jax_distributed_started()


def detected_launcher() -> str | None:
    """The multi-process launcher this process runs under, or None (one process)."""
    env = os.environ
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return "JAX_COORDINATOR_ADDRESS"
    if "SLURM_JOB_ID" in env and int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1")) or 1) > 1:
        return "SLURM"
    if int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
        return "Open MPI"
    return None


def initialize(pcfg: Any) -> bool:  # cfg.parallel: a ConfigDict, a mapping or None
    """Starts ``jax.distributed`` if ``pcfg`` (``cfg.parallel``) asks for it or a launcher is
    detected. Call it before anything else uses JAX devices.

    Arguments:
      pcfg: ``cfg.parallel`` (None: auto-detection only).

    Returns:
      True if this process is now (or already was) part of a multi-process run.

    Raises:
      ParallelConfigError: an unknown mode, or start-up failed (names what to check).
    """
    pcfg = dict(pcfg or {})
    mode = str(pcfg.get("distributed", "auto"))
    if mode not in ("auto", "on", "off"):
        raise ParallelConfigError(f"parallel.distributed={mode!r}; use auto, on or off")
    if _distributed_started():
        return True
    address = pcfg.get("coordinator_address")
    launcher = detected_launcher()
    if mode == "off" or (mode == "auto" and not address and launcher is None):
        return False
    kwargs: dict[str, Any] = dict(  # values from the config, checked by jax.distributed itself
        coordinator_address=address,
        num_processes=pcfg.get("num_processes"),
        process_id=pcfg.get("process_id"),
        initialization_timeout=int(pcfg.get("initialization_timeout", 300)),
    )
    try:
        jax.distributed.initialize(**kwargs)
    except (ValueError, RuntimeError, TypeError) as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ParallelConfigError(
            f"multi-host start-up failed ({detail}); launcher: {launcher or 'none detected'}. Set "
            "--config.parallel.coordinator_address=HOST:PORT (process 0's address), "
            "--config.parallel.num_processes and --config.parallel.process_id, or run under SLURM/Open MPI "
            "(see the README's multi-host section); --config.parallel.distributed=off for one host."
        ) from None
    return True


def make_mesh(devices: Sequence[Any] | None = None) -> jax.sharding.Mesh:  # jax.Device is not a type to pyright
    """A 1-D mesh named ``data``.

    Arguments:
      devices: the devices (default: every device of every host).
    """
    if devices is None:
        return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))
    return jax.sharding.Mesh(np.asarray(list(devices)), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def local_batch_size(global_batch: int, mesh: jax.sharding.Mesh, *, field: str = "train.batch_size") -> int:
    """This host's share of a global batch; errors unless it splits evenly over the devices.

    Raises:
      ParallelConfigError: the batch does not divide by the device count.
    """
    n_dev = mesh.devices.size
    if global_batch < 1 or global_batch % n_dev:
        suggestion = max(n_dev, (global_batch // n_dev) * n_dev)
        raise ParallelConfigError(
            f"{field}={global_batch} does not divide evenly over the {n_dev} devices; use a multiple "
            f"of {n_dev} (e.g. --config.{field}={suggestion})."
        )
    n_hosts = len({d.process_index for d in mesh.devices.flat})
    return global_batch // n_hosts


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``data``."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def global_batch(local: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """Assembles the hosts' batches (each host passes its own part) into global arrays
    sharded over the ``data`` axis."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


def _fsdp_spec(shape: tuple[int, ...], n: int, min_size: int) -> PartitionSpec:
    if int(np.prod(shape, dtype=np.int64)) < min_size:
        return PartitionSpec()
    # Split the largest axis that divides by the device count.
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % n == 0:
            spec: list[str | None] = [None] * len(shape)
            spec[axis] = DATA_AXIS
            return PartitionSpec(*spec)
    return PartitionSpec()


def state_shardings(abstract_state, mesh: jax.sharding.Mesh, pcfg: Mapping[str, Any] | None = None):
    """The sharding of every leaf of a train state (``jax.eval_shape`` output).

    Arguments:
      abstract_state: a pytree of arrays or ShapeDtypeStructs.
      mesh: from :func:`make_mesh`.
      pcfg: ``cfg.parallel`` (``param_sharding``, ``fsdp_min_size``); None: replicated.
    """
    pcfg = dict(pcfg or {})
    mode = str(pcfg.get("param_sharding", "replicated"))
    if mode not in PARAM_SHARDINGS:
        raise ParallelConfigError(f"parallel.param_sharding={mode!r}; use one of {', '.join(PARAM_SHARDINGS)}")
    if mode == "replicated" or mesh.devices.size == 1:
        return jax.tree_util.tree_map(lambda _: replicated(mesh), abstract_state)
    n, min_size = mesh.devices.size, int(pcfg.get("fsdp_min_size", 2**16))
    return jax.tree_util.tree_map(
        lambda a: NamedSharding(mesh, _fsdp_spec(tuple(np.shape(a)), n, min_size)), abstract_state
    )


def host_local(tree):
    """A pytree of global arrays as this host can use them on its own devices: arrays that
    span other hosts' devices become NumPy arrays of their full value (replicated ones
    without communication)."""
    from jax.experimental import multihost_utils

    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return x
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree_util.tree_map(one, tree)


def describe(mesh: jax.sharding.Mesh) -> str:
    """``"4 devices (cpu) on 1 host"``-style summary."""
    devices = list(mesh.devices.flat)
    hosts = len({d.process_index for d in devices})
    kinds = sorted({d.platform for d in devices})
    return f"{len(devices)} device(s) ({', '.join(kinds)}) on {hosts} host(s)"
