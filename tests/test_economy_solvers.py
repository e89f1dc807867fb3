"""The economy's references: best response against the closed form, the bilevel MILP on a
2-agent instance checked by hand and by enumeration, the Saez formula, the references hook."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from oprl import registry
from oprl.core import rollout
from oprl.policies import economy_schedules as sched
from oprl.simulators import economy as eco
from oprl.simulators import economy_response as resp
from oprl.simulators.economy import EconomyParams, EconomySimulator
from oprl.solvers import economy as sol


def continuous(**kw) -> EconomySimulator:
    return EconomySimulator(EconomyParams(hours_step=0.0, rate_step=0.0, **kw))


@settings(max_examples=30, deadline=None)
@given(st.floats(0.5, 2.3), st.floats(0.0, 0.95))
def test_best_response_flat_tax_closed_form(skill, rate):
    """Flat tax t: maximise s h (1 - t) - k h^2  ->  h = s (1 - t) / (2k), capped at 100."""
    sim = continuous(n_agents=2, skills=(skill, 1.0))
    hours = resp.best_response(sim, torch.tensor([[skill, 1.0]], dtype=torch.float64),
                              torch.full((7,), rate, dtype=torch.float64))
    expected = min(skill * (1 - rate) / (2 * 0.012), 100.0)
    assert float(hours[0, 0]) == pytest.approx(expected, rel=1e-9)


def test_best_response_bunches_at_a_kink():
    """No tax below 50, 100% above: an agent who would earn more stops exactly at 50."""
    sim = continuous(n_agents=2, skills=(2.0, 1.0), cutoffs=(0.0, 50.0))
    hours = resp.best_response(sim, torch.tensor([[2.0, 1.0]]), torch.tensor([0.0, 1.0]))
    assert hours[0].tolist() == pytest.approx([25.0, 41.6666666667])


def test_best_response_on_the_hours_grid_is_the_best_grid_point():
    sim = registry.make("economy/one_step")
    skills = torch.tensor([list(sim.params.skills)], dtype=torch.float64)
    rates = torch.tensor([0.0, 0.0, 0.0, 0.45, 0.0, 0.05, 0.05], dtype=torch.float64)
    hours = resp.best_response(sim, skills, rates)
    grid = torch.arange(101, dtype=torch.float64)
    for i, s in enumerate(skills[0]):
        z = s * grid
        util = z - eco.bracket_income(z, sim.cutoffs.double()) @ rates - 0.012 * grid**2
        assert float(hours[0, i]) == float(grid[util.argmax()])
    # the MILP schedule makes the two top agents bunch at the 84.2 and 204.1 kinks
    assert hours[0].tolist() == [47.0, 55.0, 51.0, 91.0]


def tiny_economy() -> EconomySimulator:
    """2 agents (skills 1, 2), k = 0.01, one cut-off at 60, hours in steps of 10, rates of 25%."""
    return EconomySimulator(EconomyParams(
        n_agents=2, skills=(1.0, 2.0), cutoffs=(0.0, 60.0), labour_cost=0.01,
        hours_step=10.0, rate_step=0.25))


def test_milp_two_agents_hand_checked():
    """By hand: with no tax below 60 and 50% above, agent 1 works s/(2k) = 50 h (income 50,
    untaxed) and agent 2 works 2(1 - 0.5)/0.02 = 50 h (income 100, tax 20); the lump sum is 10
    each, coins 60 and 90: Gini = 2 * 30 / (2 * 4 * 75) * 2 = 0.2, so equality x productivity
    = 0.8 * 150 = 120. (At 25% agent 2 is indifferent between 70 h and 80 h; it takes 70 h,
    also worth 120, so the MILP must not claim 125 by breaking the tie its own way.)"""
    sim = tiny_economy()
    skills = torch.tensor([1.0, 2.0], dtype=torch.float64)
    out = sol.optimal_schedule_milp(sim, skills)
    assert out.status == "optimal"
    assert out.objective == pytest.approx(120.0, abs=1e-6)
    grid = torch.arange(5, dtype=torch.float64) * 0.25
    schedules = torch.tensor(list(itertools.product(grid.tolist(), repeat=2)), dtype=torch.float64)
    brute = resp.schedule_value(sim, skills.expand(len(schedules), -1), schedules)["objective"]
    assert float(brute.max()) == pytest.approx(out.objective, abs=1e-6)
    replay = resp.schedule_value(sim, skills[None], out.rates)["objective"]
    assert float(replay[0]) == pytest.approx(out.objective, abs=1e-6)


def test_saez_rates_formula():
    """Nobody above a cut-off of 0 is better off than average in welfare terms, so the bottom
    rate is 0; a lone top earner with welfare weight g and Pareto parameter a pays
    (1 - g) / (1 - g + a e)."""
    incomes = torch.tensor([50.0, 100.0])
    rates = sched.saez_rates(incomes, torch.tensor([0.0, 75.0, 500.0]), elasticity=1.0)
    g_top = (1 / 100) / ((1 / 50 + 1 / 100) / 2)
    a = 100.0 / (100.0 - 75.0)
    assert float(rates[0]) == pytest.approx(0.0, abs=1e-12)
    assert float(rates[1]) == pytest.approx((1 - g_top) / (1 - g_top + a), rel=1e-9)
    assert float(rates[2]) == pytest.approx(float(rates[1]))  # nobody there: rate below


def test_quadratic_elasticity_is_one_and_saez_on_grid():
    sim = registry.make("economy/one_step")
    skills = torch.tensor(sim.params.skills, dtype=torch.float64)
    assert sched.taxable_income_elasticity(sim, skills[None]) == pytest.approx(1.0, rel=1e-9)
    rates, _ = sched.saez_schedule(sim, skills)
    assert torch.allclose(rates * 20, torch.round(rates * 20), atol=1e-9)
    assert (rates >= 0).all() and (rates <= 1).all()


def test_references_replay_the_milp_optimum():
    sim = tiny_economy()
    trace = sim.sample_trace(3, 2, seed=0)
    (ref,) = sol.references(sim, trace, 0)
    assert ref.kind == "optimal" and ref.objective == pytest.approx(120.0, abs=1e-6)
    simulated = rollout(sim, ref.policy, trace).rewards
    assert torch.allclose(simulated, torch.full_like(simulated, 120.0), atol=1e-3)


def test_milp_rejects_what_it_cannot_model():
    sim = continuous(n_agents=2, skills=(1.0, 2.0))
    with pytest.raises(ValueError, match="grid"):
        sol.optimal_schedule_milp(sim, torch.tensor([1.0, 2.0]))
    iso = EconomySimulator(EconomyParams(n_agents=2, skills=(1.0, 2.0), utility="isoelastic"))
    with pytest.raises(ValueError, match="quadratic"):
        sol.optimal_schedule_milp(iso, torch.tensor([1.0, 2.0]))
    assert sol.references(iso, iso.sample_trace(2, 2, seed=0), 0) == []


def test_schedules_figure(tmp_path):
    from oprl.plots.economy import bracket_labels, schedules_figure

    cut = (0.0, 9.7, 39.475)
    assert bracket_labels(cut) == ["0-9.7", "9.7-39.475", "39.475+"]
    path = tmp_path / "schedules.png"
    schedules_figure({"free": [0, 0, 0], "flat": [0.2, 0.2, 0.2]}, cut, path, {"free": 1.0})
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="brackets"):
        schedules_figure({"short": [0.1]}, cut, tmp_path / "bad.png")


def test_binned_saez_by_hand():
    """Incomes 50 and 100, two bins of width 100 below a top cut-off of 200. Weights 1/50
    and 1/150 at the bin midpoints: G = 0.75, 0.25 (edge averages of 1, 0.5, 0) and 0 on top;
    a = 50 * 0.5 / 0.75 / 100 = 1/3 and 150 * 0.5 / 0.25 / 100 = 3; nobody on top: a = 0,
    rate 1. With e = 1: 0.25 / (0.25 + 1/3) = 3/7, 0.75 / 3.75 = 0.2, 1."""
    fine, edges = sched.saez_binned_bin_rates(torch.tensor([50.0, 100.0]), 200.0, 1.0, bins=2)
    assert edges.tolist() == [0.0, 100.0, 200.0]
    assert fine.tolist() == pytest.approx([3 / 7, 0.2, 1.0], rel=1e-6)
    rates = sched.bracketize(fine, edges, torch.tensor([0.0, 150.0]))
    assert rates.tolist() == pytest.approx([(300 / 7 + 10) / 150, 1.0], rel=1e-6)


def test_binned_saez_interpolates_empty_bins():
    fine, _ = sched.saez_binned_bin_rates(torch.tensor([50.0, 350.0]), 400.0, 0.5, bins=4)
    lo, hi = float(fine[0]), float(fine[3])
    assert fine[1:3].tolist() == pytest.approx([lo + (hi - lo) / 3, lo + 2 * (hi - lo) / 3])
    with pytest.raises(ValueError, match="weights"):
        sched.saez_binned_bin_rates(torch.tensor([50.0]), 400.0, 0.5, weights="rawlsian")


def test_binned_saez_reproduces_the_anchor():
    """The AI Economist's binned Saez (elasticity 0.5, continuous rates) at its fixed point on
    the anchor economy is worth 265.8, the published Saez number."""
    sim = registry.make("economy/one_step")
    skills = torch.tensor(sim.params.skills, dtype=torch.float64)
    rates, info = sched.saez_binned_schedule(sim, skills)
    assert info["elasticity"] == 0.5 and float(rates[-1]) == pytest.approx(1.0)
    value = resp.schedule_value(sim, skills[None], rates)["objective"]
    assert float(value[0]) == pytest.approx(265.8, abs=0.05)
