"""The ODE core: accuracy against closed forms, solver statistics, adjoint gradients, failures."""

import dataclasses

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from jax.experimental import io_callback

from segnode_jax import ode

A = np.array([[-0.5, 2.0], [-2.0, -0.5]])


def linear_field(t, y, p):
    """A pytree state: a rotating/decaying 2-vector field and a scalar decay."""
    return (y[0] @ p["A"].T, -p["k"] * y[1])


PARAMS = {"A": jnp.asarray(A, jnp.float32), "k": jnp.asarray(0.7, jnp.float32)}
Y0 = (jnp.asarray([[1.0, 0.0], [0.3, -2.0]], jnp.float32), jnp.asarray(1.5, jnp.float32))


def exact(t):
    return np.asarray(Y0[0]) @ scipy.linalg.expm(A * t).T, 1.5 * np.exp(-0.7 * t)


@pytest.mark.slow
@pytest.mark.parametrize(
    "solver,num_steps,tol",
    [("dopri5", None, 1e-5), ("tsit5", None, 1e-5), ("heun", None, 1e-4), ("rk4", 16, 1e-4), ("euler", 512, 1e-2)],
)
def test_linear_field_matches_closed_form(solver, num_steps, tol):
    s = ode.ODESettings(solver=solver, num_steps=num_steps, rtol=1e-7, atol=1e-7, max_steps=4096)
    (y, k), info = jax.jit(lambda p, y0: ode.solve(linear_field, y0, p, s))(PARAMS, Y0)
    ey, ek = exact(1.0)
    np.testing.assert_allclose(y, ey, atol=tol)
    np.testing.assert_allclose(k, ek, atol=tol)
    if num_steps is not None:
        assert int(info["num_steps"]) == num_steps


def test_rk4_converges_at_fourth_order():
    errors = []
    for n in (4, 8, 16):
        s = ode.ODESettings(solver="rk4", num_steps=n)
        (y, _), _ = ode.solve(linear_field, Y0, PARAMS, s)
        errors.append(np.abs(np.asarray(y) - exact(1.0)[0]).max())
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    assert all(12 < r < 20 for r in ratios), ratios  # 2^4 = 16


def test_max_rms_norm_holds_every_part_of_the_state_to_the_tolerance():
    """torchdiffeq's norm of a tuple state (the paper's library): the largest per-tensor RMS. A
    large slow part and a small fast part: diffrax's RMS over all elements lets the large part
    dilute the small one's error (fewer steps, the small part solved loosely); max_rms does not."""
    big = jnp.ones((4096,), jnp.float32)
    small = jnp.ones((4,), jnp.float32)

    def field(t, y, p):
        return (-0.1 * y[0], -p * y[1])

    y0, rate = (big, small), jnp.asarray(12.0, jnp.float32)
    tree = (jnp.full((4096,), 1e-3), jnp.full((4,), 2.0))
    assert float(ode.max_rms_norm(tree)) == pytest.approx(2.0)
    assert float(ode.ERROR_NORMS["rms"][0](tree)) < 0.1
    out = {}
    for norm in ("max_rms", "rms"):
        s = ode.ODESettings(rtol=1e-3, atol=1e-3, error_norm=norm)
        (y_big, y_small), info = jax.jit(lambda p, y: ode.solve(field, y, p, s))(rate, y0)
        out[norm] = (int(info["nfe"]), float(np.abs(np.asarray(y_small) - np.exp(-12.0)).max()))
    assert out["max_rms"][0] > out["rms"][0], out
    assert out["max_rms"][1] < out["rms"][1], out
    assert ode.ODESettings().error_norm == "rms"
    with pytest.raises(ode.ODEConfigError, match="error_norm"):
        ode.ODESettings(error_norm="l2")


def test_time_dependent_field_and_trajectory_outputs():
    def field(t, y, p):
        return p * jnp.cos(t) * jnp.ones_like(y)  # y(t) = y0 + p sin(t)

    s = ode.ODESettings(rtol=1e-7, atol=1e-7, saveat=(0.25, 0.5), t1=2.0)
    y1, info = ode.solve(field, jnp.zeros(3), jnp.asarray(2.0), s)
    np.testing.assert_allclose(info["ts"], [0.25, 0.5, 2.0])
    np.testing.assert_allclose(info["ys"][:, 0], 2.0 * np.sin([0.25, 0.5, 2.0]), atol=1e-5)
    np.testing.assert_allclose(y1, 2.0 * np.sin(2.0) * np.ones(3), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    "solver,num_steps,adjoint",
    [
        ("dopri5", None, "backsolve"),
        ("tsit5", None, "backsolve"),
        ("heun", None, "backsolve"),
        ("dopri5", 5, "backsolve"),
        ("heun", 3, "backsolve"),
        ("euler", 7, "backsolve"),
        ("rk4", 3, "backsolve"),
        ("dopri5", 3, "unrolled"),
        ("tsit5", 2, "unrolled"),
        ("rk4", 3, "unrolled"),
    ],
)
def test_nfe_counts_every_vector_field_evaluation(solver, num_steps, adjoint):
    calls = []

    def count(t):
        calls.append(float(t))
        return np.zeros((), np.float32)

    def field(t, y, p):
        tick = io_callback(count, jax.ShapeDtypeStruct((), jnp.float32), t, ordered=False)
        return y @ p["A"].T + tick

    s = ode.ODESettings(solver=solver, num_steps=num_steps, rtol=1e-4, atol=1e-4, max_steps=1000, adjoint=adjoint)
    _, info = jax.jit(lambda p, y0: ode.solve(field, y0, p, s))(PARAMS, Y0[0])
    jax.effects_barrier()
    assert int(info["nfe"]) == len(calls)
    assert int(info["num_steps"]) == int(info["num_accepted_steps"]) + int(info["num_rejected_steps"])


def _nonlinear(t, y, p):
    return jnp.tanh(y @ p["W"] + p["b"][None, :]) - 0.5 * y


@pytest.fixture(scope="module")
def nonlinear_problem():
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        p = {"W": jnp.asarray(rng.normal(size=(3, 3))), "b": jnp.asarray(rng.normal(size=3))}
        y0 = jnp.asarray(rng.normal(size=(2, 3)))
        direction = {"W": jnp.asarray(rng.normal(size=(3, 3))), "b": jnp.asarray(rng.normal(size=3))}
    return p, y0, direction


@pytest.mark.slow
@pytest.mark.parametrize("adjoint,rel", [("recursive_checkpoint", 1e-8), ("direct", 1e-8), ("backsolve", 1e-5)])
def test_gradients_match_finite_differences(nonlinear_problem, adjoint, rel):
    """Fixed steps (no step-size jitter in the finite differences), float64. The discrete
    adjoints are exact for the discrete solve; backsolve approximates it to the solver's order."""
    p, y0, d = nonlinear_problem
    with jax.enable_x64(True):
        s = ode.ODESettings(solver="rk4", num_steps=8, adjoint=adjoint)

        def loss(p, y0):
            return jnp.sum(jnp.sin(ode.solve(_nonlinear, y0, p, s)[0]))

        gp, gy = jax.jit(jax.grad(loss, argnums=(0, 1)))(p, y0)
        eps = 1e-6
        shift = lambda sign: jax.tree_util.tree_map(lambda a, b: a + sign * eps * b, p, d)  # noqa: E731
        fd = (loss(shift(1), y0) - loss(shift(-1), y0)) / (2 * eps)
        ad = jnp.vdot(gp["W"], d["W"]) + jnp.vdot(gp["b"], d["b"])
        assert abs(float(ad - fd)) <= rel * abs(float(fd)) + 1e-9
        e = jnp.zeros_like(y0).at[1, 2].set(1.0)
        fd_y = (loss(p, y0 + eps * e) - loss(p, y0 - eps * e)) / (2 * eps)
        assert abs(float(gy[1, 2] - fd_y)) <= rel * abs(float(fd_y)) + 1e-9


@pytest.mark.slow
def test_fewer_checkpoints_than_steps_give_the_same_gradient_in_less_memory(nonlinear_problem):
    """model.ode.checkpoints reaches diffrax: with 2 solver states kept for a solve of more
    steps, the backward pass recomputes steps and gives the same gradient (float64), and the
    compiled gradient holds fewer states than with diffrax's rule (10 for max_steps=64)."""
    p, _, _ = nonlinear_problem
    with jax.enable_x64(True):
        y0 = jnp.asarray(np.random.default_rng(1).normal(size=(512, 3)))
        every = ode.ODESettings(rtol=1e-8, atol=1e-8, max_steps=64, adjoint="recursive_checkpoint")
        few = dataclasses.replace(every, checkpoints=2)

        def grad_fn(s):
            return jax.jit(jax.grad(lambda p, y0: jnp.sum(jnp.sin(ode.solve(_nonlinear, y0, p, s)[0]))))

        steps = int(jax.jit(lambda p, y0: ode.solve(_nonlinear, y0, p, few)[1]["num_steps"])(p, y0))
        assert steps > 4, steps
        g_every, g_few = grad_fn(every)(p, y0), grad_fn(few)(p, y0)
        for a, b in zip(jax.tree_util.tree_leaves(g_every), jax.tree_util.tree_leaves(g_few)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-14)
        # As many checkpoints as steps: nothing recomputed, the very same numbers as the default
        # (why the dataset configs' 10 train exactly as diffrax's 15 while a solve takes <= 10 steps).
        g_enough = grad_fn(dataclasses.replace(every, checkpoints=steps))(p, y0)
        for a, b in zip(jax.tree_util.tree_leaves(g_every), jax.tree_util.tree_leaves(g_enough)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

        def temp(s):
            return grad_fn(s).lower(p, y0).compile().memory_analysis().temp_size_in_bytes

        assert temp(every) - temp(few) >= (10 - 2) * y0.nbytes


@pytest.mark.slow
@pytest.mark.parametrize("solver,num_steps", [("euler", 3), ("heun", 2), ("rk4", 2), ("dopri5", 2), ("tsit5", 1)])
def test_unrolled_solve_is_diffrax_fixed_step_solve_without_loops(nonlinear_problem, solver, num_steps):
    """adjoint=unrolled computes diffrax's discrete solve (same steps, same tableau) and its
    exact gradient, with no loop left in the differentiated program."""
    p, y0, _ = nonlinear_problem
    with jax.enable_x64(True):

        def loss_fn(adjoint):
            s = ode.ODESettings(solver=solver, num_steps=num_steps, adjoint=adjoint)
            return lambda p, y0: jnp.sum(jnp.sin(ode.solve(_nonlinear, y0, p, s)[0]))

        grad_unrolled = jax.grad(loss_fn("unrolled"), argnums=(0, 1))
        reference = jax.jit(jax.value_and_grad(loss_fn("recursive_checkpoint"), argnums=(0, 1)))(p, y0)
        got = jax.jit(jax.value_and_grad(loss_fn("unrolled"), argnums=(0, 1)))(p, y0)
        np.testing.assert_allclose(got[0], reference[0], rtol=1e-12)
        for a, b in zip(jax.tree_util.tree_leaves(got[1]), jax.tree_util.tree_leaves(reference[1])):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        primitives = str(jax.make_jaxpr(grad_unrolled)(p, y0))
        assert "while" not in primitives and "scan" not in primitives and "cond" not in primitives
        assert "while" in str(jax.make_jaxpr(jax.grad(loss_fn("recursive_checkpoint")))(p, y0))


def test_unrolled_solve_with_saveat_goes_through_diffrax():
    s = ode.ODESettings(solver="rk4", num_steps=4, adjoint="unrolled")
    y1, _ = ode.solve(linear_field, Y0, PARAMS, s)
    y1_saved, info = ode.solve(
        linear_field, Y0, PARAMS, ode.ODESettings(solver="rk4", num_steps=4, adjoint="unrolled", saveat=(0.5,))
    )
    np.testing.assert_allclose(info["ts"], [0.5, 1.0])
    for a, b in zip(jax.tree_util.tree_leaves(y1), jax.tree_util.tree_leaves(y1_saved)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    half, _ = ode.solve(
        linear_field, Y0, PARAMS, ode.ODESettings(solver="rk4", num_steps=2, t1=0.5, adjoint="unrolled")
    )
    for a, b in zip(jax.tree_util.tree_leaves(half), jax.tree_util.tree_leaves(info["ys"])):
        np.testing.assert_allclose(a, b[0], rtol=1e-6, atol=1e-6)  # t = 0.5 is on the step grid
    assert int(info["nfe"]) == 16


@pytest.mark.slow
def test_adjoint_tolerances_set_only_the_backward_accuracy(nonlinear_problem):
    """Adaptive Dopri5 + backsolve in float64: the forward output does not depend on the
    adjoint tolerances; the gradient's error against a tight solve grows as they loosen."""
    p, y0, _ = nonlinear_problem
    with jax.enable_x64(True):

        def run(**kw):
            s = ode.ODESettings(rtol=1e-4, atol=1e-4, **kw)

            def loss(p):
                return jnp.sum(jnp.sin(ode.solve(_nonlinear, y0, p, s)[0]))

            return jax.jit(jax.value_and_grad(loss))(p)

        ref_value, ref = run(adjoint_rtol=1e-11, adjoint_atol=1e-11)
        errors = []
        for tol in (1e-8, 1e-2):
            value, g = run(adjoint_rtol=tol, adjoint_atol=tol)
            assert float(value) == float(ref_value)
            errors.append(float(jnp.abs(g["W"] - ref["W"]).max()))
        assert errors[0] < 1e-6 < errors[1], errors


@pytest.fixture(scope="module")
def tiny_field():
    """The tiny SegNode vector field (GroupNorm, pre-activation modules) in float64.

    Flax's normalisation promotes float64 with float32 internally, which strict promotion
    forbids, hence the standard promotion here."""
    import segnode_jax
    from segnode_jax.models.segnode import make_field

    cfg = segnode_jax.load_config("configs/tiny.py").model
    cfg.dtype = "float64"
    # A smooth activation: with ReLU the adjoint's right-hand side jumps wherever a unit
    # switches, and a backward solve held to 1e-8 needs thousands of steps around the jumps.
    cfg.field.activation = "silu"
    with jax.enable_x64(True), jax.numpy_dtype_promotion("standard"):
        field = make_field(cfg)
        y0 = tuple(
            jax.random.normal(jax.random.key(i), (1, s, s, c), jnp.float64)
            for i, (s, c) in enumerate([(8, 4), (4, 8), (2, 16), (2, 32)])
        )
        params = field.init(jax.random.key(0, impl="rbg"), jnp.zeros((), jnp.float64), y0)["params"]

    def vf(t, y, p):
        return field.apply({"params": p}, t, y)

    return vf, y0, params


@pytest.mark.slow
def test_backsolve_matches_recursive_checkpoint_at_tight_tolerances(tiny_field):
    vf, y0, params = tiny_field
    grads = {}
    with jax.enable_x64(True), jax.numpy_dtype_promotion("standard"):
        for adjoint in ("backsolve", "recursive_checkpoint"):
            s = ode.ODESettings(adjoint=adjoint, rtol=1e-8, atol=1e-8, max_steps=4096)

            def loss(p, y0):
                return sum(jnp.sum(jnp.sin(a)) for a in ode.solve(vf, y0, p, s)[0])

            grads[adjoint] = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, y0)
        # Leaf by leaf (a global norm would hide a wrong small leaf behind large correct ones):
        # every parameter and every branch of the initial state, each relative to its own size.
        pairs = jax.tree_util.tree_leaves_with_path(grads["recursive_checkpoint"])
        got = jax.tree_util.tree_leaves(grads["backsolve"])
        assert len(pairs) == len(got) > 8
        for (path, want), have in zip(pairs, got):
            err = float(jnp.linalg.norm((have - want).ravel()))
            size = float(jnp.linalg.norm(want.ravel()))
            assert err <= 1e-3 * size + 1e-9, (jax.tree_util.keystr(path), err, size)


@pytest.mark.slow
def test_normalised_backsolve_does_not_depend_on_the_loss_scale():
    """The adjoint ODE is linear in the cotangent: with `adjoint_normalise` a loss scaled by
    1e-6 gives the same (rescaled) gradient; without it, atol swamps the tiny cotangent."""

    def grads(scale, normalise):
        s = ode.ODESettings(rtol=1e-3, atol=1e-3, adjoint_normalise=normalise)

        def loss(p):
            return scale * jnp.sum(jnp.sin(ode.solve(_nonlinear, y0, p, s)[0]))

        g = jax.jit(jax.grad(loss))(p)
        return np.concatenate([np.ravel(g["W"]), np.ravel(g["b"])]) / scale

    rng = np.random.default_rng(1)
    p = {"W": jnp.asarray(3 * rng.normal(size=(3, 3)), jnp.float32), "b": jnp.asarray(rng.normal(size=3), jnp.float32)}
    y0 = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
    ref = grads(1.0, True)
    rel = lambda g: np.linalg.norm(g - ref) / np.linalg.norm(ref)  # noqa: E731
    assert rel(grads(1e-6, True)) < 1e-5
    assert rel(grads(1e-6, False)) > 1e-3


def test_max_steps_raises_clear_error_inside_jit_and_eagerly():
    s = ode.ODESettings(max_steps=2, rtol=1e-8, atol=1e-8)
    with pytest.raises(ode.ODESolveError, match=r"max_steps=2.*--config\.model\.ode\.max_steps"):
        with ode.solver_errors(s):
            jax.block_until_ready(jax.jit(lambda p, y0: ode.solve(linear_field, y0, p, s)[0])(PARAMS, Y0))
    with pytest.raises(ode.ODESolveError, match="model.ode.max_steps"):
        with ode.solver_errors(s):
            ode.solve(linear_field, Y0, PARAMS, s)


@pytest.mark.slow
def test_counting_evaluations_counts_forward_and_backward_solves():
    """The forward count equals the reported NFE; a backsolve gradient adds the backward solve's
    evaluations (RK4 x2 backwards: 4 per step, each evaluating f once inside its VJP). Counting
    is a setting of the solve: a function built without it never calls back."""
    for s in (
        ode.ODESettings(solver="rk4", num_steps=2, adjoint="backsolve", count_evaluations=True),
        ode.ODESettings(rtol=1e-4, atol=1e-4, count_evaluations=True),
    ):
        with ode.counting_evaluations() as forward:
            y1, info = jax.jit(lambda p: ode.solve(linear_field, Y0, p, s))(PARAMS)  # noqa: B023
            jax.block_until_ready(y1)
        assert forward["count"] == int(info["nfe"]) > 0
    s = ode.ODESettings(solver="rk4", num_steps=2, adjoint="backsolve", count_evaluations=True)
    grad_fn = jax.jit(jax.grad(lambda p: jnp.sum(ode.solve(linear_field, Y0, p, s)[0][0])))
    jax.block_until_ready(grad_fn(PARAMS))  # compiled and run outside any block: counted nowhere
    with ode.counting_evaluations() as both:
        jax.block_until_ready(grad_fn(PARAMS))  # the same compiled function, run inside
    assert both["count"] == 8 + 8
    plain = dataclasses.replace(s, count_evaluations=False)
    with ode.counting_evaluations() as none:
        jax.block_until_ready(jax.jit(lambda p: ode.solve(linear_field, Y0, p, plain)[0])(PARAMS))
    assert none["count"] == 0 and both["count"] == 16


def _loss_with(settings, p):
    y1, info = ode.solve(linear_field, Y0, p, settings)
    return jnp.sum(y1[0] ** 2) + y1[1], info


@pytest.mark.slow
@pytest.mark.parametrize("normalise", [True, False])
def test_with_on_failure_nan_a_failure_is_a_result_code_and_skips_the_backward_solve(normalise):
    """How the training step meets a failed solve: NaN loss, the code in the statistics, no
    callback raising (forward or backward), and no backward solve from the abandoned state."""
    failing = ode.ODESettings(max_steps=2, rtol=1e-8, atol=1e-8, adjoint_normalise=normalise)
    ok = ode.ODESettings(rtol=1e-6, atol=1e-6, adjoint_normalise=normalise)
    assert failing.adjoint == ok.adjoint == "backsolve"

    def step(settings):
        settings = dataclasses.replace(settings, on_failure="nan")
        return jax.jit(jax.value_and_grad(lambda p: _loss_with(settings, p), has_aux=True))(PARAMS)

    (value, info), grads = step(failing)  # raises nothing
    assert np.isnan(float(value))
    error = ode.failure_of(info["result"], failing)
    assert isinstance(error, ode.ODESolveError) and "max_steps=2" in str(error) and "model.ode.max_steps" in str(error)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree_util.tree_leaves(grads))
    # A solve that succeeds reports 0, with the gradients it has outside the context.
    (value, info), grads = step(ok)
    assert int(info["result"]) == 0 and ode.failure_of(info["result"], ok) is None
    (ref, _), ref_grads = jax.jit(jax.value_and_grad(lambda p: _loss_with(ok, p), has_aux=True))(PARAMS)
    np.testing.assert_allclose(float(value), float(ref), rtol=1e-6)
    for g, r in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_failed_backward_solve_is_reported_as_such():
    """The forward solve of a tiny state fits in 3 steps, the adjoint (rescaled to O(1)) does not."""
    rotation = jnp.asarray([[0.0, 6.0], [-6.0, 0.0]], jnp.float32)
    y0 = 1e-7 * jnp.ones(2, jnp.float32)
    s = ode.ODESettings(max_steps=5, rtol=1e-4, atol=1e-4)
    f = lambda t, y, p: y @ p.T  # noqa: E731
    with ode.solver_errors(s):
        y1, info = jax.jit(lambda p: ode.solve(f, y0, p, s))(rotation)
        assert int(info["num_steps"]) <= 5
    grad = jax.jit(jax.grad(lambda p: jnp.sum(ode.solve(f, y0, p, s)[0] ** 2)))
    with pytest.raises(ode.ODESolveError, match=r"backward \(adjoint\) solve.*model\.ode\.max_steps"):
        with ode.solver_errors(s):
            jax.block_until_ready(grad(rotation))
    # With on_failure="nan" (the training step) the same failure is NaN gradients and the
    # compiled gradient has no host callback at all (so JAX's persistent cache can keep it);
    # the loss stays finite, so the training loop names the backward solve.
    as_nan = dataclasses.replace(s, on_failure="nan")
    nan_grad = jax.jit(jax.value_and_grad(lambda p: jnp.sum(ode.solve(f, y0, p, as_nan)[0] ** 2)))
    assert "callback" not in nan_grad.lower(rotation).as_text()
    assert "callback" in grad.lower(rotation).as_text()  # the raising one does call back
    value, g = nan_grad(rotation)
    assert np.isfinite(float(value)) and np.isnan(np.asarray(g)).all()
    # A backward solve that succeeds gives the same gradient as the raising function.
    roomy = dataclasses.replace(s, max_steps=64)
    ok = jax.jit(jax.grad(lambda p: jnp.sum(ode.solve(f, y0, p, dataclasses.replace(roomy, on_failure="nan"))[0] ** 2)))
    ref = jax.jit(jax.grad(lambda p: jnp.sum(ode.solve(f, y0, p, roomy)[0] ** 2)))
    np.testing.assert_array_equal(np.asarray(ok(rotation)), np.asarray(ref(rotation)))
    # And a raising gradient traced after the NaN one still raises (traces are not shared).
    again = jax.jit(jax.grad(lambda p: jnp.sum(ode.solve(f, y0, p, s)[0] ** 2)))
    with pytest.raises(ode.ODESolveError, match=r"backward \(adjoint\) solve"):
        with ode.solver_errors(s):
            jax.block_until_ready(again(rotation))


def test_dtmin_reached_names_the_field():
    s = ode.ODESettings(rtol=1e-10, atol=1e-10, dtmin=0.2, max_steps=100)
    with pytest.raises(ode.ODESolveError, match=r"dtmin=0\.2.*model\.ode\.dtmin"):
        with ode.solver_errors(s):
            jax.block_until_ready(jax.jit(lambda p, y0: ode.solve(linear_field, y0, p, s)[0])(PARAMS, Y0))


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(solver="rk4"), "model.ode.num_steps"),
        (dict(solver="midpoint"), "model.ode.solver"),
        (dict(adjoint="magic"), "model.ode.adjoint"),
        (dict(adjoint="unrolled"), "model.ode.adjoint"),
        (dict(t0=1.0, t1=1.0), "model.ode.t1"),
        (dict(saveat=(1.5,)), "model.ode.saveat"),
        (dict(num_steps=0), "model.ode.num_steps"),
        (dict(num_steps=10, max_steps=5), "model.ode.max_steps"),
        (dict(adjoint_rtol=0.0), "model.ode.adjoint_rtol"),
        (dict(adjoint_atol=-1.0), "model.ode.adjoint_atol"),
        (dict(checkpoints=0), "model.ode.checkpoints"),
    ],
)
def test_invalid_settings_name_the_config_field(kwargs, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        ode.ODESettings(**kwargs)


def test_settings_from_config_rejects_unknown_fields():
    import segnode_jax

    cfg = segnode_jax.model_config().ode
    assert ode.ODESettings.from_config(cfg) == ode.ODESettings()
    cfg.unlock()
    cfg.rtoll = 1e-3
    with pytest.raises(ValueError, match="rtoll"):
        ode.ODESettings.from_config(cfg)


def test_solver_table_covers_diffrax_fsal_solvers():
    """The NFE bookkeeping assumes FSAL for dopri5/tsit5 (one extra evaluation)."""
    assert diffrax.Dopri5.tableau.fsal and diffrax.Tsit5.tableau.fsal
    assert not diffrax.Heun.tableau.fsal and not ode.RK4.tableau.fsal


def test_solver_spec_syntax_and_its_errors():
    from segnode_jax import ode

    assert ode.parse_solver_spec("rk4:2") == {"solver": "rk4", "num_steps": 2}
    assert ode.parse_solver_spec("dopri5@1e-2") == {"solver": "dopri5", "num_steps": None, "rtol": 0.01, "atol": 0.01}
    assert ode.parse_solver_spec("dopri5") == {"solver": "dopri5", "num_steps": None}
    with pytest.raises(ode.SolverSpecError, match="'solver:steps'"):
        ode.parse_solver_spec("rk4-2")
    from ml_collections import config_dict

    for spec, cfg in (
        ("rk4:2", {"solver": "rk4", "num_steps": 2, "rtol": 1e-3}),
        ("dopri5@0.01", {"solver": "dopri5", "num_steps": None, "rtol": 0.01}),
    ):
        assert ode.describe_solve(config_dict.ConfigDict(cfg)) == spec
        assert ode.parse_solver_spec(spec)["solver"] == cfg["solver"]  # the description parses back


def test_spec_on_an_unrolled_model_solves_adaptive_entries_through_diffrax():
    from segnode_jax import ode

    unrolled = {"solver": "euler", "num_steps": 2, "adjoint": "unrolled"}
    for spec, adjoint in (("dopri5@1e-2", "backsolve"), ("dopri5", "backsolve"), ("rk4:1", "unrolled")):
        over = ode.solver_spec_overrides(spec, unrolled)
        settings = ode.ODESettings.from_config({**unrolled, **over})  # valid: no ValueError
        assert settings.adjoint == adjoint and settings.solver == over["solver"]
    assert "adjoint" not in ode.solver_spec_overrides("dopri5@1e-2", {"adjoint": "recursive_checkpoint"})


@pytest.mark.slow
def test_importing_the_package_configures_no_logging():
    """Importing every segnode_jax module leaves every logger (filters, handlers, level) as
    importing the same third-party modules alone leaves it (orbax adds a root handler: theirs);
    the ODE failure filter is installed by the first solve."""
    import json
    import subprocess
    import sys

    state = """
import logging, json, sys
def state():
    loggers = [logging.getLogger()] + [l for l in logging.Logger.manager.loggerDict.values() if isinstance(l, logging.Logger)]
    return {l.name or "root": [len(l.filters), len(l.handlers), l.level] for l in loggers}
"""
    ours = (
        state
        + """
import importlib, pkgutil, segnode_jax
for m in pkgutil.walk_packages(segnode_jax.__path__, "segnode_jax."):
    importlib.import_module(m.name)
third = [n for n in dict.fromkeys(k.split(".")[0] for k in sys.modules) if n != "segnode_jax"]
print(json.dumps({"state": state(), "third": third}))
"""
    )

    def run(code):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    with_ours = run(ours)
    alone = run(
        state + "import importlib\nfor n in %r:\n    try: importlib.import_module(n)\n    except Exception: pass\n"
        "print(json.dumps({'state': state()}))" % with_ours["third"]
    )
    changed = {
        k: (alone["state"].get(k), v) for k, v in with_ours["state"].items() if alone["state"].get(k, [0, 0, 0]) != v
    }
    assert changed == {}, changed
