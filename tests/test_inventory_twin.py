"""Differential tests: the batched torch simulator and the simpy event twin, fed the same trace
and the same policy, must book the same costs period by period (and show the same
observations), on every inventory scenario."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from oprl.core import Observation, rollout
from oprl.policies.inventory_heuristics import newsvendor_levels
from oprl.simulators import inventory as inv
from oprl.simulators.events.inventory import observation, replay, replay_episode, shipments_from
from oprl.simulators.inventory_data import real_data
from oprl.simulators.inventory_rules import BaseStock, EchelonBaseStock, inventory_position

DATA = Path(__file__).parent / "data" / "tiny_demand.csv"
BATCH, HORIZON = 3, 40


class SplitOrderUpTo(nn.Module):
    """Order up to a level on each location's position, split equally over its inbound edges:
    a deterministic policy for networks where base-stock rules do not apply."""

    def __init__(self, sim: inv.InventorySimulator, levels: Tensor) -> None:
        super().__init__()
        net = sim.network
        self.slots = sim.slots
        self.levels = levels
        self.dst = torch.tensor([d for _, d in net.edges])
        self.share = torch.tensor([1.0 / len(net.inbound(d)) for _, d in net.edges])

    def forward(self, obs: Observation) -> Tensor:
        gap = (self.levels - inventory_position(obs, self.slots)).clamp_min(0.0)
        return gap[:, self.dst] * self.share


class ConstantOrders(nn.Module):
    """The same order on every edge every period (huge ones starve no one but cost a lot)."""

    def __init__(self, orders: Tensor) -> None:
        super().__init__()
        self.orders = orders

    def forward(self, obs: Observation) -> Tensor:
        return self.orders.expand(obs["nodes"].shape[0], -1)


class LagChaser(nn.Module):
    """Order up to (L+1) x the mean of the demand lags shown: exercises the lag features."""

    def __init__(self, sim: inv.InventorySimulator, cover: float) -> None:
        super().__init__()
        self.sim, self.cover = sim, cover

    def forward(self, obs: Observation) -> Tensor:
        lags = obs["nodes"][:, :-1, 1 + self.sim.slots + 8 :]
        target = self.cover * lags.mean(-1)
        return (target - inventory_position(obs, self.sim.slots)).clamp_min(0.0)


def base_stock(sim: inv.InventorySimulator) -> nn.Module:
    return BaseStock(sim, newsvendor_levels(sim))


def echelon(sim: inv.InventorySimulator) -> nn.Module:
    levels = newsvendor_levels(sim)
    echelon_levels = torch.stack(
        [levels[sim.network.downstream(n)].sum() for n in range(len(levels))]
    )
    return EchelonBaseStock(sim, echelon_levels)


def split(sim: inv.InventorySimulator) -> nn.Module:
    return SplitOrderUpTo(sim, newsvendor_levels(sim) * 0.8)


def constant(value: float) -> Callable[[inv.InventorySimulator], nn.Module]:
    return lambda sim: ConstantOrders(torch.full((1, sim.network.n_edges), value))


def with_params(sim: inv.InventorySimulator, **changes) -> inv.InventorySimulator:
    """The same scenario with some parameters replaced (e.g. per-sample ``[batch, ...]``)."""
    return inv.InventorySimulator(dataclasses.replace(sim.params, **changes))


def per_sample_lead_serial() -> inv.InventorySimulator:
    lead = torch.tensor([[2, 4, 3, 1], [0, 1, 0, 2], [1, 0, 2, 0]])
    return with_params(inv.serial(), lead_time=lead)


def per_sample_costs_warehouse() -> inv.InventorySimulator:
    sim = inv.one_warehouse(n_stores=2, instance_seed=3)
    holding = torch.tensor([[0.3, 1.0, 1.2], [0.0, 0.5, 0.5], [1.0, 2.0, 0.1]])
    penalty = torch.tensor([[9.0, 4.0], [19.0, 19.0], [1.0, 39.0]])
    order_cost = torch.tensor([[0.0, 0.1, 0.2], [0.5, 0.0, 0.0], [0.2, 0.3, 0.4]])
    return with_params(sim, holding=holding, penalty=penalty, order_cost=order_cost,
                       initial_onhand=torch.tensor([[20.0, 5.0, 0.0], [0.0] * 3, [3.0, 0, 9]]))


CASES: dict[str, tuple[Callable[[], inv.InventorySimulator], Callable]] = {
    "one_store_backlog": (lambda: inv.one_store_backlog(lead_time=4), base_stock),
    "one_store_backlog_L0": (lambda: inv.one_store_backlog(lead_time=0), base_stock),
    "one_store_backlog_per_sample": (
        lambda: inv.one_store_backlog(lead_time=torch.tensor([[0], [3], [6]]),
                                      penalty=torch.tensor([[4.0], [19.0], [39.0]])),
        lambda sim: SplitOrderUpTo(sim, torch.tensor([20.0])),
    ),
    "one_store_lost": (lambda: inv.one_store_lost(lead_time=2), base_stock),
    "one_store_lost_L0": (lambda: inv.one_store_lost(lead_time=0), base_stock),
    "one_store_lost_huge_orders": (lambda: inv.one_store_lost(lead_time=1), constant(1e4)),
    "serial": (lambda: inv.serial(), echelon),
    "serial_L0": (lambda: inv.serial(lead_times=[0, 1, 0, 2]), echelon),
    "serial_per_sample_lead": (
        per_sample_lead_serial,
        lambda sim: SplitOrderUpTo(sim, torch.tensor([30.0, 25.0, 20.0, 15.0])),
    ),
    "transshipment": (lambda: inv.transshipment(n_stores=3, correlation=0.5), base_stock),
    "transshipment_L0": (lambda: inv.transshipment(n_stores=2, store_lead_time=0), base_stock),
    "transshipment_no_orders": (lambda: inv.transshipment(
        n_stores=3, initial_onhand=[30.0, 0, 0, 0]), constant(0.0)),
    "one_warehouse": (lambda: inv.one_warehouse(n_stores=3), base_stock),
    "one_warehouse_echelon": (lambda: inv.one_warehouse(n_stores=2, instance_seed=1), echelon),
    "one_warehouse_per_sample_costs": (
        per_sample_costs_warehouse, lambda sim: SplitOrderUpTo(sim, torch.tensor([30.0, 15, 15]))
    ),
    "many_warehouses": (lambda: inv.many_warehouses(n_warehouses=2, n_stores=4), split),
    "many_warehouses_constant": (
        lambda: inv.many_warehouses(n_warehouses=3, n_stores=3, initial_onhand=10.0),
        constant(2.0),
    ),
    "real_data_lost": (lambda: real_data(DATA, lead_time=2, demand_lags=3, horizon=12,
                                             warmup=4), lambda sim: LagChaser(sim, 3.0)),
    "real_data_backlog_L0": (lambda: real_data(DATA, lead_time=0, lost_sales=False,
                                                   demand_lags=2, horizon=12, warmup=4),
                             lambda sim: BaseStock(sim, 10.0)),
}


class Recorder(nn.Module):
    """Wraps a policy and keeps every observation it was shown."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy, self.seen = policy, []

    def forward(self, obs: Observation) -> Tensor:
        self.seen.append({k: v.clone() for k, v in obs.items()})
        return self.policy(obs)


@pytest.mark.parametrize("case", sorted(CASES))
def test_twin_matches_torch_simulator(case: str) -> None:
    build, make_policy = CASES[case]
    sim = build()
    horizon = min(HORIZON, 12) if sim.params.demand.kind == "series" else HORIZON
    trace = sim.sample_trace(BATCH, horizon, seed=7)
    policy = make_policy(sim)

    torch_side = Recorder(policy)
    with torch.no_grad():
        result = rollout(sim, torch_side, trace, keep_metrics=True)
    twin_side = Recorder(policy)
    twin = replay(sim, twin_side, trace)

    torch_costs = -result.rewards.double()
    scale = torch_costs.abs().max().item() + 1.0
    torch.testing.assert_close(twin.costs, torch_costs, rtol=1e-5, atol=1e-5 * scale)
    for name, values in twin.metrics.items():
        ref = result.metrics[name].double()
        torch.testing.assert_close(values, ref, rtol=1e-5, atol=1e-5 * (ref.abs().max() + 1.0),
                                   msg=lambda m, name=name: f"{name}: {m}")
    assert twin.costs.shape == (BATCH, horizon)
    assert (twin.costs > 0).any()
    # the policy saw the same observations (twin episode b, period t  <->  torch row b at t)
    for b in range(BATCH):
        for t in range(horizon):
            for key in ("nodes", "edges"):
                ref = torch_side.seen[t][key][b : b + 1]
                got = twin_side.seen[b * horizon + t][key]
                torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4 * (ref.abs().max() + 1))


def test_twin_replays_single_episode_and_rejects_bad_index() -> None:
    sim = inv.one_store_lost(lead_time=1)
    trace = sim.sample_trace(2, 10, seed=0)
    log = replay_episode(sim, base_stock(sim), trace, episode=1)
    assert len(log["cost"]) == 10
    with pytest.raises(ValueError, match="episode"):
        replay_episode(sim, base_stock(sim), trace, episode=2)


def test_twin_rejects_bad_action_shape() -> None:
    sim = inv.serial()
    trace = sim.sample_trace(1, 5, seed=0)
    with pytest.raises(ValueError, match="action"):
        replay(sim, lambda obs: torch.zeros(1, 2), trace)


def test_twin_observation_at_start_matches_reset() -> None:
    sim = inv.one_warehouse(n_stores=2, demand_lags=2, initial_onhand=[5.0, 1.0, 2.0])
    trace = sim.sample_trace(1, 5, seed=0)
    seen = []
    replay(sim, lambda obs: seen.append(obs) or torch.zeros(1, sim.network.n_edges), trace)
    ref = sim.observe(sim.reset(trace), 0, trace)
    for key in ("nodes", "edges"):
        torch.testing.assert_close(seen[0][key], ref[key])
    assert observation.__doc__  # the layout helper is public for other twins' reuse


@pytest.mark.parametrize(
    ("kind", "onhand", "orders", "expected"),
    [
        ("warehouse", 10.0, [3.0, 4.0], [3.0, 4.0]),  # enough stock: ship as ordered
        ("warehouse", 6.0, [6.0, 3.0], [4.0, 2.0]),  # short: proportional
        ("warehouse", -1.0, [1.0, 1.0], [0.0, 0.0]),  # nothing on hand
        ("transship", 6.0, [1.0, 2.0], [2.0, 4.0]),  # forwards all stock in proportion
        ("transship", 6.0, [0.0, 0.0], [3.0, 3.0]),  # nothing ordered: equal split
    ],
)
def test_shipping_rule(kind: str, onhand: float, orders: list[float], expected: list[float]) -> None:
    assert shipments_from(kind, onhand, orders) == pytest.approx(expected)
