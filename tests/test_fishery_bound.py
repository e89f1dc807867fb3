"""The fishery LP bound (`solvers.fishery_bound`): its cuts lie above the functions they
relax, its boxes hold every simulated state, it sits above the hindsight DP (model 1) and above
every simulated policy on every episode (models 1-4), it has the closed form of the
deterministic logistic fishery, and HiGHS and GLOP agree on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from oprl import registry
from oprl.core import rollout
from oprl.policies.fishery import ConstantMortality
from oprl.simulators.fishery import model1
from oprl.solvers.fishery import grid_dp_3d, perfect_information_dp, single_species_dp
from oprl.solvers.fishery_bound import (
    concave_cuts,
    make_cuts,
    phi,
    relaxation_bound,
    relaxation_lp,
    solve_glop,
    solve_highs,
    state_boxes,
)


@settings(max_examples=25, deadline=None)
@given(c=st.floats(0.05, 0.5), beta=st.floats(0.0, 0.5), hi=st.floats(0.3, 3.0))
def test_hull_cuts_lie_above_a_tipping_point_growth_everywhere(c, beta, hi) -> None:
    def g(s):
        return s * (1 - s) - beta * phi(s, c)

    lines = concave_cuts(g, 2 + beta * 2 / c**2, 0.0, hi, points=201, max_cuts=12)
    s = np.linspace(0.0, hi, 20_001)
    assert (lines(s) >= g(s) - 1e-12).all()


def test_predation_cuts_bracket_phi() -> None:
    p = registry.make("fishery/model3").params
    cuts = make_cuts(p, np.array([1.3, 1.4, 5.0]))
    for i, hi in enumerate((1.3, 1.4)):
        s = np.linspace(0.0, hi, 20_001)
        assert (cuts.phi_below[i](s) <= phi(s, p.c) + 1e-12).all()
        assert (-cuts.phi_below[i].negated()(s) <= phi(s, p.c) + 1e-12).all()
        assert (cuts.phi_above[i](s) >= phi(s, p.c) - 1e-12).all()


def _states(sim, policy, trace) -> np.ndarray:
    """Stocks ``[B, T+1, S]`` of a simulated episode (kept after extinction too)."""
    state = sim.reset(trace)
    out = [state["pop"]]
    with torch.no_grad():
        for t in range(trace.horizon):
            obs = sim.observe(state, t, trace)
            state, _, _ = sim.step(state, policy(obs), t, trace)
            out.append(state["pop"])
    return torch.stack(out, 1).double().numpy()


@pytest.mark.parametrize("name", ["fishery/model1", "fishery/model2", "fishery/model4"])
def test_boxes_hold_every_simulated_state(name: str) -> None:
    sim = registry.make(name, horizon=60, eval_horizon=60)
    trace = sim.sample_trace(8, 60, seed=3)
    eps = trace["eps"].double().numpy()
    lo, hi, free = state_boxes(sim.params, eps, sim.initial_stocks(trace).double().numpy())
    for m in (0.0, 0.2, 0.6):
        pop = _states(sim, ConstantMortality([m] * sim.n_actions), trace)  # float32
        assert (pop >= lo - 1e-6).all() and (pop <= hi * (1 + 1e-6)).all()
    assert (hi <= free + 1e-12).all()


def _episode_rewards(sim, policy, trace) -> torch.Tensor:
    with torch.no_grad():
        return sim.episode_metric(rollout(sim, policy, trace).rewards, 0).double()


def test_model1_bound_is_above_the_hindsight_dp_on_every_episode_and_close() -> None:
    sim = model1()
    trace = sim.sample_trace(6, 200, seed=21)
    bound = relaxation_bound(sim, trace)
    hindsight = perfect_information_dp(sim, trace, grid=1601)
    assert bound.kind == "upper_bound" and bound.status.startswith("optimal")
    assert (bound.per_trace >= hindsight.per_trace.double() + 1e-6).all()
    # loose only through the convexified tipping point and the dropped extinction rule
    assert float(bound.per_trace.mean()) < 1.25 * float(hindsight.per_trace.mean())


@pytest.mark.parametrize("name", ["fishery/model2", "fishery/model3", "fishery/model4"])
def test_bound_is_above_every_simulated_policy_on_every_episode(name: str) -> None:
    sim = registry.make(name, horizon=40, eval_horizon=40)
    trace = sim.sample_trace(5, 40, seed=8)
    bound = relaxation_bound(sim, trace).per_trace
    policies = [ConstantMortality([m] * sim.n_actions) for m in (0.0, 0.15, 0.3, 0.9)]
    policies.append(grid_dp_3d(sim, trace, grid=6, nodes=2).policy)
    for policy in policies:
        assert (bound >= _episode_rewards(sim, policy, trace) - 1e-6).all()


def test_model1_bound_is_above_the_dp_policy() -> None:
    sim = model1(horizon=50, eval_horizon=50)
    trace = sim.sample_trace(8, 50, seed=4)
    dp = _episode_rewards(sim, single_species_dp(sim, trace).policy, trace)
    assert (relaxation_bound(sim, trace).per_trace >= dp).all()


def test_deterministic_logistic_fishery_has_the_closed_form() -> None:
    """No predation, no noise: escapement 1/2 (MSY rK/4 a year) after the first year's
    harvest down to 1/2, then the whole stock in the last year (no extinction rule)."""
    horizon = 20
    sim = model1(beta=0.0, sigma=0.0, init_sigma=0.0, horizon=horizon, eval_horizon=horizon)
    trace = sim.sample_trace(1, horizon, seed=0)
    closed = (0.7 - 0.5) + 0.25 * (horizon - 2) + 0.75
    value = float(relaxation_bound(sim, trace, max_cuts=64).per_trace[0])
    assert closed - 1e-7 <= value <= closed + 5e-3


@pytest.mark.parametrize("name", ["fishery/model1", "fishery/model2", "fishery/model3"])
def test_glop_and_highs_agree(name: str) -> None:
    sim = registry.make(name, horizon=12, eval_horizon=12)
    trace = sim.sample_trace(2, 12, seed=1)
    eps = trace["eps"].double().numpy()
    x0 = sim.initial_stocks(trace).double().numpy()
    lo, hi, free = state_boxes(sim.params, eps, x0)
    cuts = make_cuts(sim.params, hi.max(axis=(0, 1)), max_cuts=12, tangents=12)
    for k in range(2):
        lp = relaxation_lp(sim.params, eps[k], lo[k], hi[k], free[k], cuts)
        (s1, v1), (s2, v2) = solve_highs(lp), solve_glop(lp)
        assert s1 == s2 == "optimal"
        assert v1 == pytest.approx(v2, rel=1e-6, abs=1e-7)


def test_bad_backend_and_drifting_model1_are_refused() -> None:
    sim = model1(horizon=5, eval_horizon=5)
    trace = sim.sample_trace(1, 5, seed=0)
    with pytest.raises(ValueError, match="backend"):
        relaxation_bound(sim, trace, backend="cplex")
    drifting = model1(horizon=5, eval_horizon=5, drift_years=10.0)
    with pytest.raises(ValueError, match="drift"):
        relaxation_bound(drifting, trace)


def test_model1_milp_is_between_the_hindsight_dp_and_the_lp() -> None:
    sim = model1(horizon=60, eval_horizon=60)
    trace = sim.sample_trace(3, 60, seed=2)
    lp = relaxation_bound(sim, trace).per_trace
    milp = relaxation_bound(sim, trace, breakpoints=(0.29,))
    hindsight = perfect_information_dp(sim, trace, grid=1601).per_trace.double()
    assert milp.name.startswith("MILP") and milp.status.startswith("optimal")
    assert (milp.per_trace >= hindsight).all()
    assert (milp.per_trace <= lp + 1e-6).all()
    with pytest.raises(ValueError, match="GLOP"):
        relaxation_bound(sim, trace, backend="glop", breakpoints=(0.29,))
    three = registry.make("fishery/model3", horizon=5, eval_horizon=5)
    with pytest.raises(ValueError, match="breakpoints"):
        relaxation_bound(three, three.sample_trace(1, 5, seed=0), breakpoints=(0.3,))
