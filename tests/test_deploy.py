"""Decisions from plain states: `DeployedPolicy.act` replays the batched rollout exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from oprl import registry
from oprl.core import Trace
from oprl.deploy import DeployedPolicy, network_names

DATA = Path(__file__).parent / "data" / "tiny_demand.csv"


def plain_state(policy: DeployedPolicy, sim_state: dict, trace: Trace, b: int, t: int) -> dict:
    """Episode ``b``'s simulator state at period ``t`` written as a planner would."""
    sim = policy.sim
    stores = sim.network.stores
    onhand = sim_state["onhand"][b]
    state = {
        "period": t,
        "on_hand": {name: max(float(onhand[n]), 0.0) for n, name in enumerate(policy.locations)},
        "backlog": {policy.locations[s]: max(-float(onhand[s]), 0.0) for s in stores},
        "in_transit": {link: [float(sim_state["pipeline"][j, b, e])
                              for j in range(int(sim.params.lead_time[e]))]
                       for e, link in enumerate(policy.links)},
        "recent_demand": {policy.locations[s]: trace["demand"][b, :t, i].tolist()
                          for i, s in enumerate(stores)},
    }
    if "scale" in trace.data:
        state["level"] = {policy.locations[s]: float(trace["scale"][b, 0, i])
                          for i, s in enumerate(stores)}
    return json.loads(json.dumps(state))  # a plain structure, as read from a file


CASES = {
    "one_store_lost": ("inventory/one_store_lost", {"lead_time": 3, "demand_lags": 2}),
    "serial_backlog": ("inventory/serial", {}),
    "one_warehouse": ("inventory/one_warehouse", {"n_stores": 3, "demand_lags": 1}),
    "real_data": ("inventory/real_data", {"path": str(DATA), "lead_time": 2, "demand_lags": 3,
                                          "horizon": 10, "warmup": 2}),
}


@pytest.mark.parametrize("case", CASES)
def test_act_replays_the_batched_rollout_step_by_step(case):
    name, params = CASES[case]
    spec = registry.get(name)
    sim = spec.build(**params)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = spec.policy_builder("mlp")(sim)
    policy = DeployedPolicy(sim, net)
    lags = sim.params.demand_lags
    horizon = 10
    trace = sim.sample_trace(3, horizon, seed=1)
    state = sim.reset(trace)
    episodes = [trace.select(slice(b, b + 1)) for b in range(trace.batch)]
    own = [sim.reset(episode) for episode in episodes]
    for t in range(horizon):
        with torch.no_grad():
            batched = net.eval()(sim.observe(state, t, trace)).clamp_min(0.0)
        state, reward, _ = sim.step(state, batched, t, trace)
        for b, episode in enumerate(episodes):
            if t < lags:  # the rollout zero-pads lags it has not seen; a planner has them all
                orders = batched[b:b + 1]
            else:
                act = policy.act(plain_state(policy, own[b], episode, 0, t))
                orders = torch.tensor([[act[link] for link in policy.links]])
                torch.testing.assert_close(orders, batched[b:b + 1])
            own[b], own_reward, _ = sim.step(own[b], orders, t, episode)
            torch.testing.assert_close(own_reward, reward[b:b + 1])


def test_names_come_from_the_network():
    sim = registry.make("inventory/one_warehouse", n_stores=2)
    locations, links = network_names(sim.network)
    assert locations == ["warehouse", "store 0", "store 1"]
    assert links == ["supplier->warehouse", "warehouse->store 0", "warehouse->store 1"]


@pytest.mark.parametrize("change, message", [
    (lambda s: s["on_hand"].update({"store 9": 1.0}), "unknown name 'store 9'"),
    (lambda s: s["in_transit"].update({"warehouse->store 0": [1.0]}), r"needs \d quantities \(one per period until arrival"),
    (lambda s: s["on_hand"].update({"warehouse": -1.0}), "must be finite and >= 0"),
    (lambda s: s["on_hand"].update({"warehouse": math.nan}), "must be finite and >= 0"),
    (lambda s: s["recent_demand"].update({"store 0": [1.0]}), "uses the last 2 periods, got 1"),
    (lambda s: s.pop("on_hand"), "missing 'warehouse'"),
    (lambda s: s.update(colour="red"), "unknown field 'colour'"),
])
def test_a_state_that_does_not_fit_the_network_is_a_one_line_error(change, message):
    sim = registry.make("inventory/one_warehouse", n_stores=2, demand_lags=2)
    lead = sim.params.lead_time.tolist()
    policy = DeployedPolicy(sim, registry.get("inventory/one_warehouse").policy_builder("mlp")(sim))
    state = {
        "on_hand": {"warehouse": 20.0, "store 0": 5.0, "store 1": 4.0},
        "in_transit": {link: [1.0] * lead[e] for e, link in enumerate(policy.links)},
        "recent_demand": {"store 0": [3.0, 4.0], "store 1": [5.0, 6.0]},
    }
    assert set(policy.act(state)) == set(policy.links)
    change(state)
    with pytest.raises(ValueError, match=message) as err:
        policy.act(state)
    assert "\n" not in str(err.value)
