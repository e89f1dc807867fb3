"""Hindsight bounds hold for every policy on the same trace, are tight where the optimum is
known, and the fluid LP solves."""

from __future__ import annotations

import pytest
import torch

from oprl.core import Trace, rollout
from oprl.policies.dispatch import NearestGreedy, PairMLP, PickupAssignment
from oprl.simulators.dispatch import DispatchParams, DispatchSimulator, ZoneMap, manhattan
from oprl.solvers.dispatch import fluid_lp, hindsight_bound, hindsight_flow, references


def small(capacity: int = 1):
    return manhattan(n_vehicles=25, requests=150, horizon=10, eval_horizon=10, candidates=4,
                     capacity=capacity)


@pytest.mark.parametrize("capacity", [1, 2, 3])
def test_hindsight_bound_holds_for_every_policy_on_the_same_trace(capacity):
    sim = small(capacity)
    trace = sim.sample_trace(3, 10, seed=4)
    bound = hindsight_bound(sim, trace, 0)
    assert bound.status == "optimal" and bound.kind == "upper_bound"
    served_bound = bound.details["metrics"]["served_orders"]
    torch.manual_seed(0)
    for policy in (NearestGreedy(sim), PickupAssignment(sim), PairMLP(sim)):
        result = rollout(sim, policy, trace, keep_metrics=True)
        reward = sim.episode_metric(result.rewards)
        served = sim.episode_metrics(result)["served_orders"]
        assert (reward <= bound.per_trace.float() + 1e-3).all()
        assert (served <= served_bound.float()).all()


def test_bound_is_tight_for_one_vehicle_and_one_order():
    sim = manhattan(n_vehicles=1, horizon=6, eval_horizon=6, candidates=2)
    o = torch.full((1, 6, 1), -1)
    d = torch.full((1, 6, 1), -1)
    o[0, 0, 0], d[0, 0, 0] = 3, 3  # a trip within one zone, vehicle waiting there
    trace = Trace({"origin": o, "dest": d, "vehicle_zone": torch.full((1, 6, 1), 3),
                   "vehicle_free": torch.zeros(1, 6, 1, dtype=torch.long)})
    served, count, status = hindsight_flow(sim, trace, 0, objective="served")
    reward, _, _ = hindsight_flow(sim, trace, 0, objective="reward")
    achieved = float(rollout(sim, PickupAssignment(sim), trace).rewards.sum())
    assert status == "optimal" and served == 1 and count == 1
    assert achieved <= reward <= achieved + 1e-3  # exact up to the 1e-3 rounding


def test_no_vehicle_in_time_means_nothing_served():
    sim = manhattan(n_vehicles=2, horizon=6, eval_horizon=6, candidates=2)
    o = torch.full((1, 6, 2), -1)
    o[0, 1] = torch.tensor([5, 6])
    trace = Trace({"origin": o, "dest": o.clone(), "vehicle_zone": torch.zeros(1, 6, 2, dtype=torch.long),
                   "vehicle_free": torch.full((1, 6, 2), 50)})
    served, _, _ = hindsight_flow(sim, trace, 0, objective="served")
    reward, _, _ = hindsight_flow(sim, trace, 0, objective="reward")
    assert served == 0 and reward == pytest.approx(-2.0)


def test_fluid_lp_within_references():
    sim = small()
    refs = references(sim, sim.sample_trace(1, 10, seed=0), 0)
    assert [r.name for r in refs] == ["hindsight-flow", "fluid-lp"]
    lp = refs[1]
    assert lp.status.startswith("fluid optimal") and lp.kind == "upper_bound"
    assert 0 < float(lp.details["metrics"]["served_orders"]) <= 150 + 1e-3  # float32 rates
    with pytest.raises(ValueError, match="warmup"):
        hindsight_bound(sim, sim.sample_trace(1, 10, seed=0), 2)


def one_zone(n_vehicles: int, initial_busy: float) -> DispatchSimulator:
    """One square zone of 4 km^2: trips of 0.5 * 2 km * 1.3 = 1.3 km, 2.6 -> 3 minutes at
    30 km/h; 20 requests expected over 10 minutes."""
    zones = ZoneMap(ids=(1,), names=("A",), lon=torch.zeros(1), lat=torch.zeros(1),
                    area_km2=torch.tensor([4.0]), edges=torch.zeros(2, 0, dtype=torch.long))
    return DispatchSimulator(DispatchParams(
        n_vehicles=n_vehicles, requests=20.0, horizon=10, eval_horizon=10,
        speeds_kmh=(30.0,) * 24, initial_busy=initial_busy, initial_busy_max=15), zones)


@pytest.mark.parametrize("n_vehicles,initial_busy,served", [
    (10, 0.0, 20.0),  # 10 * (10 + 6 overrun) = 160 vehicle-minutes >= 6 * 20: all served
    (2, 0.0, 32 / 6),  # 2 * 16 = 32 vehicle-minutes, 6 per order (3 pickup + 3 trip)
    (2, 0.5, 24 / 6),  # half the fleet busy for 8 minutes on average: 2 * (10 - 4 + 6) = 24
])
def test_fluid_lp_value_by_hand_on_one_zone(n_vehicles, initial_busy, served):
    """One zone: every order earns 3 + 1.3 km * 1 minus a 3-minute pickup at 3 per hour (0.15)
    and each served order saves its timeout cost, so the LP serves as many orders as the
    vehicle-minutes allow: value = 5.15 * served - 1 * 20 (every order times out otherwise)."""
    sim = one_zone(n_vehicles, initial_busy)
    assert sim.travel_minutes(0).tolist() == [[3]]
    lp = fluid_lp(sim, 10)
    assert lp.status.startswith("fluid optimal")
    assert float(lp.details["metrics"]["served_orders"]) == pytest.approx(served, rel=1e-5)
    assert lp.objective == pytest.approx(5.15 * served - 20.0, abs=1e-4)


def hindsight_lp(sim, trace, episode: int, objective: str) -> float:
    """The hindsight bound as an LP written from the module docstring, independently of the
    flow code: x[v, j] = 1 when vehicle v (starting zone/minute from the trace) serves order j
    first, y[j, k] = 1 when the vehicle of j serves k next; each order served at most once,
    each vehicle and each order hands over to at most one next order, a handover only when
    the drop-off of j reaches k's origin by k's last matchable minute (fastest times), and
    every served order is reached by flow conservation. Capacity 1 only. Pyomo + HiGHS."""
    import numpy as np
    import pyomo.environ as pyo

    from oprl.solvers.dispatch import fastest_minutes

    p, horizon = sim.params, trace.horizon
    tt = fastest_minutes(sim, horizon)
    km = sim.distance_km.double().numpy()
    o = trace["origin"][episode].numpy()
    d = trace["dest"][episode].numpy()
    t_req, slot = np.nonzero(o >= 0)
    orig, dest = o[t_req, slot], d[t_req, slot]
    n = len(t_req)
    last = np.minimum(t_req + p.expiry - 1, horizon - 1)
    zone0 = trace["vehicle_zone"][episode, 0].numpy()
    free0 = trace["vehicle_free"][episode, 0].numpy()
    vehicles = [v for v in range(len(zone0)) if free0[v] <= horizon - 1]

    def value(pick: float, j: int) -> float:
        if objective == "served":
            return 1.0
        late = max(pick + tt[orig[j], dest[j]] - p.late_threshold_min, 0) / 60
        return (p.timeout_cost + p.base_reward + p.km_reward * km[orig[j], dest[j]]
                - p.pickup_cost * pick / 60 - p.late_cost * late)

    drop = t_req + tt[:, orig].min(0) + tt[orig, dest]  # free again, at the destination
    first = [(v, j) for v in vehicles for j in range(n) if free0[v] <= last[j]]
    nxt = [(j, k) for j in range(n) for k in range(n)
           if j != k and drop[j] <= last[k] and drop[j] <= horizon - 1]
    m = pyo.ConcreteModel()
    m.x = pyo.Var(first, bounds=(0, 1))
    m.y = pyo.Var(nxt, bounds=(0, 1))
    m.served = pyo.Var(range(n), bounds=(0, 1))
    m.vehicle = pyo.ConstraintList()
    for v in vehicles:
        m.vehicle.add(sum(m.x[a] for a in first if a[0] == v) <= 1)
    m.flow = pyo.ConstraintList()
    for j in range(n):
        m.flow.add(m.served[j] == sum(m.x[a] for a in first if a[1] == j)
                   + sum(m.y[a] for a in nxt if a[1] == j))
        m.flow.add(sum(m.y[a] for a in nxt if a[0] == j) <= m.served[j])
    # each order's value with its fastest pickup from the zone it is served from
    pick_first = {a: tt[zone0[a[0]], orig[a[1]]] for a in first}
    pick_next = {a: tt[dest[a[0]], orig[a[1]]] for a in nxt}
    m.obj = pyo.Objective(sense=pyo.maximize, expr=sum(
        value(pick_first[a], a[1]) * m.x[a] for a in first) + sum(
        value(pick_next[a], a[1]) * m.y[a] for a in nxt))
    pyo.SolverFactory("appsi_highs").solve(m)
    total = pyo.value(m.obj)
    return total - (p.timeout_cost * n if objective == "reward" else 0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hindsight_flow_equals_an_independently_written_lp(seed):
    sim = manhattan(n_vehicles=6, requests=30, horizon=8, eval_horizon=8, candidates=3)
    trace = sim.sample_trace(1, 8, seed=seed)
    for objective in ("served", "reward"):
        flow, _, status = hindsight_flow(sim, trace, 0, objective=objective)
        lp = hindsight_lp(sim, trace, 0, objective)
        n = int((trace["origin"][0] >= 0).sum())
        assert status == "optimal"
        # the flow rounds each order's value up to 1e-3: it may exceed the LP by that much
        assert lp - 1e-6 <= flow <= lp + 1e-3 * n + 1e-6, objective
