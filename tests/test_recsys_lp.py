"""The CMDP occupancy LP: a hand-checked 2-state optimum, HiGHS = GLOP, infeasibility."""

import math

import numpy as np
import pytest
import torch

from oprl.core import rollout
from oprl.simulators.recsys import SIGNALS, TabularModel, tabular
from oprl.solvers.recsys import (
    cmdp_lp,
    policy_from_occupancy,
    policy_values,
    references,
    solve_glop,
    solve_highs,
)


def two_state() -> TabularModel:
    """Start in s0; every impression ends the session w.p. 1/2, else moves to s1. So each state
    is visited once in expectation whatever the policy. Action a: watch 10 (s0) / 6 (s1), no
    likes; action b: watch 4 / 2, likes 1 / 0.5. A like costs 6 s of watch time in s0 and 8 s
    in s1, so the optimum buys likes in s0 first:
      like >= 0.5  -> x0b = 0.5: watch 16 - 3 = 13, dual 6, pi(b|s0) = 0.5;
      like >= 1.25 -> x0b = 1, x1b = 0.5: watch 16 - 6 - 2 = 8, dual 8;
      like >  1.5  -> infeasible."""
    k = len(SIGNALS)
    signals = np.zeros((k, 2, 2))
    signals[SIGNALS.index("like")] = [[0.0, 1.0], [0.0, 0.5]]
    trans = np.zeros((2, 2, 2))
    trans[:, :, 1] = 1.0
    return TabularModel(init=np.array([1.0, 0.0]), watch=np.array([[10.0, 4.0], [6.0, 2.0]]),
                        signals=signals, exit=np.full((2, 2), 0.5), trans=trans)


def like(value: float) -> list[float]:
    thr = [0.0] * len(SIGNALS)
    thr[SIGNALS.index("like")] = value
    return thr


@pytest.mark.parametrize("solve", [solve_highs, solve_glop])
def test_two_state_hand_checked_optimum(solve):
    out = solve(two_state(), like(0.5))
    assert out["status"] == "optimal"
    assert out["objective"] == pytest.approx(13.0, abs=1e-7)
    assert out["duals"][SIGNALS.index("like")] == pytest.approx(6.0, abs=1e-6)
    pi = policy_from_occupancy(out["x"])
    assert pi[0] == pytest.approx([0.5, 0.5], abs=1e-7)
    assert pi[1] == pytest.approx([1.0, 0.0], abs=1e-7)
    deeper = solve(two_state(), like(1.25))
    assert deeper["objective"] == pytest.approx(8.0, abs=1e-7)
    assert deeper["duals"][SIGNALS.index("like")] == pytest.approx(8.0, abs=1e-6)


def test_exact_policy_values_match_the_lp():
    out = solve_highs(two_state(), like(0.5))
    vals = policy_values(two_state(), policy_from_occupancy(out["x"]))
    assert vals["watch_time"] == pytest.approx(13.0, abs=1e-9)
    assert vals["like"] == pytest.approx(0.5, abs=1e-9)


@pytest.mark.parametrize("solve", [solve_highs, solve_glop])
def test_infeasible_thresholds_are_reported_not_a_number(solve):
    out = solve(two_state(), like(1.6))
    assert out["status"] == "infeasible"
    assert "objective" not in out


def test_scenario_infeasible_thresholds():
    sim = tabular(thresholds=(5.0, 5.0, 5.0, 5.0))
    res = cmdp_lp(sim)
    assert res.status == "infeasible" and math.isnan(res.objective) and res.policy is None
    trace = sim.sample_trace(2, seed=0)
    with pytest.raises(ValueError, match="infeasible"):
        references(sim, trace, 0)


def test_highs_and_glop_agree_and_policy_is_executable():
    sim = tabular()
    highs, glop = cmdp_lp(sim), cmdp_lp(sim, backend="glop")
    assert highs.status == glop.status == "optimal"
    assert highs.objective == pytest.approx(glop.objective, rel=1e-8)
    assert np.allclose(list(highs.details["duals"].values()), list(glop.details["duals"].values()),
                       atol=1e-5)
    trace = sim.sample_trace(4096, seed=5)
    r = rollout(sim, highs.policy, trace, keep_metrics=True)
    watch = sim.episode_metric(r.rewards, 0)
    se = float(watch.std()) / math.sqrt(trace.batch)
    assert abs(float(watch.mean()) - highs.details["finite_horizon_value"]) < 4 * se
    assert highs.details["finite_horizon_value"] <= highs.objective + 1e-9
    assert highs.objective - highs.details["finite_horizon_value"] < 1e-3 * highs.objective
    for k in range(len(SIGNALS)):  # every constraint met by the exact policy
        assert highs.details["metrics"][sim.signal_name(k)] >= sim.constraint_thresholds[k] - 1e-7


def test_thresholds_tighten_the_optimum():
    loose = cmdp_lp(tabular(thresholds=(0, 0, 0, 0))).objective
    tight = cmdp_lp(tabular()).objective
    assert tight < loose
    assert torch.isfinite(torch.tensor([loose, tight])).all()


def test_exact_policy_values_agree_with_the_lp_and_simulation():
    from oprl.policies.recsys import WeightedRanking
    from oprl.simulators.recsys import exact_policy_values

    sim = tabular()
    lp = cmdp_lp(sim)
    exact = exact_policy_values(sim, lp.policy)
    assert exact["watch_time"] == pytest.approx(lp.details["finite_horizon_value"], rel=1e-9)
    myopic = WeightedRanking([1, 0, 0, 0, 0])
    vals = exact_policy_values(sim, myopic, 40)
    trace = sim.sample_trace(4096, 40, seed=8)
    watch = sim.episode_metric(rollout(sim, myopic, trace).rewards, 0)
    assert abs(float(watch.mean()) - vals["watch_time"]) < 4 * float(watch.std()) / 64
