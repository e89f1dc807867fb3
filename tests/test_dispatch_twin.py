"""Differential tests: the simpy event twin and the batched simulator book the same rewards,
served and expired orders, minute by minute, on the same trace, with and without pooling."""

from __future__ import annotations

import pytest
import torch

from oprl.core import rollout
from oprl.policies.dispatch import NearestGreedy, PairMLP, PickupAssignment
from oprl.simulators.dispatch import manhattan
from oprl.simulators.events.dispatch import DispatchTwin, nearest_greedy, record_decisions, replayed


def sim_and_trace(seed: int, capacity: int = 1):
    sim = manhattan(n_vehicles=30, requests=120, horizon=12, eval_horizon=12, candidates=4,
                    initial_busy=0.6, initial_busy_max=6, capacity=capacity)
    return sim, sim.sample_trace(3, 12, seed=seed)


@pytest.mark.parametrize("capacity", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_twin_equals_batched_greedy(seed, capacity):
    sim, trace = sim_and_trace(seed, capacity)
    result = rollout(sim, NearestGreedy(sim), trace, keep_metrics=True)
    for b in range(trace.batch):
        twin = DispatchTwin(sim, trace, b).run(nearest_greedy)
        assert torch.allclose(torch.tensor(twin.rewards), result.rewards[b], atol=1e-4)
        assert twin.served == result.metrics["served"][b].int().tolist()
        assert twin.expired == result.metrics["expired"][b].int().tolist()
        assert sum(twin.served) > 0 and sum(twin.expired) > 0  # both paths exercised
        assert (twin.shared > 0) == (capacity > 1)  # pooled insertions exercised


@pytest.mark.parametrize("capacity", [1, 2, 3])
@pytest.mark.parametrize("policy", [PickupAssignment, PairMLP])
def test_twin_replaying_exact_assignments_books_the_same_rewards(policy, capacity):
    sim, trace = sim_and_trace(2, capacity)
    torch.manual_seed(0)
    pol = policy(sim)
    decisions, rewards = record_decisions(sim, pol, trace)
    for b in range(trace.batch):
        twin = DispatchTwin(sim, trace, b).run(replayed(decisions[b]))
        assert torch.allclose(torch.tensor(twin.rewards), rewards[b], atol=1e-4)
        assert (twin.shared > 0) == (capacity > 1)


def test_twin_refuses_an_infeasible_replay():
    sim, trace = sim_and_trace(0)
    decisions, _ = record_decisions(sim, PickupAssignment(sim), trace)
    first_minute = min(decisions[0])
    pair = decisions[0][first_minute][0]
    bad = {first_minute: [pair, (pair[0], pair[1])]}  # the same order twice
    with pytest.raises(ValueError, match="infeasible"):
        DispatchTwin(sim, trace, 0).run(replayed(bad))
