"""From a trained run to decisions: the next period's orders for a planner's current state.

``policy = oprl.load_policy(RUN)`` gives a `DeployedPolicy`; ``policy.act(state)`` takes the
plain structure of docs/deploy.md (keyed by location and link names, `network_names`) and
returns one order per link. It builds the very observation the simulator would, so the orders
are those the policy was trained and benchmarked with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from oprl import registry
from oprl.api import load_policy as load_trained
from oprl.core import Trace
from oprl.simulators.inventory import SUPPLIER, InventorySimulator, Network

STATE_KEYS = ("on_hand", "in_transit", "backlog", "recent_demand", "level", "period")


def network_names(network: Network) -> tuple[list[str], list[str]]:
    """Location names ``[N]`` and link names ``[E]`` ("warehouse->store 0") of ``network``:
    the one place names are made (a network that carries its own ``names`` is used as is)."""
    own = getattr(network, "names", None)
    if own:
        nodes = list(own)
    else:
        count = {k: network.kinds.count(k) for k in set(network.kinds)}
        seen: dict[str, int] = {}
        nodes = []
        label = {"store": "store", "warehouse": "warehouse", "transship": "centre"}
        for kind in network.kinds:
            i = seen.get(kind, 0)
            seen[kind] = i + 1
            single = count[kind] == 1 and kind != "store"
            nodes.append(label[kind] if single else f"{label[kind]} {i}")
    name = lambda n: "supplier" if n == SUPPLIER else nodes[n]  # noqa: E731
    return nodes, [f"{name(s)}->{name(d)}" for s, d in network.edges]


class DeployedPolicy:
    """A trained inventory policy acting on one plain state at a time (docs/deploy.md)."""

    def __init__(self, sim: InventorySimulator, policy: nn.Module) -> None:
        if not isinstance(sim, InventorySimulator):
            raise ValueError(f"run: decisions from a state are available for inventory "
                             f"scenarios, not {sim.name!r}")
        self.sim, self.policy = sim, policy.eval()
        self.locations, self.links = network_names(sim.network)
        self.lags = sim.params.demand_lags
        self.lead = sim.params.lead_time
        if self.lead.dim() != 1:
            raise ValueError("run: per-sample lead times cannot be deployed")
        self.per_series = "level" in getattr(sim.params.demand, "__dataclass_fields__", {}) \
            and sim.params.demand.level is not None

    def act(self, state: Mapping[str, Any]) -> dict[str, float]:
        """The orders for the next period, one per link name."""
        with torch.no_grad():
            orders = self.policy(self.observation(state))[0].clamp_min(0.0)
        return {link: float(q) for link, q in zip(self.links, orders)}

    def observation(self, state: Mapping[str, Any]):
        """The simulator's own observation of ``state`` (a batch of one)."""
        sim, net = self.sim, self.sim.network
        unknown = sorted(set(state) - set(STATE_KEYS))
        if unknown:
            raise ValueError(f"state: unknown field {unknown[0]!r}; allowed {', '.join(STATE_KEYS)}")
        stores = [self.locations[s] for s in net.stores]
        onhand = self._by_name(state, "on_hand", self.locations, required=True)
        backlog = self._by_name(state, "backlog", stores)
        if sim.params.lost_sales and any(backlog):
            raise ValueError("state.backlog: this run's stores lose unmet demand; backlog must be 0")
        net_stock = torch.tensor(onhand, dtype=torch.float32)
        for i, s in enumerate(net.stores):
            net_stock[s] -= backlog[i]
        pipeline = torch.zeros(sim.slots, 1, net.n_edges)
        transit = state.get("in_transit", {}) or {}
        self._known("in_transit", transit, self.links)
        for e, link in enumerate(self.links):
            lead = int(self.lead[e])
            values = transit.get(link, [0.0] * lead)
            if not isinstance(values, (list, tuple)) or len(values) != lead:
                raise ValueError(f"state.in_transit[{link!r}]: needs {lead} quantities (one per "
                                 f"period until arrival, the lead time), got {values!r}")
            for j, v in enumerate(values):
                pipeline[j, 0, e] = _quantity(f"state.in_transit[{link!r}]", v)
        k = self.lags
        history = torch.zeros(1, k + 1, len(net.stores))
        if k:
            recent = state.get("recent_demand")
            if not isinstance(recent, Mapping):
                raise ValueError(f"state.recent_demand: the policy reads the last {k} demands "
                                 f"of every store ({', '.join(stores)}), oldest first")
            self._known("recent_demand", recent, stores)
            for i, store in enumerate(stores):
                values = recent.get(store)
                if not isinstance(values, (list, tuple)) or len(values) < k:
                    got = 0 if not isinstance(values, (list, tuple)) else len(values)
                    raise ValueError(f"state.recent_demand[{store!r}]: the policy uses the last "
                                     f"{k} periods, got {got}")
                for j, v in enumerate(values[-k:]):
                    history[0, j, i] = _quantity(f"state.recent_demand[{store!r}]", v)
        data = {"demand": history}
        if self.per_series:
            levels = self._by_name(state, "level", stores, required=True)
            data["scale"] = torch.tensor(levels, dtype=torch.float32).reshape(1, 1, -1).expand(
                1, k + 1, -1)
        period = state.get("period", 0)
        if isinstance(period, bool) or not isinstance(period, int) or period < 0:
            raise ValueError(f"state.period: a whole number >= 0, got {period!r}")
        trace = Trace(data)
        sim_state = sim.reset(trace)
        sim_state.update(onhand=net_stock.unsqueeze(0), pipeline=pipeline,
                         in_transit=pipeline.sum(0))
        return sim.observe(sim_state, k, trace)

    def _by_name(self, state: Mapping[str, Any], field: str, names: list[str],
                 required: bool = False) -> list[float]:
        given = state.get(field, {}) or {}
        if not isinstance(given, Mapping):
            raise ValueError(f"state.{field}: a mapping from name to quantity")
        self._known(field, given, names)
        missing = [n for n in names if n not in given]
        if required and missing:
            raise ValueError(f"state.{field}: missing {missing[0]!r} (needed: {', '.join(names)})")
        return [_quantity(f"state.{field}[{n!r}]", given.get(n, 0.0)) for n in names]

    @staticmethod
    def _known(field: str, given: Mapping[str, Any], names: list[str]) -> None:
        unknown = [n for n in given if n not in names]
        if unknown:
            raise ValueError(f"state.{field}: unknown name {unknown[0]!r}; this run's network "
                             f"has {', '.join(names)}")


def _quantity(where: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{where}: must be finite and >= 0, got {value!r}")
    return number


LIST_FIELDS = ("in_transit", "recent_demand")


def read_state(path: str | Path) -> dict[str, Any]:
    """A state from JSON (docs/deploy.md) or CSV with columns ``field,name,value`` (a list
    value, e.g. in transit by periods until arrival, is space-separated: ``5 5 0``)."""
    import json

    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise ValueError(f"--state: {path} does not exist")
    if path.suffix.lower() == ".json":
        try:
            state = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"--state: {path.name} is not valid JSON ({err})") from None
        if not isinstance(state, dict):
            raise ValueError(f"--state: {path.name} must hold one JSON object")
        return state
    if path.suffix.lower() != ".csv":
        raise ValueError(f"--state: {path.name} must be a .json or .csv file")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(frame.columns) != ["field", "name", "value"]:
        raise ValueError(f"--state: {path.name} needs the columns field,name,value")
    state: dict[str, Any] = {}
    for field, name, value in frame.itertuples(index=False):
        if field == "period":
            state["period"] = int(value)
        elif field in LIST_FIELDS:
            state.setdefault(field, {})[name] = [float(v) for v in value.split()]
        else:
            state.setdefault(field, {})[name] = float(value)
    return state


def load_policy(run_dir: str | Path) -> DeployedPolicy:
    """The finished run's best policy, ready to `DeployedPolicy.act` on plain states."""
    net, checkpoint = load_trained(run_dir)
    config = checkpoint["config"]
    sim = registry.make(config["scenario"], **config["params"])
    return DeployedPolicy(sim, net)


def orders_tensor(policy: DeployedPolicy, orders: Mapping[str, float]) -> Tensor:
    """``act``'s orders as ``[E]`` in the simulator's edge order."""
    return torch.tensor([orders[link] for link in policy.links])
