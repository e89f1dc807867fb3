"""Harvest policies for the fishery scenarios: an MLP, a GNN over the species-interaction graph,
and the two classical rules (constant mortality, constant escapement) grid-searched on
training traces in batched rollouts.

Learned policies have two output layers. ``output="escapement"`` (default for one species)
gives the stock to leave in the water, turned into a mortality ``(x - s)^+ / x``: constant
escapement, optimal for the classic one-species problem (Reed 1979), is one constant output.
``output="mortality"`` (default for three species, where constant mortality beats constant
escapement) gives ``sigmoid(raw + logit(M0))``. Both start near the classical rule.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from oprl.core import Observation, Trace, rollout
from oprl.nn import GraphEncoder, NodeHead, mlp
from oprl.simulators.fishery import FisherySimulator, species_edges

ESCAPEMENT_INIT = 0.5  # initial escapement, as a fraction of K
MORTALITY_INIT = 0.25  # initial mortality
OUTPUTS = ("auto", "escapement", "mortality")


def escapement_to_mortality(pop: Tensor, escapement: Tensor) -> Tensor:
    """Mortality in [0, 1] that leaves ``escapement`` of a stock ``pop`` (none if below)."""
    return ((pop - escapement).clamp_min(0.0) / pop.clamp_min(1e-6)).clamp(max=1.0)


class FisheryFeatures(nn.Module):
    """Per-species features ``[B, S, F]``: stock / K, log stock, the year as a fraction of the
    horizon, 1 / years left and a last-year flag (the optimal harvest changes sharply at the
    end of a finite horizon), a harvested flag and the species' role (prey, competitor,
    predator)."""

    node_dim = 9

    def __init__(self, sim: FisherySimulator) -> None:
        super().__init__()
        s = sim.n_species
        flag = torch.zeros(s)
        flag[sim.harvested] = 1.0
        role = torch.eye(3)[:s] if s == 3 else torch.tensor([[1.0, 0.0, 0.0]])
        self.register_buffer("static", torch.cat([flag[:, None], role], -1), persistent=False)
        self.scale = float(sim.params.K)
        self.horizon = float(sim.params.horizon)

    def forward(self, obs: Observation) -> Tensor:
        pop = obs["pop"] / self.scale
        b, s = pop.shape
        t = obs["time"].expand(b, s)
        if "years_left" in obs:
            years_left = obs["years_left"].expand(b, s).clamp_min(1.0)
        else:  # an observation without it: assume the training horizon
            years_left = ((1.0 - t) * self.horizon).clamp_min(1.0)
        last = (years_left < 1.5).to(pop.dtype)
        feats = [pop, torch.log(pop.clamp_min(1e-3)), t, 1.0 / years_left, last]
        return torch.cat([torch.stack(feats, -1), self.static.expand(b, -1, -1)], -1)


class _HarvestHead(nn.Module):
    """Raw outputs -> mortalities, through an escapement ``softplus(raw + c) * K`` or directly
    ``sigmoid(raw + c)``; c makes a zero output the classical starting rule."""

    def __init__(self, sim: FisherySimulator, output: str = "auto") -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output: {output!r}; allowed {OUTPUTS}")
        if output == "auto":
            output = "escapement" if sim.n_species == 1 else "mortality"
        self.output = output
        self.register_buffer("harvested", sim.harvested.clone(), persistent=False)
        self.scale = float(sim.params.K)
        init = torch.tensor(ESCAPEMENT_INIT if output == "escapement" else MORTALITY_INIT)
        self.offset = float(torch.log(torch.expm1(init)) if output == "escapement"
                            else torch.logit(init))

    def mortality(self, obs: Observation, raw: Tensor) -> Tensor:
        if self.output == "mortality":
            return torch.sigmoid(raw + self.offset)
        esc = nn.functional.softplus(raw + self.offset) * self.scale
        return escapement_to_mortality(obs["pop"][:, self.harvested], esc)


def _shrink(net: nn.Sequential, gain: float) -> None:
    last = [m for m in net if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(gain)
        last.bias.zero_()


class FisheryMLP(nn.Module):
    """Flattened species features -> one harvest per harvested species."""

    def __init__(self, sim: FisherySimulator, hidden: Sequence[int] = (64, 64),
                 init_gain: float = 0.1, output: str = "auto") -> None:
        super().__init__()
        self.features = FisheryFeatures(sim)
        self.head = _HarvestHead(sim, output)
        self.net = mlp([sim.n_species * FisheryFeatures.node_dim, *hidden, sim.n_actions])
        _shrink(self.net, init_gain)

    def forward(self, obs: Observation) -> Tensor:
        return self.head.mortality(obs, self.net(self.features(obs).flatten(1)))


class FisheryGNN(nn.Module):
    """`GraphEncoder` over the species-interaction graph (edge features: competition,
    predation, self-regulation) and a `NodeHead` giving each species a harvest; the
    harvested species' outputs are used."""

    def __init__(self, sim: FisherySimulator, hidden: int = 32, layers: int = 2,
                 init_gain: float = 0.1, output: str = "auto") -> None:
        super().__init__()
        self.features = FisheryFeatures(sim)
        self.head = _HarvestHead(sim, output)
        index, kind = species_edges(sim.params)
        self.register_buffer("edge_index", index, persistent=False)
        self.register_buffer("edge_attr", torch.eye(3)[kind], persistent=False)
        self.encoder = GraphEncoder(FisheryFeatures.node_dim, 3, hidden, layers)
        self.node_head = NodeHead(hidden)
        _shrink(self.node_head.net, init_gain)

    def forward(self, obs: Observation) -> Tensor:
        nodes = self.features(obs)
        edges = self.edge_attr.expand(nodes.shape[0], -1, -1)
        node_h, _ = self.encoder(nodes, edges, self.edge_index)
        raw = self.node_head(node_h).squeeze(-1)[:, self.head.harvested]
        return self.head.mortality(obs, raw)


class FisheryChoicePolicy(nn.Module):
    """For the discrete-menu mode (``menu > 0``, constrained actor-critic): ``scores(obs)``
    gives a logit per menu choice ``[B, C]``, ``forward`` their softmax."""

    def __init__(self, sim: FisherySimulator, hidden: Sequence[int] = (64, 64)) -> None:
        super().__init__()
        if sim.choices is None:
            raise ValueError("menu: the choice policy needs a discrete menu; build the scenario "
                             "with --set menu=K (K >= 2 mortality levels)")
        self.features = FisheryFeatures(sim)
        self.net = mlp([sim.n_species * FisheryFeatures.node_dim, *hidden, sim.choices.shape[0]])

    def scores(self, obs: Observation) -> Tensor:
        return self.net(self.features(obs).flatten(1))

    def forward(self, obs: Observation) -> Tensor:
        return torch.softmax(self.scores(obs), -1)


# -- classical rules ---------------------------------------------------------------------------


class ConstantMortality(nn.Module):
    """Harvest the same fraction of each harvested stock every year; ``rates`` is ``[A]`` or
    per-sample ``[B, A]`` (how a grid of candidates runs in one rollout)."""

    def __init__(self, rates: Tensor | Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("rates", torch.as_tensor(rates, dtype=torch.float32))

    def forward(self, obs: Observation) -> Tensor:
        b = obs["pop"].shape[0]
        rates = self.rates if self.rates.dim() == 2 else self.rates.expand(b, -1)
        return rates.clamp(0.0, 1.0)


class ConstantEscapement(nn.Module):
    """Harvest each harvested stock down to a fixed level (none when below it)."""

    def __init__(self, sim: FisherySimulator, levels: Tensor | Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("levels", torch.as_tensor(levels, dtype=torch.float32))
        self.register_buffer("harvested", sim.harvested.clone(), persistent=False)

    def forward(self, obs: Observation) -> Tensor:
        return escapement_to_mortality(obs["pop"][:, self.harvested], self.levels)


def evaluate_candidates(
    sim: FisherySimulator, make_policy: Callable[[Tensor], nn.Module], candidates: Tensor,
    trace: Trace, warmup: int,
) -> Tensor:
    """Mean episode reward of each candidate setting ``[K, A]`` on the same episodes, all in
    one batched rollout (candidate k runs on a copy of every episode)."""
    k, b = candidates.shape[0], trace.batch
    tiled = Trace({n: v.repeat(k, *([1] * (v.dim() - 1))) for n, v in trace.data.items()})
    settings = candidates.to(trace.device).repeat_interleave(b, dim=0)
    with torch.no_grad():
        rewards = rollout(sim, make_policy(settings), tiled).rewards
    return sim.episode_metric(rewards, warmup).view(k, b).mean(1)


def grid_search(
    sim: FisherySimulator, make_policy: Callable[[Tensor], nn.Module], low: float, high: float,
    trace: Trace, warmup: int, points: int = 21, rounds: int = 3, chunk: int = 256,
) -> tuple[Tensor, float]:
    """Best setting on a ``points``-per-axis grid over [low, high]^A, refined ``rounds`` times
    around the incumbent (each refinement spans two coarse steps)."""
    a = sim.n_actions
    lo, hi = torch.full((a,), low), torch.full((a,), high)
    best, best_value = None, -float("inf")
    for _ in range(rounds):
        axes = [torch.linspace(float(lo[i]), float(hi[i]), points) for i in range(a)]
        cands = torch.tensor(list(itertools.product(*[ax.tolist() for ax in axes])))
        values = torch.cat([evaluate_candidates(sim, make_policy, c, trace, warmup)
                            for c in cands.split(chunk)])
        i = int(values.argmax())
        if float(values[i]) > best_value:
            best, best_value = cands[i], float(values[i])
        step = (hi - lo) / (points - 1)
        lo, hi = (best - 2 * step).clamp_min(low), (best + 2 * step).clamp_max(high)
    return best, best_value


TUNED = "grid-searched on training traces"


def fishery_heuristics(
    sim: FisherySimulator, trace: Trace, warmup: int
) -> dict[str, tuple[nn.Module, str]]:
    """Constant mortality and constant escapement, each the best of a refined grid on the
    training ``trace`` (never the evaluation traces)."""
    points = 41 if sim.n_actions == 1 else 17
    rates, v_m = grid_search(sim, ConstantMortality, 0.0, 1.0, trace, warmup, points=points)
    levels, v_e = grid_search(sim, lambda lv: ConstantEscapement(sim, lv), 0.0,
                              float(sim.params.K), trace, warmup, points=points)
    fmt = lambda v: ", ".join(f"{float(x):.3f}" for x in v)  # noqa: E731
    return {
        "constant mortality": (ConstantMortality(rates),
                               f"M=({fmt(rates)}) {TUNED}, train {v_m:.3f}"),
        "constant escapement": (ConstantEscapement(sim, levels),
                                f"s=({fmt(levels)}) {TUNED}, train {v_e:.3f}"),
    }
