"""Dispatch references: a hindsight min-cost-flow bound per trace (OR-Tools) and a fluid LP
over zones (Pyomo + HiGHS).

The hindsight flow routes vehicles through a time-expanded network of (zone, minute) nodes
with every request of the episode known; every real dispatch is a feasible flow earning at
least its real value, so the max-value flow bounds any policy on that trace (with pooling,
each vehicle enters as ``capacity`` seats; looser). The fluid LP bounds the expected reward
of any policy (Jensen), not a sample path, so the evaluator does not use it for per-trace
gaps. Both derivations: docs/dispatch.md, "References and bounds".
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from oprl.core import Trace
from oprl.result import SolverResult
from oprl.simulators.dispatch import DispatchSimulator

SCALE = 1000  # integer cost units per reward unit


def fastest_minutes(sim: DispatchSimulator, horizon: int) -> np.ndarray:
    """Zone-to-zone minutes at the fastest hour of the episode ``[Z, Z]``."""
    stack = torch.stack([sim.travel_minutes(t) for t in range(horizon)])
    return stack.min(0).values.numpy()


def _order_arrays(trace: Trace, episode: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    o = trace["origin"][episode].cpu().numpy()
    d = trace["dest"][episode].cpu().numpy()
    t, k = np.nonzero(o >= 0)
    return t, o[t, k], d[t, k]


def hindsight_flow(sim: DispatchSimulator, trace: Trace, episode: int, *, objective: str
                   ) -> tuple[float, int, str]:
    """Max-value flow of one episode (``objective`` 'served' or 'reward'): the bound, the
    number of orders served in that flow, and OR-Tools' status."""
    from ortools.graph.python import min_cost_flow

    p, horizon = sim.params, trace.horizon
    z = sim.zones.n
    tt = fastest_minutes(sim, horizon)
    km = sim.distance_km.double().numpy()
    t_req, orig, dest = _order_arrays(trace, episode)
    n = len(t_req)
    # node ids: W(z, t) = z * horizon + t; orders j_in, j_out; source; sink
    n_wait = z * horizon
    j_in, j_out = n_wait + np.arange(n), n_wait + n + np.arange(n)
    source, sink = n_wait + 2 * n, n_wait + 2 * n + 1
    tails, heads, caps, costs = [], [], [], []

    def arcs(tail, head, cap, cost) -> None:
        size = np.broadcast(tail, head).size
        tails.append(np.broadcast_to(tail, size)), heads.append(np.broadcast_to(head, size))
        caps.append(np.broadcast_to(cap, size)), costs.append(np.broadcast_to(cost, size))

    fleet = p.n_vehicles * p.capacity
    zone0 = trace["vehicle_zone"][episode, 0].cpu().numpy()
    free0 = trace["vehicle_free"][episode, 0].cpu().numpy()
    ok = free0 <= horizon - 1
    starts = np.bincount(zone0[ok] * horizon + free0[ok], minlength=n_wait)
    starts += (p.capacity - 1) * np.bincount(zone0 * horizon, minlength=n_wait)  # pooled seats
    used = np.nonzero(starts)[0]
    arcs(source, used, starts[used], 0)
    waits = np.arange(n_wait).reshape(z, horizon)
    arcs(waits[:, :-1].ravel(), waits[:, 1:].ravel(), fleet, 0)
    arcs(waits[:, -1], sink, fleet, 0)
    arcs(source, sink, fleet, 0)  # vehicles that never become idle in time
    last = np.minimum(t_req + p.expiry - 1, horizon - 1)
    zones = np.arange(z)
    pick = tt[np.ix_(zones, orig)]  # [Z, n] minutes from each zone to each origin
    if p.capacity > 1:
        pick = np.broadcast_to(pick.min(0), pick.shape)
    trip = tt[orig, dest]
    if objective == "served":
        value = np.ones((z, n))
    else:
        late = np.maximum(pick + trip - p.late_threshold_min, 0) / 60
        value = (p.timeout_cost + p.base_reward + p.km_reward * km[orig, dest]
                 - p.pickup_cost * pick / 60 - p.late_cost * late)
    cost = -np.ceil(value * SCALE - 1e-9).astype(np.int64)
    arcs((zones[:, None] * horizon + last[None, :]).ravel(), np.tile(j_in, z), 1, cost.ravel())
    serve_from = sum(len(t) for t in tails)
    arcs(j_in, j_out, 1, 0)
    drop = t_req + tt[:, orig].min(0) + trip
    inside = drop <= horizon - 1
    arcs(j_out[inside], dest[inside] * horizon + drop[inside], 1, 0)
    arcs(j_out[~inside], sink, 1, 0)
    flow = min_cost_flow.SimpleMinCostFlow()
    flow.add_arcs_with_capacity_and_unit_cost(
        np.concatenate(tails).astype(np.int32), np.concatenate(heads).astype(np.int32),
        np.concatenate(caps).astype(np.int64), np.concatenate(costs).astype(np.int64))
    flow.set_node_supply(source, fleet)
    flow.set_node_supply(sink, -fleet)
    code = flow.solve()
    if code != flow.OPTIMAL:
        return math.nan, 0, f"min-cost-flow status {code}"
    served = int(flow.flows(np.arange(serve_from, serve_from + n)).sum()) if n else 0
    bound = -flow.optimal_cost() / SCALE
    if objective == "reward":
        bound -= p.timeout_cost * n
    return bound, served, "optimal"


def hindsight_bound(sim: DispatchSimulator, trace: Trace, warmup: int = 0) -> SolverResult:
    """Per-trace hindsight upper bounds on the episode reward (``per_trace``) and on served
    orders (``details['metrics']['served_orders']``)."""
    if warmup != 0:
        raise ValueError(f"warmup: the hindsight bound covers whole episodes; use 0, got {warmup}")
    start = time.perf_counter()
    rewards, served, statuses = [], [], []
    for b in range(trace.batch):
        r, _, s1 = hindsight_flow(sim, trace, b, objective="reward")
        count, _, s2 = hindsight_flow(sim, trace, b, objective="served")
        rewards.append(r)
        served.append(count)
        statuses += [s1, s2]
    ok = all(s == "optimal" for s in statuses)
    per_trace = torch.tensor(rewards, dtype=torch.float64)
    return SolverResult(
        name="hindsight-flow", objective=float(per_trace.mean()), kind="upper_bound",
        status="optimal" if ok else "; ".join(sorted(set(statuses))),
        wall_s=time.perf_counter() - start, per_trace=per_trace,
        details={"metrics": {"served_orders": torch.tensor(served, dtype=torch.float64)},
                 "episodes": list(range(trace.batch))},
    )


def fluid_lp(sim: DispatchSimulator, horizon: int) -> SolverResult:
    """Fluid LP over zones (Pyomo + HiGHS) on expected demand; see the module docstring."""
    import pyomo.environ as pyo
    from pyomo.contrib.appsi.solvers import Highs

    start = time.perf_counter()
    p, z = sim.params, sim.zones.n
    lam = sim.od_intensity(horizon).sum(0).double().numpy()  # [Z, Z] expected requests
    tt = fastest_minutes(sim, horizon)
    km = sim.distance_km.double().numpy()
    w = sim.origin_weight.double().numpy()
    fleet_at = p.n_vehicles * w  # expected starting fleet per zone
    # vehicle-minutes of work started in the episode: the fleet's free time, plus the overrun
    # of each vehicle's last job past the end (at most the longest pickup + trip)
    overrun = float((tt.max(0)[None, :] + tt).max())
    minutes = p.n_vehicles * (horizon - p.initial_busy * (p.initial_busy_max + 1) / 2 + overrun)
    zs = range(z)
    m = pyo.ConcreteModel()
    m.s = pyo.Var(zs, zs, bounds=lambda _, o, d: (0, float(lam[o, d])))
    m.e = pyo.Var(zs, zs, within=pyo.NonNegativeReals)
    m.pickups = pyo.Constraint(zs, rule=lambda m, o: pyo.quicksum(m.e[y, o] for y in zs)
                               == pyo.quicksum(m.s[o, d] for d in zs))
    m.fleet = pyo.Constraint(zs, rule=lambda m, y: pyo.quicksum(m.e[y, o] for o in zs)
                             <= float(fleet_at[y]) + pyo.quicksum(m.s[o, y] for o in zs))
    m.time = pyo.Constraint(expr=pyo.quicksum(float(tt[o, d]) * m.s[o, d] for o in zs for d in zs)
                            + pyo.quicksum(float(tt[y, o]) * m.e[y, o] for y in zs for o in zs)
                            <= float(minutes))
    gain = p.timeout_cost + p.base_reward + p.km_reward * km
    m.obj = pyo.Objective(sense=pyo.maximize, expr=pyo.quicksum(
        float(gain[o, d]) * m.s[o, d] for o in zs for d in zs) - pyo.quicksum(
        p.pickup_cost * float(tt[y, o]) / 60 * m.e[y, o] for y in zs for o in zs))
    opt = Highs()
    res = opt.solve(m)
    status = str(res.termination_condition).split(".")[-1]
    served = sum(pyo.value(m.s[o, d]) for o in zs for d in zs) if status == "optimal" else math.nan
    value = (res.best_feasible_objective - p.timeout_cost * lam.sum()) if status == "optimal" \
        else math.nan
    return SolverResult(
        name="fluid-lp", objective=float(value), kind="upper_bound",
        status=f"fluid {status} (expected demand, not per trace)",
        wall_s=time.perf_counter() - start,
        details={"metrics": {"served_orders": torch.tensor([served], dtype=torch.float64)},
                 "expected_requests": float(lam.sum())},
    )


def references(sim: DispatchSimulator, trace: Trace, warmup: int) -> list[SolverResult]:
    """The hindsight flow bound on ``trace`` and the fluid LP on the expected demand (not with
    a trip file, nor with pooling, whose shared rides its empty-move balance does not model)."""
    out = [hindsight_bound(sim, trace, warmup)]
    if sim.params.trip_file is None and sim.params.capacity == 1:
        out.append(fluid_lp(sim, trace.horizon))
    return out
