"""The inventory GNN policy: the generic `oprl.nn.GraphEncoder` over the supply graph (samples
batched as one disjoint union graph, messages both ways along each edge, mean and max
aggregation, so the same weights serve 3 or 50 stores) and an edge head that turns the two
endpoint embeddings and the edge's features into a non-negative order per edge.
"""

from __future__ import annotations

from torch import Tensor, nn

from oprl.core import Observation, WholeUnitActions
from oprl.nn import EdgeHead, GraphEncoder, shrink_last_layer
from oprl.policies.inventory_mlp import (
    InventoryFeatures,
    edge_index_with_supplier,
    integer_demand,
    scaled_orders,
    whole_units,
)
from oprl.simulators.inventory import InventorySimulator


class InventoryGNN(nn.Module, WholeUnitActions):
    """Inventory policy: `GraphEncoder` over the supply graph and an `EdgeHead` ordering
    ``softplus(.) * scale`` on each edge. The graph and scales are non-persistent buffers, so a
    state dict trained on one network loads into a policy built for another (``slots`` fixes
    the pipeline feature width when lead times differ). ``integer_orders`` as in `InventoryMLP`."""

    def __init__(
        self,
        sim: InventorySimulator,
        hidden: int = 64,
        layers: int = 3,
        slots: int | None = None,
        init_gain: float = 0.01,
        integer_orders: bool | None = None,
    ) -> None:
        super().__init__()
        self.features = InventoryFeatures(sim, slots)
        self.encoder = GraphEncoder(self.features.node_dim, self.features.edge_dim, hidden, layers)
        self.head = EdgeHead(hidden)
        shrink_last_layer(self.head.net, init_gain)
        self.register_buffer("edge_index", edge_index_with_supplier(sim), persistent=False)
        self.integer_orders = integer_demand(sim) if integer_orders is None else bool(integer_orders)

    def forward(self, obs: Observation) -> Tensor:
        nodes, edges = self.features.nodes(obs), self.features.edges(obs)
        node_h, edge_h = self.encoder(nodes, edges, self.edge_index)
        raw = self.head(node_h, edge_h, self.edge_index).squeeze(-1)
        return whole_units(scaled_orders(raw, self.features.scales(obs)[1]), self.integer_orders,
                           self.training)
