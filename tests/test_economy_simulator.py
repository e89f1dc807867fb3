"""Behaviour tests of the batched tax economy: the Gini coefficient against a direct formula,
bracket taxes by hand, conservation of coin through the lump sum, the published free-market and
US-federal anchors, gradients, savings, and validation of bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from oprl import registry
from oprl.core import Trace, rollout
from oprl.policies.economy_schedules import free_market, us_federal
from oprl.simulators import economy as eco
from oprl.simulators.economy import EconomyParams, EconomySimulator, join_action
from oprl.simulators.economy_response import ScheduleBestResponse


def direct_gini(values: list[float]) -> float:
    """Textbook Gini: mean absolute difference over all ordered pairs / (2 * mean), times the
    small-sample correction N / (N - 1)."""
    n = len(values)
    mad = sum(abs(a - b) for a in values for b in values) / n**2
    return mad / (2 * sum(values) / n) * n / (n - 1)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.1, 500.0), min_size=2, max_size=8))
def test_gini_matches_direct_formula(values):
    got = float(eco.gini(torch.tensor([values], dtype=torch.float64))[0])
    assert got == pytest.approx(direct_gini(values), rel=1e-9, abs=1e-12)


def test_gini_extremes():
    assert float(eco.gini(torch.tensor([[5.0, 5.0, 5.0]]))[0]) == pytest.approx(0.0)
    # one agent holds everything: corrected Gini is exactly 1 for any N
    for n in (2, 4, 7):
        coin = torch.zeros(1, n)
        coin[0, 0] = 10.0
        assert float(eco.gini(coin)[0]) == pytest.approx(1.0)


def test_bracket_tax_by_hand():
    cut = torch.tensor(eco.US_2018_CUTOFFS)
    rates = torch.tensor([eco.US_2018_RATES])
    income = torch.tensor([[5.0, 50.0, 250.0]])
    expected = [
        0.5,
        9.7 * 0.10 + (39.475 - 9.7) * 0.12 + (50 - 39.475) * 0.22,
        9.7 * 0.10 + (39.475 - 9.7) * 0.12 + (84.2 - 39.475) * 0.22 + (160.725 - 84.2) * 0.24
        + (204.1 - 160.725) * 0.32 + (250 - 204.1) * 0.35,
    ]
    assert eco.tax_due(income, rates, cut)[0].tolist() == pytest.approx(expected, rel=1e-5)
    assert eco.marginal_rate(income, rates, cut)[0].tolist() == pytest.approx([0.1, 0.22, 0.35])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=7, max_size=7),
       st.lists(st.floats(0.0, 100.0), min_size=4, max_size=4))
def test_lump_sum_conserves_coin(rates, hours):
    """All revenue comes back: total coin equals total income, whatever the schedule."""
    sim = EconomySimulator(EconomyParams(hours_step=0.0, rate_step=0.0))  # continuous grids
    trace = sim.sample_trace(1, 1, seed=0)
    action = join_action(torch.tensor(rates), torch.tensor([hours]))
    _, reward, info = sim.step(sim.reset(trace), action, 0, trace)
    income = (torch.tensor(hours) * trace["skills"][0, 0]).sum()
    assert float(info["productivity"][0]) == pytest.approx(float(income), rel=1e-5)
    assert float(reward[0]) == pytest.approx(float(info["equality"][0] * income), rel=1e-5)


@pytest.mark.parametrize("schedule, anchor", [(free_market, 278.8), (us_federal, 246.1)])
def test_published_anchors(schedule, anchor):
    """4 agents, k = 0.012, integer hours, agents best-responding, lump sum taken as given."""
    sim = registry.make("economy/one_step")
    trace = sim.sample_trace(2, 2, seed=1)
    rewards = rollout(sim, ScheduleBestResponse(sim, schedule(sim)), trace).rewards
    assert float(rewards.mean()) == pytest.approx(anchor, abs=0.05)


def test_differentiable_in_hours_and_rates():
    sim = registry.make("economy/one_step")
    trace = sim.sample_trace(3, 1, seed=0)
    rates = torch.full((3, 7), 0.2, requires_grad=True)
    hours = torch.full((3, 4), 50.0, requires_grad=True)
    _, reward, _ = sim.step(sim.reset(trace), torch.cat([rates, hours], -1), 0, trace)
    reward.sum().backward()
    assert torch.isfinite(rates.grad).all() and rates.grad.abs().sum() > 0
    assert torch.isfinite(hours.grad).all() and hours.grad.abs().sum() > 0


def test_actions_are_clipped_and_snapped():
    sim = registry.make("economy/one_step")
    action = torch.tensor([[-0.3, 1.7, 0.26, 0.0, 0.0, 0.0, 0.0, -5.0, 150.0, 40.4, 40.6]])
    rates, hours, _ = sim.feasible(action)
    assert rates[0, :3].tolist() == pytest.approx([0.0, 1.0, 0.26])  # off-grid rates stay
    assert hours[0].tolist() == pytest.approx([0.0, 100.0, 40.0, 41.0])


def test_dynamic_savings_are_consumed_with_interest():
    """Save everything until the last period: consumption then is the compounded coin."""
    sim = registry.make("economy/dynamic", periods=3, interest=0.1)
    trace = sim.sample_trace(1, 3, seed=0)
    state = sim.reset(trace)
    hours = torch.full((1, 4), 40.0)
    coins = []
    for t in range(3):
        action = join_action(torch.zeros(7), hours, torch.zeros(1, 4))
        before = state["wealth"]
        state, _, info = sim.step(state, action, t, trace)
        coins.append(hours * trace["skills"][:, t])
    expected = coins[0] * 1.1**2 + coins[1] * 1.1 + coins[2]
    assert torch.allclose(before / 1.1 + coins[2] / 1.1, expected / 1.1, rtol=1e-5)
    assert torch.count_nonzero(state["wealth"]) == 0


def test_pareto_skills_vary_by_episode_and_are_capped():
    sim = registry.make("economy/one_step", skills="pareto", n_agents=50)
    s = sim.sample_trace(8, 2, seed=3)["skills"]
    assert s.shape == (8, 2, 50)
    assert (s >= 1.0).all() and (s <= 2.5).all()
    assert torch.equal(s[:, 0], s[:, 1]) and not torch.equal(s[0, 0], s[1, 0])


@pytest.mark.parametrize("kwargs, field", [
    ({"n_agents": 1, "skills": (1.0,)}, "n_agents"),
    ({"cutoffs": (0.0, 10.0, 10.0)}, "cutoffs"),
    ({"cutoffs": (0.0, 20.0, 10.0)}, "cutoffs"),
    ({"skills": (1.0, float("nan"), 1.0, 1.0)}, "skills"),
    ({"skills": (1.0, 2.0)}, "skills"),
    ({"rate_step": 1.5}, "rate_step"),
    ({"utility": "log"}, "utility"),
    ({"objective": "rawlsian"}, "objective"),
])
def test_bad_parameters_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        EconomySimulator(EconomyParams(**kwargs))


def test_bad_rates_and_traces():
    sim = registry.make("economy/one_step")
    with pytest.raises(ValueError, match="rates"):
        ScheduleBestResponse(sim, torch.tensor([0.1, 0.2, 0.3, 1.2, 0.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="rates"):
        ScheduleBestResponse(sim, torch.tensor([-0.1] + [0.0] * 6))
    with pytest.raises(ValueError, match="skills"):
        sim.reset(Trace({"skills": torch.tensor([[[1.0, float("nan"), 1.0, 1.0]]])}))
    with pytest.raises(ValueError, match="n_agents"):
        registry.make("economy/one_step", skills="pareto", n_agents=1)
    with pytest.raises(ValueError, match="skills"):
        registry.make("economy/one_step", skills=[1.0, float("nan")])
