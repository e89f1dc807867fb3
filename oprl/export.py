"""A run's policy as a `torch.export` program that runs with torch alone (docs/deploy.md).

The program maps four plain tensors (one state) to the orders ``[1, E]`` in link order; the
simulator's observation, the feature scaling, the base-stock head and whole-unit rounding are
all inside it:

- ``stock`` ``[1, N]``: on-hand per location minus backlog (negative at a backlogged store);
- ``in_transit`` ``[slots, 1, E]``: slot ``j`` arrives ``j + 1`` periods from now;
- ``recent_demand`` ``[1, k, S]``: the last ``k`` demands of each store, oldest first;
- ``level`` ``[1, S]``: each store's series level (ones where the run has none).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from oprl.core import Trace
from oprl.deploy import DeployedPolicy, load_policy


class StatePolicy(nn.Module):
    """``policy`` as a function of the state tensors above."""

    def __init__(self, deployed: DeployedPolicy) -> None:
        super().__init__()
        sim = deployed.sim
        self.sim, self.policy = sim, deployed.policy.eval()
        self.lags, self.stores = sim.params.demand_lags, len(sim.network.stores)
        self.per_series = deployed.per_series
        blank = sim.reset(self._trace(torch.zeros(1, self.lags, self.stores),
                                      torch.ones(1, self.stores)))
        self.register_buffer("static_nodes", blank["static_nodes"].contiguous().clone())
        self.register_buffer("static_edges", blank["static_edges"].contiguous().clone())
        self.register_buffer("store_index", sim.stores.clone())
        self.mean_column = sim.node_layout["mean_demand"].start
        sim.observe(blank, 0, self._trace(torch.zeros(1, self.lags, self.stores),
                                          torch.ones(1, self.stores)))["nodes"]  # index memo
        self.base = {k: v for k, v in blank.items() if k not in ("static_nodes", "static_edges")}

    def _trace(self, recent: Tensor, level: Tensor) -> Trace:
        demand = torch.cat([recent, recent.new_zeros(1, 1, self.stores)], dim=1)
        data = {"demand": demand}
        if self.per_series:
            data["scale"] = level.unsqueeze(1).expand(1, self.lags + 1, self.stores)
        return Trace(data)

    def forward(self, stock: Tensor, in_transit: Tensor, recent_demand: Tensor,
                level: Tensor) -> Tensor:
        nodes = self.static_nodes.clone()
        if self.per_series:
            nodes[:, self.store_index, self.mean_column] = level
        state = dict(self.base, onhand=stock, pipeline=in_transit, in_transit=in_transit.sum(0),
                     static_nodes=nodes, static_edges=self.static_edges)
        obs = self.sim.observe(state, self.lags, self._trace(recent_demand, level))
        return self.policy(obs).clamp_min(0.0)


def state_tensors(deployed: DeployedPolicy, state: dict[str, Any]) -> tuple[Tensor, ...]:
    """The exported program's inputs for a plain state (validated as `DeployedPolicy.act`)."""
    obs_state = deployed.observation(state)  # validates
    sim = deployed.sim
    nodes = obs_state["nodes"]
    layout = sim.node_layout
    stock = obs_state["onhand"]
    pipe = obs_state["edges"][..., sim.edge_layout["pipeline"]].permute(2, 0, 1).contiguous()
    lags = nodes[:, sim.stores][..., layout["demand_lags"]].flip(-1).transpose(1, 2).contiguous()
    level = nodes[:, sim.stores, layout["mean_demand"]].reshape(1, -1) if deployed.per_series \
        else torch.ones(1, len(sim.stores))
    return stock.contiguous(), pipe, lags, level.contiguous()


def export_policy(run_dir: str | Path, out: str | Path) -> str:
    """Write the run's policy to ``out`` (``torch.export.save``); returns a summary line."""
    deployed = load_policy(run_dir)
    module = StatePolicy(deployed)
    sim = deployed.sim
    example = (torch.zeros(1, sim.network.n_nodes), torch.zeros(sim.slots, 1, sim.network.n_edges),
               torch.zeros(1, sim.params.demand_lags, len(sim.stores)), torch.ones(1, len(sim.stores)))
    program = torch.export.export(module, example)
    torch.export.save(program, str(out))
    return (f"wrote {out}: orders [1, {sim.network.n_edges}] for links "
            f"{', '.join(deployed.links)}; inputs stock {list(example[0].shape)}, in_transit "
            f"{list(example[1].shape)}, recent_demand {list(example[2].shape)}, level "
            f"{list(example[3].shape)} (docs/deploy.md)")
