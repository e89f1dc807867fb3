"""The agents' exact best response to a tax schedule, and a schedule played with it.

Agents take the lump sum as given (as in the anchor), so with quadratic utility an agent's best
response depends only on its skill and the schedule: maximise ``z - T(z) - k h^2`` with
``z = s h``. That is concave-quadratic between bracket kinks, so the exact continuous optimum
is the best of each piece's clipped stationary point; on an hours grid it is the best grid
point (ties: fewest hours, as ``argmax`` picks the first).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from oprl.core import Observation
from oprl.simulators.economy import (
    EconomySimulator,
    agent_utility,
    bracket_income,
    check_rates,
    equality,
    join_action,
    period_outcome,
    social_welfare,
)

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


