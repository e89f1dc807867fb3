"""Order-up-to rules as batched policies: base-stock, capped base-stock, echelon base-stock.

These are the optimal structure of the backlogged one-store and serial systems, so they sit with
the simulator: the solvers simulate their optima with them and the heuristics tune their levels.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from oprl.core import Observation, StackablePolicy
from oprl.simulators.inventory import InventorySimulator, node_feature_layout


def inventory_position(obs: Observation, slots: int) -> Tensor:
    """On-hand plus everything in the inbound pipelines of each location ``[B, N]``."""
    if "inbound" in obs:  # the simulator's own observation carries it ready-made
        return obs["onhand"] + obs["inbound"]
    at = node_feature_layout(slots, 0)
    nodes = obs["nodes"][:, :-1]  # drop the supplier row
    return nodes[..., at["onhand"]].squeeze(-1) + nodes[..., at["pipeline"]].sum(-1)


def primary_inbound_edges(sim: InventorySimulator) -> Tensor:
    """The edge each location orders on under a base-stock rule: its only inbound edge, or,
    where it has several, the one with the shortest lead time (then the lowest order cost)."""
    lead = sim.params.lead_time.float()
    cost = sim.params.order_cost
    lead = lead.mean(0) if lead.dim() == 2 else lead
    cost = cost.mean(0) if cost.dim() == 2 else cost
    chosen = []
    for node in range(sim.network.n_nodes):
        edges = sim.network.inbound(node)
        chosen.append(min(edges, key=lambda e: (float(lead[e]), float(cost[e]), e)))
    return torch.tensor(chosen)


class _LevelPolicy(nn.Module, StackablePolicy):
    def __init__(self, sim: InventorySimulator, levels: Tensor | float) -> None:
        super().__init__()
        self.slots = sim.slots
        self.n_edges = sim.network.n_edges
        levels = torch.as_tensor(levels, dtype=torch.float32)
        if levels.dim() == 0:
            levels = levels.expand(sim.network.n_nodes).clone()
        self.register_buffer("levels", levels)
        self.register_buffer("edge_of_node", primary_inbound_edges(sim))
        # edge e orders for node e (every location has one inbound edge, in node order)
        self.orders_are_edges = self.n_edges == len(self.edge_of_node) and torch.equal(
            self.edge_of_node, torch.arange(self.n_edges))

    def _orders_by_node(self, obs: Observation) -> Tensor:
        raise NotImplementedError

    @classmethod
    def stacked(cls, policies: list[_LevelPolicy], episodes: int) -> _LevelPolicy:
        """One policy acting like ``policies[k]`` on rows ``[k*episodes, (k+1)*episodes)``:
        per-sample levels, so many settings share one batched rollout (`oprl.sweep`)."""
        first = policies[0]
        same_layout = all(
            type(p) is type(first) and p.slots == first.slots
            and torch.equal(p.edge_of_node, first.edge_of_node)
            and all(torch.equal(getattr(p, b), getattr(first, b)) for b in ("echelon",)
                    if hasattr(first, b))
            for p in policies)
        if not same_layout:
            raise ValueError("policies: cannot share one batch (types or layouts differ)")
        out = copy.deepcopy(first)
        for name in ("levels", "cap"):
            if hasattr(first, name):
                rows = [getattr(p, name).expand(first.levels.shape[-1]) for p in policies]
                setattr(out, name, torch.stack(rows).repeat_interleave(episodes, dim=0))
        return out

    def forward(self, obs: Observation) -> Tensor:
        per_node = self._orders_by_node(obs)
        if self.orders_are_edges:
            return per_node
        action = torch.zeros(per_node.shape[0], self.n_edges, device=per_node.device)
        return action.index_copy(1, self.edge_of_node, per_node)


class BaseStock(_LevelPolicy):
    """Order up to ``levels`` on each location's inventory position (optimal for a backlogged
    single store: the p/(p+h) quantile of lead-time demand)."""

    def _orders_by_node(self, obs: Observation) -> Tensor:
        return (self.levels - inventory_position(obs, self.slots)).clamp_min(0.0)


class CappedBaseStock(BaseStock):
    """Base-stock with each order capped (Xin 2021): near-optimal for lost sales."""

    def __init__(self, sim: InventorySimulator, levels: Tensor | float, cap: Tensor | float) -> None:
        super().__init__(sim, levels)
        cap = torch.as_tensor(cap, dtype=torch.float32)
        self.register_buffer("cap", cap.expand_as(self.levels).clone() if cap.dim() == 0 else cap)

    def _orders_by_node(self, obs: Observation) -> Tensor:
        return torch.minimum(super()._orders_by_node(obs), self.cap)


class EchelonBaseStock(_LevelPolicy):
    """Order up to ``levels`` on each location's echelon inventory position: its own position
    plus the on-hand and pipelines of everything downstream (Clark & Scarf 1960)."""

    def __init__(self, sim: InventorySimulator, levels: Tensor | float) -> None:
        super().__init__(sim, levels)
        self.register_buffer("echelon", echelon_members(sim))

    def _orders_by_node(self, obs: Observation) -> Tensor:
        echelon_position = inventory_position(obs, self.slots) @ self.echelon.T
        return (self.levels - echelon_position).clamp_min(0.0)


def echelon_members(sim: InventorySimulator) -> Tensor:
    """``[N, N]``: row n marks location n and everything it supplies (its echelon)."""
    n = sim.network.n_nodes
    member = torch.zeros(n, n)
    for node in range(n):
        member[node, sim.network.downstream(node)] = 1.0
    return member
