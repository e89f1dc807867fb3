"""Batched, differentiable inventory networks (Alvo, Russo, Kanoria & Song 2023, HDPO).

A network is a DAG of locations fed by one external supplier (node id ``-1``). Each period:
observe -> place orders on every edge -> orders are shipped from the source's on-hand stock
(proportionally scaled down when the source is short) -> lead-time-0 shipments land -> demand
hits the stores -> cost (holding on leftover stock, underage on unmet demand, per-unit order
cost) -> pipelines shift and due shipments land, ready for the next period.

Backlogged stores let on-hand go negative; lost-sales stores clip at zero.  Every operation is
a tensor op over ``[batch, ...]``: per-sample lead times and costs are simply ``[batch, ...]``
parameters.  The min/max clips make the cost piecewise linear in the orders, so pathwise
gradients (HDPO) flow through the whole horizon.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
from torch import Tensor

from oprl.core import (
    LazyDict,
    LeadTimes,
    Metric,
    Observation,
    Simulator,
    Stackable,
    State,
    Trace,
    check_memory,
    fixed,
    trace_size,
)

SUPPLIER = -1
NODE_KINDS = ("store", "warehouse", "transship")


@dataclass(frozen=True)
class Network:
    """Static topology. ``kinds[n]`` is 'store' (faces demand), 'warehouse' (holds stock) or
    'transship' (holds no stock: everything on hand is forwarded each period)."""

    kinds: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        n = len(self.kinds)
        if n == 0:
            raise ValueError("network.kinds: at least one location is required")
        bad = [k for k in self.kinds if k not in NODE_KINDS]
        if bad:
            raise ValueError(f"network.kinds: unknown kind {bad[0]!r}; allowed {NODE_KINDS}")
        if not self.edges:
            raise ValueError("network.edges: at least one edge (supplier -> location) is required")
        for src, dst in self.edges:
            if not (SUPPLIER <= src < n) or not (0 <= dst < n) or src == dst:
                raise ValueError(
                    f"network.edges: edge ({src}, {dst}) must join a source in [-1, {n}) to a "
                    f"different destination in [0, {n})"
                )
            if src >= 0 and self.kinds[src] == "store":
                raise ValueError(f"network.edges: store {src} cannot ship to other locations")
        internal = [edge for edge in self.edges if edge[0] != SUPPLIER]
        if len(set(internal)) != len(internal):  # the supplier may stand for several
            raise ValueError("network.edges: duplicate edge")
        order = self.topological_order()  # raises on a cycle
        reached = {SUPPLIER}
        for node in order:
            if any(src in reached for src, dst in self.edges if dst == node):
                reached.add(node)
        unreachable = sorted(set(range(n)) - reached)
        if unreachable:
            raise ValueError(
                f"network.edges: location(s) {unreachable} cannot be reached from the supplier"
            )
        if "store" not in self.kinds:
            raise ValueError("network.kinds: at least one store is required")
        for node, kind in enumerate(self.kinds):
            if kind != "store" and not any(src == node for src, _ in self.edges):
                raise ValueError(f"network.edges: {kind} {node} has no outgoing edge")

    @property
    def n_nodes(self) -> int:
        return len(self.kinds)

    @property
    def n_edges(self) -> int:
        return len(self.edges)

    @property
    def stores(self) -> list[int]:
        return [i for i, k in enumerate(self.kinds) if k == "store"]

    def inbound(self, node: int) -> list[int]:
        return [e for e, (_, dst) in enumerate(self.edges) if dst == node]

    def children(self, node: int) -> list[int]:
        return [dst for src, dst in self.edges if src == node]

    def topological_order(self) -> list[int]:
        """Locations ordered upstream first; a cycle is a ValueError."""
        indeg = [0] * self.n_nodes
        for src, dst in self.edges:
            if src != SUPPLIER:
                indeg[dst] += 1
        frontier = [n for n in range(self.n_nodes) if indeg[n] == 0]
        order: list[int] = []
        while frontier:
            node = frontier.pop()
            order.append(node)
            for src, dst in self.edges:
                if src == node:
                    indeg[dst] -= 1
                    if indeg[dst] == 0:
                        frontier.append(dst)
        if len(order) != self.n_nodes:
            raise ValueError("network.edges: the network has a cycle; it must be a DAG")
        return order

    def downstream(self, node: int) -> list[int]:
        """The node and every location it (transitively) supplies: its echelon."""
        seen, stack = [], [node]
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.append(n)
                stack.extend(self.children(n))
        return sorted(seen)


@dataclass(frozen=True)
class Demand:
    """Demand model of the stores: 'normal' (clipped at 0, optional equicorrelation),
    'poisson', or 'series' (rows of an empirical demand matrix replayed as traces)."""

    kind: str
    mean: Tensor  # [S]
    std: Tensor | None = None  # [S], normal only
    correlation: float = 0.0
    series: Tensor | None = None  # [products, periods], series only
    # series only: the periods [start, stop) that sampled windows come from (None: all), and
    # each product's demand level [products], carried in traces as ``scale`` (per-series
    # feature scaling, `oprl.simulators.inventory_data`)
    window: tuple[int, int] | None = None
    level: Tensor | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("normal", "poisson", "series"):
            raise ValueError(f"demand.kind: {self.kind!r}; allowed 'normal', 'poisson', 'series'")
        if self.kind == "series":
            if self.series is None or self.series.dim() != 2:
                raise ValueError("demand.series: a [products, periods] tensor is required")
            _check_finite_nonneg("demand.series", self.series)
            if self.window is not None and not 0 <= self.window[0] < self.window[1] <= self.series.shape[1]:
                raise ValueError(f"demand.window: {self.window} must lie within the "
                                 f"{self.series.shape[1]} periods of the series")
            if self.level is not None and self.level.shape != self.series.shape[:1]:
                raise ValueError("demand.level: one level per product is required")
            return
        _check_finite_nonneg("demand.mean", self.mean)
        if self.kind == "normal":
            if self.std is None or self.std.shape != self.mean.shape:
                raise ValueError("demand.std: one standard deviation per store is required")
            _check_finite_nonneg("demand.std", self.std)
            if not -1.0 / max(len(self.mean) - 1, 1) <= self.correlation < 1.0:
                raise ValueError(
                    f"demand.correlation: must lie in [-1/(S-1), 1) to be a valid equicorrelation,"
                    f" got {self.correlation}"
                )

    @property
    def n_stores(self) -> int:
        return 1 if self.kind == "series" else int(self.mean.numel())

    def sample(self, batch: int, horizon: int, generator: torch.Generator) -> Tensor:
        """Demand ``[batch, horizon, stores]`` (float), drawn on the CPU for reproducibility."""
        s = self.n_stores
        if self.kind == "poisson":
            rate = self.mean.expand(batch, horizon, s).contiguous()
            return torch.poisson(rate, generator=generator)
        if self.kind == "normal":
            z = torch.randn(batch, horizon, s, generator=generator, dtype=torch.float64)
            if self.correlation != 0.0 and s > 1:
                # equicorrelated: z_i = sqrt(rho) * common + sqrt(1 - rho) * own
                rho = self.correlation
                common = torch.randn(batch, horizon, 1, generator=generator, dtype=torch.float64)
                if rho >= 0:
                    z = rho**0.5 * common + (1 - rho) ** 0.5 * z
                else:
                    chol = torch.linalg.cholesky(
                        torch.full((s, s), rho, dtype=torch.float64)
                        + (1 - rho) * torch.eye(s, dtype=torch.float64)
                    )
                    z = z @ chol.T
            d = self.mean.double() + self.std.double() * z
            return d.clamp_min(0.0).float()
        return self.sample_windows(batch, horizon, generator)[0]

    def sample_windows(self, batch: int, horizon: int, generator: torch.Generator
                       ) -> tuple[Tensor, Tensor]:
        """Series only: random windows ``[batch, horizon, 1]`` of ``window``'s periods and
        the product of each ``[batch]``."""
        products = self.series.shape[0]
        first, stop = self.window or (0, self.series.shape[1])
        periods = stop - first
        if horizon > periods:
            where = "the demand series has" if self.window is None else "the training periods are"
            raise ValueError(f"horizon: {horizon} periods requested but {where} {periods}")
        rows = torch.randint(products, (batch,), generator=generator)
        starts = first + torch.randint(periods - horizon + 1, (batch,), generator=generator)
        idx = starts[:, None] + torch.arange(horizon)[None, :]
        return self.series[rows[:, None], idx].float().unsqueeze(-1), rows


def _check_finite_nonneg(name: str, value: Tensor) -> None:
    if value.numel() == 0:
        return
    low, high = torch.aminmax(value.detach())  # one pass; a NaN anywhere makes both NaN
    if not (torch.isfinite(low) and torch.isfinite(high)):
        raise ValueError(f"{name}: must be finite (no NaN or inf)")
    if low < 0:
        raise ValueError(f"{name}: must be non-negative")


def _as_float(name: str, value: float | Sequence[float] | Tensor, size: int) -> Tensor:
    """A cost vector ``[size]`` or per-sample ``[batch, size]``; scalars broadcast."""
    t = _tensor(name, value, torch.float32)
    if t.dim() == 0:
        t = t.expand(size).clone()
    if t.shape[-1] != size or t.dim() > 2:
        raise ValueError(f"{name}: expected a scalar, [{size}] or [batch, {size}], got {tuple(t.shape)}")
    _check_finite_nonneg(name, t)
    return t


def _tensor(name: str, value, dtype=None) -> Tensor:
    try:
        return torch.as_tensor(value, dtype=dtype)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name}: must be a number or a list of numbers, got {value!r}") from None


def _as_lead_times(value: int | Sequence[int] | Tensor, size: int) -> Tensor:
    t = _tensor("lead_time", value)
    if t.is_floating_point():
        if not torch.isfinite(t).all() or (t != t.round()).any():
            raise ValueError("lead_time: must be whole numbers of periods (0, 1, 2, ...)")
        t = t.long()
    if t.dim() == 0:
        t = t.expand(size).clone()
    if t.shape[-1] != size or t.dim() > 2:
        raise ValueError(f"lead_time: expected a scalar, [{size}] or [batch, {size}], got {tuple(t.shape)}")
    if (t < 0).any():
        raise ValueError("lead_time: must be >= 0 periods")
    return t.long()


@dataclass(frozen=True)
class InventoryParams:
    """Everything that defines an inventory scenario; validated on construction.

    Cost and lead-time fields are ``[size]`` or per-sample ``[batch, size]`` tensors.
    """

    # set by the scenario factories (their own arguments are the user's parameters)
    network: Network = fixed()
    demand: Demand = fixed()
    lead_time: Tensor = fixed()  # [E] or [B, E], integer periods
    holding: Tensor = fixed()  # [N] or [B, N], per unit left on hand at the end of a period
    penalty: Tensor = fixed()  # [S] or [B, S], per unit unmet (lost) or backlogged
    order_cost: Tensor = fixed()  # [E] or [B, E], per unit shipped on the edge
    lost_sales: bool = fixed(default=False)
    initial_onhand: Tensor | None = None  # [N] or [B, N]; zeros when None
    demand_lags: int = 0  # past demands shown to the policy
    horizon: int = 100  # training episode length
    warmup: int = 40  # periods not counted while training
    eval_horizon: int = 5000
    eval_warmup: int = 3000
    name: str = fixed(default="inventory/custom")
    extras: dict = fixed(default_factory=dict)
    # pipeline slots in the observation; 0: just enough for the longest lead time. Simulators
    # of one sweep group share it so their observations line up (see `align_simulators`)
    pipeline_slots: int = fixed(default=0)
    # optional physics (network files, docs/network-files.md); None: absent, the built-in
    # scenarios never set them, so their numbers do not move
    capacity: Tensor | None = fixed(default=None)  # [E] most units shipped per period (inf: none)
    transit_holding: Tensor | None = fixed(default=None)  # [E] per unit in transit per period
    allocation: str = fixed(default="proportional")  # a short source: 'proportional' | 'priority'

    def __post_init__(self) -> None:
        net = self.network
        if self.demand.n_stores != len(net.stores):
            raise ValueError(
                f"demand: {self.demand.n_stores} store(s) modelled but the network has "
                f"{len(net.stores)}"
            )
        object.__setattr__(self, "lead_time", _as_lead_times(self.lead_time, net.n_edges))
        for name, size in (("holding", net.n_nodes), ("penalty", len(net.stores)),
                           ("order_cost", net.n_edges)):
            object.__setattr__(self, name, _as_float(name, getattr(self, name), size))
        if self.initial_onhand is not None:
            object.__setattr__(
                self, "initial_onhand", _as_float("initial_onhand", self.initial_onhand, net.n_nodes)
            )
        if self.capacity is not None:
            cap = _tensor("capacity", self.capacity, torch.float32)
            if cap.shape != (net.n_edges,) or torch.isnan(cap).any() or (cap < 0).any():
                raise ValueError(f"capacity: expected [{net.n_edges}] numbers >= 0 (inf: no limit)")
            object.__setattr__(self, "capacity", cap)
        if self.transit_holding is not None:
            object.__setattr__(self, "transit_holding",
                               _as_float("transit_holding", self.transit_holding, net.n_edges))
        if self.allocation not in ("proportional", "priority"):
            raise ValueError(f"allocation: must be 'proportional' or 'priority', got {self.allocation!r}")
        if self.allocation == "priority" and "transship" in net.kinds:
            raise ValueError("allocation: 'priority' is not defined for transshipment centres")
        if self.demand_lags < 0:
            raise ValueError("demand_lags: must be >= 0")
        if self.pipeline_slots < 0:
            raise ValueError("pipeline_slots: must be >= 0")
        if not 0 <= self.warmup < self.horizon:
            raise ValueError(f"warmup: must lie in [0, horizon={self.horizon})")
        if not 0 <= self.eval_warmup < self.eval_horizon:
            raise ValueError(f"eval_warmup: must lie in [0, eval_horizon={self.eval_horizon})")
        lead = self.max_lead_time
        for window in ("horizon", "eval_horizon"):  # an order must be able to arrive
            if lead >= getattr(self, window) - getattr(self, window.replace("horizon", "warmup")):
                raise ValueError(
                    f"lead_time: {lead} periods is not shorter than the {getattr(self, window)}-"
                    f"period {window} less its warm-up; no order placed in the counted periods "
                    f"would arrive (raise {window} or lower lead_time)")
        check_size(net.n_nodes, net.n_edges, max(lead, self.pipeline_slots, 1),
                   self.demand_lags, f"lead_time={lead}, demand_lags={self.demand_lags}")

    @property
    def max_lead_time(self) -> int:
        return int(self.lead_time.max())


# size guard: a training rollout keeps about KEPT float tensors of every location's and edge's
# state per period for backpropagation, for a batch of TRAIN_BATCH episodes of TRAIN_HORIZON
TRAIN_BATCH, TRAIN_HORIZON, KEPT = 64, 100, 12
# the network checks are quadratic in Python: beyond this many locations they alone take minutes
MAX_LOCATIONS = 20_000


def check_size(n_nodes: int, n_edges: int, slots: int, lags: int, what: str) -> None:
    """Refuse (naming ``what``) a network whose training rollout cannot fit in memory."""
    if n_nodes > MAX_LOCATIONS:
        raise ValueError(f"{what}: {n_nodes:,} locations; at most {MAX_LOCATIONS:,} are supported")
    per_period = (n_nodes * (slots + lags + 8) + n_edges * (slots + 4)) * 4 * KEPT
    check_memory(TRAIN_BATCH * TRAIN_HORIZON * per_period, what)


def _shifted_pipeline(pipe: Tensor, ship: Tensor, onehot: Tensor) -> Tensor:
    """The pipeline one period on: slot j takes slot j + 1 plus the shipments of lead time
    j + 2, the last slot empties. Without autograd it is written in place into one new
    tensor (the concatenation would copy every slot a second time)."""
    if torch.is_grad_enabled() and (ship.requires_grad or pipe.requires_grad):
        return torch.cat([torch.addcmul(pipe[1:], ship, onehot[2:]), torch.zeros_like(pipe[:1])])
    out = torch.empty_like(pipe)
    torch.addcmul(pipe[1:], ship, onehot[2:], out=out[:-1])
    out[-1].zero_()
    return out


def _row_dot(weights: Tensor, values: Tensor) -> Tensor:
    """``(weights * values).sum(-1)``; one matrix-vector product when the weights are one
    row broadcast over the batch (the usual case), without materialising the product."""
    if weights.stride(0) == 0:
        return values @ weights[0]
    return (weights * values).sum(-1)


def _per_sample(name: str, value: Tensor, batch: int, device: torch.device) -> Tensor:
    """Broadcast a ``[size]`` or ``[batch, size]`` parameter to ``[batch, size]``."""
    value = value.to(device)
    if value.dim() == 1:
        return value.unsqueeze(0).expand(batch, -1)
    if value.shape[0] != batch:
        raise ValueError(
            f"{name}: per-sample parameter has batch {value.shape[0]} but the trace has batch {batch}"
        )
    return value


def node_feature_layout(slots: int, lags: int) -> dict[str, slice]:
    """Where each node feature sits on the last axis of ``obs['nodes']``: policies and
    heuristics read features by name, never by a hand-counted index."""
    sizes = [("onhand", 1), ("pipeline", slots), ("holding", 1), ("penalty", 1),
             ("mean_demand", 1), ("lead_time", 1), ("kind", 3), ("is_supplier", 1),
             ("demand_lags", lags)]
    return _layout(sizes)


def edge_feature_layout(slots: int) -> dict[str, slice]:
    """Where each edge feature sits on the last axis of ``obs['edges']``."""
    return _layout([("pipeline", slots), ("lead_time", 1), ("order_cost", 1), ("from_supplier", 1)])


def _layout(sizes: list[tuple[str, int]]) -> dict[str, slice]:
    out, start = {}, 0
    for name, size in sizes:
        out[name] = slice(start, start + size)
        start += size
    return out


@dataclass(frozen=True)
class _Incidence:
    """How edge values reach nodes, on one device: index tensors plus 0/1 matrices over the
    K internal sources, so that shipping is a couple of small matrix products instead of
    scatters along the location axis (slow for ``[batch, locations]`` tensors on CPU)."""

    n_nodes: int
    dst: Tensor  # [E] node each edge feeds
    stores: Tensor  # [S]
    source_nodes: Tensor  # [K] the locations that ship to other locations
    out_of: Tensor  # [E, K] 1 where internal edge e leaves source k
    transship: Tensor  # [K] bool
    out_degree: Tensor  # [K]
    any_transship: bool
    unique_dst: bool
    dst_is_identity: bool  # edge e feeds node e: edge values are node values as they stand
    store_slice: slice | None  # the stores are the contiguous locations [a, b)
    earlier: Tensor  # [E, E] 1 where edge e' < e leaves the same internal source as e
    internal: Tensor  # [E] 1 on edges that leave a location (not the supplier)

    @staticmethod
    def of(network: Network, device: torch.device) -> _Incidence:
        src = torch.tensor([s for s, _ in network.edges], dtype=torch.long)
        dst = torch.tensor([d for _, d in network.edges], dtype=torch.long)
        sources = sorted({int(s) for s in src if s != SUPPLIER})
        out_of = torch.zeros(len(dst), len(sources))
        for k, node in enumerate(sources):
            out_of[src == node, k] = 1.0
        stores = network.stores
        contiguous = stores == list(range(stores[0], stores[0] + len(stores)))
        transship = torch.tensor([network.kinds[k] == "transship" for k in sources], dtype=torch.bool)
        same = (src[:, None] == src[None, :]) & (src[:, None] != SUPPLIER)
        earlier = (same & (torch.arange(len(src))[:, None] < torch.arange(len(src))[None, :])).float()
        return _Incidence(
            n_nodes=network.n_nodes, dst=dst.to(device), stores=torch.tensor(stores, dtype=torch.long, device=device),
            source_nodes=torch.tensor(sources, dtype=torch.long, device=device),
            out_of=out_of.to(device),
            transship=transship.to(device), out_degree=out_of.sum(0).clamp_min(1.0).to(device),
            any_transship=bool(transship.any()),
            unique_dst=bool(dst.unique().numel() == dst.numel()),
            dst_is_identity=bool(len(dst) == network.n_nodes
                                 and torch.equal(dst, torch.arange(len(dst)))),
            store_slice=slice(stores[0], stores[0] + len(stores)) if contiguous else None,
            earlier=earlier.to(device), internal=(src != SUPPLIER).float().to(device),
        )

    def edges_to_nodes(self, values: Tensor) -> Tensor:
        """Sum edge values ``[B, E]`` into the locations they feed ``[B, N]``."""
        if self.dst_is_identity:
            return values
        return values.new_zeros(values.shape[0], self.n_nodes).index_add(1, self.dst, values)

    def sources_to_edges(self, values: Tensor) -> Tensor:
        """Each internal edge gets its source's value ``[B, K] -> [B, E]`` (0 on supplier
        edges); a broadcast product when there is one source (no matrix product to zero)."""
        if values.shape[1] == 1:
            return values * self.out_of.T
        return values @ self.out_of.T

    def store_values(self, node_values: Tensor) -> Tensor:
        if self.store_slice is not None:
            return node_values[:, self.store_slice]
        return node_values.index_select(1, self.stores)

    def with_store_values(self, node_values: Tensor, store_values: Tensor) -> Tensor:
        """``node_values`` with the stores' entries replaced (a new tensor)."""
        if self.store_slice is not None:
            a, b = self.store_slice.start, self.store_slice.stop
            return torch.cat([node_values[:, :a], store_values, node_values[:, b:]], dim=1)
        return node_values.index_copy(1, self.stores, store_values)


class InventorySimulator(Simulator, Stackable, LeadTimes):
    """Batched inventory network; see the module docstring for the order of events."""

    Params = InventoryParams
    metric = Metric("cost/store/period", minimise=True)
    action_bounds = (0.0, math.inf)  # one order per edge

    def __init__(self, params: InventoryParams) -> None:
        self.params = params
        self.name = params.name
        net = params.network
        self.network = net
        self.action_shape = (net.n_edges,)
        self.stores = torch.tensor(net.stores, dtype=torch.long)
        self.edge_src = torch.tensor([s for s, _ in net.edges], dtype=torch.long)
        self.edge_dst = torch.tensor([d for _, d in net.edges], dtype=torch.long)
        # pipeline slots: slot j holds what becomes available j + 1 periods from now
        self.slots = max(params.max_lead_time, params.pipeline_slots, 1)
        kinds = net.kinds
        self.is_store = torch.tensor([k == "store" for k in kinds])
        self.is_transship = torch.tensor([k == "transship" for k in kinds])
        self.node_layout = node_feature_layout(self.slots, params.demand_lags)
        self.edge_layout = edge_feature_layout(self.slots)
        self.n_node_features = self.node_layout["demand_lags"].stop
        self.n_edge_features = self.edge_layout["from_supplier"].stop
        self._device_indices: dict[torch.device, dict] = {}
        self._has_order_cost = bool((params.order_cost != 0).any())
        self._has_zero_lead = bool((params.lead_time == 0).any())

    # -- contract -------------------------------------------------------------------------
    def graph(self):
        """Supply graph for GNN policies: locations plus the supplier as the last node."""
        from torch_geometric.data import Data

        n = self.network.n_nodes
        src = torch.where(self.edge_src == SUPPLIER, n, self.edge_src)
        return Data(edge_index=torch.stack([src, self.edge_dst]), num_nodes=n + 1)

    def sample_trace(
        self, batch: int, horizon: int | None = None, *, seed: int, device="cpu"
    ) -> Trace:
        # float64 normals, their float32 clip and its time-major copy: ~24 bytes per store
        batch, horizon = trace_size(batch, horizon, self.params.horizon,
                                    24 * len(self.network.stores))
        gen = torch.Generator().manual_seed(int(seed))
        d = self.params.demand
        if d.kind == "series" and d.level is not None:
            demand, rows = d.sample_windows(batch, horizon, gen)
            return series_trace(demand, d.level[rows], seed=seed, device=device)
        demand = d.sample(batch, horizon, gen)
        # time-major memory behind the [batch, horizon, stores] view: each period reads one
        # contiguous block instead of a row from every episode
        demand = demand.transpose(0, 1).contiguous().transpose(0, 1)
        return Trace({"demand": demand.to(device)}, seed=seed)

    def check_trace(self, trace: Trace) -> None:
        if "demand" not in trace.data:
            raise ValueError(
                f"trace.demand: required [batch, horizon, stores]; trace holds {sorted(trace.data)}"
            )
        demand = trace["demand"]
        s = len(self.network.stores)
        if demand.dim() != 3 or demand.shape[-1] != s:
            raise ValueError(f"trace.demand: expected [batch, horizon, {s}], got {tuple(demand.shape)}")
        _check_finite_nonneg("trace.demand", demand)

    def reset(self, trace: Trace) -> State:
        self.check_trace(trace)
        b, dev = trace.batch, trace.device
        p = self.params
        n, e = self.network.n_nodes, self.network.n_edges
        onhand = (
            torch.zeros(b, n, device=dev)
            if p.initial_onhand is None
            else _per_sample("initial_onhand", p.initial_onhand, b, dev).clone()
        )
        lead = _per_sample("lead_time", p.lead_time, b, dev)
        state = {
            "onhand": onhand,
            # slot-major [slots, B, E]: slot j arrives at the end of the period j periods on;
            # shifting slabs of [B, E] is a contiguous copy, not a strided one
            "pipeline": torch.zeros(self.slots, b, e, device=dev),
            "in_transit": torch.zeros(b, e, device=dev),  # the pipeline's total per edge
            "lead_time": lead,
            "lead_onehot": torch.nn.functional.one_hot(lead, self.slots + 1).float().movedim(-1, 0).contiguous(),
            "holding": _per_sample("holding", p.holding, b, dev),
            "penalty": _per_sample("penalty", p.penalty, b, dev),
            "order_cost": _per_sample("order_cost", p.order_cost, b, dev),
        }
        if p.capacity is not None:
            state["capacity"] = p.capacity.to(dev)
        if p.transit_holding is not None:
            state["transit_holding"] = _per_sample("transit_holding", p.transit_holding, b, dev)
        state["static_nodes"], state["static_edges"] = self._static_observation(state, trace)
        return state

    def observe(self, state: State, t: int, trace: Trace) -> Observation:
        """``onhand`` and ``inbound`` (pipeline total per location) ``[B, N]``; node features
        ``nodes`` ``[B, N+1, F]`` (the supplier last) and edge features ``edges`` ``[B, E, G]``,
        built only when a policy reads them.

        The static features (costs, lead times, node kinds, mean demand) are built once per
        episode batch in `reset` (``state['static_nodes']``); each period only writes the
        on-hand, the inbound pipeline and the demand lags into a copy (`reference_observe`
        is the feature-by-feature definition)."""
        idx = self._indices(state["onhand"].device)
        onhand = state["onhand"]
        inbound = idx.edges_to_nodes(state["in_transit"])
        return LazyDict(
            {"onhand": onhand, "inbound": inbound},
            {"nodes": lambda: self._node_features(state, t, trace, idx),
             "edges": lambda: self._edge_features(state)},
        )

    def _node_features(self, state: State, t: int, trace: Trace, idx: _Incidence) -> Tensor:
        n, layout = self.network.n_nodes, self.node_layout
        pipe = state["pipeline"].permute(1, 2, 0)  # [B, E, slots]
        nodes = state["static_nodes"].clone()
        nodes[:, :n, layout["onhand"]] = state["onhand"].unsqueeze(-1)
        if idx.unique_dst:
            nodes[:, idx.dst, layout["pipeline"]] = pipe
        else:
            nodes[:, :n, layout["pipeline"]] = torch.zeros_like(
                nodes[:, :n, layout["pipeline"]]).index_add(1, idx.dst, pipe)
        if self.params.demand_lags:
            nodes[:, idx.stores, layout["demand_lags"]] = self._past_demand(trace, t).transpose(1, 2)
        return nodes

    def _edge_features(self, state: State) -> Tensor:
        edges = state["static_edges"].clone()
        edges[..., : self.slots] = state["pipeline"].permute(1, 2, 0)
        return edges

    def _indices(self, device: torch.device) -> _Incidence:
        """The network's index structure on ``device``, made once per device (a memo, not state)."""
        cached = self._device_indices.get(device)
        if cached is None:
            cached = _Incidence.of(self.network, device)
            self._device_indices[device] = cached
        return cached

    def _static_observation(self, state: State, trace: Trace) -> tuple[Tensor, Tensor]:
        """The features that do not change within an episode, dynamic slots zeroed."""
        if "scale" not in trace.data and all(
                getattr(self.params, name) is None or getattr(self.params, name).dim() == 1
                for name in _PER_SAMPLE):  # the same for every episode: build one, expand
            b = state["onhand"].shape[0]
            one = {k: v[:1] for k, v in state.items() if k not in ("pipeline", "lead_onehot")}
            one["pipeline"] = state["pipeline"][:, :1]
            nodes, edges = self._blank_observation(one, trace.select(slice(0, 1)))
            return nodes.expand(b, -1, -1), edges.expand(b, -1, -1)
        return self._blank_observation(state, trace)

    def _blank_observation(self, state: State, trace: Trace) -> tuple[Tensor, Tensor]:
        blank = dict(state, onhand=torch.zeros_like(state["onhand"]),
                     pipeline=torch.zeros_like(state["pipeline"]))
        obs = self.reference_observe(blank, 0, trace)
        nodes = obs["nodes"]
        if self.params.demand_lags:
            nodes[..., self.node_layout["demand_lags"]] = 0.0
        return nodes, obs["edges"]

    def reference_observe(self, state: State, t: int, trace: Trace) -> Observation:
        """`observe` built feature by feature: the readable definition that the fast path
        (static template + dynamic slices) is tested against."""
        b, n = state["onhand"].shape
        dev = state["onhand"].device
        pipe = state["pipeline"].permute(1, 2, 0)  # [B, E, slots] in arrival order
        inbound = torch.zeros(b, n, self.slots, device=dev).index_add(
            1, self.edge_dst.to(dev), pipe
        )
        penalty = torch.zeros(b, n, device=dev)
        penalty[:, self.stores.to(dev)] = state["penalty"]
        mean = torch.zeros(b, n, device=dev)
        if "scale" in trace.data:  # replayed series: each episode's own level
            mean[:, self.stores.to(dev)] = trace["scale"][:, 0].to(dev)
        elif self.params.demand.kind != "series":
            mean[:, self.stores.to(dev)] = self.params.demand.mean.to(dev)
        lead_in = torch.zeros(b, n, device=dev).scatter_reduce(
            1, self.edge_dst.to(dev).expand(b, -1), state["lead_time"].float(), "amax",
            include_self=False,
        )
        kind = torch.stack(
            [self.is_store, ~self.is_store & ~self.is_transship, self.is_transship], -1
        ).float().to(dev)
        feats = [
            state["onhand"].unsqueeze(-1),
            inbound,
            state["holding"].unsqueeze(-1),
            penalty.unsqueeze(-1),
            mean.unsqueeze(-1),
            lead_in.unsqueeze(-1),
            kind.expand(b, -1, -1),
            torch.zeros(b, n, 1, device=dev),  # is_supplier
        ]
        if self.params.demand_lags:
            lags = self._past_demand(trace, t)  # [B, k, S]
            per_node = torch.zeros(b, n, lags.shape[1], device=dev)
            per_node[:, self.stores.to(dev)] = lags.transpose(1, 2)
            feats.append(per_node)
        nodes = torch.cat(feats, dim=-1)
        supplier = torch.zeros(b, 1, nodes.shape[-1], device=dev)
        supplier[..., self.node_layout["is_supplier"]] = 1.0
        edges = torch.cat(
            [pipe, state["lead_time"].float().unsqueeze(-1), state["order_cost"].unsqueeze(-1),
             (self.edge_src == SUPPLIER).float().to(dev).expand(b, -1).unsqueeze(-1)],
            dim=-1,
        )
        return {"nodes": torch.cat([nodes, supplier], dim=1), "edges": edges}

    def _past_demand(self, trace: Trace, t: int) -> Tensor:
        k = self.params.demand_lags
        demand = trace["demand"]
        past = demand[:, max(t - k, 0) : t]
        if past.shape[1] < k:
            pad = torch.zeros(demand.shape[0], k - past.shape[1], demand.shape[2], device=demand.device)
            past = torch.cat([pad, past], dim=1)
        return past.flip(1)  # most recent first

    def step(
        self, state: State, action: Tensor, t: int, trace: Trace
    ) -> tuple[State, Tensor, dict[str, Tensor]]:
        b, e = state["onhand"].shape[0], self.network.n_edges
        if action.shape != (b, e):
            raise ValueError(
                f"action: expected order quantities [batch={b}, edges={e}], got {tuple(action.shape)}"
            )
        # one reduction (a NaN or inf anywhere makes the sum non-finite); no per-step GPU sync
        if not action.is_cuda and not torch.isfinite(action.sum()):
            raise ValueError("action: order quantities must be finite (no NaN or inf)")
        demand = trace["demand"][:, t]
        order = action.clamp_min(0.0)
        if "capacity" in state:  # a link ships at most its capacity
            order = torch.minimum(order, state["capacity"])
        (onhand, pipeline, in_transit, ship, store_stock, shortfall, holding_cost,
         underage_cost, ordering_cost) = self._period(state, order, demand)
        cost = holding_cost + underage_cost + ordering_cost
        new_state = dict(state, onhand=onhand, pipeline=pipeline, in_transit=in_transit)
        # per-period metrics, summed over locations only when a rollout keeps them
        info = LazyDict({"cost": cost, "holding_cost": holding_cost,
                         "underage_cost": underage_cost, "ordering_cost": ordering_cost}, {
            "demand": lambda: demand.sum(-1),
            "sales": lambda: torch.minimum(store_stock.clamp_min(0.0), demand).sum(-1),
            "shortfall": lambda: shortfall.sum(-1),
            "shipped": lambda: ship.sum(-1),
        })
        return new_state, -cost, info

    def _period(self, state: State, order: Tensor, demand: Tensor) -> tuple[Tensor, ...]:
        """One period's dynamics after the order is placed, as a pure tensor function."""
        idx = self._indices(order.device)
        if idx.source_nodes.numel():
            ship, shipped = self._feasible(order, state["onhand"], idx)
            onhand = state["onhand"].index_add(1, idx.source_nodes, -shipped)
        else:  # every edge leaves the supplier: orders ship in full, no location sends stock
            ship, onhand = order, state["onhand"]
        onehot, pipe = state["lead_onehot"], state["pipeline"]  # [slots + 1, B, E], [slots, B, E]
        if self._has_zero_lead:
            onhand = onhand + idx.edges_to_nodes(ship * onehot[0])
        # what lands at the end of this period, and the pipeline one period on
        arrivals = torch.addcmul(pipe[0], ship, onehot[1])
        pipeline = _shifted_pipeline(pipe, ship, onehot)
        into_pipeline = ship - ship * onehot[0] if self._has_zero_lead else ship
        in_transit = state["in_transit"] + into_pipeline - arrivals

        store_stock = idx.store_values(onhand)
        if self.params.lost_sales:
            # stock never goes negative with lost sales (it starts >= 0, sales <= stock), so
            # max(stock - demand, 0) is what is left and its negative part what is lost:
            # three passes instead of four, equal to min(stock, demand) sales bit for bit
            short = store_stock - demand
            after = short.clamp_min(0.0)
            shortfall = after - short
        else:
            after = store_stock - demand
            shortfall = (-after).clamp_min(0.0)
        onhand = idx.with_store_values(onhand, after)
        # every location is >= 0 under lost sales (only backlogged stores go negative)
        held = onhand if self.params.lost_sales else onhand.clamp_min(0.0)
        holding_cost = _row_dot(state["holding"], held)
        if "transit_holding" in state:  # on what travels this period: lands at its end or later
            holding_cost = holding_cost + _row_dot(state["transit_holding"],
                                                   state["in_transit"] + into_pipeline)
        underage_cost = _row_dot(state["penalty"], shortfall)
        ordering_cost = (_row_dot(state["order_cost"], ship) if self._has_order_cost
                         else torch.zeros_like(holding_cost))
        onhand = onhand + idx.edges_to_nodes(arrivals)
        return (onhand, pipeline, in_transit, ship, store_stock, shortfall, holding_cost,
                underage_cost, ordering_cost)

    def _feasible(self, order: Tensor, onhand: Tensor, idx: _Incidence) -> tuple[Tensor, Tensor]:
        """Shipments ``[B, E]`` and what each internal source sends in all ``[B, K]``: each
        source's orders are scaled down proportionally to its on-hand stock (it sends
        min(requested, available)); a transshipment centre forwards all of its stock in
        proportion to the orders (equal split if none)."""
        requested = order @ idx.out_of  # [B, K] per internal source
        available = onhand.index_select(1, idx.source_nodes).clamp_min(0.0)
        if self.params.allocation == "priority":  # served in link order until stock runs out
            left = (idx.sources_to_edges(available) - order @ idx.earlier).clamp_min(0.0)
            ship = order + idx.internal * (torch.minimum(order, left) - order)
            return ship, ship @ idx.out_of
        share = available / requested.clamp_min(1e-9)
        if not idx.any_transship:  # ship = order * ratio, written as order + order * (ratio - 1)
            ship = torch.addcmul(order, order, idx.sources_to_edges(share.clamp_max(1.0) - 1.0))
            return ship, torch.minimum(requested, available)
        asked = (requested > 1e-9).float()
        ratio = torch.where(idx.transship, share * asked, share.clamp_max(1.0))
        equal = idx.transship * (1.0 - asked) * available / idx.out_degree
        ship = torch.addcmul(order, order, idx.sources_to_edges(ratio - 1.0)) + idx.sources_to_edges(equal)
        return ship, torch.where(idx.transship, available, torch.minimum(requested, available))

    @property
    def max_lead_time(self) -> int:
        return self.params.max_lead_time

    # -- helpers for heuristics, solvers and reports --------------------------------------
    def demand_moments(self) -> tuple[Tensor, Tensor]:
        """Per-period mean and standard deviation of each store's demand (before clipping)."""
        d = self.params.demand
        if d.kind == "poisson":
            return d.mean.float(), d.mean.float().sqrt()
        if d.kind == "normal":
            return d.mean.float(), d.std.float()
        seen = d.series if d.window is None else d.series[:, d.window[0]:d.window[1]]
        return seen.float().mean().reshape(1), seen.float().std().reshape(1)

    def cost_per_store_period(self, rewards: Tensor, warmup: int) -> Tensor:
        """Each episode's mean cost per store per period after ``warmup`` periods ``[B]``."""
        return -rewards[:, warmup:].mean(dim=1) / len(self.network.stores)

    episode_metric = cost_per_store_period

    # -- many settings in one batch (`oprl.sweep`) ----------------------------------------
    @classmethod
    def align(cls, sims: Sequence[InventorySimulator]) -> list[InventorySimulator]:
        return align_simulators(sims)

    @classmethod
    def stack(cls, sims: Sequence[InventorySimulator], episodes: int) -> InventorySimulator:
        return stack_simulators(sims, episodes)


# -- scenarios ---------------------------------------------------------------------------------


# -- many settings in one batch (used by `oprl.sweep`) -------------------------------------
_PER_SAMPLE = ("lead_time", "holding", "penalty", "order_cost", "initial_onhand")


def align_simulators(sims: Sequence[InventorySimulator]) -> list[InventorySimulator]:
    """The same scenarios with one observation layout (the most pipeline slots any needs), so
    that their episodes can share one batch; dynamics and optima are unchanged."""
    slots = max(sim.slots for sim in sims)
    return [InventorySimulator(replace(sim.params, pipeline_slots=slots)) for sim in sims]


def stack_simulators(sims: Sequence[InventorySimulator], episodes: int) -> InventorySimulator:
    """One simulator whose batch is ``episodes`` episodes of each of ``sims`` in turn.

    The settings may differ only in the per-sample fields (lead times and costs); anything
    else (network, demand model, layout) differing is a ValueError."""
    if not sims:
        raise ValueError("sims: at least one simulator is required")
    first = sims[0].params
    for sim in sims[1:]:
        for f in fields(first):
            if f.name in _PER_SAMPLE:
                continue
            if not _same(getattr(first, f.name), getattr(sim.params, f.name)):
                raise ValueError(f"{f.name}: differs between the settings; only "
                                 f"{', '.join(_PER_SAMPLE)} may vary within one batch")
    stacked = {}
    for name in _PER_SAMPLE:
        values = [getattr(sim.params, name) for sim in sims]
        if all(v is None for v in values):
            continue
        if any(v is None for v in values):
            raise ValueError(f"{name}: set for some settings and not others")
        stacked[name] = torch.cat([_per_sample(name, v, episodes, v.device) for v in values])
    return InventorySimulator(replace(first, **stacked))


def _same(a, b) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape \
            and bool((a == b).all())
    if hasattr(a, "__dataclass_fields__") and type(a) is type(b):
        return all(_same(getattr(a, f.name), getattr(b, f.name)) for f in fields(a))
    return a == b


def series_trace(demand: Tensor, level: Tensor, *, seed: int | None,
                 device: str | torch.device = "cpu") -> Trace:
    """A trace of replayed demand ``[B, T, 1]`` with each episode's series level ``[B]`` as
    ``scale`` ``[B, T, 1]`` (the mean-demand feature of its store, see `reference_observe`)."""
    demand = demand.transpose(0, 1).contiguous().transpose(0, 1)
    scale = level.float().reshape(-1, 1, 1).expand(-1, demand.shape[1], 1)
    return Trace({"demand": demand.to(device), "scale": scale.to(device)}, seed=seed)


def _params_naming(names: str, **fields_: object) -> InventoryParams:
    """`InventoryParams` for a factory that takes its lead times under other ``names``: a
    ``lead_time:`` error names them too."""
    try:
        return InventoryParams(**fields_)
    except ValueError as err:
        if str(err).startswith("lead_time:"):
            raise ValueError(f"{names}: {err}") from None
        raise


def _rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _one_store_costs(**values: float) -> None:
    """Refuse, before any training, the corner cases whose answer is trivial or unbounded and
    which the references do not model: no penalty (order nothing), no holding cost (stock
    without limit), no demand."""
    why = {"penalty": "with no penalty the optimum is to order nothing",
           "holding": "with no holding cost the optimal stock is unbounded",
           "mean": "with no demand there is nothing to decide"}
    for name, value in values.items():
        if isinstance(value, (int, float)) and value == 0:  # negatives: the range checks
            raise ValueError(f"{name}: must be > 0 ({why[name]}), got {value}")


def one_store_backlog(
    lead_time: int = 4, penalty: float = 9.0, holding: float = 1.0, mean: float = 5.0,
    std: float = 1.6, **kw,
) -> InventorySimulator:
    """One store, backlogged Normal(5, 1.6) demand clipped at 0; optimum is base-stock."""
    _one_store_costs(penalty=penalty, holding=holding, mean=mean)
    params = InventoryParams(
        network=Network(("store",), ((SUPPLIER, 0),)),
        demand=Demand("normal", torch.tensor([float(mean)]), torch.tensor([float(std)])),
        lead_time=lead_time, holding=holding, penalty=penalty, order_cost=0.0,
        lost_sales=False, name="inventory/one_store_backlog", **kw,
    )
    return InventorySimulator(params)


def one_store_lost(
    lead_time: int = 4, penalty: float = 9.0, holding: float = 1.0, mean: float = 5.0, **kw
) -> InventorySimulator:
    """One store, lost sales, Poisson(5) demand; optimum by dynamic programming (Zipkin 2008)."""
    _one_store_costs(penalty=penalty, holding=holding, mean=mean)
    params = InventoryParams(
        network=Network(("store",), ((SUPPLIER, 0),)),
        demand=Demand("poisson", torch.tensor([float(mean)])),
        lead_time=lead_time, holding=holding, penalty=penalty, order_cost=0.0,
        lost_sales=True, name="inventory/one_store_lost", **kw,
    )
    return InventorySimulator(params)


def serial(
    store_lead_time: int = 4, penalty: float = 9.0, mean: float = 5.0, std: float = 2.0,
    holding: Sequence[float] = (0.1, 0.2, 0.5, 1.0), lead_times: Sequence[int] | None = None, **kw,
) -> InventorySimulator:
    """Four locations in series, supplier -> 0 -> 1 -> 2 (warehouse) -> 3 (store), backlogged
    Normal(5, 2); upstream lead times 2, 4, 3 by default. Optimal: echelon base-stock."""
    leads = (torch.as_tensor(lead_times) if lead_times is not None
             else torch.tensor([2, 4, 3, int(store_lead_time)]))
    n = len(holding)
    if leads.dim() == 0 or leads.shape[-1] != n:
        raise ValueError(f"lead_times: one per location ({n}), got shape {tuple(leads.shape)}")
    params = _params_naming("store_lead_time, lead_times",
        network=Network(("warehouse",) * (n - 1) + ("store",),
                        ((SUPPLIER, 0),) + tuple((i, i + 1) for i in range(n - 1))),
        demand=Demand("normal", torch.tensor([float(mean)]), torch.tensor([float(std)])),
        lead_time=leads, holding=list(holding), penalty=penalty, order_cost=0.0,
        lost_sales=False, name="inventory/serial", **kw,
    )
    return InventorySimulator(params)


def transshipment(
    n_stores: int = 3, store_lead_time: int = 2, warehouse_lead_time: int = 3,
    penalty: float = 9.0, holding: float = 1.0, correlation: float = 0.0, mean: float = 5.0,
    std: float = 2.0, **kw,
) -> InventorySimulator:
    """A transshipment centre (holds no stock) feeding identical backlogged stores; bounded
    below by the balance relaxation (`solvers.inventory.balanced_allocation_bound`)."""
    s = int(n_stores)
    if s < 1:
        raise ValueError(f"n_stores: must be >= 1, got {n_stores}")
    check_size(s + 1, s + 1, 1, 0, f"n_stores={n_stores}")
    params = _params_naming("store_lead_time, warehouse_lead_time",
        network=Network(("transship",) + ("store",) * s,
                        ((SUPPLIER, 0),) + tuple((0, i + 1) for i in range(s))),
        demand=Demand("normal", torch.full((s,), float(mean)), torch.full((s,), float(std)),
                      correlation=float(correlation)),
        lead_time=[warehouse_lead_time] + [store_lead_time] * s,
        holding=[0.0] + [holding] * s, penalty=penalty, order_cost=0.0, lost_sales=False,
        name="inventory/transshipment", **kw,
    )
    return InventorySimulator(params)


def one_warehouse(
    n_stores: int = 10, instance_seed: int = 0, correlation: float = 0.5,
    warehouse_holding: float = 0.3, warehouse_lead_time: int = 3, **kw,
) -> InventorySimulator:
    """One warehouse, many lost-sales stores with heterogeneous costs and demand, sampled
    from the HDPO paper's ranges with ``instance_seed``."""
    s = int(n_stores)
    if s < 1:
        raise ValueError(f"n_stores: must be >= 1, got {n_stores}")
    check_size(s + 1, s + 1, 1, 0, f"n_stores={n_stores}")
    g = _rng(instance_seed)
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(s, generator=g)  # noqa: E731
    mean, cv = u(2.5, 7.5), u(0.25, 0.5)
    store_h, store_p = u(0.7, 1.3), u(6.3, 11.7)
    store_lead = torch.randint(2, 4, (s,), generator=g)
    params = _params_naming("warehouse_lead_time",
        network=Network(("warehouse",) + ("store",) * s,
                        ((SUPPLIER, 0),) + tuple((0, i + 1) for i in range(s))),
        demand=Demand("normal", mean, mean * cv, correlation=float(correlation)),
        lead_time=torch.cat([torch.tensor([warehouse_lead_time]), store_lead]),
        holding=torch.cat([torch.tensor([warehouse_holding]), store_h]), penalty=store_p,
        order_cost=0.0, lost_sales=True, name="inventory/one_warehouse", **kw,
    )
    return InventorySimulator(params)


def many_warehouses(
    n_warehouses: int = 3, n_stores: int = 10, links_per_store: int = 2, instance_seed: int = 0,
    correlation: float = 0.5, **kw,
) -> InventorySimulator:
    """Several warehouses, each store linked to ``links_per_store`` of them with its own lead
    time and per-unit shipping cost; lost sales; instance drawn with ``instance_seed``."""
    w, s = int(n_warehouses), int(n_stores)
    if w < 1 or s < 1:
        raise ValueError("n_warehouses, n_stores: must be >= 1")
    if not 1 <= links_per_store <= w:
        raise ValueError(f"links_per_store: must lie in [1, n_warehouses={w}]")
    check_size(w + s, w + s * links_per_store, 1, 0,
               f"n_warehouses={n_warehouses}, n_stores={n_stores}")
    g = _rng(instance_seed)
    u = lambda lo, hi, k: lo + (hi - lo) * torch.rand(k, generator=g)  # noqa: E731
    edges = [(SUPPLIER, i) for i in range(w)]
    for j in range(s):
        linked = torch.randperm(w, generator=g)[:links_per_store].sort().values
        edges += [(int(i), w + j) for i in linked]
    # every warehouse must ship somewhere: link an unused one to a random store
    for i in range(w):
        if not any(src == i for src, _ in edges):
            edges.append((i, w + int(torch.randint(s, (1,), generator=g))))
    e_store = len(edges) - w
    mean, cv = u(2.5, 7.5, s), u(0.25, 0.5, s)
    params = InventoryParams(
        network=Network(("warehouse",) * w + ("store",) * s, tuple(edges)),
        demand=Demand("normal", mean, mean * cv, correlation=float(correlation)),
        lead_time=torch.cat([torch.randint(2, 5, (w,), generator=g),
                             torch.randint(1, 4, (e_store,), generator=g)]),
        holding=torch.cat([u(0.2, 0.4, w), u(0.7, 1.3, s)]), penalty=u(6.3, 11.7, s),
        order_cost=torch.cat([torch.zeros(w), u(0.0, 0.3, e_store)]), lost_sales=True,
        name="inventory/many_warehouses", **kw,
    )
    return InventorySimulator(params)


def load_demand_series(path: str | Path) -> Tensor:
    """Read per-product demand series from CSV or Parquet: either long format with columns
    (product, period or date, demand; ``store`` or ``series`` may name the product) or wide format
    with one row per product and one column per period.
    Returns ``[products, periods]``; NaN or negative demand is a ValueError naming the file."""
    import pandas as pd

    from oprl.data import read_table  # pandas only when a file is read

    path = Path(path)
    if not path.exists():
        raise ValueError(f"path: demand file {str(path)!r} does not exist")
    frame = read_table(path, "path")  # the engine's reader: one-line errors naming the file
    lower = [str(c).strip().lower() for c in frame.columns]
    twice = sorted({c for c in lower if lower.count(c) > 1})
    if twice:
        raise ValueError(f"{path.name}: column {twice[0]!r} appears more than once")
    cols = {str(c).lower(): c for c in frame.columns}
    series = next((cols[n] for n in ("product", "store", "series") if n in cols), None)
    when = next((cols[n] for n in ("period", "date") if n in cols), None)
    if series is not None and when is not None and "demand" in cols:
        if frame.duplicated([series, when]).any():
            raise ValueError(f"{path.name}: more than one demand row for the same ({series}, {when})")
        if when == cols.get("date"):
            dates = pd.to_datetime(frame[when], errors="coerce")
            if dates.isna().any():
                bad = frame[when][dates.isna()].iloc[0]
                raise ValueError(f"{path.name}: {when} {bad!r} is not a date")
            frame = frame.assign(**{when: dates})
        frame = frame.pivot(index=series, columns=when, values=cols["demand"])
        if when == cols.get("date") and frame.shape[1] > 2:
            steps = frame.columns.to_series().diff().dropna()
            if steps.nunique() != 1:
                raise ValueError(f"{path.name}: the dates are not evenly spaced (gaps of "
                                 f"{sorted(set(steps.dt.days))} days); fill missing periods with 0")
    else:
        frame = frame.set_index(frame.columns[0])
    numeric = frame.apply(pd.to_numeric, errors="coerce")
    bad = numeric.isna() & frame.notna()
    if bad.to_numpy().any():
        row, col = (int(i[0]) for i in bad.to_numpy().nonzero())
        raise ValueError(f"{path.name}: demand {frame.iat[row, col]!r} for product "
                         f"{frame.index[row]!r}, period {frame.columns[col]!r} is not a number")
    values = torch.tensor(numeric.to_numpy(dtype="float64"))
    if values.numel() == 0:
        raise ValueError(f"{path.name}: no demand values found")
    if torch.isnan(values).any():
        row, col = map(int, torch.nonzero(torch.isnan(values))[0])
        raise ValueError(f"{path.name}: demand is missing (NaN) for product {frame.index[row]!r}, "
                         f"period {frame.columns[col]!r}")
    if (values < 0).any():
        raise ValueError(f"{path.name}: demand must be non-negative")
    return values.float()


