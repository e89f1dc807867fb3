"""Generic network blocks every domain's policies build on.

`mlp` and `shrink_last_layer` make small feed-forward nets that start near a sensible policy.
`GraphEncoder` is one message-passing encoder for any graph: node features ``[B, V, node_dim]``,
edge features ``[B, E, edge_dim]`` and one ``edge_index`` shared by the batch. Messages flow
both ways along each edge (a direction flag tells them apart) and are aggregated by mean and
max, so the same weights serve 3 or 50 nodes and the output is invariant to relabelling nodes.
The heads turn embeddings into one output per edge, per node or per node pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing


def mlp(sizes: Sequence[int], act: type[nn.Module] = nn.ELU, last_act: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or last_act:
            layers.append(act())
    return nn.Sequential(*layers)


def shrink_last_layer(net: nn.Sequential, gain: float = 0.01) -> None:
    """Start near the 'order the mean demand' policy: tiny output weights, zero bias."""
    last = [m for m in net if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(gain)
        last.bias.zero_()



class EdgeConv(MessagePassing):
    """Residual layer: message = MLP(target, source, edge); update = MLP(node, mean, max).

    The message MLP's first layer is split into target, source and edge parts applied before
    the gather, so the wide matmuls run per node rather than per edge (same function).
    `forward` runs on a disjoint-union graph ``[B * V, H]``, `dense` on ``[B, V, H]`` with one
    graph shared by the batch (`DensePlan`); both compute the same function."""

    def __init__(self, hidden: int) -> None:
        super().__init__(aggr=["mean", "max"])
        self.lin_target = nn.Linear(hidden, hidden)
        self.lin_source = nn.Linear(hidden, hidden, bias=False)
        self.lin_edge = nn.Linear(hidden, hidden, bias=False)
        self.message_out = nn.Sequential(nn.ELU(), nn.Linear(hidden, hidden), nn.ELU())
        self.update_mlp = mlp([3 * hidden, hidden, hidden])
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        agg = self.propagate(
            edge_index, t=self.lin_target(x), s=self.lin_source(x), e=self.lin_edge(edge_attr)
        )
        return self.norm(x + self.update_mlp(torch.cat([x, agg], dim=-1)))

    def message(self, t_i: Tensor, s_j: Tensor, e: Tensor) -> Tensor:
        return self.message_out(t_i + s_j + e)

    def dense(self, x: Tensor, plan: DensePlan, edge_attr: Tensor) -> Tensor:
        """The same layer on ``x [B, V, H]`` and ``edge_attr [B, 2E, H]`` in the plan's
        directed-edge order: gathers along the node axis, mean and max per in-degree group."""
        t = self.lin_target(x).index_select(1, plan.target)
        s = self.lin_source(x).index_select(1, plan.source)
        msg = self.message_out(t + s + self.lin_edge(edge_attr))
        agg = plan.aggregate(msg)
        return self.norm(x + self.update_mlp(torch.cat([x, agg], dim=-1)))


@dataclass(frozen=True)
class DensePlan:
    """One small graph shared by every sample, laid out for dense message passing.

    The 2E directed edges (forward ``edge_index`` then reversed) are sorted by target and
    grouped by the target's in-degree d: a group of k targets is a ``[B, k, d, H]`` view of
    the messages, reduced by ``mean``/``amax`` over d (no scatter, no padding). Groups come
    out in group order; ``node_order`` puts them back in node order."""

    n_nodes: int
    target: Tensor  # [2E] target node of each directed edge, sorted
    source: Tensor  # [2E] its source node
    edge_column: Tensor  # [2E] the column of ``edges`` [B, E, Fe] it carries
    flags: Tensor  # [2E, 2] direction flag: (1, 0) forward, (0, 1) reversed
    forward_position: Tensor  # [E] where forward edge e sits in the sorted order
    groups: tuple[tuple[int, int, int], ...]  # (first sorted edge, targets k, in-degree d)
    isolated: int  # nodes without incoming edges (aggregate to 0), placed after the groups
    node_order: Tensor | None  # [V] row of each node among the grouped rows; None: identity

    @staticmethod
    def of(edge_index: Tensor, n_nodes: int) -> DensePlan:
        """The plan of ``edge_index [2, E]`` (source row 0, target row 1) over ``n_nodes``
        nodes, on the index's device."""
        dev, e, n = edge_index.device, edge_index.shape[1], int(n_nodes)
        both = torch.cat([edge_index, edge_index.flip(0)], dim=1).cpu()
        degree = torch.bincount(both[1], minlength=n)
        # targets ordered by (in-degree, node id); edges by their target's place, then id
        nodes = sorted((int(d), v) for v, d in enumerate(degree.tolist()) if d > 0)
        rank = torch.empty(n, dtype=torch.long)
        rank[torch.tensor([v for _, v in nodes], dtype=torch.long)] = torch.arange(len(nodes))
        edge = torch.sort(rank[both[1]], stable=True).indices
        groups, start, i = [], 0, 0
        while i < len(nodes):
            d = nodes[i][0]
            k = sum(1 for dd, _ in nodes[i:] if dd == d)
            groups.append((start, k, d))
            start, i = start + k * d, i + k
        isolated = [v for v in range(n) if degree[v] == 0]
        order = [v for _, v in nodes] + isolated
        node_order = torch.empty(n, dtype=torch.long)
        node_order[torch.tensor(order, dtype=torch.long)] = torch.arange(n)
        position = torch.empty_like(edge)
        position[edge] = torch.arange(edge.numel())
        identity = bool(torch.equal(node_order, torch.arange(n)))
        return DensePlan(
            n_nodes=n, target=both[1, edge].to(dev), source=both[0, edge].to(dev),
            edge_column=(edge % max(e, 1)).to(dev),
            flags=torch.nn.functional.one_hot((edge >= e).long(), 2).float().to(dev),
            forward_position=position[:e].to(dev),
            groups=tuple(groups), isolated=len(isolated),
            node_order=None if identity else node_order.to(dev),
        )

    def aggregate(self, msg: Tensor) -> Tensor:
        """``[mean, max]`` of each node's incoming messages ``[B, 2E, H] -> [B, V, 2H]``."""
        b, _, h = msg.shape
        parts = []
        for start, k, d in self.groups:
            group = msg.narrow(1, start, k * d)
            if d == 1:
                parts.append(torch.cat([group, group], dim=-1))
            else:
                group = group.view(b, k, d, h)
                parts.append(torch.cat([group.mean(2), group.amax(2)], dim=-1))
        if self.isolated:
            parts.append(msg.new_zeros(b, self.isolated, 2 * h))
        agg = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return agg if self.node_order is None else agg.index_select(1, self.node_order)


DENSE_MAX_GROUPS = 8
ENCODER_PATHS = ("auto", "dense", "sparse")


class GraphEncoder(nn.Module):
    """Node and edge embeddings after ``layers`` rounds of bidirectional message passing.

    Two implementations of one function (same parameters, so a state dict loads in both):
    ``dense`` keeps ``[B, V, H]`` tensors and gathers along the node axis (`DensePlan`), fast
    for the small graphs every sample shares; ``sparse`` runs torch-geometric on the disjoint
    union of the B graphs. ``path='auto'`` picks dense when the graph's nodes have at most
    `DENSE_MAX_GROUPS` distinct in-degrees (each costs a few tensor operations per layer),
    which covers stars, trees of stores, complete and grid-like graphs."""

    def __init__(self, node_dim: int, edge_dim: int, hidden: int = 64, layers: int = 3,
                 path: str = "auto") -> None:
        super().__init__()
        if path not in ENCODER_PATHS:
            raise ValueError(f"path: {path!r}; allowed {ENCODER_PATHS}")
        self.hidden = hidden
        self.path = path
        self.node_in = mlp([node_dim, hidden, hidden])
        self.edge_in = mlp([edge_dim + 2, hidden, hidden])
        self.convs = nn.ModuleList(EdgeConv(hidden) for _ in range(layers))
        self._cache: dict[tuple, Tensor] = {}
        self._plans: dict[tuple, DensePlan] = {}

    def _batched_index(self, edge_index: Tensor, batch: int, n_nodes: int) -> Tensor:
        """Both directions of every edge, offset per sample: ``[2, B * 2E]``."""
        key = (edge_index.data_ptr(), tuple(edge_index.shape), batch, n_nodes, edge_index.device)
        if key not in self._cache:
            both = torch.cat([edge_index, edge_index.flip(0)], dim=1)
            offset = torch.arange(batch, device=edge_index.device) * n_nodes
            self._cache = {key: (both.unsqueeze(1) + offset.view(1, -1, 1)).reshape(2, -1)}
        return self._cache[key]

    def plan(self, edge_index: Tensor, n_nodes: int) -> DensePlan:
        """The graph's `DensePlan`, made once per graph tensor (a memo, not state)."""
        key = (edge_index.data_ptr(), edge_index._version, tuple(edge_index.shape), n_nodes,
               edge_index.device)
        if key not in self._plans:
            self._plans = {key: DensePlan.of(edge_index, n_nodes)}
        return self._plans[key]

    def uses_dense(self, edge_index: Tensor, n_nodes: int) -> bool:
        """Whether `forward` takes the dense path for this graph (see the class docstring)."""
        if self.path != "auto":
            return self.path == "dense"
        return len(self.plan(edge_index, n_nodes).groups) <= DENSE_MAX_GROUPS

    def forward(self, nodes: Tensor, edges: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
        """``nodes [B, V, Fn]``, ``edges [B, E, Fe]``, ``edge_index [2, E]`` -> node embeddings
        ``[B, V, H]`` and forward-direction edge embeddings ``[B, E, H]``."""
        if self.uses_dense(edge_index, nodes.shape[1]):
            return self._dense(nodes, edges, self.plan(edge_index, nodes.shape[1]))
        return self._sparse(nodes, edges, edge_index)

    def _dense(self, nodes: Tensor, edges: Tensor, plan: DensePlan) -> tuple[Tensor, Tensor]:
        b = nodes.shape[0]
        flags = plan.flags.to(edges.dtype).expand(b, -1, -1)
        edge_h = self.edge_in(torch.cat([edges.index_select(1, plan.edge_column), flags], -1))
        x = self.node_in(nodes)
        for conv in self.convs:
            x = conv.dense(x, plan, edge_h)
        return x, edge_h.index_select(1, plan.forward_position)

    def _sparse(self, nodes: Tensor, edges: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
        b, v, _ = nodes.shape
        e = edges.shape[1]
        flag = torch.zeros(b, e, 2, device=edges.device, dtype=edges.dtype)
        fwd = torch.cat([edges, flag.index_fill(-1, torch.tensor([0], device=edges.device), 1.0)], -1)
        bwd = torch.cat([edges, flag.index_fill(-1, torch.tensor([1], device=edges.device), 1.0)], -1)
        edge_h = self.edge_in(torch.cat([fwd, bwd], dim=1))  # [B, 2E, H]
        x = self.node_in(nodes).reshape(b * v, -1)
        index = self._batched_index(edge_index, b, v)
        attr = edge_h.reshape(b * 2 * e, -1)
        for conv in self.convs:
            x = conv(x, index, attr)
        return x.view(b, v, -1), edge_h[:, :e]


class EdgeHead(nn.Module):
    """One output per edge from its source, destination and edge embeddings (flows, orders)."""

    def __init__(self, hidden: int, out: int = 1) -> None:
        super().__init__()
        self.net = mlp([3 * hidden, hidden, out])

    def forward(self, node_h: Tensor, edge_h: Tensor, edge_index: Tensor) -> Tensor:
        src, dst = node_h.index_select(1, edge_index[0]), node_h.index_select(1, edge_index[1])
        return self.net(torch.cat([src, dst, edge_h], dim=-1))


class NodeHead(nn.Module):
    """One output per node (orders, harvest, labour)."""

    def __init__(self, hidden: int, out: int = 1) -> None:
        super().__init__()
        self.net = mlp([hidden, hidden, out])

    def forward(self, node_h: Tensor) -> Tensor:
        return self.net(node_h)


class PairScoreHead(nn.Module):
    """Score of every (left, right) node pair ``[B, L, R]`` for matching."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.left = nn.Linear(hidden, hidden)
        self.right = nn.Linear(hidden, hidden)
        self.net = mlp([hidden, hidden, 1])

    def forward(self, left_h: Tensor, right_h: Tensor) -> Tensor:
        pair = torch.relu(self.left(left_h).unsqueeze(2) + self.right(right_h).unsqueeze(1))
        return self.net(pair).squeeze(-1)
