"""Hindsight bounds hold for every policy on the same trace, are tight where the optimum is
known, and the fluid LP solves."""

from __future__ import annotations

import pytest
import torch
from oprl.policies.dispatch import NearestGreedy, PairMLP, PickupAssignment
from oprl.simulators.dispatch import manhattan
from oprl.solvers.dispatch import hindsight_bound, hindsight_flow, references

from oprl.core import Trace, rollout


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
