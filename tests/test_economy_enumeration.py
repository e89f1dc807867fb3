"""The anchor economy's bilevel MILP against an independent enumeration of every schedule that
can matter (docs/economy.md, "Optimal schedule: bilevel MILP").

The enumeration is written from the economics alone (numpy, none of the simulator's or the
solver's functions): for each candidate schedule on the 5 % rate grid, each agent picks its
best hours on the 1-hour grid (ties to the fewest hours), pays the bracket taxes, and the
planner scores equality x productivity. Two facts keep it exact yet fast:

* no agent works beyond its free-market optimum (rates >= 0 only lower the return to more
  hours), so a bracket above every agent's free-market income has no say: 6 of the 7 US
  brackets can matter, 21^6 = 86 million schedules;
* below the cut-off c = 84.2 an agent's tax depends on the three lowest rates only, above it
  the three lowest brackets are full, so the tax is A + (the three upper rates' part) with
  A = 9.7 r1 + 29.775 r2 + 44.725 r3. Each agent's best hours below c are computed once per
  lower schedule, its best hours above c once per upper schedule, and it goes above c iff that
  is worth more after paying A. Only the final comparison runs over all 86 million pairs.

With equal lump sums, coin differences are after-tax income differences, so the objective is
total income minus the sum of pairwise |after-tax income differences| / (N - 1).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from oprl import registry
from oprl.solvers.economy import optimal_schedule_milp

SKILLS = (1.128, 1.321, 1.65, 2.256)
LABOUR_COST = 0.012
CUTOFFS = np.array([0.0, 9.7, 39.475, 84.2, 160.725, 204.1, 510.3])
LEVELS = np.arange(21) / 20.0  # rates on the 5 % grid
SPLIT = 3  # brackets below / from the cut-off CUTOFFS[SPLIT] = 84.2
TIE = 1e-9  # utility differences below this are ties (they go to fewer hours)


def bracket_amounts(income: np.ndarray) -> np.ndarray:
    """Income in each bracket ``[..., 7]``."""
    width = np.append(np.diff(CUTOFFS), np.inf)
    return np.clip(income[..., None] - CUTOFFS, 0.0, width)


def first_best(utility: np.ndarray) -> np.ndarray:
    """Index of the fewest hours within TIE of the best utility, along the last axis."""
    return (utility >= utility.max(-1, keepdims=True) - TIE).argmax(-1)


def best_hours(skill: float, low_rates: np.ndarray, high_rates: np.ndarray) -> dict:
    """One agent's best hours below and above the cut-off: below per lower schedule ``[L, 3]``,
    above per upper schedule ``[U, 3]`` (utility there excludes the lower brackets' A)."""
    hours = np.arange(101.0)
    hours = hours[: int(np.argmax(skill * hours - LABOUR_COST * hours**2)) + 1]  # free market
    income = skill * hours
    amounts = bracket_amounts(income)
    assert (amounts[:, SPLIT + 3:] == 0).all()  # nobody reaches the top bracket
    low = income < CUTOFFS[SPLIT]
    out = {}
    for name, mask, rates, cols in (("low", low, low_rates, slice(0, SPLIT)),
                                    ("high", ~low, high_rates, slice(SPLIT, SPLIT + 3))):
        if not mask.any():
            out[name] = None
            continue
        tax = rates @ amounts[mask, cols].T  # [schedules, hours]
        util = income[mask] - tax - LABOUR_COST * hours[mask] ** 2
        pick = first_best(util)
        rows = np.arange(len(rates))
        out[name] = {"hours": hours[mask][pick], "income": income[mask][pick],
                     "after_tax": income[mask][pick] - tax[rows, pick],
                     "utility": util[rows, pick]}
    return out


def enumerate_schedules(chunk: int = 48) -> tuple[float, np.ndarray]:
    """The best objective over all 21^6 schedules of the reachable brackets and its
    schedule ``[6]``."""
    grid = np.array(list(itertools.product(LEVELS, repeat=3)))  # [9261, 3]
    lump_a = grid @ np.diff(CUTOFFS)[:SPLIT]  # A of each lower schedule
    agents = [best_hours(s, grid, grid) for s in SKILLS]
    n = len(SKILLS)
    best, arg = -np.inf, (0, 0)
    for start in range(0, len(grid), chunk):
        a = slice(start, start + chunk)
        incomes, after = [], []
        for ag in agents:
            lo, hi = ag["low"], ag["high"]
            if hi is None:  # always below the cut-off: depends on the lower schedule only
                incomes.append(lo["income"][a, None])
                after.append(lo["after_tax"][a, None])
                continue
            go_high = hi["utility"][None, :] - lump_a[a, None] > lo["utility"][a, None] + TIE
            incomes.append(np.where(go_high, hi["income"][None, :], lo["income"][a, None]))
            after.append(np.where(go_high, hi["after_tax"][None, :] - lump_a[a, None],
                                  lo["after_tax"][a, None]))
        total = sum(incomes)
        spread = sum(np.abs(after[i] - after[j]) for i in range(n) for j in range(i + 1, n))
        value = total - spread / (n - 1)
        k = np.unravel_index(np.argmax(value), value.shape)
        if value[k] > best:
            best, arg = float(value[k]), (start + k[0], k[1])
    return best, np.concatenate([grid[arg[0]], grid[arg[1]]])


def schedule_value(rates) -> tuple[float, list[float]]:
    """One schedule's value and hours, directly: every agent tries every hour on the grid."""
    rates = np.asarray(rates, dtype=float)
    rates = np.append(rates, np.zeros(len(CUTOFFS) - len(rates)))
    hours = np.arange(101.0)
    chosen, after = [], []
    for s in SKILLS:
        income = s * hours
        tax = bracket_amounts(income) @ rates
        h = int(first_best(income - tax - LABOUR_COST * hours**2))
        chosen.append(float(hours[h]))
        after.append(income[h] - tax[h])
    total = sum(s * h for s, h in zip(SKILLS, chosen))
    spread = sum(abs(x - y) for x, y in itertools.combinations(after, 2))
    return total - spread / (len(SKILLS) - 1), chosen


def test_direct_best_responses_by_hand():
    """No tax: hours s/(2k) rounded on the grid (47, 55, 69, 94), coin = income, so the value is
    total income minus pairwise income differences / 3. A 100 % rate from 84.2 on: agents 3
    and 4 stop at the last hour below 84.2 (51 h and 37 h), the others are unaffected."""
    value, hours = schedule_value([0.0] * 7)
    income = np.array(SKILLS) * np.array([47.0, 55.0, 69.0, 94.0])
    spread = sum(abs(x - y) for x, y in itertools.combinations(income, 2))
    assert hours == [47.0, 55.0, 69.0, 94.0]
    assert value == pytest.approx(income.sum() - spread / 3, abs=1e-9)
    assert schedule_value([0, 0, 0, 1, 1, 1, 1])[1] == [47.0, 55.0, 51.0, 37.0]


def test_anchor_milp_is_the_enumerated_optimum():
    """Published: 293.5 total, 73.38 per capita. The MILP's value must equal the best of all
    86 million schedules, and its own schedule, replayed with direct best responses, must be
    worth what the MILP claims, with the hours it reports."""
    best, schedule = enumerate_schedules()
    assert best == pytest.approx(293.5, abs=0.05) and best / 4 == pytest.approx(73.38, abs=5e-3)
    assert schedule_value(schedule)[0] == pytest.approx(best, abs=1e-9)  # the factorisation
    sim = registry.make("economy/one_step")
    assert sim.params.skills == SKILLS and sim.params.labour_cost == LABOUR_COST
    assert tuple(sim.params.cutoffs) == tuple(CUTOFFS)
    milp = optimal_schedule_milp(sim, torch.tensor(SKILLS, dtype=torch.float64))
    assert milp.status == "optimal"
    assert milp.objective == pytest.approx(best, abs=1e-4)  # HiGHS tolerances
    value, hours = schedule_value(milp.rates.tolist())
    assert value == pytest.approx(milp.objective, abs=1e-4)
    assert hours == milp.hours.tolist()
