"""References for the tax economy: the agents' exact best response to any schedule, two Saez
formula schedules (ours: the finite-population formula at each cut-off; the AI Economist's
binned estimator, which reproduces the published Saez number 265.8), fixed schedules (free
market, 2018 US federal) and the exact optimal schedule on the rate grid as a bilevel MILP
(Pyomo + HiGHS).

Agents take the lump sum as given (as in the anchor), so with quadratic utility an agent's best
response depends only on its skill and the schedule: maximise ``z - T(z) - k h^2`` with
``z = s h``. That is concave-quadratic between bracket kinks, so the exact continuous optimum
is the best of each piece's clipped stationary point; on an hours grid it is the best grid
point (ties: fewest hours, as ``argmax`` picks the first).

The MILP (quadratic utility, equality x productivity): binaries ``x[i, h]`` pick each agent's
hours on the grid, integers ``n[j]`` give rates ``n[j] * rate_step``, and the exact products
``p[i, j, h] = x[i, h] * rate[j]`` (McCormick is exact with a binary factor; ``sum_h p[i,j,h]
= rate[j]`` tightens it). Incentive constraints make every chosen hours a best response.
Because the lump sum returns all revenue, total coin = total income and
``(1 - N/(N-1) Gini) * total = sum c - sum_{i<j} |c_i - c_j| / (N-1)``, which is linear with
one variable per absolute difference. Ties between an agent's best responses go to the fewest
hours, as in `best_response`: the chosen hours must beat every smaller hours by
``tie_margin`` (without it the MILP would break ties in the planner's favour and report values
the simulated economy does not reach).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from oprl.core import Observation, Trace
from simulators.economy import (
    US_2018_RATES,
    EconomySimulator,
    agent_utility,
    bracket_income,
    check_rates,
    join_action,
    period_outcome,
    social_welfare,
)
from solvers.result import SolverResult

# -- best response ----------------------------------------------------------------------------

TIE_PREFERENCE = 1e-10  # utility per hour: breaks exact ties towards fewer hours


def hours_grid(max_hours: float, step: float, dtype=torch.float64) -> Tensor:
    """The hours an agent may choose on the grid ``[H]``."""
    n = int(round(max_hours / step))
    return torch.arange(n + 1, dtype=dtype) * step


def _grid_response(skills: Tensor, rates: Tensor, cutoffs: Tensor, sim: EconomySimulator,
                   lump: Tensor) -> Tensor:
    p = sim.params
    grid = hours_grid(p.max_hours, p.hours_step).to(skills.device)  # [H]
    income = skills.unsqueeze(-1) * grid  # [B, N, H]
    tax = (bracket_income(income, cutoffs) * rates[:, None, None, :]).sum(-1)
    coin = income - tax + lump.unsqueeze(-1)
    util = agent_utility(coin, grid.expand_as(income), p)
    # ties (up to float noise) go to the fewest hours, consistently with the MILP
    return grid[(util - TIE_PREFERENCE * grid).argmax(-1)]


def _continuous_response(skills: Tensor, rates: Tensor, cutoffs: Tensor,
                         sim: EconomySimulator) -> Tensor:
    """Quadratic utility, continuous hours: best of each bracket's clipped stationary point."""
    p = sim.params
    k, hmax = p.labour_cost, p.max_hours
    lo = cutoffs / skills.unsqueeze(-1)  # [B, N, K] hours where each bracket starts
    hi = torch.cat([lo[..., 1:], torch.full_like(lo[..., :1], math.inf)], -1)
    star = skills.unsqueeze(-1) * (1 - rates.unsqueeze(1)) / (2 * k)
    cand = torch.minimum(torch.maximum(star, lo), hi).clamp(0.0, hmax)
    cand = torch.cat([cand, torch.zeros_like(cand[..., :1]), torch.full_like(cand[..., :1], hmax)], -1)
    income = skills.unsqueeze(-1) * cand
    tax = (bracket_income(income, cutoffs) * rates[:, None, None, :]).sum(-1)
    util = income - tax - k * cand.pow(2)
    return cand.gather(-1, util.argmax(-1, keepdim=True)).squeeze(-1)


def best_response(sim: EconomySimulator, skills: Tensor, rates: Tensor,
                  iterations: int = 30) -> Tensor:
    """Every agent's exact best hours ``[B, N]`` to ``rates`` (``[K]`` or ``[B, K]``), taking
    the lump sum as given. Isoelastic agents care about the lump sum's level: it is iterated to
    its fixed point (``iterations`` rounds)."""
    rates = torch.as_tensor(rates, dtype=torch.float64, device=skills.device)
    check_rates(rates)
    skills = skills.double()
    rates = rates.expand(skills.shape[0], -1) if rates.dim() == 1 else rates
    cutoffs = sim.cutoffs.double().to(skills.device)
    p = sim.params
    if p.utility == "quadratic":
        if p.hours_step > 0:
            return _grid_response(skills, rates, cutoffs, sim, torch.zeros_like(skills))
        return _continuous_response(skills, rates, cutoffs, sim)
    step = p.hours_step if p.hours_step > 0 else p.max_hours / 2000
    fine = sim if p.hours_step > 0 else _with_step(sim, step)
    lump = torch.zeros_like(skills)
    hours = torch.zeros_like(skills)
    for _ in range(iterations):
        hours = _grid_response(skills, rates, cutoffs, fine, lump)
        lump = period_outcome(rates, hours, skills, cutoffs)["lump"]
    return hours


def _with_step(sim: EconomySimulator, step: float) -> EconomySimulator:
    from dataclasses import replace

    return EconomySimulator(replace(sim.params, hours_step=step))


def schedule_value(sim: EconomySimulator, skills: Tensor, rates: Tensor) -> dict[str, Tensor]:
    """Objective, equality, productivity and hours ``[B]``/``[B, N]`` of a schedule when every
    agent best-responds."""
    skills = skills.double()
    hours = best_response(sim, skills, rates)
    rates = torch.as_tensor(rates, dtype=torch.float64).expand(skills.shape[0], -1)
    out = period_outcome(rates, hours, skills, sim.cutoffs.double())
    coin = out["coin"]
    util = agent_utility(coin, hours, sim.params)
    from simulators.economy import equality

    return {"objective": social_welfare(coin, util, sim.params.objective),
            "equality": equality(coin), "productivity": coin.sum(-1), "hours": hours}


# -- schedules as policies ----------------------------------------------------------------------


class ScheduleBestResponse(nn.Module):
    """A fixed tax schedule (``[K]``, or ``[B, K]`` per episode) with every agent playing its
    exact best response; in the dynamic economy agents consume ``consume`` of their cash."""

    def __init__(self, sim: EconomySimulator, rates: Tensor, consume: float = 1.0) -> None:
        super().__init__()
        rates = torch.as_tensor(rates, dtype=torch.float64)
        check_rates(rates)
        self.sim = sim
        self.consume = float(consume)
        self.register_buffer("rates", rates, persistent=False)

    def forward(self, obs: Observation) -> Tensor:
        skills = obs["skills"]
        rates = self.rates.to(skills.device)
        hours = best_response(self.sim, skills, rates).to(skills.dtype)
        consume = (torch.full_like(hours, self.consume) if self.sim.dynamic else None)
        return join_action(rates.to(skills.dtype), hours, consume)


def free_market(sim: EconomySimulator) -> Tensor:
    return torch.zeros(sim.n_brackets, dtype=torch.float64)


def us_federal(sim: EconomySimulator) -> Tensor:
    """The 2018 US rates (10/12/22/24/32/35/37%); needs the 7 US brackets."""
    if sim.n_brackets != len(US_2018_RATES):
        raise ValueError(f"cutoffs: the US federal schedule has {len(US_2018_RATES)} brackets, "
                         f"the economy has {sim.n_brackets}")
    return torch.tensor(US_2018_RATES, dtype=torch.float64)


# -- Saez -------------------------------------------------------------------------------------


def taxable_income_elasticity(sim: EconomySimulator, skills: Tensor) -> float:
    """d ln(total income) / d ln(1 - rate) between flat taxes of 10% and 20% (continuous
    hours): exactly 1 for quadratic labour cost when nobody hits the hours cap."""
    from dataclasses import replace

    cont = EconomySimulator(replace(sim.params, hours_step=0.0))
    flat = [torch.full((sim.n_brackets,), r, dtype=torch.float64) for r in (0.1, 0.2)]
    z = [float((best_response(cont, skills, f) * skills.double()).sum()) for f in flat]
    return math.log(z[0] / z[1]) / math.log(0.9 / 0.8)


def saez_rates(incomes: Tensor, cutoffs: Tensor, elasticity: float) -> Tensor:
    """Saez (2001) marginal rate at each bracket's lower cut-off for a finite population:
    ``(1 - G) / (1 - G + a e)`` with G the mean inverse-income welfare weight (normalised to
    mean 1 over everyone) of the agents above the cut-off and ``a = zbar / (zbar - c)`` the
    local Pareto parameter from their mean income ``zbar``. Brackets nobody reaches take the
    rate of the highest reached one."""
    z = incomes.double().clamp_min(1e-6)
    g = (1.0 / z) / (1.0 / z).mean()
    rates = []
    for c in cutoffs.double().tolist():
        above = z > c
        if not above.any():
            rates.append(rates[-1] if rates else 0.0)
            continue
        big_g = float(g[above].mean())
        zbar = float(z[above].mean())
        a = zbar / (zbar - c)
        num = max(1.0 - big_g, 0.0)
        rates.append(num / (num + a * elasticity) if num + a * elasticity > 0 else 0.0)
    return torch.tensor(rates, dtype=torch.float64).clamp(0.0, 1.0)


def snap_rates(rates: Tensor, step: float) -> Tensor:
    return rates if step <= 0 else (torch.round(rates / step) * step).clamp(0.0, 1.0)


def saez_schedule(sim: EconomySimulator, skills: Tensor, *, iterations: int = 50,
                  damping: float = 0.5) -> tuple[Tensor, dict]:
    """The Saez schedule at its fixed point: incomes under the schedule -> the formula's rates
    -> damped update, starting from the free market; snapped to the rate grid at the end.
    ``skills`` ``[N]`` (one economy)."""
    skills = skills.double().reshape(1, -1)
    e = taxable_income_elasticity(sim, skills)
    rates = free_market(sim)
    for _ in range(iterations):
        z = best_response(sim, skills, rates)[0] * skills[0]
        rates = (1 - damping) * rates + damping * saez_rates(z, sim.cutoffs, e)
    final = snap_rates(rates, sim.params.rate_step)
    return final, {"elasticity": e, "welfare_weights": "inverse income",
                   "unsnapped": rates.tolist()}


def saez_binned_bin_rates(incomes: Tensor, top_cutoff: float, elasticity: float, *,
                          bins: int = 100, weights: str = "inverse_income") -> tuple[Tensor, Tensor]:
    """The AI Economist's binned Saez estimator (Zheng et al. 2022, its `PeriodicBracketTax`
    "saez" model, re-implemented from its description): marginal rates on ``bins`` equal
    income bins over [0, ``top_cutoff``) plus one open top bin -> (rates ``[bins + 1]``, bin
    edges ``[bins + 1]``).

    Per bin: welfare weight ``1 / max(1, z)`` at the bin's midpoint ("uniform": 1); ``G`` =
    the mean (normalised) weight of everyone at or above the bin, averaged over its two edges;
    the local Pareto parameter ``a = z p / (P(income >= z) width)`` from the histogram (the
    open top bin: ``mean / (mean - top_cutoff)`` of the incomes above it, 0 when there are
    none); rate ``(1 - G) / (1 - G + a e)``. Empty bins are filled by linear interpolation
    (from 0 below the first occupied bin). With nobody above ``top_cutoff`` the top rate is
    1, so rates climb linearly to 100% between the richest income and the top cut-off."""
    if weights not in ("inverse_income", "uniform"):
        raise ValueError(f"weights: 'inverse_income' or 'uniform', got {weights!r}")
    if bins < 1 or not top_cutoff > 0 or not elasticity >= 0:
        raise ValueError("bins >= 1, top_cutoff > 0 and elasticity >= 0 are required")
    z = incomes.double().reshape(-1).cpu()
    if len(z) == 0 or not torch.isfinite(z).all():
        raise ValueError("incomes: need at least one finite income")
    n = len(z)
    edges = torch.linspace(0.0, float(top_cutoff), bins + 1, dtype=torch.float64)
    width = float(edges[1] - edges[0])
    inside = (z >= 0) & (z <= top_cutoff)
    index = ((z[inside] / width).floor().long()).clamp(max=bins - 1)
    counts = torch.bincount(index, minlength=bins).double()
    above, below = z[z > top_cutoff], z[z < 0]

    def weight(x: Tensor) -> Tensor:
        return 1.0 / x.clamp_min(1.0) if weights == "inverse_income" else torch.ones_like(x)

    mid = 0.5 * (edges[:-1] + edges[1:])
    mass = torch.cat([counts * weight(mid), weight(above).sum().reshape(1)])
    total = mass.sum() + weight(below.clamp_min(0.0)).sum() + 1e-9
    share = torch.cat([counts, torch.tensor([float(len(above))], dtype=torch.float64)]) / n

    def tail(x: Tensor) -> Tensor:  # sum over this bin and every bin above it
        return x.flip(0).cumsum(0).flip(0)

    g_edge = tail(mass / total) / (tail(share) + 1e-9)
    g = torch.cat([0.5 * (g_edge[:-1] + g_edge[1:]), g_edge[-1:]])
    at_or_above = 1.0 - (share.cumsum(0) + len(below) / n).clamp(0.0, 1.0) + 0.5 * share
    a = mid * share[:-1] / (at_or_above[:-1].clamp(0.0, 1.0) + 1e-9) / width
    a = torch.where(share[:-1] > 0, a, torch.full_like(a, math.nan))
    a_top = float(above.mean() / (above.mean() - top_cutoff + 1e-9)) if len(above) else 0.0
    a = torch.cat([a, torch.tensor([a_top], dtype=torch.float64)])
    tau = (1.0 - g) / (1.0 - g + a * elasticity + 1e-9)
    known = ~torch.isnan(tau)
    position = torch.arange(len(tau), dtype=torch.float64)
    xs = torch.cat([torch.tensor([-1.0], dtype=torch.float64), position[known]])
    ys = torch.cat([torch.zeros(1, dtype=torch.float64), tau[known]])
    return _interp(position, xs, ys), edges


def _interp(x: Tensor, xs: Tensor, ys: Tensor) -> Tensor:
    """Piecewise-linear interpolation through (xs, ys), xs increasing, x within their range."""
    right = torch.searchsorted(xs, x).clamp(1, len(xs) - 1)
    x0, x1, y0, y1 = xs[right - 1], xs[right], ys[right - 1], ys[right]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def bracketize(bin_rates: Tensor, edges: Tensor, cutoffs: Tensor) -> Tensor:
    """Bracket rates ``[K]`` from a fine schedule: each bracket's rate is the tax the fine
    schedule levies on the bracket's income divided by its width (the top bracket takes the
    open top bin's rate); clipped to [0, 1]."""
    sizes = torch.cat([edges[1:] - edges[:-1], torch.tensor([math.inf], dtype=torch.float64)])
    cut = cutoffs.double()
    rates, last = [], 0.0
    for b in range(len(cut) - 1):
        income = torch.minimum(sizes, (cut[b + 1] - edges).clamp_min(0.0))
        due = max(0.0, float((bin_rates * income).sum()))
        rates.append((due - last) / float(cut[b + 1] - cut[b]))
        last = due
    rates.append(float(bin_rates[-1]))
    return torch.tensor(rates, dtype=torch.float64).clamp(0.0, 1.0)


def saez_binned_schedule(sim: EconomySimulator, skills: Tensor, *, elasticity: float = 0.5,
                         iterations: int = 100, damping: float = 0.5,
                         snap: bool = False) -> tuple[Tensor, dict]:
    """The AI Economist's Saez baseline on one economy: incomes of the agents' exact best
    responses -> `saez_binned_bin_rates` (100 bins up to the top cut-off) -> `bracketize`
    -> damped update, to its fixed point, from the free market. ``elasticity`` 0.5 is the
    AI Economist's starting estimate (its running estimate moves by 2% per update); rates
    stay continuous, as that baseline's (``snap`` puts them on the planner's grid)."""
    skills = skills.double().reshape(1, -1)
    rates = free_market(sim)
    top = float(sim.params.cutoffs[-1])
    for _ in range(iterations):
        z = best_response(sim, skills, rates)[0] * skills[0]
        fine, edges = saez_binned_bin_rates(z, top, elasticity)
        rates = (1 - damping) * rates + damping * bracketize(fine, edges, sim.cutoffs)
    final = snap_rates(rates, sim.params.rate_step) if snap else rates
    return final, {"elasticity": elasticity, "welfare_weights": "inverse income (binned)",
                   "unsnapped": rates.tolist()}


# -- the bilevel MILP ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MilpSolution:
    rates: Tensor  # [K]
    hours: Tensor  # [N]
    objective: float  # the MILP's objective (optimistic tie-breaking)
    bound: float  # HiGHS's dual bound
    status: str
    wall_s: float


def optimal_schedule_milp(sim: EconomySimulator, skills: Tensor, *, time_limit: float = 120.0,
                          mip_gap: float = 1e-6, tie_margin: float = 1e-4) -> MilpSolution:
    """Exact optimal schedule on the rate grid for one economy (``skills`` ``[N]``), with
    agents on the hours grid; quadratic utility and equality x productivity only."""
    import pyomo.environ as pyo
    from pyomo.contrib.appsi.solvers import Highs

    p = sim.params
    if p.utility != "quadratic" or p.objective != "equality_productivity":
        raise ValueError("milp: needs utility='quadratic' and objective='equality_productivity'")
    if p.hours_step <= 0 or p.rate_step <= 0:
        raise ValueError("milp: needs an hours grid and a rate grid (hours_step, rate_step > 0)")
    start = time.perf_counter()
    s = skills.double().reshape(-1).cpu().numpy()
    n, k_br = len(s), sim.n_brackets
    grid = hours_grid(p.max_hours, p.hours_step).numpy()
    steps = int(round(1.0 / p.rate_step))
    income = s[:, None] * grid[None, :]  # [N, H]
    w = bracket_income(torch.tensor(income), sim.cutoffs.double()).numpy()  # [N, H, K]
    base = income - p.labour_cost * grid[None, :] ** 2  # pre-tax utility [N, H]
    agents, brs = range(n), range(k_br)
    # taxes (rates >= 0) never make more hours pay: nobody works beyond their free-market
    # optimum, so hours above it are neither chosen nor needed as deviations
    free = base.argmax(1)
    hrs = range(int(free.max()) + 1)
    allowed = {(i, h) for i in agents for h in hrs if h <= free[i]}
    used = [(i, h, j) for (i, h) in sorted(allowed) for j in brs if w[i, h, j] > 0]

    m = pyo.ConcreteModel()
    m.x = pyo.Var(sorted(allowed), domain=pyo.Binary)
    m.n = pyo.Var(brs, domain=pyo.Integers, bounds=(0, steps))
    m.rate = pyo.Expression(brs, rule=lambda m, j: m.n[j] * p.rate_step)
    m.p = pyo.Var(used, bounds=(0.0, 1.0))
    m.d = pyo.Var([(i, j) for i in agents for j in agents if i < j], domain=pyo.NonNegativeReals)
    m.c = pyo.ConstraintList()
    for i in agents:
        m.c.add(sum(m.x[i, h] for h in hrs if (i, h) in allowed) == 1)
    for (i, h, j) in used:  # exact product x * rate (x binary)
        m.c.add(m.p[i, h, j] <= m.x[i, h])
        m.c.add(m.p[i, h, j] <= m.rate[j])
        m.c.add(m.p[i, h, j] >= m.rate[j] - (1 - m.x[i, h]))
    for i in agents:  # aggregated products: at most one of agent i's hours is chosen
        for j in brs:
            reach = [h for h in hrs if (i, h) in allowed and w[i, h, j] > 0]
            if reach:
                held = sum(m.p[i, h, j] for h in reach)
                m.c.add(held <= m.rate[j])
                m.c.add(held >= m.rate[j] - (1 - sum(m.x[i, h] for h in reach)))

    def tax(i):
        return sum(w[i, h, j] * m.p[i, h, j] for (i2, h, j) in used if i2 == i)

    def net(i):  # pre-tax utility of the chosen hours minus the tax paid
        return sum(base[i, h] * m.x[i, h] for h in hrs if (i, h) in allowed) - tax(i)

    for i in agents:  # incentive constraints: no other hours is better for agent i, and
        chosen = net(i)  # fewer hours are strictly worse (ties go to fewer hours, as argmax)
        for h in range(int(free[i]) + 1):
            above = 1 - sum(m.x[i, g] for g in range(h + 1) if (i, g) in allowed)
            m.c.add(chosen >= base[i, h] + tie_margin * above
                    - sum(w[i, h, j] * m.rate[j] for j in brs if w[i, h, j] > 0))

    def after_tax(i):
        return sum(income[i, h] * m.x[i, h] for h in hrs if (i, h) in allowed) - tax(i)

    for (i, j) in m.d:
        m.c.add(m.d[i, j] >= after_tax(i) - after_tax(j))
        m.c.add(m.d[i, j] >= after_tax(j) - after_tax(i))
    total = sum(income[i, h] * m.x[i, h] for (i, h) in sorted(allowed))
    m.obj = pyo.Objective(expr=total - sum(m.d.values()) / (n - 1), sense=pyo.maximize)

    opt = Highs()
    opt.config.time_limit = time_limit
    opt.config.mip_gap = mip_gap
    opt.config.load_solution = False
    # tight integrality: a binary at 1 - 1e-6 would let products shave ~1e-4 off a tax
    opt.highs_options = {"mip_feasibility_tolerance": 1e-9, "primal_feasibility_tolerance": 1e-9}
    res = opt.solve(m)
    status = str(res.termination_condition).split(".")[-1]
    if res.best_feasible_objective is None:
        return MilpSolution(torch.full((k_br,), math.nan), torch.full((n,), math.nan), math.nan,
                            float(res.best_objective_bound or math.nan), status,
                            time.perf_counter() - start)
    res.solution_loader.load_vars()
    rates = torch.zeros(k_br, dtype=torch.float64)
    for j in brs:  # a bracket no agent can reach has no say: it repeats the one below
        value = pyo.value(m.n[j], exception=False)
        reached = any(w[i, h, j] > 0 for (i, h) in allowed)
        rates[j] = round(value) * p.rate_step if reached and value is not None else (
            rates[j - 1] if j else 0.0)
    hours = torch.tensor([grid[max((h for h in hrs if (i, h) in allowed),
                                   key=lambda h: pyo.value(m.x[i, h]))] for i in agents])
    return MilpSolution(rates, hours, float(res.best_feasible_objective),
                        float(res.best_objective_bound), status, time.perf_counter() - start)



# -- references -------------------------------------------------------------------------------


def milp_reference(sim: EconomySimulator, trace: Trace, *, max_economies: int = 8,
                   time_limit: float = 120.0) -> SolverResult | None:
    """The MILP-optimal schedule of every distinct economy of ``trace`` (skills constant over
    each episode), replayed as a policy with the agents' exact best response. None when the
    MILP does not apply (utility, objective, continuous grids, per-period skill shocks) or the
    trace holds more than ``max_economies`` distinct skill vectors."""
    p = sim.params
    if (p.utility != "quadratic" or p.objective != "equality_productivity"
            or p.hours_step <= 0 or p.rate_step <= 0):
        return None
    skills = trace["skills"].double().cpu()
    if not torch.equal(skills, skills[:, :1].expand_as(skills)):
        return None  # skills change over time: one MILP per period would be needed
    unique, inverse = torch.unique(skills[:, 0], dim=0, return_inverse=True)
    if len(unique) > max_economies:
        return None
    start = time.perf_counter()
    sols = [optimal_schedule_milp(sim, row, time_limit=time_limit) for row in unique]
    statuses = sorted({s.status for s in sols})
    rates = torch.stack([s.rates for s in sols])[inverse]  # [B, K]
    objective = torch.tensor([s.objective for s in sols], dtype=torch.float64)[inverse]
    status = statuses[0] if len(statuses) == 1 else "; ".join(statuses)
    kind = "optimal" if status == "optimal" else "best_known"
    return SolverResult(
        name="milp optimal schedule", objective=float(objective.mean()), kind=kind,
        status=status, wall_s=time.perf_counter() - start,
        policy=ScheduleBestResponse(sim, rates),
        details={"rates": [s.rates.tolist() for s in sols],
                 "hours": [s.hours.tolist() for s in sols],
                 "bound": [s.bound for s in sols], "solve_s": [s.wall_s for s in sols],
                 "per_capita": float(objective.mean()) / sim.n_agents,
                 "tie_breaking": "fewest hours (as the simulated best response)"})


def references(sim: EconomySimulator, trace: Trace, warmup: int) -> list[SolverResult]:
    """The exact optimal schedule on the rate grid (bilevel MILP) where it applies. With
    quadratic agents, hours are a static best response, so in the dynamic economy (no skill
    shocks) the one-period optimum repeated every period is optimal too."""
    result = milp_reference(sim, trace)
    return [] if result is None else [result]
