"""References for the tax economy: the exact optimal schedule on the rate grid as a bilevel
MILP (Pyomo + HiGHS), replayed with the agents' exact best response.

Binaries pick each agent's hours on the grid, integer rates come from ``rate_step``, the
bilinear terms are linearised exactly (McCormick with a binary factor), incentive
constraints make the chosen hours a best response (ties to the fewest hours, enforced by
``tie_margin``), and equality x productivity is linear with one variable per pairwise
difference. Derivation: docs/economy.md, "Optimal schedule: bilevel MILP".
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from oprl.core import Trace
from oprl.result import SolverResult
from oprl.simulators.economy import (
    EconomySimulator,
    bracket_income,
)
from oprl.simulators.economy_response import ScheduleBestResponse, hours_grid

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
