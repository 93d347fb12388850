"""Memory of a jitted computation from XLA's analysis of the compiled executable (nothing runs).

    from segnode_jax import memory
    use = memory.analyse(train_step, state, batch, donate_argnums=(0,))
    print(use["total"] / 2**30, "GiB")

``total`` = temporaries + arguments + outputs - aliased (donated) buffers: what the executable
needs on the device at its peak.

The largest batch that fits a device, from the analysis alone (about five compiles)::

    batch, readings = memory.batch_for_budget(lambda b: memory.analyse(step, *structs(b))["total"], 32 * 2**30)

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


def compiler_options(backend: str | None = None) -> dict[str, str | bool]:
    """XLA options under which a CPU compile keeps ``jax.checkpoint``'s optimisation barriers
    (empty on other backends, which keep them anyway)."""
    backend = backend or jax.default_backend()
    return {"xla_disable_hlo_passes": BARRIER_PASS} if backend == "cpu" else {}


def analyse(fn: Callable, *args: Any, **jit_kwargs: Any) -> dict[str, int]:
    """Compiles ``jax.jit(fn, **jit_kwargs)`` (or ``fn`` itself if it is jitted already, e.g.
    the training step of ``segnode_jax.training.make_train_step``) for ``args`` (arrays or
    ``jax.ShapeDtypeStruct``) and returns its memory in bytes: ``total``, ``temp``, ``arguments``, ``outputs``,
    ``aliased``."""
    jitted = fn if hasattr(fn, "lower") and not jit_kwargs else jax.jit(fn, **jit_kwargs)
    return of_compiled(jitted.lower(*args).compile(compiler_options=compiler_options()))


def of_compiled(compiled) -> dict[str, int]:
    """The memory of an already compiled function (compile it with :func:`compiler_options` for
    remat's savings to show on a CPU), as :func:`analyse` returns it."""
    m = compiled.memory_analysis()
    out = {
        "temp": int(m.temp_size_in_bytes),
        "arguments": int(m.argument_size_in_bytes),
        "outputs": int(m.output_size_in_bytes),
        "aliased": int(m.alias_size_in_bytes),
    }
    out["total"] = out["temp"] + out["arguments"] + out["outputs"] - out["aliased"]
    return out


def largest_batch(fits: Callable[[int], bool], guess: int = 1, limit: int = 1 << 16) -> int:
    """The largest batch ``b`` in ``[0, limit]`` with ``fits(b)``, for a ``fits`` that holds up to
    some batch and fails beyond it (batch 0 always fits).

    Starts at ``guess`` and moves away from it in doubling steps until ``fits`` changes, then
    bisects, so a good guess costs two calls (``fits(guess)`` and ``fits(guess + 1)``)."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    guess = min(max(int(guess), 1), limit)
    step = 1
    if fits(guess):
        lo = guess
        while True:  # fits(lo); look upwards for a batch that does not fit
            if lo == limit:
                return limit
            hi = min(lo + step, limit)
            if not fits(hi):
                break
            lo, step = hi, step * 2
    else:
        hi = guess
        while True:  # not fits(hi); look downwards for a batch that fits
            lo = max(hi - step, 0)
            if lo == 0 or fits(lo):
                break
            hi, step = lo, step * 2
    while hi - lo > 1:  # fits(lo), not fits(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def batch_for_budget(
    bytes_at: Callable[[int], int],
    budget: int,
    known: dict[int, int] | None = None,
    probe: int = 8,
    limit: int = 1 << 16,
    refine: int = 3,
) -> tuple[int, dict[int, int]]:
    """The largest batch whose memory ``bytes_at(batch)`` is at most ``budget`` bytes, and every
    ``{batch: bytes}`` reading taken (with the ``known`` ones, which are not taken again).

    ``bytes_at`` is typically ``lambda b: analyse(step, *structs_at(b))["total"]``: a compile per
    call. Memory grows about linearly with the batch (not exactly: XLA reuses buffers
    differently at different sizes), so the guess is the line through two readings (the two
    largest ``known`` ones, else ``probe`` and ``2 * probe``), moved up to ``refine`` times to
    the line through the newest reading and its nearest neighbour; :func:`largest_batch` then
    settles it exactly. About five compiles in all."""
    readings = dict(known or {})

    def at(b: int) -> int:
        if b not in readings:
            readings[b] = int(bytes_at(b))
        return readings[b]

    def line_guess(b1: int, b2: int) -> int:
        slope = (at(b2) - at(b1)) / (b2 - b1)
        if slope <= 0:
            return max(b1, b2)
        return min(max(int(b1 + (budget - at(b1)) // slope), 1), limit)

    points = sorted(readings)[-2:]
    for b in (probe, 2 * probe):
        if len(points) < 2 and b not in points:
            points.append(b)
    guess = line_guess(*points)
    for _ in range(refine):
        if guess in readings:
            break
        at(guess)
        nearest = min((b for b in readings if b != guess), key=lambda b: abs(b - guess))
        guess = line_guess(nearest, guess)
    best = largest_batch(lambda b: at(b) <= budget, guess=guess, limit=limit)
    return best, readings
