"""Batched, differentiable tax economies (the AI Economist: Zheng et al. 2020/2022).

One tax period: the planner sets a marginal rate per bracket, agents choose hours, income =
hours x skill is taxed and the revenue returned as an equal lump sum; agents value coin minus
``k * hours^2`` and the planner's reward is a social objective (default equality x
productivity). `economy/dynamic` chains ``periods`` periods with savings and consumption.
The action is one flat tensor ``[B, K + A*N]`` (`split_action` / `join_action`). Hours on a
grid are rounded with a straight-through gradient, so the economy stays differentiable while
its values are the grid's. Model and order of events: docs/economy.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from oprl.core import Metric, Observation, Rollout, Simulator, State, Trace, check_memory, fixed

# 2018 US federal brackets for single filers, in thousands of dollars (lower cut-offs)
US_2018_CUTOFFS = (0.0, 9.7, 39.475, 84.2, 160.725, 204.1, 510.3)
US_2018_RATES = (0.10, 0.12, 0.22, 0.24, 0.32, 0.35, 0.37)
ANCHOR_SKILLS = (1.128, 1.321, 1.65, 2.256)
OBJECTIVES = ("equality_productivity", "inverse_income", "utilitarian")
UTILITIES = ("quadratic", "isoelastic")
SIZE_BATCH = 128  # economies assumed by the size guard (a training batch)


def _finite(name: str, values: Sequence[float]) -> None:
    if any(not math.isfinite(float(v)) for v in values):
        raise ValueError(f"{name}: must be finite numbers (no NaN or inf), got {list(values)}")


@dataclass(frozen=True)
class EconomyParams:
    """Everything that defines an economy; validated on construction.

    ``skills``: fixed skills (one per agent, the same in every episode), or None to draw
    Pareto skills per episode: ``skill_min * U^(-1/pareto_alpha)`` capped at ``skill_max``.
    ``hours_step``/``rate_step``: grid spacing of hours and rates (0 = continuous).
    """

    n_agents: int = 4
    skills: tuple[float, ...] | None = ANCHOR_SKILLS
    pareto_alpha: float = 2.0
    skill_min: float = 1.0
    skill_max: float = 2.5
    cutoffs: tuple[float, ...] = US_2018_CUTOFFS
    labour_cost: float = 0.012
    max_hours: float = 100.0
    hours_step: float = 1.0
    rate_step: float = 0.05
    utility: str = "quadratic"
    eta: float = 0.23
    objective: str = "equality_productivity"
    periods: int = 1
    interest: float = 0.0
    skill_noise: float = 0.0  # dynamic economy: lognormal skill shock per period
    # the engine evaluates at least 2 periods: a one-step economy is simply played twice
    eval_horizon: int = 2
    eval_warmup: int = 0
    name: str = fixed(default="economy/custom")

    def __post_init__(self) -> None:
        if int(self.n_agents) != self.n_agents or self.n_agents < 2:
            raise ValueError(f"n_agents: an economy needs at least 2 agents, got {self.n_agents}")
        if self.skills is not None:
            object.__setattr__(self, "skills", tuple(float(s) for s in self.skills))
            _finite("skills", self.skills)
            if len(self.skills) != self.n_agents:
                raise ValueError(f"skills: one per agent ({self.n_agents}) is required, got "
                                 f"{len(self.skills)}")
            if min(self.skills) <= 0:
                raise ValueError(f"skills: must be > 0, got {list(self.skills)}")
        _finite("pareto_alpha/skill_min/skill_max",
                (self.pareto_alpha, self.skill_min, self.skill_max))
        if self.pareto_alpha <= 0 or not 0 < self.skill_min <= self.skill_max:
            raise ValueError("pareto_alpha: must be > 0 and 0 < skill_min <= skill_max")
        cut = tuple(float(c) for c in self.cutoffs)
        object.__setattr__(self, "cutoffs", cut)
        _finite("cutoffs", cut)
        if not cut or cut[0] != 0.0:
            raise ValueError(f"cutoffs: the first bracket must start at 0, got {list(cut)}")
        if any(b <= a for a, b in zip(cut, cut[1:])):
            raise ValueError(f"cutoffs: must be strictly increasing, got {list(cut)}")
        _finite("labour_cost/max_hours/hours_step/rate_step/eta/interest",
                (self.labour_cost, self.max_hours, self.hours_step, self.rate_step, self.eta,
                 self.interest, self.skill_noise))
        if self.labour_cost <= 0 or self.max_hours <= 0:
            raise ValueError("labour_cost, max_hours: must be > 0")
        if self.hours_step < 0 or self.hours_step > self.max_hours:
            raise ValueError(f"hours_step: must lie in [0, max_hours], got {self.hours_step}")
        if not 0 <= self.rate_step <= 1:
            raise ValueError(f"rate_step: must lie in [0, 1], got {self.rate_step}")
        if self.utility not in UTILITIES:
            raise ValueError(f"utility: {self.utility!r}; allowed {UTILITIES}")
        if not 0 <= self.eta < 1:  # refused even where the utility does not read it
            raise ValueError(f"eta: must lie in [0, 1), got {self.eta}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective: {self.objective!r}; allowed {OBJECTIVES}")
        if int(self.periods) != self.periods or self.periods < 1:
            raise ValueError(f"periods: must be an integer >= 1, got {self.periods}")
        if self.interest < 0 or self.skill_noise < 0:
            raise ValueError("interest, skill_noise: must be >= 0")
        if not 0 <= self.eval_warmup < self.eval_horizon:
            raise ValueError(f"eval_warmup: must lie in [0, eval_horizon={self.eval_horizon})")
        # the agents' best response scores every hour on the grid: [batch, agents, grid]
        grid = self.max_hours / self.hours_step + 1 if self.hours_step > 0 else 2001
        check_memory(8.0 * 4 * SIZE_BATCH * self.n_agents * grid * max(int(self.periods), 1),
                     f"n_agents={self.n_agents}, hours_step={self.hours_step}, "
                     f"periods={self.periods}")

    @property
    def n_brackets(self) -> int:
        return len(self.cutoffs)

    @property
    def horizon(self) -> int:
        """Training episode length (one tax period per step)."""
        return int(self.periods)

    @property
    def warmup(self) -> int:
        return 0


# -- pure functions of the economy ------------------------------------------------------------


def check_rates(rates: Tensor) -> None:
    """A fixed schedule must be finite and in [0, 1] (a policy's output is clipped instead)."""
    if not torch.isfinite(rates).all():
        raise ValueError("rates: must be finite (no NaN)")
    if ((rates < 0) | (rates > 1)).any():
        raise ValueError(f"rates: marginal rates must lie in [0, 1], got {rates.tolist()}")


def bracket_widths(cutoffs: Tensor) -> Tensor:
    """Width of each bracket ``[K]``; the top one is unbounded."""
    inf = torch.full((1,), math.inf, dtype=cutoffs.dtype, device=cutoffs.device)
    return torch.cat([cutoffs[1:], inf]) - cutoffs


def bracket_income(income: Tensor, cutoffs: Tensor) -> Tensor:
    """Income falling in each bracket ``[..., K]`` of incomes ``[...]``."""
    over = (income.unsqueeze(-1) - cutoffs).clamp_min(0.0)
    return torch.minimum(over, bracket_widths(cutoffs))


def tax_due(income: Tensor, rates: Tensor, cutoffs: Tensor) -> Tensor:
    """Tax of incomes ``[B, N]`` under marginal ``rates`` ``[B, K]`` -> ``[B, N]``."""
    return (bracket_income(income, cutoffs) * rates.unsqueeze(-2)).sum(-1)


def marginal_rate(income: Tensor, rates: Tensor, cutoffs: Tensor) -> Tensor:
    """The rate on the next unit of income ``[B, N]``."""
    bracket = (income.unsqueeze(-1) >= cutoffs).sum(-1).clamp_min(1) - 1
    return rates.gather(-1, bracket)


def gini(coin: Tensor, corrected: bool = True) -> Tensor:
    """Gini coefficient of ``coin`` ``[B, N]`` -> ``[B]``: mean absolute difference over twice
    the mean; ``corrected`` multiplies by N/(N-1) so perfect inequality scores 1 for any N."""
    n = coin.shape[-1]
    diff = (coin.unsqueeze(-1) - coin.unsqueeze(-2)).abs().sum((-1, -2))
    total = coin.sum(-1)
    g = diff / (2.0 * n * total.clamp_min(1e-9))
    return g * n / (n - 1) if corrected else g


def equality(coin: Tensor) -> Tensor:
    """1 - corrected Gini ``[B]``."""
    return 1.0 - gini(coin)


def isoelastic(coin: Tensor, eta: float) -> Tensor:
    """(c^(1-eta) - 1) / (1 - eta), for c >= 0 (negative coin counts as 0)."""
    c = coin.clamp_min(0.0)
    return (c.pow(1.0 - eta) - 1.0) / (1.0 - eta)


def agent_utility(consumption: Tensor, hours: Tensor, p: EconomyParams) -> Tensor:
    """Utility of consumption minus the labour cost ``k * hours^2`` ``[B, N]``."""
    value = consumption if p.utility == "quadratic" else isoelastic(consumption, p.eta)
    return value - p.labour_cost * hours.pow(2)


def social_welfare(coin: Tensor, utility: Tensor, objective: str) -> Tensor:
    """The planner's objective ``[B]`` (a total over agents).

    equality_productivity: (1 - corrected Gini of coin) x total coin;
    inverse_income: sum of utilities weighted by 1/coin, weights normalised to sum N;
    utilitarian: sum of utilities.
    """
    if objective == "equality_productivity":
        return equality(coin) * coin.sum(-1)
    if objective == "inverse_income":
        w = 1.0 / coin.clamp_min(1e-3)
        w = w / w.sum(-1, keepdim=True) * coin.shape[-1]
        return (w.detach() * utility).sum(-1)
    if objective == "utilitarian":
        return utility.sum(-1)
    raise ValueError(f"objective: {objective!r}; allowed {OBJECTIVES}")


def snap(x: Tensor, step: float) -> Tensor:
    """Round to the grid ``step`` (0 = no grid) with a straight-through gradient."""
    if step <= 0:
        return x
    return x + (torch.round(x / step) * step - x).detach()


def period_outcome(
    rates: Tensor, hours: Tensor, skills: Tensor, cutoffs: Tensor
) -> dict[str, Tensor]:
    """Income, tax, lump sum and coin of one tax period (all ``[B, N]``)."""
    income = hours * skills
    tax = tax_due(income, rates, cutoffs)
    lump = tax.sum(-1, keepdim=True) / skills.shape[-1]
    return {"income": income, "tax": tax, "lump": lump.expand_as(tax), "coin": income - tax + lump}


def split_action(action: Tensor, n_brackets: int, n_agents: int) -> tuple[Tensor, Tensor, Tensor | None]:
    """``[B, K + A*N]`` -> rates ``[B, K]``, hours ``[B, N]``, consumption fraction or None."""
    width = action.shape[-1] - n_brackets
    if width not in (n_agents, 2 * n_agents):
        raise ValueError(f"action: expected [B, {n_brackets} + {n_agents} (x2 when dynamic)] "
                         f"values, got {tuple(action.shape)}")
    rates, rest = action[:, :n_brackets], action[:, n_brackets:]
    if width == n_agents:
        return rates, rest, None
    return rates, rest[:, :n_agents], rest[:, n_agents:]


def join_action(rates: Tensor, hours: Tensor, consume: Tensor | None = None) -> Tensor:
    """Inverse of `split_action`; ``rates`` may be ``[K]`` (broadcast over the batch)."""
    rates = rates.expand(hours.shape[0], -1) if rates.dim() == 1 else rates
    parts = [rates.to(hours.dtype), hours] + ([] if consume is None else [consume])
    return torch.cat(parts, dim=-1)


# -- the simulator ----------------------------------------------------------------------------


class EconomySimulator(Simulator):
    """Batched tax economy; see the module docstring for the order of events."""

    Params = EconomyParams
    metric = Metric("equality x productivity")

    def __init__(self, params: EconomyParams) -> None:
        self.params = params
        self.name = params.name
        self.n_agents = params.n_agents
        self.n_brackets = params.n_brackets
        self.dynamic = params.periods > 1
        self.cutoffs = torch.tensor(params.cutoffs, dtype=torch.float32)
        if params.objective != "equality_productivity":
            self.metric = Metric(params.objective.replace("_", " "))

    @property
    def action_dim(self) -> int:
        return self.n_brackets + self.n_agents * (2 if self.dynamic else 1)

    @property
    def action_shape(self) -> tuple[int, ...]:
        return (self.action_dim,)

    def graph(self):
        """Star graph: agents 0..N-1 and the planner as node N, joined both ways."""
        from torch_geometric.data import Data

        return Data(edge_index=planner_star(self.n_agents), num_nodes=self.n_agents + 1)

    def sample_trace(
        self, batch: int, horizon: int | None = None, *, seed: int, device="cpu"
    ) -> Trace:
        """Skills ``[B, T, N]``: fixed or Pareto per episode, times a per-period lognormal
        shock in the dynamic economy when ``skill_noise`` > 0."""
        p = self.params
        horizon = p.horizon if horizon is None else int(horizon)
        if batch < 1 or horizon < 1:
            raise ValueError(f"batch, horizon: must be >= 1, got {batch}, {horizon}")
        gen = torch.Generator().manual_seed(int(seed))
        if p.skills is not None:
            base = torch.tensor(p.skills, dtype=torch.float64).expand(batch, -1)
        else:
            u = torch.rand(batch, p.n_agents, generator=gen, dtype=torch.float64)
            base = (p.skill_min * (1.0 - u).pow(-1.0 / p.pareto_alpha)).clamp_max(p.skill_max)
        skills = base.unsqueeze(1).expand(batch, horizon, p.n_agents).clone()
        if p.skill_noise > 0:
            eps = torch.randn(batch, horizon, p.n_agents, generator=gen, dtype=torch.float64)
            skills = skills * torch.exp(p.skill_noise * eps - 0.5 * p.skill_noise**2)
        return Trace({"skills": skills.float().to(device)}, seed=seed)

    def check_trace(self, trace: Trace) -> None:
        if "skills" not in trace.data:
            raise ValueError(f"trace.skills: required [batch, horizon, agents]; trace holds "
                             f"{sorted(trace.data)}")
        s = trace["skills"]
        if s.dim() != 3 or s.shape[-1] != self.n_agents:
            raise ValueError(f"trace.skills: expected [batch, horizon, {self.n_agents}], got "
                             f"{tuple(s.shape)}")
        if not torch.isfinite(s).all() or (s <= 0).any():
            raise ValueError("trace.skills: must be finite and > 0 (no NaN)")

    def reset(self, trace: Trace) -> State:
        self.check_trace(trace)
        b, n = trace.batch, self.n_agents
        zeros = torch.zeros(b, n, device=trace.device)
        return {"wealth": zeros, "last_income": zeros.clone(),
                "rates": torch.zeros(b, self.n_brackets, device=trace.device)}

    def observe(self, state: State, t: int, trace: Trace) -> Observation:
        """Agents' skills, savings and last incomes, last period's schedule and the time."""
        b = trace.batch
        # a one-step economy repeated over a horizon is stationary: no clock in its observation
        frac = t / trace.horizon if self.dynamic else 0.0
        last = float(self.dynamic and t == trace.horizon - 1)
        frac = torch.full((b, 1), frac, device=trace.device)
        last = torch.full((b, 1), last, device=trace.device)
        return {"skills": trace["skills"][:, t], "wealth": state["wealth"],
                "last_income": state["last_income"], "last_rates": state["rates"],
                "time": torch.cat([frac, last], -1)}

    def feasible(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Clip rates to [0, 1]; clip and (straight-through) snap hours to their grid. Rates are
        not snapped: fixed schedules such as the US one (12%, 22%, ...) lie off the 5% grid,
        which is the learned planner's action space (`policies.economy.PlannerPolicy`)."""
        p = self.params
        rates, hours, consume = split_action(action, self.n_brackets, self.n_agents)
        rates = rates.clamp(0.0, 1.0)  # the planner's grid is its action space, not physics
        hours = snap(hours.clamp(0.0, p.max_hours), p.hours_step)
        if consume is not None:
            consume = consume.clamp(0.0, 1.0)
        return rates, hours, consume

    def step(
        self, state: State, action: Tensor, t: int, trace: Trace
    ) -> tuple[State, Tensor, dict[str, Tensor]]:
        p = self.params
        rates, hours, consume = self.feasible(action)
        skills = trace["skills"][:, t]
        out = period_outcome(rates, hours, skills, self.cutoffs.to(skills.device))
        coin = out["coin"]
        last = consume is None or t == trace.horizon - 1
        share = torch.ones_like(coin) if last else consume
        consumption = share * (state["wealth"] + coin)
        wealth = (state["wealth"] + coin - consumption) * (1.0 + p.interest)
        utility = agent_utility(consumption, hours, p)
        reward = social_welfare(coin, utility, p.objective)
        # what each agent optimises: its utility with the lump sum taken as given
        given = out["income"] - out["tax"] + out["lump"].detach()
        own = agent_utility(share * (state["wealth"] + given), hours, p)
        info = {"equality": equality(coin), "productivity": coin.sum(-1),
                "hours": hours.mean(-1), "tax_revenue": out["tax"].sum(-1),
                "utility": utility.mean(-1), "agent_reward": own,
                "labour_cost": p.labour_cost * hours.pow(2), "lump": out["lump"]}
        new_state = {"wealth": wealth, "last_income": out["income"], "rates": rates}
        return new_state, reward, info

    def episode_metric(self, rewards: Tensor, warmup: int = 0) -> Tensor:
        """Planner objective per tax period (a total over agents) ``[B]``."""
        return rewards[:, warmup:].mean(1)

    def episode_metrics(self, result: Rollout, warmup: int = 0) -> dict[str, Tensor]:
        m = result.metrics
        return {k: m[k][:, warmup:].mean(1) for k in ("equality", "productivity", "hours")
                if k in m}


def planner_star(n_agents: int) -> Tensor:
    """Edges agent i -> planner (node N) ``[2, N]``; the encoder adds the reverse direction."""
    agents = torch.arange(n_agents)
    return torch.stack([agents, torch.full_like(agents, n_agents)])


# -- scenario factories -----------------------------------------------------------------------


def _skills(skills, n_agents: int | None) -> tuple[tuple[float, ...] | None, int]:
    """'anchor' (the 4 published skills), 'pareto' (drawn per episode) or a list."""
    if isinstance(skills, str):
        if skills == "anchor":
            if n_agents not in (None, len(ANCHOR_SKILLS)):
                raise ValueError(f"skills: 'anchor' has 4 agents; n_agents={n_agents} needs "
                                 "skills='pareto' or a list")
            return ANCHOR_SKILLS, len(ANCHOR_SKILLS)
        if skills == "pareto":
            return None, int(n_agents or 4)
        raise ValueError(f"skills: 'anchor', 'pareto' or a list of numbers, got {skills!r}")
    values = tuple(float(s) for s in skills)
    return values, int(n_agents or len(values))


def _grids(hours_step: float, rate_step: float) -> None:
    """The scenarios' references (the bilevel MILP, the agents' exact best response) need
    grids: 0 (continuous, allowed in `EconomyParams` itself) would leave them without one."""
    for name, value in (("hours_step", hours_step), ("rate_step", rate_step)):
        if not value > 0:
            raise ValueError(f"{name}: must be > 0 (the scenario's MILP reference needs a grid), "
                             f"got {value}")


def one_step(
    skills: str | Sequence[float] = "anchor",
    n_agents: int | None = None,
    labour_cost: float = 0.012,
    cutoffs: Sequence[float] = US_2018_CUTOFFS,
    hours_step: float = 1.0,
    rate_step: float = 0.05,
    utility: str = "quadratic",
    eta: float = 0.23,
    objective: str = "equality_productivity",
    pareto_alpha: float = 2.0,
    skill_max: float = 2.5,
) -> EconomySimulator:
    """One tax period; default: the 4 anchor agents, k = 0.012, integer hours, 5% rates."""
    _grids(hours_step, rate_step)
    fixed, n = _skills(skills, n_agents)
    return EconomySimulator(EconomyParams(
        n_agents=n, skills=fixed, labour_cost=labour_cost, cutoffs=tuple(cutoffs),
        hours_step=hours_step, rate_step=rate_step, utility=utility, eta=eta,
        objective=objective, pareto_alpha=pareto_alpha, skill_max=skill_max,
        name="economy/one_step"))


def dynamic(
    skills: str | Sequence[float] = "anchor",
    n_agents: int | None = None,
    periods: int = 10,
    interest: float = 0.02,
    skill_noise: float = 0.0,
    labour_cost: float = 0.012,
    cutoffs: Sequence[float] = US_2018_CUTOFFS,
    hours_step: float = 1.0,
    rate_step: float = 0.05,
    utility: str = "quadratic",
    eta: float = 0.23,
    objective: str = "equality_productivity",
    pareto_alpha: float = 2.0,
    skill_max: float = 2.5,
) -> EconomySimulator:
    """``periods`` tax periods with savings; the planner sets the schedule every period."""
    _grids(hours_step, rate_step)
    fixed, n = _skills(skills, n_agents)
    return EconomySimulator(EconomyParams(
        n_agents=n, skills=fixed, labour_cost=labour_cost, cutoffs=tuple(cutoffs),
        hours_step=hours_step, rate_step=rate_step, utility=utility, eta=eta,
        objective=objective, pareto_alpha=pareto_alpha, skill_max=skill_max,
        periods=periods, interest=interest, skill_noise=skill_noise,
        eval_horizon=periods, eval_warmup=0, name="economy/dynamic"))
