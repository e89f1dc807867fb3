"""Network files onto the batched inventory simulator, and back (docs/network-files.md).

`simulator_from_spec` maps a `NetworkSpec` onto `InventorySimulator`: every supplier becomes
the simulator's external supplier (node ``-1``) with its links' own costs and lead times, the
other locations keep the file's order, links become edges in the file's order. A field the
simulator cannot model yet is refused with a "not supported yet" error naming it; none is
ignored. `spec_from_simulator` writes a built-in scenario as a file.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy
import torch

from oprl.simulators.inventory import (
    SUPPLIER,
    Demand,
    InventoryParams,
    InventorySimulator,
    Network,
)
from oprl.simulators.network_file import (
    Horizon,
    Link,
    Location,
    NetworkFileError,
    NetworkSpec,
    StoreDemand,
    load_network_file,
)

NAME = "inventory/network"


def _not_yet(where: str, what: str) -> NetworkFileError:
    return NetworkFileError(f"{where}: {what} is not supported yet (docs/network-files.md, "
                            "'What runs today')")


def check_supported(spec: NetworkSpec) -> None:
    """Refuse, naming the field, whatever the simulator does not model yet."""
    if spec.objective != "minimise_cost":
        raise _not_yet("objective", f"{spec.objective!r}")
    if spec.horizon.type != "long_run":
        raise _not_yet("horizon.type", "a finite horizon")
    for i, loc in enumerate(spec.locations):
        if loc.kind == "plant":
            raise _not_yet(f"locations[{i}].kind", "a plant (capacity, production cost, yield)")
        if loc.selling_price:
            raise _not_yet(f"locations[{i}].selling_price", "a selling price (profit objective)")
    for i, link in enumerate(spec.links):
        if link.min_order is not None:
            raise _not_yet(f"links[{i}].min_order", "a minimum order quantity")
    stores = [(i, s) for i, s in enumerate(spec.locations) if s.kind == "store"]
    first_i, first = stores[0]
    for i, store in stores[1:]:
        if store.shortage != first.shortage:
            raise _not_yet(f"locations[{i}].shortage.type", f"mixing {first.shortage} "
                           f"(locations[{first_i}]) and {store.shortage} stores")
        if store.demand is not None and store.demand.distribution != first.demand.distribution:
            raise _not_yet(f"locations[{i}].demand.distribution",
                           f"mixing {first.demand.distribution} (locations[{first_i}]) and "
                           f"{store.demand.distribution} demand")
    if spec.history is not None and len(stores) > 1:
        raise _not_yet("demand.history", "a history file for more than one store")


def _demand(spec: NetworkSpec) -> Demand:
    stores = spec.stores
    if spec.history is not None:
        if spec.history_demand is None:
            raise NetworkFileError("demand.history: the history file was not loaded; read the "
                                   "file with load_network_file")
        series = torch.tensor(spec.history_demand, dtype=torch.float32)
        return Demand("series", series.mean(1), series=series)
    mean = torch.tensor([s.demand.mean for s in stores], dtype=torch.float32)
    if stores[0].demand.distribution == "poisson":
        return Demand("poisson", mean)
    std = torch.tensor([s.demand.std for s in stores], dtype=torch.float32)
    return Demand("normal", mean, std, correlation=spec.correlation)


def simulator_from_spec(spec: NetworkSpec, **kw) -> InventorySimulator:
    """The simulator of a network file; ``kw`` are `InventoryParams` fields (training
    ``horizon``, ``warmup``, ``demand_lags``, ...); ``eval_horizon``/``eval_warmup`` default
    to the file's horizon."""
    check_supported(spec)
    nodes = [loc for loc in spec.locations if loc.kind != "supplier"]
    index = {loc.name: i for i, loc in enumerate(nodes)}
    index.update({loc.name: SUPPLIER for loc in spec.locations if loc.kind == "supplier"})
    edges = tuple((index[link.source], index[link.target]) for link in spec.links)
    stores = [loc for loc in nodes if loc.kind == "store"]
    initial = [loc.initial_stock for loc in nodes]
    caps = [math.inf if link.capacity is None else link.capacity for link in spec.links]
    transit = [link.transit_holding_cost for link in spec.links]
    h = spec.horizon
    periods = h.warmup + h.periods
    if spec.history_demand is not None and periods > len(spec.history_demand[0]):
        raise NetworkFileError(f"horizon: warmup + periods = {periods} but demand.history has "
                               f"{len(spec.history_demand[0])} periods")
    params = InventoryParams(
        network=Network(tuple(loc.kind for loc in nodes), edges),
        demand=_demand(spec),
        lead_time=torch.tensor([link.lead_time for link in spec.links]),
        holding=[loc.holding_cost for loc in nodes],
        penalty=[s.penalty for s in stores],
        order_cost=[link.unit_cost for link in spec.links],
        lost_sales=stores[0].shortage == "lost_sales",
        initial_onhand=kw.pop("initial_onhand", initial if any(initial) else None),
        eval_horizon=kw.pop("eval_horizon", periods),
        eval_warmup=kw.pop("eval_warmup", h.warmup),
        capacity=caps if any(c != math.inf for c in caps) else None,
        transit_holding=transit if any(transit) else None,
        allocation=spec.allocation,
        name=NAME,
        extras={"locations": [loc.name for loc in nodes], "links": [
            f"{link.source} -> {link.target}" for link in spec.links]},
        **kw,
    )
    return InventorySimulator(params)


def network(file: str | None = None, **kw) -> InventorySimulator:
    """A supply network described in a YAML or JSON file (docs/network-files.md)."""
    if file is None:
        raise ValueError("file: inventory/network needs --set file=NETWORK.yaml "
                         "(examples in examples/networks/)")
    spec = load_network_file(file)
    try:
        return simulator_from_spec(spec, **kw)
    except NetworkFileError as err:
        raise NetworkFileError(f"{Path(file).name}: {err}") from None


# -- back: a simulator as a file ------------------------------------------------------------------


def _f(value) -> float:
    """The shortest decimal that reads back as the same float32 (0.3, not 0.30000001...)."""
    return float(str(numpy.float32(float(value))))


def spec_from_simulator(sim: InventorySimulator) -> NetworkSpec:
    """The network file of a built-in scenario: one supplier, locations named by kind and
    index, the evaluation window as a long-run horizon."""
    p, net = sim.params, sim.network
    for name in ("lead_time", "holding", "penalty", "order_cost"):
        if getattr(p, name).dim() != 1:
            raise ValueError(f"{name}: per-sample values cannot be written as one network file")
    if "transship" in net.kinds:
        raise ValueError(f"{sim.name}: a transshipment centre has no network-file kind yet")
    if p.demand.kind == "series":
        raise ValueError(f"{sim.name}: replayed demand series cannot be written as a network "
                         "file yet (use demand.history with a store column)")
    if p.capacity is not None or p.transit_holding is not None:
        raise ValueError(f"{sim.name}: capacities and in-transit costs are not written yet")
    names = [f"{kind}_{i}" for i, kind in enumerate(net.kinds)]
    store_of = {node: k for k, node in enumerate(net.stores)}
    initial = (p.initial_onhand.tolist() if p.initial_onhand is not None and p.initial_onhand.dim() == 1
               else [0.0] * net.n_nodes)
    if p.initial_onhand is not None and p.initial_onhand.dim() != 1:
        raise ValueError("initial_onhand: per-sample values cannot be written as one network file")
    locations = [Location("supplier", "supplier")]
    for node, kind in enumerate(net.kinds):
        fields = {"holding_cost": _f(p.holding[node]), "initial_stock": _f(initial[node])}
        if kind == "store":
            k = store_of[node]
            d = p.demand
            demand = (StoreDemand("poisson", _f(d.mean[k])) if d.kind == "poisson"
                      else StoreDemand("normal", _f(d.mean[k]), _f(d.std[k])))
            fields.update(demand=demand, penalty=_f(p.penalty[k]),
                          shortage="lost_sales" if p.lost_sales else "backlog")
        locations.append(Location(names[node], kind, **fields))
    links = tuple(
        Link("supplier" if src == SUPPLIER else names[src], names[dst], int(p.lead_time[e]),
             unit_cost=_f(p.order_cost[e]))
        for e, (src, dst) in enumerate(net.edges)
    )
    return NetworkSpec(
        locations=tuple(locations), links=links, name=sim.name, allocation=p.allocation,
        horizon=Horizon("long_run", p.eval_warmup, p.eval_horizon - p.eval_warmup),
        correlation=float(p.demand.correlation) if len(net.stores) > 1 else 0.0,
    )
