"""Policies of the tax economy: a planner over the brackets, agents sharing one GNN over the
agent graph, their composition, and the classical fixed schedules with best-responding agents.

The agent graph is a star: N agent nodes and one planner node joined both ways, so the same
weights serve 4 or 4,000 agents. Each agent node sees its skill and, for every bracket, the
rate and where the bracket starts in its own hours (cut-off / skill / max hours): the
schedule as that agent experiences it. The planner node sees the schedule alone. A node head
maps each agent embedding to hours (``max_hours * sigmoid``) and, in the dynamic economy,
a consumption fraction.

The planner is one categorical distribution per bracket over the rate grid (the AI
Economist's action space) or, for pathwise learning, continuous rates ``sigmoid(u)``; a small
context net reads permutation-invariant statistics of the skills so a schedule can depend on
the population. ``rate_limit`` caps every rate (tax-rate annealing).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from oprl.core import Observation, Trace
from oprl.nn import GraphEncoder, NodeHead, mlp, shrink_last_layer
from oprl.policies.economy_schedules import (
    free_market,
    saez_binned_schedule,
    saez_schedule,
    us_federal,
)
from oprl.simulators.economy import EconomySimulator, join_action, planner_star, snap
from oprl.simulators.economy_response import (
    ScheduleBestResponse as ScheduleBestResponse,
)
from oprl.simulators.economy_response import best_response, schedule_value

PLANNER_KINDS = ("categorical", "continuous")


def rate_grid(sim: EconomySimulator, default_step: float = 0.05) -> Tensor:
    """The rates a categorical planner chooses from ``[G]`` (the simulator's grid, or 5%)."""
    step = sim.params.rate_step if sim.params.rate_step > 0 else default_step
    return torch.arange(int(round(1.0 / step)) + 1, dtype=torch.float32) * step


def skill_summary(obs: Observation) -> Tensor:
    """Permutation-invariant context of the population ``[B, 6]``: mean, std, min, max of
    skills, mean savings (scaled) and the clock."""
    s = obs["skills"]
    return torch.cat([s.mean(-1, keepdim=True), s.std(-1, keepdim=True),
                      s.min(-1, keepdim=True).values, s.max(-1, keepdim=True).values,
                      obs["wealth"].mean(-1, keepdim=True) / 100.0, obs["time"][:, :1]], -1)


class PlannerPolicy(nn.Module):
    """Tax schedule ``[B, K]`` from the population context; categorical or continuous."""

    def __init__(self, sim: EconomySimulator, kind: str = "categorical", hidden: int = 32) -> None:
        super().__init__()
        if kind not in PLANNER_KINDS:
            raise ValueError(f"planner: {kind!r}; allowed {PLANNER_KINDS}")
        self.kind = kind
        self.n_brackets = sim.n_brackets
        self.step = sim.params.rate_step  # continuous rates snap to it (straight-through)
        self.register_buffer("grid", rate_grid(sim), persistent=False)
        self.register_buffer("rate_limit", torch.ones(()))
        width = len(self.grid) if kind == "categorical" else 1
        self.bias = nn.Parameter(torch.zeros(self.n_brackets, width))
        if kind == "continuous":  # start near a 10% flat tax
            nn.init.constant_(self.bias, -2.2)
        self.context = mlp([6, hidden, self.n_brackets * width])
        nn.init.zeros_(self.context[-1].weight)
        nn.init.zeros_(self.context[-1].bias)

    def _raw(self, obs: Observation) -> Tensor:
        ctx = self.context(skill_summary(obs)).view(-1, *self.bias.shape)
        return self.bias + ctx

    def logits(self, obs: Observation) -> Tensor:
        """Categorical logits ``[B, K, G]`` with rates above ``rate_limit`` masked out."""
        raw = self._raw(obs)
        mask = self.grid > self.rate_limit + 1e-6
        return raw.masked_fill(mask, -1e9)

    def forward(self, obs: Observation) -> Tensor:
        """The deterministic schedule: the most likely rate (categorical) or ``sigmoid(u)``."""
        if self.kind == "continuous":
            return snap(self.rate_limit * torch.sigmoid(self._raw(obs).squeeze(-1)), self.step)
        return self.grid[self.logits(obs).argmax(-1)]

    def log_prob(self, obs: Observation, rates: Tensor) -> tuple[Tensor, Tensor]:
        """Log-probability ``[B]`` of categorical ``rates`` ``[B, K]`` and the entropy ``[B]``."""
        logp = torch.log_softmax(self.logits(obs), -1)
        step = float(self.grid[1] - self.grid[0])
        index = torch.round(rates / step).long().clamp(0, len(self.grid) - 1)
        chosen = logp.gather(-1, index.unsqueeze(-1)).squeeze(-1).sum(-1)
        return chosen, -(logp.exp() * logp).sum(-1).sum(-1)

    def sample(self, obs: Observation, generator: torch.Generator | None = None,
               noise: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
        """Sampled rates ``[B, K]``, their log-probability ``[B]`` and entropy ``[B]``
        (categorical); continuous rates get Gaussian noise ``noise`` on the logit instead
        (log-probability and entropy are then zero: for pathwise learning)."""
        if self.kind == "continuous":
            u = self._raw(obs).squeeze(-1)
            if noise > 0:
                u = u + noise * torch.randn(u.shape, generator=generator, device=u.device)
            zero = torch.zeros(u.shape[0], device=u.device)
            return snap(self.rate_limit * torch.sigmoid(u), self.step), zero, zero
        logits = self.logits(obs)
        probs = torch.softmax(logits, -1)
        flat = probs.reshape(-1, probs.shape[-1])
        index = torch.multinomial(flat.detach().cpu(), 1, generator=generator).to(probs.device)
        index = index.view(*probs.shape[:-1])
        logp = torch.log_softmax(logits, -1)
        chosen = logp.gather(-1, index.unsqueeze(-1)).squeeze(-1).sum(-1)
        entropy = -(probs * logp).sum(-1).sum(-1)
        return self.grid[index], chosen, entropy


class AgentGNN(nn.Module):
    """Hours (and consumption) of every agent from a GNN over the agent-planner star graph."""

    def __init__(self, sim: EconomySimulator, hidden: int = 32, layers: int = 2) -> None:
        super().__init__()
        p = sim.params
        self.max_hours = p.max_hours
        self.free_hours = 1.0 / (2.0 * p.labour_cost * p.max_hours)  # per unit of skill
        self.dynamic = sim.dynamic
        self.register_buffer("cutoffs", sim.cutoffs.clone(), persistent=False)
        self.node_dim = 2 * sim.n_brackets + 7
        self.encoder = GraphEncoder(self.node_dim, 1, hidden, layers)
        self.head = NodeHead(hidden, 2 if sim.dynamic else 1)
        shrink_last_layer(self.head.net, 0.01)
        self._index_n = -1
        self.register_buffer("edge_index", planner_star(sim.n_agents), persistent=False)

    def features(self, obs: Observation, rates: Tensor) -> Tensor:
        """Node features ``[B, N+1, F]``: agents first, the planner last."""
        s = obs["skills"]
        b, n = s.shape
        cut_hours = (self.cutoffs / (s.unsqueeze(-1) * self.max_hours)).clamp(max=2.0)
        r = rates.unsqueeze(1).expand(b, n, -1)
        agent = torch.cat([
            r, cut_hours, (s * self.free_hours).unsqueeze(-1), s.unsqueeze(-1) / 2.0,
            obs["wealth"].unsqueeze(-1) / 100.0, obs["last_income"].unsqueeze(-1) / 100.0,
            obs["time"].unsqueeze(1).expand(b, n, 2),
        ], -1)
        agent = torch.cat([agent, torch.zeros(b, n, 1, device=s.device)], -1)
        planner = torch.cat([rates, torch.zeros(b, agent.shape[-1] - rates.shape[-1] - 1,
                                                device=s.device),
                             torch.ones(b, 1, device=s.device)], -1).unsqueeze(1)
        return torch.cat([agent, planner], 1)

    def raw(self, obs: Observation, rates: Tensor) -> Tensor:
        """Unsquashed outputs of the agent nodes ``[B, N, 1 or 2]``."""
        n = obs["skills"].shape[1]
        if n != self._index_n:
            self.edge_index = planner_star(n).to(obs["skills"].device)
            self._index_n = n
        nodes = self.features(obs, rates)
        edges = torch.ones(nodes.shape[0], n, 1, device=nodes.device)
        h, _ = self.encoder(nodes, edges, self.edge_index)
        return self.head(h[:, :n])

    def squash(self, raw: Tensor, obs: Observation) -> tuple[Tensor, Tensor | None]:
        """Hours start at each agent's free-market optimum (the logit is offset by it)."""
        free = (obs["skills"] * self.free_hours).clamp(0.02, 0.98)
        offset = torch.log(free / (1 - free))
        hours = self.max_hours * torch.sigmoid(raw[..., 0] + offset)
        consume = torch.sigmoid(raw[..., 1]) if self.dynamic else None
        return hours, consume

    def forward(self, obs: Observation, rates: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.squash(self.raw(obs, rates), obs)


class EconomyPolicy(nn.Module):
    """Planner and agents together: the action ``[B, K + A*N]`` of one tax period."""

    def __init__(self, sim: EconomySimulator, hidden: int = 32, layers: int = 2,
                 planner: str = "categorical") -> None:
        super().__init__()
        self.planner = PlannerPolicy(sim, planner)
        self.agents = AgentGNN(sim, hidden, layers)
        self.sim = sim
        # 1: agents play their exact best response instead of the GNN (set by the trainer)
        self.register_buffer("exact_agents", torch.zeros(()))

    def act(self, obs: Observation, rates: Tensor) -> Tensor:
        if bool(self.exact_agents):
            hours = best_response(self.sim, obs["skills"], rates.detach()).to(rates.dtype)
            consume = torch.ones_like(hours) if self.sim.dynamic else None
        else:
            hours, consume = self.agents(obs, rates)
        return join_action(rates, hours, consume)

    def forward(self, obs: Observation) -> Tensor:
        return self.act(obs, self.planner(obs))

    def probe(self, trace: Trace) -> dict[str, float]:
        """The planner's schedule scored with every agent's exact best response (one-step
        view of the first period): how good the schedule is, whatever the agents learned."""
        with torch.no_grad():
            obs = self.sim.observe(self.sim.reset(trace), 0, trace)
            rates = self.planner(obs)
            value = schedule_value(self.sim, obs["skills"].cpu(), rates.double().cpu())
        return {"dev_reward_best_response": float(value["objective"].mean())}


def economy_policy(sim: EconomySimulator, hidden: int = 32, layers: int = 2,
                   planner: str = "categorical") -> EconomyPolicy:
    return EconomyPolicy(sim, hidden, layers, planner)


# -- classical schedules ----------------------------------------------------------------------


def saez_from_trace(sim: EconomySimulator, trace: Trace) -> tuple[Tensor, dict]:
    """The Saez schedule of the training population: every agent of every episode's first
    period pooled into one population (fixed skills: the economy itself)."""
    skills = trace["skills"][:, 0].reshape(-1).double().cpu()
    if sim.params.skills is not None:
        skills = skills[: sim.n_agents]
    pooled = sim if len(skills) == sim.n_agents else _pooled(sim, len(skills))
    return saez_schedule(pooled, skills)


def saez_binned_from_trace(sim: EconomySimulator, trace: Trace) -> tuple[Tensor, dict]:
    """The AI Economist's binned Saez schedule (elasticity 0.5, continuous rates) of the
    training population, pooled as in `saez_from_trace`."""
    skills = trace["skills"][:, 0].reshape(-1).double().cpu()
    if sim.params.skills is not None:
        skills = skills[: sim.n_agents]
    pooled = sim if len(skills) == sim.n_agents else _pooled(sim, len(skills))
    return saez_binned_schedule(pooled, skills)


def _pooled(sim: EconomySimulator, n: int) -> EconomySimulator:
    from dataclasses import replace

    return EconomySimulator(replace(sim.params, n_agents=n, skills=None))


def economy_heuristics(
    sim: EconomySimulator, trace: Trace, warmup: int
) -> dict[str, tuple[nn.Module, str]]:
    """Free market, 2018 US federal and two Saez schedules (ours and the AI Economist's binned
    one, both fitted on the training ``trace``), each with every agent playing its exact best
    response."""
    policies: dict[str, tuple[nn.Module, str]] = {
        "free market": (ScheduleBestResponse(sim, free_market(sim)), "no tax; agents' best response"),
    }
    if sim.n_brackets == 7:
        policies["us federal"] = (ScheduleBestResponse(sim, us_federal(sim)),
                                  "2018 rates; agents' best response")
    rates, info = saez_from_trace(sim, trace)
    policies["saez"] = (ScheduleBestResponse(sim, rates),
                        f"rates {[round(float(r), 2) for r in rates]}, elasticity "
                        f"{info['elasticity']:.2f}, fitted on training traces")
    binned, info = saez_binned_from_trace(sim, trace)
    policies["saez binned"] = (ScheduleBestResponse(sim, binned),
                               f"AI Economist's binned estimator, rates "
                               f"{[round(float(r), 3) for r in binned]}, elasticity "
                               f"{info['elasticity']:.2f}, fitted on training traces")
    return policies


__all__ = ["AgentGNN", "EconomyPolicy", "PlannerPolicy", "ScheduleBestResponse",
           "best_response", "economy_heuristics", "economy_policy", "saez_binned_from_trace",
           "saez_from_trace"]
