"""The private APIs of dependencies that segnode_jax.compat uses still exist and mean what we
assume; an upgrade that changes one fails here, loudly, instead of silently elsewhere."""

import logging

import diffrax
import jax.numpy as jnp
import pytest
import tensorflow_datasets as tfds

from segnode_jax import compat


def test_diffrax_results_by_code():
    names = compat.diffrax_result_names()
    assert names[0] == "successful"
    assert {"max_steps_reached", "dt_min_reached"} <= set(names)
    assert int(compat.diffrax_result_code(diffrax.RESULTS.successful)) == 0
    codes = [int(compat.diffrax_result_code(getattr(diffrax.RESULTS, n))) for n in names]
    assert codes == list(range(len(names)))


def test_diffrax_still_raises_the_messages_we_translate():
    term = diffrax.ODETerm(lambda t, y, args: -50.0 * y)
    with pytest.raises(Exception) as info:  # noqa: PT011 - equinox raises a runtime error type
        diffrax.diffeqsolve(
            term,
            diffrax.Dopri5(),
            0.0,
            1.0,
            0.1,
            jnp.ones(3),
            max_steps=1,
            stepsize_controller=diffrax.PIDController(rtol=1e-9, atol=1e-9),
        )
    assert compat.DIFFRAX_FAILURE_MESSAGES["max_steps_reached"] in str(info.value)


def test_equinox_errors_as_nan_turns_default_checks_into_nan_for_its_traces_only():
    """Traced inside the block, a default-mode check gives NaN (no callback); traced outside,
    before and after, the same check raises -- whichever was traced first (equinox caches the
    check's trace by its arguments, not by the mode)."""
    import equinox as eqx
    import jax
    import numpy as np
    from equinox import _errors

    assert _errors.EQX_ON_ERROR == "raise" and callable(_errors.branched_error_if_impl)

    def check(x):
        return eqx.error_if(x, x > 0, "positive")

    def raising():
        return jax.jit(lambda x: check(x))  # a new function each time: a new trace of check

    def as_nan():
        def traced(x):
            with compat.equinox_errors_as_nan():
                return check(x)

        return jax.jit(traced)

    for first, second in ((raising, as_nan), (as_nan, raising)):
        for build in (first, second):
            f = build()
            text = f.lower(jnp.ones(())).as_text()
            if build is raising:
                assert "callback" in text
                with pytest.raises(Exception, match="positive"):  # noqa: PT011 - equinox's runtime error type
                    jax.block_until_ready(f(jnp.ones(())))
            else:
                assert "callback" not in text and np.isnan(float(f(jnp.ones(()))))
            assert float(f(-jnp.ones(()))) == -1.0
    assert _errors.EQX_ON_ERROR == "raise"


def test_jax_callback_logger_is_a_real_jax_module_logger():
    import importlib

    importlib.import_module(compat.JAX_CALLBACK_LOGGER)
    assert isinstance(compat.jax_callback_logger(), logging.Logger)


def test_jax_distributed_state_is_readable():
    assert compat.jax_distributed_started() is False
    from jax._src import distributed

    assert hasattr(distributed.global_state, "client")


def test_tfds_builder_log_methods_exist_and_ours_override_them():
    from segnode_jax.data.builder import SegmentationBuilder

    for name in compat.TFDS_LOG_METHODS:
        assert callable(getattr(tfds.core.DatasetBuilder, name, None)), name
        assert getattr(SegmentationBuilder, name) is not getattr(tfds.core.DatasetBuilder, name), name


def test_orbax_array_handler_keeps_the_metadata_store_and_turns_replica_parallel_off():
    import jax
    import orbax.checkpoint as ocp

    handler = compat.orbax_array_handler_without_replica_parallel()
    assert handler._array_metadata_store is not None
    assert handler._array_metadata_store is ocp.type_handlers.get_type_handler(jax.Array)._array_metadata_store
    assert handler._use_replica_parallel is False


def test_tensorboardx_abandon_marks_its_event_files_closed(tmp_path):
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    writer.add_scalar("a", 1.0, 0)
    event_writers = [w.event_writer for w in writer.all_writers.values()]
    assert event_writers and not any(w._closed for w in event_writers)
    compat.tensorboardx_abandon(writer)
    assert all(w._closed is True for w in event_writers)
    writer.close()  # now a no-op: nothing more is written, nothing raised
    for w in event_writers:  # the test's own clean-up: its logging thread (a daemon in real runs)
        w._worker.stop()
