"""The ODE core of SegNode: settings, the diffrax solve, adjoints, statistics and failures.

The vector field is any pure function ``f(t, y, params) -> dy/dt`` over a pytree state ``y``
(SegNode: a tuple of 4 NHWC feature maps). Its parameters reach ``diffrax.diffeqsolve``
through ``args`` -- never by closure -- so that every adjoint, ``BacksolveAdjoint``
included, differentiates with respect to them.

Everything the solve does comes from ``cfg.model.ode`` (see ``segnode_jax.config.ode_config``):

================  =========================================================================
field             meaning
================  =========================================================================
solver            dopri5 (default) | tsit5 | heun (embedded error estimates) | euler | rk4
num_steps         None: adaptive steps (PID controller, rtol/atol). An int: that many equal
                  steps (required for euler and rk4, allowed for every solver)
rtol, atol        tolerances of the adaptive controller
dt0, dtmin        initial step (None: chosen by diffrax) and step floor (None: none)
max_steps         steps allowed before the solve fails
adjoint           backsolve (the paper) | recursive_checkpoint | direct | unrolled (fixed
                  steps only: the steps and stages written out, no loop; see below)
error_norm        how the adaptive controller measures the scaled error of the 4-map state:
                  rms (default; diffrax's: the RMS over all elements, which branch 0
                  dominates) or max_rms (torchdiffeq's, the paper's library: the largest
                  per-map RMS)
checkpoints       recursive_checkpoint only: how many solver states the backward pass keeps
                  (None: diffrax's rule, about sqrt(2 max_steps): 15 for 128). A solve of
                  at most that many steps recomputes nothing; a longer one recomputes some
                  steps (online treeverse). Memory falls with each checkpoint left out.
adjoint_seminorm  backsolve only: parameter cotangents do not drive the backward step size
adjoint_normalise backsolve only: solve the adjoint ODE for the cotangent divided by its RMS
                  (exact rescaling), so ``atol`` means the same whatever the loss scale
saveat            extra output times in [t0, t1] (trajectory analysis)
on_failure        raise (default: :class:`ODESolveError`) | nan (NaN state, result code in
                  the statistics; a failed backward solve: NaN gradients; no host callback:
                  inside the training step, evaluation and ``jax.export``)
count_evaluations count evaluations on the host (:func:`counting_evaluations`)
================  =========================================================================

``adjoint=unrolled`` differentiates the fixed-step solve itself, like ``recursive_checkpoint``
(exact gradients of the discrete solve), but writes its steps and Runge--Kutta stages out in
the traced program (the method's Butcher tableau from diffrax) instead of running them in
diffrax's ``while`` loops. Memory then grows with the number of evaluations (use
``remat.field``) and compile time with ``num_steps``; in exchange XLA optimises the whole step
as one program. On a CPU this matters a lot: XLA:CPU rewrites gradient convolutions into the
layouts its fast kernels take only in the entry computation, never inside a loop body, so the
backward pass of a looped solve runs on its slow generic convolution (benchmarks/README.md).
With ``saveat`` (trajectory analysis) the solve goes through diffrax (same steps; off-grid
times interpolated).

A solve that fails raises :class:`ODESolveError` naming what happened and which config field
to change (inside ``jax.jit`` the error is raised by ``equinox.error_if`` when the computation
runs; :func:`solver_errors` turns the runtime error into a plain ``ODESolveError``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import re
from typing import Any, Callable, ClassVar, Mapping, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from ml_collections import config_dict

from segnode_jax import compat
from segnode_jax.config import snapshot
from segnode_jax.errors import RunError, UserError

PyTree = Any
VectorField = Callable[[jax.Array, PyTree, PyTree], PyTree]

_MARK = "SegNode ODE solve failed"


class ODEConfigError(UserError):
    """Solver settings that cannot work (``cfg.model.ode``); the message names the field."""


class SolverSpecError(ODEConfigError):
    """A solver spec (``--solver``, ``eval.trajectory.sweep``) that is not ``solver:steps`` or
    ``solver@tol``."""


# The solver-spec syntax of --solver (predict.py, the exporter) and eval.trajectory.sweep:
# "rk4:2" (2 fixed steps), "dopri5@1e-2" (adaptive, rtol = atol = 1e-2), "dopri5" (the model's
# tolerances).
SOLVER_SPEC = re.compile(r"^(?P<solver>[a-z0-9]+)(?::(?P<steps>\d+)|@(?P<tol>[0-9.eE+-]+))?$")


def parse_solver_spec(spec: str) -> dict[str, Any]:
    """``"rk4:2"`` / ``"dopri5@1e-2"`` / ``"dopri5"`` -> ``model.ode`` overrides.

    Raises:
      SolverSpecError: not of that form.
    """
    m = SOLVER_SPEC.match(spec.strip())
    if not m:
        raise SolverSpecError(
            f"solver spec {spec!r} is not 'solver:steps' (e.g. rk4:2) or 'solver@tol' (e.g. dopri5@1e-2)"
        )
    out: dict[str, Any] = {"solver": m.group("solver"), "num_steps": None}
    if m.group("steps"):
        out["num_steps"] = int(m.group("steps"))
    if m.group("tol"):
        out["rtol"] = out["atol"] = float(m.group("tol"))
    return out


def solver_spec_overrides(spec: str, model_ode) -> dict[str, Any]:
    """``model.ode`` overrides for solving a trained model with ``spec`` (inference: no
    gradients, so the adjoint only matters where it changes the forward solve). A model trained
    with ``adjoint=unrolled`` keeps it for fixed steps and is solved through diffrax
    (``backsolve``) for adaptive specs, which cannot be unrolled."""
    out = parse_solver_spec(spec)
    if out["num_steps"] is None and model_ode.get("adjoint") == "unrolled":
        out["adjoint"] = "backsolve"
    return out


def describe_solve(ode_cfg) -> str:
    """The solve of ``model.ode`` as a solver spec: "rk4:2" or "dopri5@0.01"."""
    if ode_cfg.get("num_steps"):
        return f"{ode_cfg.solver}:{ode_cfg.num_steps}"
    return f"{ode_cfg.solver}@{ode_cfg.rtol:g}"


class ODESolveError(RunError):
    """The ODE solve did not reach ``t1``; the message names the config field to change."""


_rk4_tableau = diffrax.ButcherTableau(
    a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])),
    b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
    # RK4 has no embedded method; this estimate is never used (rk4 runs with fixed steps).
    b_error=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]) - np.array([0.0, 0.0, 0.0, 1.0]),
    c=np.array([0.5, 0.5, 1.0]),
)


class RK4(diffrax.AbstractERK):
    """The classical 4th-order Runge--Kutta method (4 evaluations per step, fixed steps)."""

    tableau: ClassVar[diffrax.ButcherTableau] = _rk4_tableau
    interpolation_cls: ClassVar[Callable[..., diffrax.ThirdOrderHermitePolynomialInterpolation]] = (
        diffrax.ThirdOrderHermitePolynomialInterpolation.from_k
    )

    def order(self, terms):
        return 4


class Solver(NamedTuple):
    """One entry of :data:`SOLVERS`.

    Attributes:
      cls: the diffrax solver class.
      adaptive: has an embedded error estimate (adaptive steps possible).
      evals_per_step: vector-field evaluations per step.
      extra_evals: evaluations once per solve (FSAL methods evaluate f(t0, y0) once more).
    """

    cls: type
    adaptive: bool
    evals_per_step: int
    extra_evals: int


# Evaluation counts are diffrax's; they are checked against a counting vector field in
# tests/test_ode.py.
SOLVERS: dict[str, Solver] = {
    "dopri5": Solver(diffrax.Dopri5, adaptive=True, evals_per_step=6, extra_evals=1),
    "tsit5": Solver(diffrax.Tsit5, adaptive=True, evals_per_step=6, extra_evals=1),
    "heun": Solver(diffrax.Heun, adaptive=True, evals_per_step=2, extra_evals=0),
    "euler": Solver(diffrax.Euler, adaptive=False, evals_per_step=1, extra_evals=0),
    "rk4": Solver(RK4, adaptive=False, evals_per_step=4, extra_evals=0),
}
ADJOINTS = ("backsolve", "recursive_checkpoint", "direct", "unrolled")
ON_FAILURE = ("raise", "nan")


def _field(name: str) -> str:
    return f"model.ode.{name}"


@dataclasses.dataclass(frozen=True)
class ODESettings:
    """Validated, hashable solve settings (built from ``cfg.model.ode``)."""

    solver: str = "dopri5"
    t0: float = 0.0
    t1: float = 1.0
    rtol: float = 1e-3
    atol: float = 1e-3
    dt0: float | None = None
    dtmin: float | None = None
    num_steps: int | None = None
    max_steps: int = 128
    adjoint: str = "backsolve"
    checkpoints: int | None = None
    error_norm: str = "rms"
    adjoint_seminorm: bool = True
    adjoint_normalise: bool = True
    adjoint_rtol: float | None = None
    adjoint_atol: float | None = None
    saveat: tuple[float, ...] = ()
    on_failure: str = "raise"
    count_evaluations: bool = False

    def __post_init__(self):
        def bad(field, why):
            raise ODEConfigError(f"invalid {_field(field)}: {why}")

        if self.solver not in SOLVERS:
            bad("solver", f"{self.solver!r} is not one of {sorted(SOLVERS)}")
        if self.adjoint not in ADJOINTS:
            bad("adjoint", f"{self.adjoint!r} is not one of {list(ADJOINTS)}")
        if self.on_failure not in ON_FAILURE:
            bad("on_failure", f"{self.on_failure!r} is not one of {list(ON_FAILURE)}")
        if self.error_norm not in ERROR_NORMS:
            bad("error_norm", f"{self.error_norm!r} is not one of {list(ERROR_NORMS)}")
        if not self.t1 > self.t0:
            bad("t1", f"t1={self.t1} must be greater than t0={self.t0}")
        if self.num_steps is None and not SOLVERS[self.solver].adaptive:
            bad(
                "num_steps",
                f"solver={self.solver} has no error estimate, so it needs fixed steps: "
                f"set --config.{_field('num_steps')}=8 (or use solver=dopri5 for adaptive steps)",
            )
        if self.adjoint == "unrolled" and self.num_steps is None:
            bad(
                "adjoint",
                "adjoint=unrolled writes out a fixed number of steps: set "
                f"--config.{_field('num_steps')}=2 (e.g. with --config.{_field('solver')}=euler or rk4), "
                "or use adjoint=backsolve for adaptive steps",
            )
        if self.num_steps is not None and self.num_steps < 1:
            bad("num_steps", f"{self.num_steps} must be a positive number of steps (or None)")
        if self.max_steps < 1:
            bad("max_steps", f"{self.max_steps} must be positive")
        if self.num_steps is not None and self.num_steps > self.max_steps:
            bad("max_steps", f"max_steps={self.max_steps} is smaller than num_steps={self.num_steps}")
        if self.num_steps is None and not (self.rtol > 0 and self.atol >= 0):
            bad("rtol", f"tolerances must be positive (rtol={self.rtol}, atol={self.atol})")
        if self.checkpoints is not None and not (isinstance(self.checkpoints, int) and self.checkpoints >= 1):
            bad(
                "checkpoints",
                f"{self.checkpoints!r} must be a positive number of solver states (or None: diffrax's rule)",
            )
        if self.adjoint_rtol is not None and not self.adjoint_rtol > 0:
            bad("adjoint_rtol", f"{self.adjoint_rtol} must be positive (or None: same as rtol)")
        if self.adjoint_atol is not None and not self.adjoint_atol >= 0:
            bad("adjoint_atol", f"{self.adjoint_atol} must be non-negative (or None: same as atol)")
        for s in self.saveat:
            if not self.t0 <= s <= self.t1:
                bad("saveat", f"time {s} is outside [t0, t1] = [{self.t0}, {self.t1}]")

    @classmethod
    def from_config(cls, cfg: ODESettings | Mapping | config_dict.ConfigDict) -> ODESettings:
        """Builds settings from ``cfg.model.ode`` (a ConfigDict or mapping)."""
        if isinstance(cfg, ODESettings):
            return cfg
        get = cfg.get if hasattr(cfg, "get") else lambda k, d=None: getattr(cfg, k, d)
        kwargs = {}
        for f in dataclasses.fields(cls):
            value = get(f.name, None)
            if value is not None:
                kwargs[f.name] = value
        if "saveat" in kwargs:
            kwargs["saveat"] = tuple(float(s) for s in kwargs["saveat"])
        known = {f.name for f in dataclasses.fields(cls)}
        keys = list(cfg.keys()) if hasattr(cfg, "keys") else []
        unknown = sorted(set(keys) - known)
        if unknown:
            raise ValueError(f"unknown model.ode field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**kwargs)

    @property
    def adaptive(self) -> bool:
        return self.num_steps is None

    def describe(self) -> str:
        """A one-line summary of the settings, as config fields."""
        steps = (
            f"rtol={self.rtol:g}, atol={self.atol:g}, error_norm={self.error_norm}, dt0={self.dt0}, dtmin={self.dtmin}"
            if self.adaptive
            else f"num_steps={self.num_steps}"
        )
        return (
            f"solver={self.solver}, {steps}, max_steps={self.max_steps}, adjoint={self.adjoint}, "
            + (f"checkpoints={self.checkpoints}, " if self.checkpoints is not None else "")
            + f"t0={self.t0:g}, t1={self.t1:g}"
        )

    @property
    def unrolled(self) -> bool:
        """Whether the solve is written out step by step (``adjoint=unrolled``, no ``saveat``)."""
        return self.adjoint == "unrolled" and not self.saveat

    def nfe(self, num_steps):
        """Vector-field evaluations of a forward solve that took ``num_steps`` steps."""
        if self.unrolled:
            return len(_stages(self.solver)[1]) * num_steps
        entry = SOLVERS[self.solver]
        return entry.evals_per_step * num_steps + entry.extra_evals


def _stages(solver: str) -> tuple[tuple, tuple, tuple]:
    """``(a_lower, b, c)`` of an explicit method, from diffrax's Butcher tableau, cut after the
    last stage with a nonzero weight (the FSAL stage of Dopri5/Tsit5 is only their error
    estimate's and the next step's first evaluation)."""
    cls = SOLVERS[solver].cls
    if cls is diffrax.Euler:
        return (), (1.0,), ()
    tableau = cls.tableau
    last = max(i for i, w in enumerate(tableau.b_sol) if w != 0)
    rows = tuple(tuple(float(a) for a in row) for row in tableau.a_lower[:last])
    return rows, tuple(float(w) for w in tableau.b_sol[: last + 1]), tuple(float(c) for c in tableau.c[:last])


def _unrolled_solve(f, y0: PyTree, params: PyTree, settings: ODESettings) -> PyTree:
    """The fixed-step explicit Runge--Kutta solve, every step and stage written out."""
    rows, b, c = _stages(settings.solver)
    num_steps = settings.num_steps
    assert num_steps is not None, "unrolled solves have fixed steps (ODESettings validates it)"
    h = (settings.t1 - settings.t0) / num_steps

    def combine(y, weights, ks):
        for w, k in zip(weights, ks):
            if w != 0:
                y = jax.tree_util.tree_map(lambda a, d: a + (h * w) * d, y, k)
        return y

    y = y0
    for step in range(num_steps):
        t = settings.t0 + step * h
        ks = [f(jnp.asarray(t, jnp.float32), y, params)]
        for row, ci in zip(rows, c):
            ks.append(f(jnp.asarray(t + ci * h, jnp.float32), combine(y, row, ks), params))
        y = combine(y, b, ks)
    return y


def failure_message(result: str, settings: ODESettings, *, phase: str = "forward") -> str:
    """The error text for a failed solve: what happened and which config field to change."""
    where = "" if phase == "forward" else f" during the {phase}"
    fixed = f"--config.{_field('solver')}=rk4 --config.{_field('num_steps')}=8"
    if result == "max_steps_reached":
        what = (
            f"the solver used all max_steps={settings.max_steps} steps before the end of "
            f"[t0, t1] = [{settings.t0:g}, {settings.t1:g}]{where}; the step size collapsed (stiff or diverging dynamics: "
            "check for NaN/inf inputs or a too large learning rate) or the tolerances are too tight"
        )
        fix = (
            f"raise --config.{_field('max_steps')} (e.g. {4 * settings.max_steps}), loosen "
            f"--config.{_field('rtol')}/--config.{_field('atol')}, or use fixed steps ({fixed})"
        )
    elif result == "dt_min_reached":
        what = f"the step size fell below dtmin={settings.dtmin}{where}"
        fix = f"lower or unset --config.{_field('dtmin')}, loosen rtol/atol, or use fixed steps ({fixed})"
    else:
        what = f"diffrax reported '{result}'{where}"
        fix = f"change the solver settings (e.g. {fixed})"
    return f"{_MARK}: {what} [settings: {settings.describe()}]. Fix: {fix}."


def _result_messages(settings: ODESettings) -> list[str]:
    return [failure_message(name, settings) for name in compat.diffrax_result_names()]


def _solver_parts(settings: ODESettings):
    solver = SOLVERS[settings.solver].cls()
    if settings.adaptive:
        controller = diffrax.PIDController(
            rtol=settings.rtol,
            atol=settings.atol,
            dtmin=settings.dtmin,
            force_dtmin=False,
            norm=ERROR_NORMS[settings.error_norm][0],
        )
        dt0 = settings.dt0
    else:
        controller = diffrax.ConstantStepSize()
        assert settings.num_steps is not None, "a solver without error estimates has fixed steps (validated)"
        dt0 = (settings.t1 - settings.t0) / settings.num_steps
    return solver, controller, dt0


def max_rms_norm(tree: PyTree) -> jax.Array:
    """torchdiffeq's norm of a tuple state (``_mixed_norm``): the largest RMS of its tensors,
    so that every branch of SegNode's state meets the tolerance on its own."""
    return functools.reduce(jnp.maximum, [optx.rms_norm(leaf) for leaf in jax.tree_util.tree_leaves(tree)])


def adjoint_max_rms_seminorm(x: tuple) -> jax.Array:
    """:func:`max_rms_norm` over the state and its cotangent only (diffrax's adjoint seminorm
    with torchdiffeq's norm): parameter cotangents do not drive the backward step size."""
    y, a_y, a_args, a_terms = x
    del a_args, a_terms
    return max_rms_norm((y, a_y))


# model.ode.error_norm -> (forward norm, backward seminorm).
ERROR_NORMS: dict[str, tuple[Callable, Callable]] = {
    "max_rms": (max_rms_norm, adjoint_max_rms_seminorm),
    "rms": (optx.rms_norm, diffrax.adjoint_rms_seminorm),
}


def _adjoint(settings: ODESettings, solver):
    if settings.adjoint == "backsolve":
        kwargs: dict[str, Any] = dict(solver=solver, throw=True)
        if settings.adaptive:
            # The backward solve's own controller: the adjoint tolerances (default: the
            # forward ones) and, with the seminorm, parameter cotangents excluded from the norm.
            pid: dict[str, Any] = dict(
                rtol=settings.rtol if settings.adjoint_rtol is None else settings.adjoint_rtol,
                atol=settings.atol if settings.adjoint_atol is None else settings.adjoint_atol,
                dtmin=settings.dtmin,
                force_dtmin=False,
            )
            norm, seminorm = ERROR_NORMS[settings.error_norm]
            pid["norm"] = seminorm if settings.adjoint_seminorm else norm
            kwargs["stepsize_controller"] = diffrax.PIDController(**pid)
        return diffrax.BacksolveAdjoint(**kwargs)
    if settings.adjoint in ("recursive_checkpoint", "unrolled"):  # unrolled: with saveat only
        return diffrax.RecursiveCheckpointAdjoint(checkpoints=settings.checkpoints)
    return diffrax.DirectAdjoint()


def solve(
    vector_field: VectorField,
    y0: PyTree,
    params: PyTree,
    settings: ODESettings | Mapping | config_dict.ConfigDict,
    *,
    remat: bool = False,
) -> tuple[PyTree, dict[str, Any]]:
    """Solves dy/dt = vector_field(t, y, params) from ``settings.t0`` to ``settings.t1``.

    Arguments:
      vector_field: pure function ``(t, y, params) -> dy/dt`` with the structure of ``y``. It
        must not close over arrays: everything it differentiates goes in ``params``.
      y0: initial state (any pytree of float arrays; SegNode: 4 NHWC maps).
      params: the vector field's parameters, passed to diffrax as ``args``.
      settings: ``ODESettings`` or ``cfg.model.ode``.
      remat: rematerialise the vector field's activations in the backward pass
        (``jax.checkpoint``), trading compute for memory.

    Returns:
      ``(y1, info)``: the state at ``t1`` and a dict with the solver statistics
      ``num_steps``, ``num_accepted_steps``, ``num_rejected_steps``, ``nfe`` (int32 scalars,
      forward solve) and, when ``settings.saveat`` is set, ``ts`` (float32 [T]) and ``ys`` (the
      state at each time in ``ts``, stacked on a leading axis; ``ts`` ends with ``t1``).

    Raises:
      ODESolveError: (eagerly, or via :func:`solver_errors` around a jitted call) when the
        solve fails; with ``adjoint=backsolve`` also when the backward solve fails.
    """
    settings = ODESettings.from_config(settings)
    solver, controller, dt0 = _solver_parts(settings)
    _drop_repeated_tracebacks()

    def f(t, y, args):
        if settings.count_evaluations:  # one host callback per evaluation (counting_evaluations)
            jax.debug.callback(_count_evaluation)
        return vector_field(t, y, args)

    if remat:
        f = jax.checkpoint(f)
    if settings.unrolled:
        n = jnp.asarray(settings.num_steps, jnp.int32)
        info = dict(num_steps=n, num_accepted_steps=n, num_rejected_steps=jnp.zeros((), jnp.int32))
        info["nfe"] = jnp.asarray(settings.nfe(settings.num_steps), jnp.int32)
        return _unrolled_solve(f, y0, params, settings), info
    ts = np.array(sorted(set(settings.saveat) | {settings.t1}), dtype=np.float32) if settings.saveat else None
    integrate = _integrator(f, settings, solver, controller, dt0, ts)
    if settings.adjoint == "backsolve":
        integrate = _guarded_backsolve(
            integrate, normalise=settings.adjoint_normalise, nan_on_failure=settings.on_failure == "nan"
        )
    ys, info = integrate(y0, params)
    info["nfe"] = settings.nfe(info["num_steps"]).astype(jnp.int32)
    y1 = jax.tree_util.tree_map(lambda a: a[-1], ys)
    if ts is not None:
        info["ts"] = jnp.asarray(ts)
        info["ys"] = ys
    return y1, info


def _integrator(f, settings: ODESettings, solver, controller, dt0, ts: np.ndarray | None):
    """``integrate(y0, params) -> (ys, stats)``: one diffrax solve of ``f`` saving at ``ts``
    (None: at ``t1`` only), ``ys`` stacked on a leading axis. A failed solve raises (the host
    check of ``solver_errors``) or, with ``on_failure="nan"``, gives NaN states; ``stats``
    holds the step counts and diffrax's result code."""
    saveat = diffrax.SaveAt(ts=jnp.asarray(ts)) if ts is not None else diffrax.SaveAt(t1=True)

    def integrate(y0, params):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(f),
            solver,
            t0=settings.t0,
            t1=settings.t1,
            dt0=dt0,
            y0=y0,
            args=params,
            saveat=saveat,
            stepsize_controller=controller,
            adjoint=_adjoint(settings, solver),
            max_steps=settings.max_steps,
            throw=False,
        )
        failed = sol.result != diffrax.RESULTS.successful
        # The check runs on a scalar tied to the state (adding it is free), not on the state
        # itself: an error check on the state would gather the whole, batch-sharded state onto
        # one device every step when several devices share the batch.
        token = eqx.branched_error_if(
            jnp.zeros((), jnp.float32),
            failed,
            compat.diffrax_result_code(sol.result),
            _result_messages(settings),
            on_error="nan" if settings.on_failure == "nan" else "default",
        )
        ys = jax.tree_util.tree_map(lambda y: y + token.astype(y.dtype), sol.ys)
        stats = {
            k: jnp.asarray(sol.stats[k], jnp.int32) for k in ("num_steps", "num_accepted_steps", "num_rejected_steps")
        }
        stats["result"] = jnp.asarray(compat.diffrax_result_code(sol.result), jnp.int32)
        return ys, stats

    return integrate


def _guarded_backsolve(integrate, *, normalise: bool, nan_on_failure: bool):
    """The backsolve adjoint with three additions.

    * A failed forward solve skips the backward solve (zero gradients: the caller rejects the
      step, see ``on_failure="nan"``). Solving the adjoint from the state where the
      forward solve gave up would fail as well, and diffrax raises that failure through a host
      callback, which stalls the other devices of a sharded step in their all-reduce.
    * ``normalise``: the backward (adjoint) solve runs on the cotangent divided by its RMS,
      then rescales. The adjoint ODE is linear in the cotangent, so this is exact in exact
      arithmetic; it makes the backward solve's error control (``atol``) independent of the
      loss scale. Without it a mean-over-pixels loss gives per-element cotangents far below
      ``atol`` and the controller controls almost nothing but the reconstruction of the state,
      whatever the image size and batch size; with it, the adjoint gets the same relative
      accuracy as the forward solve (tests/test_ode.py checks that the gradient does not depend
      on the loss scale).
    * ``nan_on_failure`` (``on_failure="nan"``): a failed backward solve gives NaN gradients
      instead of raising through a host callback, like a failed forward solve gives a NaN
      state. The compiled function then has no host callback at all, so it can sit in JAX's
      persistent compilation cache, and one device's failure cannot stall the others.
    """

    @jax.custom_vjp
    def run(y0, params):
        return integrate(y0, params)

    def fwd(y0, params):
        ys, vjp_fn, stats = jax.vjp(integrate, y0, params, has_aux=True)
        return (ys, stats), (vjp_fn, stats["result"])

    def bwd(residuals, cotangents):
        vjp_fn, result = residuals
        ct_ys, _ = cotangents

        def backward(ct):
            if not normalise:
                return vjp_fn(ct)
            leaves = jax.tree_util.tree_leaves(ct)
            total = sum(jnp.sum(jnp.square(c.astype(jnp.float32))) for c in leaves)
            count = sum(c.size for c in leaves)
            rms = jnp.sqrt(total / count)
            scale = jnp.where(rms > 0, rms, 1.0)
            grads = vjp_fn(jax.tree_util.tree_map(lambda c: c / scale.astype(c.dtype), ct))
            return jax.tree_util.tree_map(lambda g: g * scale.astype(g.dtype), grads)

        def skipped(ct):
            return jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(vjp_fn, ct))

        if not nan_on_failure:
            return jax.lax.cond(result == 0, backward, skipped, ct_ys)
        with compat.equinox_errors_as_nan():  # traces the backward solve
            return jax.lax.cond(result == 0, backward, skipped, ct_ys)

    run.defvjp(fwd, bwd)
    return run


_DIFFRAX_MESSAGES = compat.DIFFRAX_FAILURE_MESSAGES


def translate_error(
    error: BaseException, settings: ODESettings | Mapping | config_dict.ConfigDict | None = None
) -> ODESolveError | None:
    """Returns the ``ODESolveError`` hidden in a JAX runtime error, or None if there is none."""
    text = str(error)
    start = text.find(_MARK)
    if start >= 0:
        end = text.find("\n", start)
        return ODESolveError(text[start:] if end < 0 else text[start:end])
    for result, marker in _DIFFRAX_MESSAGES.items():
        if marker in text:  # raised by diffrax itself: the backward (adjoint) solve
            s = ODESettings.from_config(settings) if settings is not None else ODESettings()
            return ODESolveError(failure_message(result, s, phase="backward (adjoint) solve"))
    return None


def with_settings(model_cfg, **fields):
    """A frozen copy of a model config whose ``ode`` fields are replaced by ``fields``.

    How a caller changes what a solve *is* (``on_failure="nan"``, ``count_evaluations=True``):
    the fields are part of the config snapshot that keys every compiled function, so a function
    compiled with other settings is never reused for these (and the reverse)::

        counted = ode.with_settings(cfg.model, count_evaluations=True)
        nan_on_failure = ode.with_settings(cfg.model, on_failure="nan")
    """
    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(ODESettings)})
    if unknown:
        raise ValueError(f"unknown model.ode field(s) {unknown}")
    values = snapshot(model_cfg).as_configdict()
    values.ode.update(fields)
    ODESettings.from_config(values.ode)  # validates
    return snapshot(values)


def failure_of(
    code: int, settings: ODESettings | Mapping | config_dict.ConfigDict | None = None
) -> ODESolveError | None:
    """The :class:`ODESolveError` for a result code from ``aux["ode"]["result"]`` (None for 0)."""
    if not int(code):
        return None
    s = settings if isinstance(settings, ODESettings) else ODESettings.from_config(settings or {})
    return ODESolveError(failure_message(compat.diffrax_result_names()[int(code)], s))


# The counters of the open counting_evaluations() blocks. Run-time state only: whether a solve
# calls back at all is its settings' ``count_evaluations`` (part of every cache key).
_OPEN_COUNTERS: list[dict] = []


def _count_evaluation() -> None:
    for counter in _OPEN_COUNTERS:
        counter["count"] += 1


@contextlib.contextmanager
def counting_evaluations():
    """Counts, on the host, the vector-field evaluations of solves built with
    ``count_evaluations=True`` (:func:`with_settings`) that *run* inside the block: the forward
    solve's and -- when the function differentiates the solve -- the backward solve's
    (``adjoint=backsolve``: diffrax reports only the forward statistics). Yields a dict whose
    ``"count"`` grows each time such a function runs. A measuring tool: every evaluation costs a
    host callback, so do not time functions built with it::

        counted = ode.with_settings(cfg.model, count_evaluations=True)
        grad_fn = jax.jit(jax.grad(lambda p: loss(p, counted)))
        with ode.counting_evaluations() as evaluations:
            jax.block_until_ready(grad_fn(params))
        evaluations["count"]                          # forward + backward evaluations
    """
    counter = {"count": 0}
    _OPEN_COUNTERS.append(counter)
    try:
        yield counter
    finally:
        _OPEN_COUNTERS.remove(counter)


@contextlib.contextmanager
def solver_errors(settings: ODESettings | Mapping | config_dict.ConfigDict | None = None):
    """Re-raises runtime failures of ODE solves inside the block as :class:`ODESolveError`.

    Wrap the call *and* the first read of the results (errors of asynchronously dispatched
    computations surface when the values are used)::

        with ode.solver_errors(cfg.model.ode):
            loss = float(train_step(state, batch)[1]["loss"])
    """
    try:
        yield
    except ODESolveError:
        raise
    except Exception as e:  # noqa: BLE001 - jax and equinox raise several runtime error types
        translated = translate_error(e, settings)
        if translated is None:
            raise
        raise translated from None


class _DropReportedSolveFailures(logging.Filter):
    """JAX logs a traceback for every failing callback before re-raising it. For ODE solve
    failures that traceback only repeats the ``ODESolveError`` the caller gets, so drop it."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        text = str(exc)
        return not (_MARK in text or any(m in text for m in _DIFFRAX_MESSAGES.values()))


_FILTER = _DropReportedSolveFailures()


def _drop_repeated_tracebacks() -> None:
    """Installs the filter on JAX's callback logger (once; called by every solve, not at import:
    importing this package configures no logging)."""
    logger = compat.jax_callback_logger()
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
