"""MLP and GNN inventory policies: shapes, non-negativity, gradients, size-agnosticism and
permutation equivariance of the GNN."""

from __future__ import annotations

import pytest
import torch

from oprl.core import rollout
from oprl.nn import GraphEncoder, NodeHead, PairScoreHead
from oprl.policies.inventory_gnn import InventoryGNN
from oprl.policies.inventory_mlp import InventoryMLP
from oprl.simulators import inventory as inv
from oprl.simulators.inventory import SUPPLIER, Demand, InventoryParams, InventorySimulator, Network
from oprl.simulators.inventory_rules import EchelonBaseStock

FACTORIES = {
    "one_store_backlog": lambda: inv.one_store_backlog(lead_time=2),
    "one_store_lost": lambda: inv.one_store_lost(lead_time=0),
    "serial": lambda: inv.serial(),
    "transshipment": lambda: inv.transshipment(n_stores=3),
    "one_warehouse": lambda: inv.one_warehouse(n_stores=4),
    "many_warehouses": lambda: inv.many_warehouses(n_warehouses=2, n_stores=4),
    "lags": lambda: inv.one_store_lost(lead_time=3, demand_lags=3),
}


def _policy(kind: str, sim: InventorySimulator):
    if kind == "gnn":
        return InventoryGNN(sim, hidden=16, layers=2)
    return InventoryMLP(sim, hidden=(16, 16), head="base_stock" if kind == "mlp_bs" else "softplus")


@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize("kind", ["mlp", "mlp_bs", "gnn"])
def test_actions_nonnegative_and_gradients_reach_every_parameter(name: str, kind: str) -> None:
    torch.manual_seed(0)
    sim = FACTORIES[name]()
    policy = _policy(kind, sim)
    # long enough for stock ordered at the top of the serial chain (lead times 2+4+3+4) to
    # reach a store: over fewer periods the cost does not depend on some orders at all
    trace = sim.sample_trace(4, 16, seed=1)
    state = sim.reset(trace)
    action = policy(sim.observe(state, 0, trace))
    assert action.shape == (4, sim.network.n_edges)
    assert (action >= 0).all() and torch.isfinite(action).all()
    cost = sim.cost_per_store_period(rollout(sim, policy, trace).rewards, 0).mean()
    cost.backward()
    missing = [n for n, p in policy.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"


def test_initial_orders_are_the_mean_demand() -> None:
    """Scale-aware output: an untrained policy starts near 'order the mean demand'."""
    sim = inv.one_warehouse(n_stores=3)
    trace = sim.sample_trace(2, 3, seed=0)
    obs = sim.observe(sim.reset(trace), 0, trace)
    mean = sim.demand_moments()[0]
    expected = torch.cat([mean.sum().reshape(1), mean])
    for policy in (InventoryMLP(sim, head="softplus"), InventoryGNN(sim)):
        assert torch.allclose(policy(obs)[0], expected, rtol=0.1)


def test_base_stock_head_without_correction_is_the_base_stock_rule() -> None:
    """With the network's output at zero the head orders max(level - echelon position, 0), up
    to the softplus smoothing (at most log(2) / sharpness mean demands), all along a rollout."""
    sim = inv.serial(store_lead_time=2)
    levels = torch.tensor([40.0, 35.0, 20.0, 18.0])
    policy = InventoryMLP(sim, hidden=(8,), init_gain=0.0, head="base_stock", sharpness=200.0)
    scale = policy.features.edge_scale
    with torch.no_grad():
        policy.head.level.copy_(levels / scale)
    rule = EchelonBaseStock(sim, levels)
    trace = sim.sample_trace(3, 30, seed=4)
    state = sim.reset(trace)
    for t in range(trace.horizon):
        obs = sim.observe(state, t, trace)
        action = policy(obs)
        assert torch.allclose(action, rule(obs), atol=float(scale.max()) * 0.7 / 200.0)
        state = sim.step(state, action, t, trace)[0]


@pytest.mark.parametrize("cls", [InventoryMLP, InventoryGNN])
def test_integer_demand_gets_whole_unit_orders_outside_training(cls) -> None:
    lost = inv.one_store_lost(lead_time=2)  # Poisson demand
    trace = lost.sample_trace(8, 5, seed=0)
    obs = lost.observe(lost.reset(trace), 0, trace)
    policy = cls(lost)
    continuous = policy(obs)  # a fresh module is in training mode
    assert not torch.equal(continuous, continuous.round())
    policy.eval()
    assert torch.equal(policy(obs), continuous.round())
    assert not cls(lost, integer_orders=False).eval()(obs).eq(continuous.round()).all()
    backlog = inv.one_store_backlog(lead_time=2)  # Normal demand: orders stay continuous
    trace = backlog.sample_trace(8, 5, seed=0)
    obs = backlog.observe(backlog.reset(trace), 0, trace)
    orders = cls(backlog).eval()(obs)
    assert not torch.equal(orders, orders.round())


@pytest.mark.parametrize("lead,penalty", [(1, 4.0), (10, 19.0), (20, 39.0)])
def test_base_stock_head_starts_at_the_newsvendor_level(lead, penalty) -> None:
    """A backlogged store's head starts at (about) the optimal base-stock level: training
    only refines it, however much safety stock a long lead time and high penalty ask for."""
    from oprl.solvers.inventory import base_stock_optimum

    sim = inv.one_store_backlog(lead_time=lead, penalty=penalty)
    policy = InventoryMLP(sim)
    start = float(policy.head.level[0] * policy.features.edge_scale[0])
    assert start == pytest.approx(base_stock_optimum(sim).details["level"], abs=0.3)


def test_unknown_head_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="head"):
        InventoryMLP(inv.serial(), head="relu")


def test_gnn_same_weights_serve_different_store_counts() -> None:
    torch.manual_seed(0)
    small = InventoryGNN(inv.transshipment(n_stores=3), hidden=16, layers=2)
    for n in (5, 12):
        sim = inv.transshipment(n_stores=n)
        big = InventoryGNN(sim, hidden=16, layers=2)
        big.load_state_dict(small.state_dict())
        trace = sim.sample_trace(3, 5, seed=0)
        with torch.no_grad():
            out = rollout(sim, big, trace)
        assert out.rewards.shape == (3, 5) and torch.isfinite(out.rewards).all()


def _permuted_one_warehouse(sim: InventorySimulator, perm: torch.Tensor) -> InventorySimulator:
    """The same network with its stores listed in the order ``perm``."""
    p = sim.params
    s = len(perm)
    nodes = torch.cat([torch.tensor([0]), 1 + perm])
    return InventorySimulator(InventoryParams(
        network=Network(("warehouse",) + ("store",) * s,
                        ((SUPPLIER, 0),) + tuple((0, i + 1) for i in range(s))),
        demand=Demand("normal", p.demand.mean[perm], p.demand.std[perm], p.demand.correlation),
        lead_time=p.lead_time[nodes], holding=p.holding[nodes], penalty=p.penalty[perm],
        order_cost=p.order_cost[nodes], lost_sales=True,
    ))


def test_gnn_is_equivariant_to_permuting_stores() -> None:
    torch.manual_seed(0)
    sim = inv.one_warehouse(n_stores=5)
    perm = torch.tensor([3, 0, 4, 2, 1])
    other = _permuted_one_warehouse(sim, perm)
    policy = InventoryGNN(sim, hidden=16, layers=2)
    twin = InventoryGNN(other, hidden=16, layers=2)
    twin.load_state_dict(policy.state_dict())
    trace = sim.sample_trace(3, 4, seed=2)
    state = sim.reset(trace)
    for t in range(4):  # non-trivial stock levels
        obs = sim.observe(state, t, trace)
        state, _, _ = sim.step(state, policy(obs).detach(), t, trace)
    obs = sim.observe(state, 4 - 1, trace)
    node_order = torch.cat([torch.tensor([0]), 1 + perm, torch.tensor([6])])
    edge_order = torch.cat([torch.tensor([0]), 1 + perm])
    permuted = {"nodes": obs["nodes"][:, node_order], "edges": obs["edges"][:, edge_order]}
    with torch.no_grad():
        expected = policy(obs)[:, edge_order]
        got = twin(permuted)
    assert torch.allclose(got, expected, atol=1e-5)


def test_encoder_heads_are_reusable() -> None:
    """The encoder takes any graph and feature sizes; node and pair heads sit on top."""
    enc = GraphEncoder(node_dim=5, edge_dim=2, hidden=8, layers=2)
    edge_index = torch.tensor([[0, 1, 2], [1, 2, 3]])
    node_h, edge_h = enc(torch.randn(3, 4, 5), torch.randn(3, 3, 2), edge_index)
    assert node_h.shape == (3, 4, 8) and edge_h.shape == (3, 3, 8)
    assert NodeHead(8, 2)(node_h).shape == (3, 4, 2)
    assert PairScoreHead(8)(node_h[:, :2], node_h[:, 2:]).shape == (3, 2, 2)
