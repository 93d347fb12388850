"""segnode_jax.memory: the largest batch within a memory budget (the paper's "maximum batch size
for 32GB" column), found with few compiles."""

import math

import jax
import jax.numpy as jnp
import pytest

from segnode_jax import memory


class Threshold:
    """``fits(b)``: b <= top, counting calls and refusing batches outside [1, limit]."""

    def __init__(self, top: int, limit: int):
        self.top, self.limit, self.calls = top, limit, []

    def __call__(self, b: int) -> bool:
        assert 1 <= b <= self.limit, b
        self.calls.append(b)
        return b <= self.top


@pytest.mark.parametrize("limit", [1, 2, 7, 64, 1000])
def test_largest_batch_finds_the_threshold_from_any_guess(limit):
    # A top beyond the limit: everything fits, the answer is the limit.
    for top in sorted({0, 1, 2, limit // 3, limit - 1, limit, limit + 3}):
        for guess in sorted({-3, 0, 1, 2, top, top + 1, limit // 2, limit, limit + 5}):
            fits = Threshold(top, limit)
            assert memory.largest_batch(fits, guess=guess, limit=limit) == min(top, limit), (top, guess)
            # Doubling steps then bisection: logarithmic in the distance from the guess.
            assert len(fits.calls) <= 2 * math.ceil(math.log2(abs(top - guess) + 2)) + 2, (top, guess, fits.calls)


def test_largest_batch_with_the_right_guess_costs_two_calls():
    fits = Threshold(37, 1000)
    assert memory.largest_batch(fits, guess=37, limit=1000) == 37
    assert fits.calls == [37, 38]


def test_largest_batch_rejects_an_empty_range():
    with pytest.raises(ValueError, match="limit"):
        memory.largest_batch(lambda b: True, limit=0)


def test_batch_for_budget_reads_a_compiled_step_and_takes_few_compiles():
    """Memory of a real compiled function: the batch found is the largest within the budget
    by XLA's own reading, exactly (one byte less and it is one batch smaller)."""

    def step(w, x):
        return jnp.tanh(x @ w).sum(0) + jnp.sin(x).mean()

    w = jax.ShapeDtypeStruct((256, 256), jnp.float32)
    compiles = []

    def bytes_at(b):
        compiles.append(b)
        return memory.analyse(step, w, jax.ShapeDtypeStruct((b, 256), jnp.float32))["total"]

    budget = bytes_at(37)
    compiles.clear()
    batch, readings = memory.batch_for_budget(bytes_at, budget)
    assert batch == 37
    assert readings[37] <= budget < readings[38]
    assert len(compiles) <= 5, compiles
    batch, _ = memory.batch_for_budget(bytes_at, budget - 1, known=readings)
    assert batch == 36


def test_batch_for_budget_when_memory_is_not_linear_and_with_known_readings():
    def bytes_at(b):
        assert b not in (24, 12), "known readings are taken again"
        return 1000 + 10 * b * b

    known = {12: 1000 + 1440, 24: 1000 + 5760}
    for budget, expected in [(1000 + 10 * 30 * 30, 30), (1000 + 10 * 30 * 30 - 1, 29), (1009, 0), (1010, 1)]:
        batch, readings = memory.batch_for_budget(bytes_at, budget, known=known)
        assert batch == expected, budget
        assert all(readings[b] == 1000 + 10 * b * b for b in readings)
