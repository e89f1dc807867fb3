"""Classical tax schedules: free market, 2018 US federal, and two Saez formula schedules (ours:
the finite-population formula at each cut-off; the AI Economist's binned estimator, which
reproduces the published Saez number 265.8)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from oprl.simulators.economy import US_2018_RATES, EconomySimulator
from oprl.simulators.economy_response import best_response


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


