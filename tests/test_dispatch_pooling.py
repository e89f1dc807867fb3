"""Pooling (capacity 2-3): hand-computed insertions, route invariants, and a regression pin
showing that capacity 1 behaves as the simulator committed on 2026-11-23 (seed
11, 2 episodes x 15 minutes, 40 vehicles), before pooling was added. The simpy twin checks the
pooled dynamics on whole episodes (tests/test_dispatch_twin.py)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from oprl.core import Trace, rollout
from oprl.policies.dispatch import NearestGreedy, PickupAssignment
from oprl.simulators.dispatch import manhattan
from oprl.simulators.pooling import riders

SAVED = {  # policy: (episode reward, served, expired, pickup minutes), per episode
    "NearestGreedy": ([78.14497375488281, 84.13982391357422], [47, 48], [158, 141],
                      [565.0, 689.0]),
    "PickupAssignment": ([112.51832580566406, 125.259521484375], [52, 51], [153, 138],
                         [339.0, 332.0]),
}


@pytest.mark.parametrize("policy", [NearestGreedy, PickupAssignment])
def test_regression_capacity_one_rollout_keeps_the_saved_behaviour(policy):
    """A regression pin, not an independent check (the simpy twin is that): counts must be
    identical, float totals equal up to float32 summation order."""
    sim = manhattan(n_vehicles=40, requests=200, horizon=15, eval_horizon=15, candidates=5,
                    initial_busy=0.5, initial_busy_max=8, matcher="scipy")
    trace = sim.sample_trace(2, 15, seed=11)
    result = rollout(sim, policy(sim), trace, keep_metrics=True)
    reward, served, expired, pickup = SAVED[policy.__name__]
    assert result.rewards.sum(1).tolist() == pytest.approx(reward, rel=1e-6)
    assert result.metrics["served"].sum(1).int().tolist() == served
    assert result.metrics["expired"].sum(1).int().tolist() == expired
    assert result.metrics["pickup_minutes"].sum(1).tolist() == pytest.approx(pickup, abs=1e-6)
    assert torch.all(result.metrics["served"].sum(1) > 0)


# ---- pooling (capacity 2-3) ---------------------------------------------------------------

def _two_orders(capacity: int):
    """One idle vehicle in the zone z with the longest trip within it; the same trip z -> w
    requested at minutes 0 and 1, w the farthest zone within 20 minutes of z."""
    sim = manhattan(n_vehicles=1, horizon=8, eval_horizon=8, candidates=1, capacity=capacity)
    tt = sim.travel_minutes(0)
    z = int(torch.diagonal(tt).argmax())
    w = int(torch.where(tt[z] <= 20, tt[z], -1).argmax())
    o = torch.full((1, 8, 1), -1)
    d = torch.full((1, 8, 1), -1)
    o[0, :2, 0], d[0, :2, 0] = z, w
    trace = Trace({"origin": o, "dest": d, "vehicle_zone": torch.full((1, 8, 1), z),
                   "vehicle_free": torch.zeros(1, 8, 1, dtype=torch.long)})
    return sim, trace, z, w


def test_pooled_vehicle_picks_up_a_second_rider_on_the_way_at_the_hand_computed_reward():
    sim, trace, z, w = _two_orders(capacity=2)
    p, km = sim.params, float(sim.distance_km[z, w])
    zz, zw, ww, wz = (int(sim.travel_minutes(0)[a, b]) for a, b in ((z, z), (z, w), (w, w), (w, z)))
    assert zz >= 2  # at minute 1 the vehicle is still on its way to the first pickup
    # insertions of the second order after the first pickup (cost = its drop-off minute - 1 +
    # delay to the first rider): drop it first, or after the first rider (both 2zz + zw + ww
    # + zz - 1: a tie, the earlier position wins), or pick it up after the first drop-off
    # (zz + 2zw + wz - 1): pooling wins when 2zz + ww < zw + wz
    assert 2 * zz + ww < zw + wz
    result = rollout(sim, PickupAssignment(sim), trace, keep_metrics=True)
    assert result.metrics["served"][0, :2].tolist() == [1.0, 1.0]
    threshold = p.late_threshold_min

    def late(minutes: float) -> float:
        return max(minutes - threshold, 0) / 60

    first = p.base_reward + p.km_reward * km - p.pickup_cost * zz / 60 - p.late_cost * late(zz + zw)
    pickup = 2 * zz - 1  # picked up right after the first rider, one minute after its request
    drop = 2 * zz + zw  # the second rider's drop-off minute; the first rider's moves by zz + ww
    detour = zz + ww
    extra_late = late(zz + zw + detour) - late(zz + zw)
    second = (p.base_reward + p.km_reward * km - p.pickup_cost * pickup / 60
              - p.late_cost * late(drop - 1) - p.detour_cost * detour / 60
              - p.late_cost * extra_late)
    assert result.rewards[0, 0].item() == pytest.approx(first, abs=1e-4)
    assert result.rewards[0, 1].item() == pytest.approx(second, abs=1e-4)
    assert result.metrics["pickup_minutes"][0, 1].item() == pickup


def test_without_pooling_the_second_rider_waits_for_the_vehicle():
    sim, trace, z, w = _two_orders(capacity=1)
    result = rollout(sim, PickupAssignment(sim), trace, keep_metrics=True)
    assert result.metrics["served"][0, :2].tolist() == [1.0, 0.0]


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), capacity=st.sampled_from([2, 3]))
def test_routes_keep_capacity_order_and_timing_invariants(seed, capacity):
    sim = manhattan(n_vehicles=12, requests=90, horizon=10, eval_horizon=10, candidates=3,
                    initial_busy=0.5, initial_busy_max=6, capacity=capacity)
    trace = sim.sample_trace(2, 10, seed=seed)
    policy = PickupAssignment(sim)
    state = sim.reset(trace)
    for t in range(trace.horizon):
        length = state["route_len"]
        pos = torch.arange(2 * capacity)
        live = pos < length.unsqueeze(-1)
        times = state["route_time"]
        assert (riders(state) <= capacity).all()
        assert ((times > t) | ~live).all()  # stops reached by now are gone
        steps = times[..., 1:] - times[..., :-1]
        assert ((steps >= 1) | ~live[..., 1:]).all()  # stops in order, a minute apart at least
        drops, pickups = state["route_drop"] & live, ~state["route_drop"] & live
        # every pending pickup has its own drop-off later in the route (Hall: every suffix of
        # the route holds at least as many drop-offs as pickups)
        def suffix(x):
            return x.flip(-1).cumsum(-1).flip(-1)

        assert (suffix(pickups) <= suffix(drops)).all()
        last = (length - 1).clamp_min(0).unsqueeze(-1)
        busy = length > 0
        assert (state["vehicle_free"][busy] == times.gather(-1, last).squeeze(-1)[busy]).all()
        assert (state["vehicle_zone"][busy]
                == state["route_zone"].gather(-1, last).squeeze(-1)[busy]).all()
        obs = sim.observe(state, t, trace)
        state, _, info = sim.step(state, policy(obs), t, trace)
        assert (info["served"] >= 0).all()


@pytest.mark.parametrize("capacity", [0, 4, 2.5])
def test_capacity_outside_one_to_three_is_refused(capacity):
    with pytest.raises(ValueError, match="capacity"):
        manhattan(n_vehicles=5, capacity=capacity)


def test_pooled_training_explores_more_and_capacity_one_keeps_its_defaults(tmp_path):
    from oprl import registry
    from oprl.api import train

    spec = registry.get("dispatch/manhattan")
    for algo in ("ospo", "grpo"):
        single, pooled = spec.hyper(algo, {"capacity": 1}), spec.hyper(algo, {"capacity": 3})
        assert single == spec.hyper(algo)
        assert (single["temperature"], single["lr"]) == (0.05, 3e-3)
        assert (pooled["temperature"], pooled["lr"]) == (0.2, 1e-3)
    # the run's saved configuration records the overrides; an explicit setting still wins
    outcome = train("dispatch/manhattan", {"capacity": 2, "n_vehicles": 20, "horizon": 3},
                    steps=0, out=tmp_path / "run", temperature=0.3, dev_scenarios=1)
    config = (tmp_path / "run" / "config.json").read_text()
    assert '"temperature": 0.3' in config and '"lr": 0.001' in config
    assert outcome.steps_done == 0
