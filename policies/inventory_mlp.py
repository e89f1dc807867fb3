"""MLP policy for inventory networks, and the feature scaling shared with the GNN policy.

Quantities (stock, pipelines, demand lags) are divided by a fixed per-location scale, the mean
demand of everything the location supplies, so inputs are O(1) whatever the demand level, and
the orders come out of ``softplus(.) * scale`` initialised to order the mean demand: training
starts from a sensible policy instead of spending its first hundred steps finding the scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from oprl.core import Observation, WholeUnitActions
from oprl.nn import mlp, shrink_last_layer
from oprl.policies.inventory_heuristics import critical_ratios
from oprl.simulators.inventory import SUPPLIER, InventorySimulator
from oprl.simulators.inventory_rules import echelon_members

SOFTPLUS_ONE = math.log(math.e - 1.0)  # softplus(SOFTPLUS_ONE) == 1
LEAD_SCALE = 4.0  # typical lead time; keeps lead-time inputs O(1)


def node_scales(sim: InventorySimulator) -> Tensor:
    """Mean demand each location serves (its echelon), the supplier last: ``[N+1]``."""
    mean = sim.demand_moments()[0].float()
    net = sim.network
    store_index = {s: i for i, s in enumerate(net.stores)}
    scales = [
        float(sum(mean[store_index[m]] for m in net.downstream(n) if m in store_index))
        for n in range(net.n_nodes)
    ]
    scales.append(float(mean.sum()))
    return torch.tensor(scales).clamp_min(1e-3)


def edge_scales(sim: InventorySimulator) -> Tensor:
    """Order scale of each edge: the mean demand its destination serves ``[E]``."""
    return node_scales(sim)[sim.edge_dst]


def edge_index_with_supplier(sim: InventorySimulator) -> Tensor:
    """``[2, E]`` source/destination of every edge, the supplier numbered N (the last row)."""
    n = sim.network.n_nodes
    return torch.stack([torch.where(sim.edge_src == SUPPLIER, n, sim.edge_src), sim.edge_dst])


class InventoryFeatures(nn.Module):
    """Raw simulator observations -> scaled node ``[B, N+1, node_dim]`` and edge
    ``[B, E, edge_dim]`` features. Pipelines are padded (or cut) to ``slots`` so one set of
    weights can serve simulators with different lead times."""

    def __init__(self, sim: InventorySimulator, slots: int | None = None) -> None:
        super().__init__()
        self.node_layout, self.edge_layout = sim.node_layout, sim.edge_layout
        self.slots = sim.slots if slots is None else int(slots)
        self.lags = sim.params.demand_lags
        ns = node_scales(sim)
        self.register_buffer("node_scale", ns, persistent=False)
        self.register_buffer("edge_scale", ns[edge_index_with_supplier(sim)[1]], persistent=False)
        self.register_buffer("global_scale", sim.demand_moments()[0].float().mean(), persistent=False)
        # replayed series: each episode's own level (its store's mean-demand feature, from the
        # trace's ``scale``) replaces the fixed scale, so slow and fast movers share weights
        self.per_episode = sim.params.demand.kind == "series"
        if self.per_episode:
            self.register_buffer("member", echelon_members(sim), persistent=False)
            self.register_buffer("edge_dst", edge_index_with_supplier(sim)[1], persistent=False)
        self.node_dim = 2 * self.slots + 11 + self.lags
        self.position_column = 1 + 2 * self.slots  # scaled inventory position in `nodes`
        self.edge_dim = self.slots + 4
        # hoisted out of the per-period path: the log size of each location, and one divisor
        # per column for the contiguous runs (mean demand, lead time, kind, is_supplier) and
        # (lead time, order cost, from_supplier); dividing by 1 is exact
        self.register_buffer("node_size", torch.log(ns.unsqueeze(-1) / self.global_scale),
                             persistent=False)
        at, et = self.node_layout, self.edge_layout
        self._node_static = slice(at["mean_demand"].start, at["is_supplier"].stop)
        self._costs = slice(at["holding"].start, at["penalty"].stop)
        self.register_buffer("node_static_divisor", torch.cat([
            self.global_scale.reshape(1), torch.tensor([LEAD_SCALE]),
            torch.ones(self._node_static.stop - at["kind"].start)]), persistent=False)
        self._edge_static = slice(et["lead_time"].start, et["from_supplier"].stop)
        self.register_buffer("edge_static_divisor", torch.tensor([LEAD_SCALE, 1.0, 1.0]),
                             persistent=False)

    def _pad(self, x: Tensor) -> Tensor:
        extra = self.slots - x.shape[-1]
        if extra == 0:
            return x
        if extra > 0:
            return torch.nn.functional.pad(x, (0, extra))
        return x[..., : self.slots]

    def scales(self, obs: Observation) -> tuple[Tensor, Tensor]:
        """Node ``[N+1]`` and edge ``[E]`` scales, or ``[B, N+1]`` and ``[B, E]`` per episode
        on replayed series: the level of every store a location serves, summed."""
        if not self.per_episode:
            return self.node_scale, self.edge_scale
        n = self.member.shape[0]
        level = obs["nodes"][:, :n, self.node_layout["mean_demand"]].squeeze(-1)  # 0 off stores
        node = torch.cat([level @ self.member.T, level.sum(-1, keepdim=True)], -1).clamp_min(1e-3)
        return node, node.index_select(1, self.edge_dst)

    def nodes(self, obs: Observation) -> Tensor:
        x, at = obs["nodes"], self.node_layout
        node_scale = self.scales(obs)[0]
        scale = node_scale.unsqueeze(-1)  # [N+1, 1] or [B, N+1, 1]
        onhand = x[..., at["onhand"]] / scale
        inbound = x[..., at["pipeline"]] / scale
        position = onhand + inbound.sum(-1, keepdim=True)
        cumulative = onhand + inbound.cumsum(-1)  # stock reachable within j+1 periods
        costs = torch.log1p(x[..., self._costs])  # holding, penalty
        static = x[..., self._node_static] / self.node_static_divisor  # mean, lead, kind, supplier
        size = self.node_size if not self.per_episode else torch.log(scale / self.global_scale)
        parts = [onhand, self._pad(inbound), self._pad(cumulative), position, costs, static,
                 size.expand_as(onhand)]
        if self.lags:
            parts.append(x[..., at["demand_lags"]] / scale)
        return torch.cat(parts, dim=-1)

    def edges(self, obs: Observation) -> Tensor:
        e, at = obs["edges"], self.edge_layout
        pipe = e[..., at["pipeline"]] / self.scales(obs)[1].unsqueeze(-1)
        static = e[..., self._edge_static] / self.edge_static_divisor  # lead, cost, from supplier
        return torch.cat([self._pad(pipe), pipe.sum(-1, keepdim=True), static], dim=-1)


def scaled_orders(raw: Tensor, scale: Tensor) -> Tensor:
    """Non-negative orders in units of demand: ``softplus(raw + c) * scale``, with c chosen so a
    zero output orders exactly the mean demand."""
    return torch.nn.functional.softplus(raw + SOFTPLUS_ONE) * scale


def integer_demand(sim: InventorySimulator) -> bool:
    """Whether demand comes in whole units (Poisson), so orders should too."""
    return sim.params.demand.kind == "poisson"


def whole_units(orders: Tensor, enabled: bool, training: bool) -> Tensor:
    """Orders rounded to whole units outside training.

    With integer demand the expected cost is piecewise linear in the order, kinked at whole
    units, and the optimum sits on a kink; a continuous policy trained by pathwise gradients
    hovers around the kinks and pays for every fraction it is off (0.2-0.4% on the lost-sales
    instances), while rounding its orders recovers the integer decision it approximates.
    Training keeps the continuous orders, whose pathwise gradients HDPO needs."""
    return torch.round(orders) if enabled and not training else orders


class BaseStockHead(nn.Module):
    """Orders ``softplus_k(level - position + raw) * scale`` per edge: a learnable order-up-to
    level on the destination's echelon inventory position plus the network's correction ``raw``,
    through a sharp softplus (a smooth ``max(., 0)``). With ``raw = 0`` it is an echelon
    base-stock policy, optimal for backlogged single stores and serial systems, so the network
    need not learn the identity in the position. Levels start at the mean demand over the
    echelon's lead times plus one period, plus the newsvendor safety stock on a store's edges
    (more than Adam moves one parameter in a few hundred steps); docs/inventory.md, "Learned
    policies and training"."""

    def __init__(self, sim: InventorySimulator, features: InventoryFeatures, sharpness: float) -> None:
        super().__init__()
        n = sim.network.n_nodes
        lead = sim.params.lead_time.float()
        lead = lead.mean(0) if lead.dim() == 2 else lead
        self.level = nn.Parameter(lead + _downstream_lead(sim, lead)[sim.edge_dst] + 1.0
                                  + _store_safety(sim, lead))
        self.register_buffer("member", echelon_members(sim), persistent=False)
        self.register_buffer("dst", sim.edge_dst, persistent=False)
        self.register_buffer("node_scale", features.node_scale[:n], persistent=False)
        self.sharpness = float(sharpness)
        self.position_column = features.position_column

    def forward(self, nodes: Tensor, raw: Tensor, scale: Tensor,
                node_scale: Tensor | None = None) -> Tensor:
        """``scale``: each edge's order scale; ``node_scale``: each location's (default: the
        fixed ones), ``[B, ...]`` when scaled per episode."""
        n = self.member.shape[0]
        node_scale = self.node_scale if node_scale is None else node_scale[..., :n]
        own = nodes[:, :n, self.position_column] * node_scale
        echelon = own @ self.member.T  # [B, N] units
        gap = self.level - echelon.index_select(1, self.dst) / scale + raw
        return torch.nn.functional.softplus(gap, beta=self.sharpness) * scale


def _store_safety(sim: InventorySimulator, lead: Tensor) -> Tensor:
    """Per edge, the safety stock of a newsvendor over the lead time plus one period when it
    feeds a store: z * cv * sqrt(L + 1) in units of the store's mean demand, z the normal
    quantile of p / (p + h); 0 on edges into other locations."""
    mean, std = sim.demand_moments()
    ratios = critical_ratios(sim)
    safety = torch.zeros(sim.network.n_edges)
    for i, store in enumerate(sim.network.stores):
        ratio = float(ratios[i])
        z = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(min(max(ratio, 1e-6), 1 - 1e-6))))
        cv = float(std[i] / mean[i].clamp_min(1e-6))
        into = sim.edge_dst == store
        safety[into] = z * cv * (lead[into] + 1.0).sqrt()
    return safety


def _downstream_lead(sim: InventorySimulator, lead: Tensor) -> Tensor:
    """Per location, the longest chain of (mean inbound) lead times below it to a store."""
    net = sim.network
    count = torch.zeros(net.n_nodes).index_add(0, sim.edge_dst, torch.ones_like(lead))
    inbound = torch.zeros(net.n_nodes).index_add(0, sim.edge_dst, lead) / count.clamp_min(1.0)
    below = torch.zeros(net.n_nodes)
    for node in reversed(net.topological_order()):
        children = net.children(node)
        if children:
            below[node] = max(float(inbound[c] + below[c]) for c in children)
    return below


class InventoryMLP(nn.Module, WholeUnitActions):
    """Flattened scaled node and edge features -> one non-negative order per edge ``[B, E]``.

    ``head='base_stock'`` (default) adds the network's output to a learnable echelon
    base-stock rule (`BaseStockHead`); ``head='softplus'`` orders ``softplus(raw) * scale``
    (starts at the mean demand). ``integer_orders`` (default: when demand is Poisson) rounds
    the orders to whole units in eval mode (`whole_units`): dev evaluation, benchmarks and
    deployment see the integer policy, training its continuous relaxation."""

    def __init__(
        self,
        sim: InventorySimulator,
        hidden: Sequence[int] = (128, 128),
        activation: type[nn.Module] = nn.ELU,
        init_gain: float = 0.01,
        head: str = "base_stock",
        sharpness: float = 8.0,
        integer_orders: bool | None = None,
    ) -> None:
        super().__init__()
        if head not in ("softplus", "base_stock"):
            raise ValueError(f"head: {head!r}; allowed 'softplus', 'base_stock'")
        self.features = InventoryFeatures(sim)
        n_in = (sim.network.n_nodes + 1) * self.features.node_dim
        n_in += sim.network.n_edges * self.features.edge_dim
        self.net = mlp([n_in, *hidden, sim.network.n_edges], activation)
        shrink_last_layer(self.net, init_gain)
        self.head = BaseStockHead(sim, self.features, sharpness) if head == "base_stock" else None
        self.integer_orders = integer_demand(sim) if integer_orders is None else bool(integer_orders)

    def forward(self, obs: Observation) -> Tensor:
        nodes = self.features.nodes(obs)
        edges = self.features.edges(obs).flatten(1)
        raw = self.net(torch.cat([nodes.flatten(1), edges], dim=-1))
        node_scale, edge_scale = self.features.scales(obs)
        if self.head is not None:
            orders = self.head(nodes, raw, edge_scale, node_scale)
        else:
            orders = scaled_orders(raw, edge_scale)
        return whole_units(orders, self.integer_orders, self.training)
