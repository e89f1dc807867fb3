"""Behaviour tests of the fishery simulators: logistic closed forms (MSY rK/4 at K/2, constant
mortality equilibria), the extinction rule and its penalty, the smooth surrogate's gradient,
the published dynamics of models 2-4, and validation of bad parameters."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from oprl import registry
from oprl.core import rollout
from oprl.policies.fishery import ConstantEscapement, ConstantMortality
from oprl.simulators.fishery import FisheryParams, FisherySimulator, growth, model1


def logistic(r: float, K: float, initial: float, horizon: int = 60) -> FisherySimulator:
    """Model 1 without predation or noise: the deterministic logistic map."""
    return model1(beta=0.0, r=r, K=K, sigma=0.0, initial=initial, init_sigma=0.0,
                  horizon=horizon, eval_horizon=horizon)


@settings(max_examples=20, deadline=None)
@given(r=st.floats(0.2, 1.5), K=st.floats(0.5, 5.0))
def test_constant_escapement_at_half_k_yields_msy_every_year(r: float, K: float) -> None:
    sim = logistic(r, K, initial=K / 2)
    trace = sim.sample_trace(1, seed=0)
    with torch.no_grad():
        rewards = rollout(sim, ConstantEscapement(sim, [K / 2]), trace).rewards[0]
    assert float(rewards[0]) == pytest.approx(0.0, abs=1e-6)  # starts at the escapement
    torch.testing.assert_close(rewards[1:], torch.full_like(rewards[1:], r * K / 4),
                               rtol=1e-4, atol=1e-5)


def test_msy_is_the_best_constant_escapement() -> None:
    r, K = 0.8, 2.0
    sim = logistic(r, K, initial=K / 2, horizon=80)
    trace = sim.sample_trace(1, seed=0)
    levels = torch.linspace(0.1, 1.9, 37)[:, None]
    tiled = trace.select(torch.zeros(len(levels), dtype=torch.long))
    with torch.no_grad():
        per_year = rollout(sim, ConstantEscapement(sim, levels), tiled).rewards[:, 40:].mean(1)
    assert float(levels[per_year.argmax(), 0]) == pytest.approx(K / 2)
    assert float(per_year.max()) == pytest.approx(r * K / 4, rel=1e-4)


@settings(max_examples=15, deadline=None)
@given(r=st.floats(0.3, 1.0), m=st.floats(0.0, 0.2))
def test_constant_mortality_reaches_the_logistic_equilibrium(r: float, m: float) -> None:
    K = 1.0
    keep = 1 - m
    equilibrium = K * (keep * (1 + r) - 1) / (r * keep**2)  # x = keep*x*(1 + r - r*keep*x/K)
    sim = logistic(r, K, initial=0.6, horizon=400)
    with torch.no_grad():
        rewards = rollout(sim, ConstantMortality([m]), sim.sample_trace(1, seed=0)).rewards
    assert float(rewards[0, -1]) == pytest.approx(m * equilibrium, rel=1e-3, abs=1e-6)


def test_harvesting_everything_ends_the_episode_with_the_penalty() -> None:
    sim = model1(init_sigma=0.0)
    trace = sim.sample_trace(3, seed=1)
    with torch.no_grad():
        result = rollout(sim, ConstantMortality([1.0]), trace, keep_metrics=True)
    assert torch.allclose(result.rewards[:, 0], torch.full((3,), 0.7 - 100.0))
    assert (result.rewards[:, 1:] == 0).all()
    extra = sim.episode_metrics(result, 0)
    assert (extra["survival"] == 0).all() and torch.allclose(extra["harvest"], torch.full((3,), 0.7))


def test_the_penalty_shrinks_with_the_year_of_extinction() -> None:
    sim = model1(init_sigma=0.0, sigma=0.0)
    trace = sim.sample_trace(1, seed=0)

    def late_crash(obs):  # no harvest for 9 years, then everything
        return (obs["time"] * 200 >= 9).float()

    with torch.no_grad():
        rewards = rollout(sim, late_crash, trace).rewards[0]
    caught = float(rewards[9]) + 100 / 10  # the whole stock of year 9, minus -100/(9+1)
    assert 0.3 < caught < 1.0
    assert (rewards[10:] == 0).all() and (rewards[:9] == 0).all()


def test_noise_is_multiplicative_and_comes_from_the_trace() -> None:
    p = model1(beta=0.0, sigma=0.1).params
    x = torch.tensor([[0.4]])
    plus, minus = growth(p, x, 0, torch.tensor([[1.0]])), growth(p, x, 0, torch.tensor([[-1.0]]))
    assert float(plus - minus) == pytest.approx(2 * 0.1 * 0.4)
    sim = registry.make("fishery/model3")
    a, b = sim.sample_trace(4, seed=3), sim.sample_trace(4, seed=3)
    assert torch.equal(a["eps"], b["eps"]) and a["eps"].shape == (4, 200, 3)


def test_three_species_step_matches_the_published_equations() -> None:
    p = registry.make("fishery/model4").params
    x, y, z = 0.7, 0.6, 1.0
    e = (0.3, -0.2, 0.5)
    t = 150
    rx = max(1 - t / 200, 0.5)
    want = [
        x + rx * x * (1 - x) - 0.3 * z * x**2 / (0.09 + x**2) - 0.1 * x * y + 0.1 * x * e[0],
        y + y * (1 - y) - 1.1 * 0.3 * z * y**2 / (0.09 + y**2) - 0.1 * x * y + 0.1 * y * e[1],
        z + z * (0.1 * (x + 1.1 * y) - 0.1) + 0.1 * z * e[2],
    ]
    got = growth(p, torch.tensor([[x, y, z]], dtype=torch.float64), t,
                 torch.tensor([e], dtype=torch.float64))
    torch.testing.assert_close(got[0], torch.tensor(want, dtype=torch.float64))


def test_smooth_surrogate_carries_a_gradient_and_evaluation_is_exact() -> None:
    sim = registry.make("fishery/model3")
    trace = sim.sample_trace(8, seed=2)
    rate = torch.full((2,), 0.45, requires_grad=True)
    rewards = rollout(sim, lambda obs: rate.expand(obs["pop"].shape[0], -1), trace).rewards
    rewards.sum().backward()
    assert torch.isfinite(rate.grad).all() and rate.grad.abs().sum() > 0
    with torch.no_grad():  # exact rule: survival is 0 or 1
        result = rollout(sim, ConstantMortality([0.45, 0.45]), trace, keep_metrics=True)
    alive = result.metrics["alive"]
    assert set(alive.unique().tolist()) <= {0.0, 1.0}


def test_model_variants_harvest_the_right_species() -> None:
    assert registry.make("fishery/model1").params.harvested == (0,)
    assert registry.make("fishery/model2").params.harvested == (0,)
    assert registry.make("fishery/model3").params.harvested == (0, 1)
    p4 = registry.make("fishery/model4").params
    assert p4.r_x(0) == 1.0 and p4.r_x(50) == 0.75 and p4.r_x(150) == 0.5


@pytest.mark.parametrize("field, value, match", [
    ("r", -0.5, "r: must be >= 0"),
    ("K", 0.0, "K: must be > 0"),
    ("K", -1.0, "K: must be > 0"),
    ("threshold", 0.0, "threshold: must lie in"),
    ("threshold", 1.0, "threshold: must lie in"),
    ("threshold", 1.5, "threshold: must lie in"),
    ("sigma", -0.1, "sigma"),
    ("beta", float("nan"), "beta: expected a finite number"),
    ("relaxation", "fuzzy", "relaxation"),
])
def test_bad_parameters_name_the_field(field, value, match) -> None:
    with pytest.raises(ValueError, match=match):
        registry.make("fishery/model1", **{field: value})


def test_bad_parameters_of_three_species_and_actions() -> None:
    with pytest.raises(ValueError, match="r: must be >= 0"):
        registry.make("fishery/model3", r=-1.0)
    with pytest.raises(ValueError, match="harvested"):
        FisheryParams(model="three", harvested=(0, 3), initial=(0.7, 0.6, 1.0))
    with pytest.raises(ValueError, match="initial"):
        FisheryParams(model="three", initial=(0.7, 0.6))
    sim = registry.make("fishery/model3")
    trace = sim.sample_trace(2, seed=0)
    state = sim.reset(trace)
    with pytest.raises(ValueError, match="action: expected mortalities"):
        sim.step(state, torch.zeros(2, 1), 0, trace)
