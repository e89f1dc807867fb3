"""Simpy discrete-event twin of the inventory network, for differential tests.

It replays one episode of a `Trace` under a policy with its own state and event logic (one
simpy process per location, a clock, a demand process per store, an accountant, one process
per shipment in transit), so agreement with `simulators.inventory` is evidence that both
implement the same dynamics. A reference, not fast: it loops over episodes. Time is counted in
integer ticks, ``TICKS`` per period, so the order of events inside a period is explicit rather
than left to simpy's tie-breaking: ``ORDER`` (observe, order, ship), ``LAND_NOW`` (lead-time-0
arrivals), ``DEMAND``, ``COST``, ``LAND`` (shipments due land). The same order is spelled out
in docs/inventory.md, "The model".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import simpy
import torch
from torch import Tensor

from oprl.core import Trace
from oprl.simulators.inventory import SUPPLIER, InventorySimulator

TICKS = 10
ORDER, LAND_NOW, DEMAND, COST, LAND = 0, 1, 2, 3, 9
TINY = 1e-9  # below this a transshipment centre's requests count as "no order"
METRICS = ("cost", "holding_cost", "underage_cost", "ordering_cost", "demand", "sales",
           "shortfall", "shipped")

Policy = Callable[[dict[str, Tensor]], Tensor]


@dataclass(frozen=True)
class TwinResult:
    """Per-period costs ``[batch, horizon]`` and metrics (same names as the torch simulator's
    step info) in float64."""

    costs: Tensor
    metrics: dict[str, Tensor]


@dataclass(eq=False)
class _Shipment:
    edge: int
    qty: float
    due: int  # period at whose end it lands (-1 for lead time 0: lands before demand)


@dataclass
class _World:
    """The twin's mutable state for one episode; plain Python floats."""

    sim: InventorySimulator
    episode: int
    trace: Trace
    policy: Policy
    onhand: list[float]
    lead: list[int]
    holding: list[float]
    penalty: list[float]
    order_cost: list[float]
    capacity: list[float]  # per edge; inf: no limit
    transit_holding: list[float]  # per edge
    in_transit: list[_Shipment] = field(default_factory=list)
    demand_seen: list[list[float]] = field(default_factory=list)  # per period, per store
    orders: list[float] = field(default_factory=list)  # this period's orders per edge
    shipped: list[float] = field(default_factory=list)  # this period's shipments per edge
    period: dict[str, float] = field(default_factory=dict)  # this period's running metrics
    log: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in METRICS})


def _row(value: Tensor, episode: int) -> list[float]:
    """Episode ``episode``'s row of a ``[size]`` or ``[batch, size]`` parameter."""
    value = value.detach().cpu().double()
    return (value if value.dim() == 1 else value[episode]).tolist()


def _new_world(sim: InventorySimulator, policy: Policy, trace: Trace, episode: int) -> _World:
    p, n = sim.params, sim.network.n_nodes
    onhand = [0.0] * n if p.initial_onhand is None else _row(p.initial_onhand, episode)
    return _World(
        sim=sim, episode=episode, trace=trace, policy=policy, onhand=onhand,
        lead=[int(x) for x in _row(p.lead_time, episode)], holding=_row(p.holding, episode),
        penalty=_row(p.penalty, episode), order_cost=_row(p.order_cost, episode),
        capacity=([float("inf")] * sim.network.n_edges if p.capacity is None
                  else _row(p.capacity, episode)),
        transit_holding=([0.0] * sim.network.n_edges if p.transit_holding is None
                         else _row(p.transit_holding, episode)),
    )


# -- observation ---------------------------------------------------------------------------------


def observation(w: _World, t: int) -> dict[str, Tensor]:
    """The observation the torch simulator would show at period ``t``, built from the twin's
    own state (on-hand, shipments in transit, demand it has seen) for batch size 1."""
    sim, net, p = w.sim, w.sim.network, w.sim.params
    n, slots, stores = net.n_nodes, sim.slots, net.stores
    pipe = [[0.0] * slots for _ in net.edges]
    for s in w.in_transit:
        pipe[s.edge][s.due - t] += s.qty
    mean = [0.0] * n
    if "scale" in w.trace.data:  # replayed series: the episode's own level
        for i, node in enumerate(w.sim.network.stores):
            mean[node] = float(w.trace["scale"][w.episode, 0, i])
    elif p.demand.kind != "series":
        for i, node in enumerate(stores):
            mean[node] = float(p.demand.mean[i])
    rows = []
    for node in range(n):
        inbound = net.inbound(node)
        kind = net.kinds[node]
        row = [w.onhand[node]]
        row += [sum(pipe[e][j] for e in inbound) for j in range(slots)]
        row += [w.holding[node], w.penalty[stores.index(node)] if kind == "store" else 0.0,
                mean[node], float(max(w.lead[e] for e in inbound)),
                float(kind == "store"), float(kind == "warehouse"), float(kind == "transship"),
                0.0]
        for lag in range(1, p.demand_lags + 1):
            past = w.demand_seen[t - lag] if t - lag >= 0 else None
            row.append(past[stores.index(node)] if past is not None and kind == "store" else 0.0)
        rows.append(row)
    supplier = [0.0] * len(rows[0])
    supplier[sim.node_layout["is_supplier"].start] = 1.0
    rows.append(supplier)
    edges = [pipe[e] + [float(w.lead[e]), w.order_cost[e], float(src == SUPPLIER)]
             for e, (src, _) in enumerate(net.edges)]
    return {"nodes": torch.tensor([rows], dtype=torch.float32),
            "edges": torch.tensor([edges], dtype=torch.float32)}


# -- shipping rules -------------------------------------------------------------------------------


def shipments_from(
    kind: str, onhand: float, orders: list[float], allocation: str = "proportional"
) -> list[float]:
    """What one source ships on its outgoing edges given the (non-negative) orders on them:
    everything when it has enough, a proportional share when short (or, by ``priority``, the
    orders in link order until the stock runs out); a transshipment centre ships all it has,
    in proportion to the orders (equal split when nothing is ordered)."""
    available = max(onhand, 0.0)
    if allocation == "priority":
        out = []
        for q in orders:
            out.append(min(q, available))
            available -= out[-1]
        return out
    requested = sum(orders)
    if kind == "transship":
        if requested > TINY:
            return [q * available / requested for q in orders]
        return [available / len(orders)] * len(orders)
    if requested > available:
        return [q * available / requested for q in orders]
    return list(orders)


# -- processes ------------------------------------------------------------------------------------


def _clock(env: simpy.Environment, w: _World, start: list[simpy.Event]):
    """At each period start: observe, call the policy, then release the locations."""
    e = w.sim.network.n_edges
    for t in range(w.trace.horizon):
        yield env.timeout(t * TICKS + ORDER - env.now)
        with torch.no_grad():
            action = w.policy(observation(w, t))
        if tuple(action.shape) != (1, e):
            raise ValueError(f"action: expected [1, {e}] from the policy, got {tuple(action.shape)}")
        w.orders = [min(max(float(a), 0.0), cap) for a, cap in zip(action[0], w.capacity)]
        w.shipped = [0.0] * e
        w.period = dict.fromkeys(METRICS, 0.0)
        start[t].succeed(t)


def _in_transit(env: simpy.Environment, w: _World, ship: _Shipment, delay: int):
    """A shipment travelling on its edge; it lands on the destination's on-hand when due."""
    yield env.timeout(delay)
    if ship.due >= 0:
        w.in_transit[:] = [s for s in w.in_transit if s is not ship]
    w.onhand[w.sim.network.edges[ship.edge][1]] += ship.qty


def _dispatch(env: simpy.Environment, w: _World, t: int, edge: int, qty: float) -> None:
    lead = w.lead[edge]
    w.shipped[edge] = qty
    if lead == 0:
        env.process(_in_transit(env, w, _Shipment(edge, qty, -1), LAND_NOW - ORDER))
        return
    ship = _Shipment(edge, qty, t + lead - 1)
    w.in_transit.append(ship)
    env.process(_in_transit(env, w, ship, (lead - 1) * TICKS + LAND - ORDER))


def _location(env: simpy.Environment, w: _World, node: int, start: list[simpy.Event]):
    """A stocking location (or the supplier, ``node == -1``): ships its outgoing orders each
    period start from what it has on hand."""
    net = w.sim.network
    out = [e for e, (src, _) in enumerate(net.edges) if src == node]
    for t in range(w.trace.horizon):
        yield start[t]
        orders = [w.orders[e] for e in out]
        if node == SUPPLIER:
            qty = orders
        else:
            qty = shipments_from(net.kinds[node], w.onhand[node], orders, w.sim.params.allocation)
            w.onhand[node] -= sum(qty)
        for e, q in zip(out, qty):
            _dispatch(env, w, t, e, q)


def _store_demand(env: simpy.Environment, w: _World, node: int, index: int):
    """Customer demand arriving at one store each period (from the trace)."""
    demand = w.trace["demand"][w.episode, :, index].detach().cpu().double().tolist()
    lost = w.sim.params.lost_sales
    for t in range(w.trace.horizon):
        yield env.timeout(t * TICKS + DEMAND - env.now)
        d, stock = demand[t], w.onhand[node]
        sold = min(max(stock, 0.0), d)
        if lost:
            w.onhand[node] = stock - sold
            short = d - sold
        else:
            w.onhand[node] = stock - d
            short = max(-w.onhand[node], 0.0)
        if len(w.demand_seen) <= t:
            w.demand_seen.append([0.0] * len(w.sim.network.stores))
        w.demand_seen[t][index] = d
        w.period["demand"] += d
        w.period["sales"] += sold
        w.period["shortfall"] += short
        w.period["underage_cost"] += w.penalty[index] * short


def _accountant(env: simpy.Environment, w: _World):
    """Books each period's costs once demand has been served."""
    for t in range(w.trace.horizon):
        yield env.timeout(t * TICKS + COST - env.now)
        m = w.period
        m["holding_cost"] = sum(h * max(x, 0.0) for h, x in zip(w.holding, w.onhand)) + sum(
            w.transit_holding[s.edge] * s.qty for s in w.in_transit)  # travelling this period
        m["ordering_cost"] = sum(c * q for c, q in zip(w.order_cost, w.shipped))
        m["shipped"] = sum(w.shipped)
        m["cost"] = m["holding_cost"] + m["underage_cost"] + m["ordering_cost"]
        for k in METRICS:
            w.log[k].append(m[k])


def replay_episode(
    sim: InventorySimulator, policy: Policy, trace: Trace, episode: int = 0
) -> dict[str, list[float]]:
    """Per-period metrics (``cost`` first) of episode ``episode`` of ``trace`` under ``policy``."""
    sim.check_trace(trace)
    if not 0 <= episode < trace.batch:
        raise ValueError(f"episode: must lie in [0, {trace.batch}), got {episode}")
    w = _new_world(sim, policy, trace, episode)
    env = simpy.Environment()
    start = [env.event() for _ in range(trace.horizon)]
    env.process(_clock(env, w, start))
    for node in [SUPPLIER, *range(sim.network.n_nodes)]:
        if node == SUPPLIER or sim.network.kinds[node] != "store":
            env.process(_location(env, w, node, start))
    for index, node in enumerate(sim.network.stores):
        env.process(_store_demand(env, w, node, index))
    env.process(_accountant(env, w))
    env.run(until=trace.horizon * TICKS)
    return w.log


def replay(sim: InventorySimulator, policy: Policy, trace: Trace) -> TwinResult:
    """Replay every episode of ``trace`` one after the other (the policy sees batch size 1)."""
    logs = [replay_episode(sim, policy, trace, b) for b in range(trace.batch)]
    metrics = {k: torch.tensor([log[k] for log in logs], dtype=torch.float64) for k in METRICS}
    return TwinResult(costs=metrics["cost"], metrics=metrics)
