"""Test-wide JAX settings: several virtual CPU devices and strict promotion rules.

Set before JAX initialises its backends (conftest is imported before the test modules).
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=4").strip()

import jax  # noqa: E402

# Catch silent dtype/rank promotions in our code (diffrax, flax and optax run under them too).
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
