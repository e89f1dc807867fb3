"""Classical inventory policies, written as parameter-free ``nn.Module``s over observations.

Levels may be ``[N]`` or per-sample ``[batch, N]``: a batch of candidate levels is evaluated in
one rollout, which is how `tune_levels` searches them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from scipy.stats import norm
from torch import Tensor, nn

from oprl.core import Observation, Trace, rollout
from oprl.simulators.inventory import InventorySimulator
from oprl.simulators.inventory_rules import (
    BaseStock,
    CappedBaseStock,
    EchelonBaseStock,
    inventory_position,
    primary_inbound_edges,
)


def critical_ratios(sim: InventorySimulator) -> Tensor:
    """Each store's newsvendor critical ratio p / (p + h) ``[S]`` (per-sample costs averaged)."""
    p = sim.params
    holding = p.holding if p.holding.dim() == 1 else p.holding.mean(0)
    penalty = p.penalty if p.penalty.dim() == 1 else p.penalty.mean(0)
    return penalty / (penalty + holding[sim.network.stores])


def newsvendor_levels(sim: InventorySimulator) -> Tensor:
    """Base-stock levels from a Normal approximation of each store's demand over its lead time
    plus one period at the critical ratio p/(p+h); an upstream location covers the mean demand
    of the stores it serves over its own lead time plus one period."""
    mean, std = sim.demand_moments()
    p = sim.params
    lead = p.lead_time.float()
    if lead.dim() == 2:
        raise ValueError("newsvendor: per-sample lead times are not supported")
    levels = torch.zeros(sim.network.n_nodes)
    ratios = critical_ratios(sim)
    primary = primary_inbound_edges(sim)
    for i, store in enumerate(sim.network.stores):
        cover = lead[primary[store]] + 1
        levels[store] = mean[i] * cover + float(norm.ppf(float(ratios[i]))) * std[i] * cover.sqrt()
    for node in range(sim.network.n_nodes):
        if sim.network.kinds[node] != "store":
            served = [i for i, s in enumerate(sim.network.stores) if s in sim.network.downstream(node)]
            levels[node] = mean[served].sum() * (lead[primary[node]] + 1)
    return levels.clamp_min(0.0)


def evaluate_levels(
    sim: InventorySimulator,
    make_policy: Callable[[Tensor], nn.Module],
    candidates: Tensor,
    trace: Trace,
    warmup: int,
) -> Tensor:
    """Mean cost per store-period of each candidate ``[K, ...]`` on the same trace, all K
    candidates in one batched rollout (candidate k runs on a copy of every episode)."""
    k, b = candidates.shape[0], trace.batch
    tiled = Trace({n: v.repeat(k, *([1] * (v.dim() - 1))) for n, v in trace.data.items()})
    levels = candidates.to(trace.device).repeat_interleave(b, dim=0)
    with torch.no_grad():
        result = rollout(sim, make_policy(levels), tiled)
    return sim.cost_per_store_period(result.rewards, warmup).view(k, b).mean(1)


def _coordinate_search(
    evaluate: Callable[[Tensor], Tensor], x: Tensor, span: Tensor, groups: list[list[int]],
    rounds: int, grid: int,
) -> Tensor:
    """Minimise ``evaluate`` (candidates ``[K, D]`` -> costs ``[K]``) one group of coordinates
    at a time; a group moves its members together by the same relative step."""
    for _ in range(rounds):
        for group in groups:
            steps = torch.linspace(-1, 1, grid)
            cands = x.repeat(grid, 1)
            cands[:, group] = (x[group] + steps[:, None] * span[group]).clamp_min(0.0)
            x = cands[int(evaluate(cands).argmin())]
        span = span / 4
    return x


def tune_base_stock(
    sim: InventorySimulator,
    trace: Trace,
    warmup: int,
    echelon: bool = False,
    rounds: int = 3,
    grid: int = 21,
) -> Tensor:
    """Best base-stock (or echelon base-stock) levels found by coordinate search around the
    newsvendor levels, every grid of candidates evaluated in one batched rollout. With many
    stores the stores move together (one group) and each upstream location alone, which keeps
    the search to a few rollouts whatever the network size."""
    cls = EchelonBaseStock if echelon else BaseStock
    net = sim.network
    levels = newsvendor_levels(sim)
    if echelon:
        levels = torch.stack([levels[net.downstream(n)].sum() for n in range(len(levels))])
    upstream = [[n] for n in range(net.n_nodes) if net.kinds[n] != "store"]
    stores = [[n] for n in net.stores] if len(net.stores) <= 4 else [net.stores]
    return _coordinate_search(
        lambda c: evaluate_levels(sim, lambda lv: cls(sim, lv), c, trace, warmup),
        levels, levels.clamp_min(1.0) * 0.5, upstream + stores, rounds, grid,
    )


def tune_capped_base_stock(
    sim: InventorySimulator, trace: Trace, warmup: int, grid: int = 15, rounds: int = 3
) -> tuple[Tensor, Tensor]:
    """Best (level, cap) pair per location by a joint grid refined ``rounds`` times."""
    level = tune_base_stock(sim, trace, warmup)
    mean = sim.demand_moments()[0]
    cap = torch.zeros_like(level)
    for i, store in enumerate(sim.network.stores):
        cap[store] = 2 * mean[i]
    for node in range(len(level)):
        level_span, cap_span = level[node].clamp_min(1.0) * 0.3, cap[node].clamp_min(1.0) * 0.8
        for _ in range(rounds):
            ls = (level[node] + torch.linspace(-1, 1, grid) * level_span).clamp_min(0)
            cs = (cap[node] + torch.linspace(-1, 1, grid) * cap_span).clamp_min(0.1)
            grid_l, grid_c = torch.meshgrid(ls, cs, indexing="ij")
            lv = level.repeat(grid * grid, 1)
            cp = cap.repeat(grid * grid, 1)
            lv[:, node], cp[:, node] = grid_l.flatten(), grid_c.flatten()
            pairs = torch.stack([lv, cp], dim=1)  # [K, 2, N]
            costs = evaluate_levels(
                sim, lambda x: CappedBaseStock(sim, x[:, 0], x[:, 1]), pairs, trace, warmup
            )
            best = int(costs.argmin())
            level, cap = lv[best], cp[best]
            level_span, cap_span = level_span / 3, cap_span / 3
    return level, cap


class AdaptiveNewsvendor(nn.Module):
    """Order up to mean + z * std of the demand over lead time + 1 periods, both estimated
    from the demand lags in the observation: the classic practitioner's rule on real data."""

    def __init__(self, sim: InventorySimulator, z: Tensor | float) -> None:
        super().__init__()
        if sim.params.demand_lags < 2:
            raise ValueError("demand_lags: the adaptive newsvendor needs at least 2 demand lags")
        self.slots = sim.slots
        self.lags = sim.node_layout["demand_lags"]
        self.register_buffer("z", torch.as_tensor(z, dtype=torch.float32))
        self.n_edges = sim.network.n_edges
        self.register_buffer("edge_of_node", primary_inbound_edges(sim))
        self.register_buffer("cover", sim.params.lead_time.float()[..., primary_inbound_edges(sim)] + 1)

    def forward(self, obs: Observation) -> Tensor:
        nodes = obs["nodes"][:, :-1]
        lags = nodes[..., self.lags]
        seen = (lags.abs().sum(-1, keepdim=True) > 0).float()  # before any demand: use nothing
        mean, std = lags.mean(-1), lags.std(-1)
        z = self.z if self.z.dim() < 1 else self.z.view(-1, *([1] * (mean.dim() - 1)))
        target = (mean * self.cover + z * std * self.cover.sqrt()) * seen.squeeze(-1)
        per_node = (target - inventory_position(obs, self.slots)).clamp_min(0.0)
        action = torch.zeros(per_node.shape[0], self.n_edges, device=per_node.device)
        return action.index_copy(1, self.edge_of_node, per_node)


class SeriesBaseStock(BaseStock):
    """Base-stock with each store's level in units of its episode's series level (the trace's
    ``scale``, seen as the store's mean-demand feature): one tuned number serves slow and fast
    movers, as the learned policy's per-series scaling does."""

    def __init__(self, sim: InventorySimulator, levels: Tensor | float) -> None:
        super().__init__(sim, levels)
        self.mean_column = sim.node_layout["mean_demand"].start

    def _orders_by_node(self, obs: Observation) -> Tensor:
        level = obs["nodes"][:, :-1, self.mean_column]
        return (self.levels * level - inventory_position(obs, self.slots)).clamp_min(0.0)


def tune_series_base_stock(sim: InventorySimulator, trace: Trace, warmup: int) -> Tensor:
    """Best `SeriesBaseStock` level (in series levels) by a refined grid around the lead time
    plus one period of mean demand."""
    cover = float(sim.params.lead_time.float().max()) + 1.0
    start = torch.full((sim.network.n_nodes,), cover)
    return _coordinate_search(
        lambda c: evaluate_levels(sim, lambda lv: SeriesBaseStock(sim, lv), c, trace, warmup),
        start, start.clone(), [list(range(sim.network.n_nodes))], rounds=3, grid=21)


def tune_scalar(
    sim: InventorySimulator, make_policy: Callable[[Tensor], nn.Module], values: Tensor,
    trace: Trace, warmup: int,
) -> float:
    """The best of a grid of scalar settings, all evaluated in one batched rollout."""
    costs = evaluate_levels(sim, lambda v: make_policy(v.squeeze(-1)), values[:, None], trace, warmup)
    return float(values[int(costs.argmin())])


TUNED = "tuned on training traces"


def inventory_heuristics(
    sim: InventorySimulator, trace: Trace, warmup: int
) -> dict[str, tuple[nn.Module, str]]:
    """The classical policies that apply to ``sim`` with how each was set: tuned on ``trace``
    (training traces, never the evaluation traces) or from a closed form."""
    net = sim.network
    policies: dict[str, tuple[nn.Module, str]] = {}
    if sim.params.demand.kind == "series":
        z = tune_scalar(sim, lambda v: AdaptiveNewsvendor(sim, v), torch.linspace(-1, 3, 41),
                        trace, warmup)
        policies["newsvendor (adaptive)"] = (AdaptiveNewsvendor(sim, z), f"z={z:.2f} {TUNED}")
        policies["base-stock"] = (BaseStock(sim, tune_base_stock(sim, trace, warmup)), TUNED)
        if "scale" in trace.data:
            level = tune_series_base_stock(sim, trace, warmup)
            policies["base-stock (per-series level)"] = (
                SeriesBaseStock(sim, level), f"{float(level[0]):.2f} x series level {TUNED}")
        return policies
    policies["newsvendor"] = (BaseStock(sim, newsvendor_levels(sim)), "closed form (normal approx.)")
    policies["base-stock"] = (BaseStock(sim, tune_base_stock(sim, trace, warmup)), TUNED)
    if sim.params.lost_sales and net.n_nodes == 1:
        level, cap = tune_capped_base_stock(sim, trace, warmup)
        policies["capped base-stock"] = (CappedBaseStock(sim, level, cap), TUNED)
    multi_echelon = any(k != "store" for k in net.kinds)
    if multi_echelon and all(len(net.inbound(n)) == 1 for n in range(net.n_nodes)):
        levels = tune_base_stock(sim, trace, warmup, echelon=True)
        policies["echelon base-stock"] = (EchelonBaseStock(sim, levels), TUNED)
    return policies
