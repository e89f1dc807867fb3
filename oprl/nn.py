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
    the gather, so the wide matmuls run per node rather than per edge (same function)."""

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


class GraphEncoder(nn.Module):
    """Node and edge embeddings after ``layers`` rounds of bidirectional message passing."""

    def __init__(self, node_dim: int, edge_dim: int, hidden: int = 64, layers: int = 3) -> None:
        super().__init__()
        self.hidden = hidden
        self.node_in = mlp([node_dim, hidden, hidden])
        self.edge_in = mlp([edge_dim + 2, hidden, hidden])
        self.convs = nn.ModuleList(EdgeConv(hidden) for _ in range(layers))
        self._cache: dict[tuple, Tensor] = {}

    def _batched_index(self, edge_index: Tensor, batch: int, n_nodes: int) -> Tensor:
        """Both directions of every edge, offset per sample: ``[2, B * 2E]``."""
        key = (edge_index.data_ptr(), tuple(edge_index.shape), batch, n_nodes, edge_index.device)
        if key not in self._cache:
            both = torch.cat([edge_index, edge_index.flip(0)], dim=1)
            offset = torch.arange(batch, device=edge_index.device) * n_nodes
            self._cache = {key: (both.unsqueeze(1) + offset.view(1, -1, 1)).reshape(2, -1)}
        return self._cache[key]

    def forward(self, nodes: Tensor, edges: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
        """``nodes [B, V, Fn]``, ``edges [B, E, Fe]``, ``edge_index [2, E]`` -> node embeddings
        ``[B, V, H]`` and forward-direction edge embeddings ``[B, E, H]``."""
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
        src, dst = node_h[:, edge_index[0]], node_h[:, edge_index[1]]
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
