"""Every private API of a dependency that segnode-jax relies on, in one place.

Each name here reaches into a library's internals, which an upgrade may change without
notice. ``tests/test_compat.py`` checks every one against the installed versions, so that an
upgrade that breaks one fails loudly there instead of silently elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

# diffrax ------------------------------------------------------------------------------------

# Substrings of the errors diffrax itself raises (throw=True, e.g. inside BacksolveAdjoint's
# backward solve), by the RESULTS name they stand for.
DIFFRAX_FAILURE_MESSAGES = {
    "max_steps_reached": "The maximum number of solver steps was reached",
    "dt_min_reached": "The minimum step size was reached",
}


def diffrax_result_names() -> list[str]:
    """Names of ``diffrax.RESULTS`` ordered by their integer code (``successful`` first)."""
    import diffrax

    items = diffrax.RESULTS._name_to_item
    return sorted(items, key=lambda n: int(items[n]._value))


def diffrax_result_code(result: Any):
    """The integer code (a JAX array) of a ``diffrax.RESULTS`` value, e.g. ``sol.result``."""
    return result._value


_NAN_MODE_ERROR_IMPL: list = []


@contextlib.contextmanager
def equinox_errors_as_nan():
    """While a function is *traced* inside the block, equinox's runtime error checks that use
    the default behaviour (``on_error="default"``, e.g. diffrax's ``throw=True`` inside
    ``BacksolveAdjoint``'s backward solve) return NaN instead of raising through a host
    callback: what ``EQX_ON_ERROR=nan`` does process-wide, for one trace.

    equinox reads the setting from the module global ``equinox._errors.EQX_ON_ERROR`` when it
    traces a check, inside ``branched_error_if_impl_jit``, a ``filter_jit`` whose cache key
    does not hold the setting: a check traced once in one mode would be reused in the other.
    So the block also swaps in a second ``filter_jit`` (of a function of its own: filter_jit
    caches by the wrapped function), used only here, whose cache holds only NaN-mode traces.
    """
    from equinox import _errors, filter_jit

    if not _NAN_MODE_ERROR_IMPL:
        # A function of its own: filter_jit caches by the function it wraps.
        def nan_mode_error_if_impl(*args, **kwargs):
            return _errors.branched_error_if_impl(*args, **kwargs)

        _NAN_MODE_ERROR_IMPL.append(filter_jit(nan_mode_error_if_impl))
    old = _errors.EQX_ON_ERROR, _errors.branched_error_if_impl_jit  # pyright: ignore[reportPrivateImportUsage]  # equinox private (this module's purpose)
    _errors.EQX_ON_ERROR, _errors.branched_error_if_impl_jit = "nan", _NAN_MODE_ERROR_IMPL[0]  # pyright: ignore[reportPrivateImportUsage]  # equinox private (this module's purpose)
    try:
        yield
    finally:
        _errors.EQX_ON_ERROR, _errors.branched_error_if_impl_jit = old  # pyright: ignore[reportPrivateImportUsage]  # equinox private (this module's purpose)


# jax ----------------------------------------------------------------------------------------

# The logger JAX writes a traceback to for every failing host callback (before re-raising).
JAX_CALLBACK_LOGGER = "jax._src.callback"


def jax_callback_logger() -> logging.Logger:
    return logging.getLogger(JAX_CALLBACK_LOGGER)


def jax_distributed_started() -> bool:
    """Whether ``jax.distributed.initialize`` has run in this process (no public query exists)."""
    from jax._src import distributed

    return getattr(distributed.global_state, "client", None) is not None


# tensorflow-datasets ------------------------------------------------------------------------

# The DatasetBuilder methods that print "Downloading and preparing dataset ..." and "...
# downloaded and prepared to ..."; our builders override them with what really happens.
TFDS_LOG_METHODS = ("_log_download_bytes", "_log_download_done")


# orbax-checkpoint ---------------------------------------------------------------------------


def orbax_array_handler_without_replica_parallel():
    """orbax's ``jax.Array`` handler with replica-parallel saving off, keeping the default
    handler's array-metadata store (a private attribute; no public accessor exists).

    Replica-parallel saving splits every replicated array into one slice per replica, with one
    jitted ``slice`` per array shape and device: on 4 CPU devices the first save of the tiny
    model's state compiled for ~7 s (measured). orbax already turns it off on GPUs."""
    import jax
    import orbax.checkpoint as ocp

    current = ocp.type_handlers.get_type_handler(jax.Array)
    return ocp.type_handlers.ArrayHandler(
        use_replica_parallel=False,
        array_metadata_store=current._array_metadata_store,  # pyright: ignore[reportAttributeAccessIssue]  # orbax private
    )


# tensorboardX -------------------------------------------------------------------------------


def tensorboardx_abandon(summary_writer) -> None:
    """Marks every event file of a tensorboardX ``SummaryWriter`` closed without writing what it
    still holds (after a write failed, e.g. on a full disk), so that its ``atexit`` hook does
    not try, fail and print a traceback again. Sets each ``EventFileWriter``'s private
    ``_closed`` flag (``all_writers`` is public)."""
    for file_writer in (getattr(summary_writer, "all_writers", None) or {}).values():
        event_writer = getattr(file_writer, "event_writer", None)
        if event_writer is not None:
            event_writer._closed = True
