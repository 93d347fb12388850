"""Memory of a jitted computation from XLA's analysis of the compiled executable (nothing runs).

    from segnode_jax import memory
    use = memory.analyse(train_step, state, batch, donate_argnums=(0,))
    print(use["total"] / 2**30, "GiB")

``total`` = temporaries + arguments + outputs - aliased (donated) buffers: what the executable
needs on the device at its peak.

Rematerialisation (``model.remat.*``, ``jax.checkpoint``) is invisible to a plain compile on a
CPU: XLA:CPU expands (removes) optimisation barriers before its common-subexpression
elimination, which then merges every recomputation back into the forward pass, so remat
saves nothing there, while the GPU and TPU compilers keep the barriers. :func:`analyse`
therefore compiles with :func:`compiler_options`, which keep the barriers on a CPU, so the
analysis shows what an accelerator's compiler keeps live. Steps without remat compile the same
either way.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

# XLA:CPU's pass that removes optimisation barriers (see the module docstring).
BARRIER_PASS = "cse_barrier_expander"


def compiler_options(backend: str | None = None) -> dict[str, str]:
    """XLA options under which a CPU compile keeps ``jax.checkpoint``'s optimisation barriers
    (empty on other backends, which keep them anyway)."""
    backend = backend or jax.default_backend()
    return {"xla_disable_hlo_passes": BARRIER_PASS} if backend == "cpu" else {}


def analyse(fn: Callable, *args: Any, **jit_kwargs: Any) -> dict[str, int]:
    """Compiles ``jax.jit(fn, **jit_kwargs)`` for ``args`` (arrays or ``jax.ShapeDtypeStruct``)
    and returns its memory in bytes: ``total``, ``temp``, ``arguments``, ``outputs``,
    ``aliased``."""
    compiled = jax.jit(fn, **jit_kwargs).lower(*args).compile(compiler_options=compiler_options())
    m = compiled.memory_analysis()
    out = {
        "temp": int(m.temp_size_in_bytes),
        "arguments": int(m.argument_size_in_bytes),
        "outputs": int(m.output_size_in_bytes),
        "aliased": int(m.alias_size_in_bytes),
    }
    out["total"] = out["temp"] + out["arguments"] + out["outputs"] - out["aliased"]
    return out
