"""`GraphEncoder`'s dense path (``[B, V, H]`` gathers, in-degree groups) and its sparse path
(torch-geometric on the disjoint union) are one function with one set of parameters."""

from __future__ import annotations

import pytest
import torch

from oprl.nn import DENSE_MAX_GROUPS, DensePlan, GraphEncoder


def _outputs(enc: GraphEncoder, path: str, nodes, edges, edge_index):
    enc.path = path
    enc.zero_grad()
    nodes = nodes.clone().requires_grad_()
    edges = edges.clone().requires_grad_()
    node_h, edge_h = enc(nodes, edges, edge_index)
    (node_h.square().sum() + edge_h.sin().sum()).backward()
    return [node_h, edge_h, nodes.grad, edges.grad] + [p.grad for p in enc.parameters()]


@pytest.mark.parametrize("seed", range(6))
def test_dense_and_sparse_paths_agree_with_gradients(seed: int) -> None:
    """Random graphs (self-loops, repeated edges, an isolated last node): same embeddings and
    the same gradients for the inputs and every parameter."""
    g = torch.Generator().manual_seed(seed)
    v = int(torch.randint(2, 10, (), generator=g))
    e = int(torch.randint(1, 20, (), generator=g))
    edge_index = torch.randint(0, v - 1, (2, e), generator=g)
    torch.manual_seed(seed)
    enc = GraphEncoder(node_dim=5, edge_dim=3, hidden=8, layers=2)
    nodes, edges = torch.randn(4, v, 5, generator=g), torch.randn(4, e, 3, generator=g)
    dense = _outputs(enc, "dense", nodes, edges, edge_index)
    sparse = _outputs(enc, "sparse", nodes, edges, edge_index)
    for a, b in zip(dense, sparse):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_plan_groups_targets_by_in_degree() -> None:
    """A star (hub 0, leaves 1..3): leaves receive one message each, the hub three; the
    directed edges are sorted by target, hub's group last."""
    plan = DensePlan.of(torch.tensor([[0, 0, 0], [1, 2, 3]]), n_nodes=5)
    assert plan.groups == ((0, 3, 1), (3, 1, 3))
    assert plan.isolated == 1
    assert plan.target.tolist() == [1, 2, 3, 0, 0, 0]
    msg = torch.arange(6.0).view(1, 6, 1)
    agg = plan.aggregate(msg)  # [mean, max] per node, nodes in their own order
    assert agg[0, :, 0].tolist() == [4.0, 0.0, 1.0, 2.0, 0.0]
    assert agg[0, :, 1].tolist() == [5.0, 0.0, 1.0, 2.0, 0.0]


def test_auto_path_rule_and_bad_path() -> None:
    enc = GraphEncoder(2, 1, hidden=4, layers=1)
    star = torch.tensor([[0, 0], [1, 2]])
    assert enc.uses_dense(star, 3)
    # a path 0 -> 1 -> ... with fan-in k at node k: more in-degree groups than the limit
    src = [s for k in range(1, DENSE_MAX_GROUPS + 3) for s in range(k)]
    dst = [100 + k for k in range(1, DENSE_MAX_GROUPS + 3) for _ in range(k)]
    many = torch.tensor([src, dst])
    assert not enc.uses_dense(many, 100 + DENSE_MAX_GROUPS + 3)
    with pytest.raises(ValueError, match="path"):
        GraphEncoder(2, 1, path="fast")
