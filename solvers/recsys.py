"""Exact yardstick for the tabular recommendation CMDP: a linear programme over occupancy
measures (Altman 1999, "Constrained Markov Decision Processes", ch. 8).

Every stationary randomised policy is a point ``x[s, a]`` (expected impressions) of the flow
polytope and back, and expected watch time and signals are linear in ``x``, so maximising
watch time subject to each signal's threshold is the CMDP optimum; its duals price the
thresholds and its policy ``x[s, a] / sum_b x[s, b]`` runs on the simulator's traces
(derivation: docs/recsys.md, "Occupancy-measure LP"). Infeasible thresholds give status
'infeasible' and a NaN objective, never a number. ``details['finite_horizon_value']`` is the
LP policy's exact value within the simulator's ``horizon``. Pyomo + HiGHS, checked with GLOP.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import Tensor, nn

from oprl.core import Observation, Trace
from oprl.result import SolverResult
from oprl.simulators.recsys import SIGNALS, TabularModel, TabularRecsysSimulator, continuing


class TablePolicy(nn.Module):
    """A stationary randomised policy ``pi[s, a]`` read off the observation's state index."""

    def __init__(self, probs: np.ndarray | Tensor) -> None:
        super().__init__()
        self.register_buffer("probs", torch.as_tensor(np.asarray(probs), dtype=torch.float32))

    def forward(self, obs: Observation) -> Tensor:
        return self.probs.to(obs["state_index"].device)[obs["state_index"]]


def _check(model: TabularModel, thresholds) -> np.ndarray:
    thr = np.asarray(thresholds, dtype=float)
    if thr.shape != (len(SIGNALS),) or not np.isfinite(thr).all():
        raise ValueError(f"thresholds: {len(SIGNALS)} finite values {SIGNALS}, got {thresholds}")
    if (model.exit <= 0).any():
        raise ValueError("exit: every impression must end the session with probability > 0 "
                         "(a transient CMDP); got a zero exit probability")
    return thr


def solve_highs(model: TabularModel, thresholds) -> dict:
    """The occupancy LP in Pyomo, solved by HiGHS (APPSI); occupancies and duals."""
    import pyomo.environ as pyo
    from pyomo.contrib.appsi.solvers import Highs

    thr = _check(model, thresholds)
    s_n, a_n = model.watch.shape
    cont = continuing(model)
    m = pyo.ConcreteModel()
    m.S, m.A, m.K = pyo.RangeSet(0, s_n - 1), pyo.RangeSet(0, a_n - 1), pyo.RangeSet(0, len(thr) - 1)
    m.x = pyo.Var(m.S, m.A, domain=pyo.NonNegativeReals)
    m.flow = pyo.Constraint(m.S, rule=lambda m, j: sum(m.x[j, a] for a in m.A) - sum(
        float(cont[s, a, j]) * m.x[s, a] for s in m.S for a in m.A if cont[s, a, j] > 0)
        == float(model.init[j]))
    m.signal = pyo.Constraint(m.K, rule=lambda m, k: sum(
        float(model.signals[k, s, a]) * m.x[s, a] for s in m.S for a in m.A) >= float(thr[k]))
    m.obj = pyo.Objective(expr=sum(float(model.watch[s, a]) * m.x[s, a]
                                   for s in m.S for a in m.A), sense=pyo.maximize)
    opt = Highs()
    opt.config.load_solution = False
    res = opt.solve(m)
    status = str(res.termination_condition).split(".")[-1]
    if status != "optimal":
        return {"status": status}
    opt.load_vars()
    duals = opt.get_duals()
    x = np.array([[m.x[s, a].value for a in range(a_n)] for s in range(s_n)], dtype=float)
    return {"status": "optimal", "x": np.clip(x, 0.0, None),
            "objective": float(res.best_feasible_objective),
            "duals": np.array([abs(float(duals[m.signal[k]])) for k in range(len(thr))])}


def solve_glop(model: TabularModel, thresholds, *, objective: np.ndarray | None = None) -> dict:
    """The same LP in OR-Tools GLOP (``objective`` replaces watch time when given)."""
    from ortools.linear_solver import pywraplp

    thr = _check(model, thresholds)
    s_n, a_n = model.watch.shape
    cont = continuing(model)
    solver = pywraplp.Solver.CreateSolver("GLOP")
    x = [[solver.NumVar(0.0, solver.infinity(), f"x{s}_{a}") for a in range(a_n)]
         for s in range(s_n)]
    for j in range(s_n):
        solver.Add(sum(x[j]) - sum(float(cont[s, a, j]) * x[s][a] for s in range(s_n)
                                   for a in range(a_n) if cont[s, a, j] > 0) == float(model.init[j]))
    rows = [solver.Add(sum(float(model.signals[k, s, a]) * x[s][a] for s in range(s_n)
                           for a in range(a_n)) >= float(thr[k])) for k in range(len(thr))]
    obj = model.watch if objective is None else objective
    solver.Maximize(sum(float(obj[s, a]) * x[s][a] for s in range(s_n) for a in range(a_n)))
    code = solver.Solve()
    if code != pywraplp.Solver.OPTIMAL:
        names = {pywraplp.Solver.INFEASIBLE: "infeasible", pywraplp.Solver.UNBOUNDED: "unbounded"}
        return {"status": names.get(code, f"glop status {code}")}
    xs = np.array([[v.solution_value() for v in row] for row in x])
    return {"status": "optimal", "x": np.clip(xs, 0.0, None),
            "objective": solver.Objective().Value(),
            "duals": np.array([abs(r.dual_value()) for r in rows])}


def policy_from_occupancy(x: np.ndarray, fallback: np.ndarray | None = None) -> np.ndarray:
    """``pi[s, a] = x[s, a] / sum_b x[s, b]``; unreachable states get ``fallback`` (uniform)."""
    total = x.sum(1, keepdims=True)
    uniform = np.full_like(x, 1.0 / x.shape[1]) if fallback is None else fallback
    return np.where(total > 1e-12, x / np.maximum(total, 1e-300), uniform)


def policy_values(model: TabularModel, pi: np.ndarray, horizon: int | None = None) -> dict:
    """Exact expected episode totals (watch time and each signal) of stationary policy ``pi``:
    over the whole session (linear solve) or within ``horizon`` impressions (recursion)."""
    cont = np.einsum("sa,sat->st", pi, continuing(model))
    watch = (pi * model.watch).sum(1)
    sig = (pi[None] * model.signals).sum(2)  # [K, S]
    if horizon is None:
        occ = np.linalg.solve(np.eye(len(model.init)) - cont.T, model.init)
    else:
        occ, d = np.zeros_like(model.init), model.init.copy()
        for _ in range(int(horizon)):
            occ += d
            d = d @ cont
    return {"watch_time": float(occ @ watch), **{s: float(sig[k] @ occ) for k, s in enumerate(SIGNALS)}}


def signal_maxima(model: TabularModel) -> dict[str, float]:
    """The most of each signal any policy achieves (no constraints): what makes a threshold
    feasible on its own."""
    free = [0.0] * len(SIGNALS)
    return {s: solve_glop(model, free, objective=model.signals[k])["objective"]
            for k, s in enumerate(SIGNALS)}


def cmdp_lp(sim: TabularRecsysSimulator, thresholds=None, *, backend: str = "highs") -> SolverResult:
    """The CMDP optimum of ``sim`` (thresholds default to the scenario's): optimal expected
    watch time per episode, the thresholds' duals and the optimal randomised policy."""
    start = time.perf_counter()
    model = sim.model
    thr = sim.params.thresholds if thresholds is None else tuple(thresholds)
    if backend == "highs":
        out = solve_highs(model, thr)
    elif backend == "glop":
        out = solve_glop(model, thr)
    else:
        raise ValueError(f"backend: {backend!r}; allowed 'highs', 'glop'")
    name = f"cmdp_lp[{backend}]"
    if out["status"] != "optimal":
        return SolverResult(name, math.nan, "optimal", out["status"], time.perf_counter() - start,
                            details={"thresholds": thr, "signal_maxima": signal_maxima(model)})
    pi = policy_from_occupancy(out["x"])
    values = policy_values(model, pi)
    finite = policy_values(model, pi, sim.params.eval_horizon)
    metrics = {sim.signal_name(k): values[s] for k, s in enumerate(SIGNALS)}
    return SolverResult(
        name, out["objective"], "optimal", "optimal", time.perf_counter() - start,
        policy=TablePolicy(pi),
        details={"metrics": metrics, "duals": dict(zip(SIGNALS, out["duals"].tolist())),
                 "occupancy": out["x"], "policy": pi, "thresholds": thr,
                 "finite_horizon_value": finite["watch_time"],
                 "finite_horizon_metrics": finite,
                 "randomised_states": int((((pi > 1e-6).sum(1) > 1)
                                           & (out["x"].sum(1) > 1e-9)).sum())},
    )


def infeasible_message(result: SolverResult) -> str:
    maxima = result.details.get("signal_maxima", {})
    best = ", ".join(f"{k} <= {v:.3g}" for k, v in maxima.items())
    return (f"thresholds: {result.details.get('thresholds')} are infeasible for this CMDP "
            f"(LP status {result.status!r}); each signal alone can reach at most: {best}")


def references(sim, trace: Trace, warmup: int) -> list[SolverResult]:
    """The LP optimum (HiGHS, with its executable policy) and the GLOP cross-check for
    `recsys/tabular`; `recsys/short_video` has no exact reference (its state is continuous),
    so it returns none. Infeasible thresholds are a ValueError naming the reachable maxima."""
    if not isinstance(sim, TabularRecsysSimulator):
        return []
    highs = cmdp_lp(sim)
    if highs.status != "optimal":
        raise ValueError(infeasible_message(highs))
    glop = cmdp_lp(sim, backend="glop")
    glop = SolverResult(glop.name, glop.objective, glop.kind,
                        f"{glop.status}; |HiGHS - GLOP| = {abs(glop.objective - highs.objective):.2e}",
                        glop.wall_s, details={"metrics": glop.details.get("metrics", {})})
    return [highs, glop]
