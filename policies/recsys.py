"""Recommendation policies: learned candidate scorers (MLP, GNN) and classical rankers.

Every policy maps an observation (``user [B, Fu]``, ``items [B, C, Fi]``, the predicted
signals) to probabilities over the C candidates; the simulator draws the shown item from
them. Learned policies expose ``scores(obs) -> [B, C]`` (logits), which is what
`oprl.algorithms.constrained_ac` needs: a copy of the same network serves as a per-action
critic (Q values over the candidates).

- `CandidateMLP`: one MLP scores each (user, candidate) pair; permutation-equivariant over
  the slate, so the same weights serve any slate size.
- `CandidateGNN`: the user and its candidates as a star bipartite graph, encoded by
  `oprl.nn.GraphEncoder`, an `EdgeHead` scoring each user-candidate edge.
- `WeightedRanking`: argmax of a fixed weighted sum of predicted watch time and signals;
  myopic ranking by predicted watch time is the weights (1, 0, 0, 0, 0).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from oprl.core import Observation, Trace, rollout
from oprl.nn import EdgeHead, GraphEncoder, mlp, shrink_last_layer
from oprl.simulators.recsys import SIGNALS


def _dims(sim) -> tuple[int, int]:
    """User and candidate feature widths of ``sim``'s observations."""
    trace = sim.sample_trace(1, 1, seed=0)
    obs = sim.observe(sim.reset(trace), 0, trace)
    return obs["user"].shape[-1], obs["items"].shape[-1]


class CandidateMLP(nn.Module):
    """Softmax over candidates of ``MLP(user, candidate)`` scores."""

    def __init__(self, sim, hidden: tuple[int, ...] = (64, 64), init_gain: float = 0.1) -> None:
        super().__init__()
        self.user_dim, self.item_dim = _dims(sim)
        self.net = mlp([self.user_dim + self.item_dim, *hidden, 1])
        shrink_last_layer(self.net, init_gain)

    def scores(self, obs: Observation) -> Tensor:
        items = obs["items"]
        user = obs["user"].unsqueeze(1).expand(-1, items.shape[1], -1)
        return self.net(torch.cat([user, items], dim=-1)).squeeze(-1)

    def forward(self, obs: Observation) -> Tensor:
        return torch.softmax(self.scores(obs), dim=-1)


class CandidateGNN(nn.Module):
    """Softmax over candidates of edge scores on the user-candidate star graph."""

    def __init__(self, sim, hidden: int = 32, layers: int = 2, init_gain: float = 0.1) -> None:
        super().__init__()
        self.user_dim, self.item_dim = _dims(sim)
        self.node_dim = max(self.user_dim, self.item_dim) + 1  # + is-user flag
        self.encoder = GraphEncoder(self.node_dim, self.item_dim, hidden, layers)
        self.head = EdgeHead(hidden)
        shrink_last_layer(self.head.net, init_gain)
        self.register_buffer("edge_index", sim.graph().edge_index, persistent=False)

    def _nodes(self, obs: Observation) -> Tensor:
        user, items = obs["user"], obs["items"]
        b, c, _ = items.shape
        pad_u = self.node_dim - 1 - self.user_dim
        pad_i = self.node_dim - 1 - self.item_dim
        u = torch.cat([user, user.new_zeros(b, pad_u), user.new_ones(b, 1)], -1).unsqueeze(1)
        i = torch.cat([items, items.new_zeros(b, c, pad_i), items.new_zeros(b, c, 1)], -1)
        return torch.cat([u, i], dim=1)

    def scores(self, obs: Observation) -> Tensor:
        node_h, edge_h = self.encoder(self._nodes(obs), obs["items"], self.edge_index)
        return self.head(node_h, edge_h, self.edge_index).squeeze(-1)

    def forward(self, obs: Observation) -> Tensor:
        return torch.softmax(self.scores(obs), dim=-1)


def mlp_policy(sim, **kw) -> CandidateMLP:
    return CandidateMLP(sim, **kw)


def gnn_policy(sim, **kw) -> CandidateGNN:
    return CandidateGNN(sim, **kw)


class WeightedRanking(nn.Module):
    """Show the candidate maximising ``w0 * watch / watch_scale + sum_k w_k * p_k / p_scale_k``
    (one-hot probabilities). Scales make the weights unit-free."""

    def __init__(self, weights, watch_scale: float = 1.0, signal_scale=None) -> None:
        super().__init__()
        w = torch.as_tensor(weights, dtype=torch.float32)
        if w.shape != (1 + len(SIGNALS),) or not torch.isfinite(w).all():
            raise ValueError(f"weights: {1 + len(SIGNALS)} finite values (watch, {SIGNALS})")
        sig = torch.ones(len(SIGNALS)) if signal_scale is None else torch.as_tensor(
            signal_scale, dtype=torch.float32)
        self.register_buffer("weights", w)
        self.register_buffer("scale", torch.cat([torch.tensor([float(watch_scale)]), sig]))

    def forward(self, obs: Observation) -> Tensor:
        pred = torch.cat([obs["pred_watch"].unsqueeze(-1), obs["pred_signals"]], -1)
        score = (pred / self.scale.to(pred.device) * self.weights.to(pred.device)).sum(-1)
        return nn.functional.one_hot(score.argmax(-1), score.shape[-1]).float()


class RandomExposure(nn.Module):
    """Uniform over the candidates (KuaiRand's random-exposure log)."""

    def forward(self, obs: Observation) -> Tensor:
        return torch.ones_like(obs["pred_watch"])


def response_scales(sim, trace: Trace) -> tuple[float, Tensor]:
    """Mean predicted watch time and signal probabilities per candidate at the first step."""
    obs = sim.observe(sim.reset(trace), 0, trace)
    return float(obs["pred_watch"].mean()), obs["pred_signals"].mean((0, 1)).clamp_min(1e-9)


def constraint_report(sim, policy, trace: Trace, warmup: int) -> tuple[float, Tensor]:
    """Mean watch time and each signal's mean count per episode of ``policy``."""
    with torch.no_grad():
        r = rollout(sim, policy, trace, keep_metrics=True)
    signals = torch.stack([r.metrics[s][:, warmup:].sum(1).mean() for s in SIGNALS])
    return float(sim.episode_metric(r.rewards, warmup).mean()), signals


def tune_scalarisation(sim, trace: Trace, warmup: int, grid=None) -> tuple[WeightedRanking, str]:
    """The fixed scalarisation ``watch + lam * sum_k p_k / p_scale_k`` with the smallest ``lam``
    on ``grid`` whose policy meets every threshold on the tuning trace (else the one with the
    smallest total shortfall)."""
    watch_scale, sig_scale = response_scales(sim, trace)
    thr = torch.tensor(sim.constraint_thresholds)
    grid = [0.0, 0.05, 0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0] if grid is None else grid
    best, best_key = None, None
    for lam in grid:
        pol = WeightedRanking([1.0] + [lam] * len(SIGNALS), watch_scale, sig_scale)
        watch, sig = constraint_report(sim, pol, trace, warmup)
        short = float(((thr - sig) / thr.clamp_min(1e-9)).clamp_min(0).sum())
        key = (short > 0, short, -watch)
        if best_key is None or key < best_key:
            best, best_key = (pol, lam), key
    pol, lam = best
    met = "meets all thresholds" if not best_key[0] else "no lambda meets all thresholds"
    return pol, f"lambda={lam:g} tuned on training traces ({met})"


def recsys_heuristics(sim, trace: Trace, warmup: int) -> dict[str, tuple[nn.Module, str]]:
    """Myopic ranking by predicted watch time, the tuned fixed scalarisation, and random
    exposure."""
    watch_scale, sig_scale = response_scales(sim, trace)
    myopic = WeightedRanking([1.0] + [0.0] * len(SIGNALS), watch_scale, sig_scale)
    scal, status = tune_scalarisation(sim, trace, warmup)
    return {
        "myopic watch-time": (myopic, "argmax predicted watch time"),
        "scalarised": (scal, status),
        "random exposure": (RandomExposure(), "uniform over candidates"),
    }


def entropy(probs: Tensor) -> Tensor:
    """Per-row entropy in nats of ``probs [B, C]``."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(-1)
