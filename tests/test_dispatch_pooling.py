"""Regression pin for the capacity-1 dispatch dynamics, saved before pooling work began.

Issue #3 asks for pooling (capacity 2-3) as an option while capacity 1 stays bit-identical to
the simulator as committed on 2026-11-23. These numbers were computed with that simulator
(seed 11, 2 episodes x 15 minutes, 40 vehicles); any change to the capacity-1 path breaks them.
"""

from __future__ import annotations

import pytest
import torch

from oprl.core import rollout
from policies.dispatch import NearestGreedy, PickupAssignment
from simulators.dispatch import manhattan

SAVED = {  # policy: (episode reward, served, expired, pickup minutes), per episode
    "NearestGreedy": ([78.14497375488281, 84.13982391357422], [47, 48], [158, 141],
                      [565.0, 689.0]),
    "PickupAssignment": ([112.51832580566406, 125.259521484375], [52, 51], [153, 138],
                         [339.0, 332.0]),
}


@pytest.mark.parametrize("policy", [NearestGreedy, PickupAssignment])
def test_capacity_one_rollout_equals_the_saved_behaviour(policy):
    sim = manhattan(n_vehicles=40, requests=200, horizon=15, eval_horizon=15, candidates=5,
                    initial_busy=0.5, initial_busy_max=8, matcher="scipy")
    trace = sim.sample_trace(2, 15, seed=11)
    result = rollout(sim, policy(sim), trace, keep_metrics=True)
    reward, served, expired, pickup = SAVED[policy.__name__]
    assert result.rewards.sum(1).tolist() == reward
    assert result.metrics["served"].sum(1).int().tolist() == served
    assert result.metrics["expired"].sum(1).int().tolist() == expired
    assert result.metrics["pickup_minutes"].sum(1).tolist() == pickup
    assert torch.all(result.metrics["served"].sum(1) > 0)
