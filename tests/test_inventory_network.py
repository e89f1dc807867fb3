"""Network files on the batched simulator: the new physics (link capacity, in-transit holding,
allocation by priority, several supplier links) against hand-computed values, refusals of what
is not modelled yet, and the simpy twin agreeing with the simulator on random networks."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from oprl.core import Observation, Trace, rollout
from oprl.simulators.events.inventory import replay
from oprl.simulators.inventory_network import simulator_from_spec
from oprl.simulators.inventory_rules import inventory_position
from oprl.simulators.network_file import NetworkFileError, parse_network


def one_store(**link) -> dict:
    return {
        "locations": [
            {"name": "sup", "kind": "supplier"},
            {"name": "shop", "kind": "store", "holding_cost": 0.0,
             "demand": {"distribution": "poisson", "mean": 3},
             "shortage": {"type": "backlog", "penalty": 0.0}},
        ],
        "links": [{"from": "sup", "to": "shop", "lead_time": 3, **link}],
    }


def two_stores(allocation: str) -> dict:
    """A warehouse holding 5 units feeding two stores by lead-time-0 links."""
    store = {"kind": "store", "holding_cost": 0.0, "shortage": {"type": "lost_sales", "penalty": 1},
             "demand": {"distribution": "poisson", "mean": 1}}
    return {
        "allocation": allocation,
        "locations": [{"name": "sup", "kind": "supplier"},
                      {"name": "wh", "kind": "warehouse", "initial_stock": 5},
                      {"name": "a", **copy.deepcopy(store)}, {"name": "b", **copy.deepcopy(store)}],
        "links": [{"from": "sup", "to": "wh", "lead_time": 2},
                  {"from": "wh", "to": "a", "lead_time": 0},
                  {"from": "wh", "to": "b", "lead_time": 0}],
    }


def run(sim, orders: list[float], demand: Tensor, trace_batch: int = 1) -> dict[str, Tensor]:
    """Constant orders on every edge; per-period metrics of episode 0."""
    trace = Trace({"demand": demand.expand(trace_batch, -1, -1).clone()}, seed=0)
    policy = lambda obs: torch.tensor([orders]).expand(trace_batch, -1)  # noqa: E731
    with torch.no_grad():
        out = rollout(sim, policy, trace, keep_metrics=True)
    return {k: v[0] for k, v in out.metrics.items()}


def test_a_link_ships_at_most_its_capacity():
    sim = simulator_from_spec(parse_network(one_store(capacity=2.5)))
    m = run(sim, [10.0], torch.zeros(1, 6, 1))
    assert m["shipped"].tolist() == [2.5] * 6


def test_transit_holding_is_charged_for_every_period_a_unit_travels():
    # 2 units a period on a lead-time-3 link at 0.5 per unit-period: in period t the shipments
    # of periods max(0, t-2)..t travel, so the charge is 0.5 * 2 * min(t + 1, 3)
    sim = simulator_from_spec(parse_network(one_store(transit_holding_cost=0.5)))
    m = run(sim, [2.0], torch.zeros(1, 6, 1))
    assert m["holding_cost"].tolist() == [1.0, 2.0, 3.0, 3.0, 3.0, 3.0]


def test_a_lead_time_0_link_charges_no_transit_holding():
    data = one_store(transit_holding_cost=0.5)
    data["links"][0]["lead_time"] = 0
    m = run(simulator_from_spec(parse_network(data)), [2.0], torch.zeros(1, 4, 1))
    assert m["holding_cost"].tolist() == [0.0] * 4


@pytest.mark.parametrize(("allocation", "orders", "expected"), [
    ("priority", [0.0, 4.0, 4.0], [4.0, 1.0]),      # the first link is served in full
    ("priority", [0.0, 0.0, 7.0], [0.0, 5.0]),      # nothing asked on the first: all to b
    ("priority", [0.0, 2.0, 2.0], [2.0, 2.0]),      # enough for both
    ("proportional", [0.0, 4.0, 4.0], [2.5, 2.5]),
    ("proportional", [0.0, 8.0, 2.0], [4.0, 1.0]),
])
def test_a_short_warehouse_allocates_as_the_file_says(allocation, orders, expected):
    sim = simulator_from_spec(parse_network(two_stores(allocation)))
    trace = Trace({"demand": torch.zeros(1, 1, 2)}, seed=0)
    state = sim.reset(trace)
    state, _, info = sim.step(state, torch.tensor([orders]), 0, trace)
    assert state["onhand"][0, 1:].tolist() == expected  # lead time 0: on hand at once
    assert state["onhand"][0, 0].item() == 5.0 - sum(expected)


def test_several_suppliers_feed_one_location_with_their_own_costs_and_lead_times():
    data = one_store(unit_cost=1.0)
    data["locations"].insert(1, {"name": "sup2", "kind": "supplier"})
    data["links"].append({"from": "sup2", "to": "shop", "lead_time": 1, "unit_cost": 0.25})
    sim = simulator_from_spec(parse_network(data))
    assert sim.network.edges == ((-1, 0), (-1, 0))
    m = run(sim, [2.0, 4.0], torch.zeros(1, 5, 1))
    assert m["ordering_cost"].tolist() == [3.0] * 5  # 2 * 1.0 + 4 * 0.25
    # on hand after the period's arrivals: 4 from period 1, then 4 + 2 from period 3 on
    trace = Trace({"demand": torch.zeros(1, 5, 1)}, seed=0)
    state = sim.reset(trace)
    onhand = []
    for t in range(5):
        state, _, _ = sim.step(state, torch.tensor([[2.0, 4.0]]), t, trace)
        onhand.append(state["onhand"][0, 0].item())
    assert onhand == [4.0, 8.0, 14.0, 20.0, 26.0]


def test_file_order_names_and_costs_reach_the_simulator():
    data = two_stores("proportional")
    data["locations"][2]["holding_cost"] = 1.5
    data["locations"][3]["shortage"]["penalty"] = 7
    data["links"][1]["unit_cost"] = 0.3
    sim = simulator_from_spec(parse_network(data))
    p = sim.params
    assert sim.network.kinds == ("warehouse", "store", "store")
    assert sim.network.edges == ((-1, 0), (0, 1), (0, 2))
    assert p.holding.tolist() == [0.0, 1.5, 0.0] and p.penalty.tolist() == [1.0, 7.0]
    assert p.order_cost.tolist() == pytest.approx([0.0, 0.3, 0.0])
    assert p.lost_sales and p.initial_onhand.tolist() == [5.0, 0.0, 0.0]
    assert (p.eval_warmup, p.eval_horizon) == (3000, 5000)
    assert p.extras["locations"] == ["wh", "a", "b"]


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["locations"][1].update(kind="plant", capacity=3),
     r"^locations\[1\]\.kind: a plant .* is not supported yet"),
    (lambda d: d["links"][1].update(min_order=2), r"^links\[1\]\.min_order: .*not supported yet"),
    (lambda d: d.update(objective="maximise_profit"), r"^objective: .*not supported yet"),
    (lambda d: d.update(horizon={"type": "finite", "periods": 12}),
     r"^horizon\.type: a finite horizon is not supported yet"),
    (lambda d: d["locations"][2].update(selling_price=4), r"^locations\[2\]\.selling_price: .*not supported yet"),
    (lambda d: d["locations"][3]["shortage"].update(type="backlog"),
     r"^locations\[3\]\.shortage\.type: mixing lost_sales .* not supported yet"),
    (lambda d: d["locations"][3].update(demand={"distribution": "normal", "mean": 1, "std": 1}),
     r"^locations\[3\]\.demand\.distribution: mixing poisson .* not supported yet"),
])
def test_what_is_not_modelled_yet_is_refused_by_name(change, message):
    data = copy.deepcopy(two_stores("proportional"))
    change(data)
    with pytest.raises(NetworkFileError, match=message):
        simulator_from_spec(parse_network(data))


# -- the simpy twin on random networks ------------------------------------------------------------


class OrderUpTo(nn.Module):
    """Order up to a level on each location's position, split equally over its inbound links."""

    def __init__(self, sim, levels: Tensor) -> None:
        super().__init__()
        net = sim.network
        self.slots, self.levels = sim.slots, levels
        self.dst = torch.tensor([d for _, d in net.edges])
        self.share = torch.tensor([1.0 / len(net.inbound(d)) for _, d in net.edges])

    def forward(self, obs: Observation) -> Tensor:
        gap = (self.levels - inventory_position(obs, self.slots)).clamp_min(0.0)
        return gap[:, self.dst] * self.share


@st.composite
def networks(draw) -> dict:
    """Suppliers -> warehouses -> stores with random lead times (0-4), costs, capacities,
    in-transit holding, multi-sourcing and either allocation rule."""
    n_sup, n_wh, n_st = draw(st.integers(1, 2)), draw(st.integers(0, 2)), draw(st.integers(1, 3))
    cost = st.floats(0, 2, allow_nan=False).map(lambda x: round(x, 2))
    lost = draw(st.booleans())
    locs = [{"name": f"s{i}", "kind": "supplier"} for i in range(n_sup)]
    locs += [{"name": f"w{i}", "kind": "warehouse", "holding_cost": draw(cost),
              "initial_stock": draw(st.sampled_from([0, 10]))} for i in range(n_wh)]
    locs += [{"name": f"r{i}", "kind": "store", "holding_cost": draw(cost),
              "demand": {"distribution": "poisson", "mean": draw(st.sampled_from([1, 3, 6]))},
              "shortage": {"type": "lost_sales" if lost else "backlog", "penalty": draw(cost)}}
             for i in range(n_st)]

    def link(src: str, dst: str) -> dict:
        out = {"from": src, "to": dst, "lead_time": draw(st.integers(0, 4)),
               "unit_cost": draw(cost), "transit_holding_cost": draw(cost)}
        if draw(st.booleans()):
            out["capacity"] = draw(st.sampled_from([0, 2, 5]))
        return out

    links = [link(f"s{i % n_sup}", f"w{i}") for i in range(n_wh)]
    for i in range(n_st):
        feeders = [f"w{j}" for j in range(n_wh)] or [f"s{j}" for j in range(n_sup)]
        for src in draw(st.lists(st.sampled_from(feeders), min_size=1, max_size=2, unique=True)):
            links.append(link(src, f"r{i}"))
    for node in [f"w{j}" for j in range(n_wh)] + [f"s{j}" for j in range(n_sup)]:
        if not any(x["from"] == node for x in links):
            links.append(link(node, "w0" if n_wh and node.startswith("s") else "r0"))
    return {"allocation": draw(st.sampled_from(["proportional", "priority"])),
            "locations": locs, "links": links}


@settings(max_examples=30, deadline=None)
@given(networks(), st.integers(0, 2**16), st.lists(st.sampled_from([4.0, 12.0, 25.0]),
                                                  min_size=5, max_size=5))
def test_twin_matches_the_simulator_on_random_networks(data, seed, level_choices):
    sim = simulator_from_spec(parse_network(data))
    trace = sim.sample_trace(2, 12, seed=seed)
    levels = torch.tensor(level_choices)[: sim.network.n_nodes]
    policy = OrderUpTo(sim, levels)
    with torch.no_grad():
        result = rollout(sim, policy, trace, keep_metrics=True)
    twin = replay(sim, policy, trace)
    torch_costs = -result.rewards.double()
    torch.testing.assert_close(twin.costs, torch_costs, rtol=1e-5, atol=1e-4)
    for name, values in twin.metrics.items():
        torch.testing.assert_close(values, result.metrics[name].double(), rtol=1e-5, atol=1e-4,
                                   msg=lambda m, name=name: f"{name}: {m}")
