"""The fishery solvers: the escapement DP against brute force over every policy on a tiny grid,
its value against Monte Carlo of its own policy, the perfect-information bound against that
policy on every episode, trilinear interpolation against a closed form, and the 3-D grid DP's
executable policy."""

from __future__ import annotations

import itertools

import pytest
import torch

from oprl import registry
from oprl.core import rollout
from oprl.simulators.fishery import extinction_penalty, growth, model1
from oprl.solvers.fishery import (
    _extend_below_threshold,
    gauss_hermite,
    grid_axes,
    grid_dp_3d,
    interp1,
    interp3,
    perfect_information_dp,
    references,
    single_species_dp,
    solve_single_species,
)


def brute_force_values(p, horizon: int, grid: int, nodes: int, x_max: float) -> torch.Tensor:
    """max over every Markov policy (an escapement grid index <= the state's, per year and
    state) of its exact value on the interpolated chain, state by state."""
    x = torch.linspace(0, x_max, grid, dtype=torch.float64)
    z, w = gauss_hermite(nodes)
    choices = [range(i + 1) for i in range(grid)]
    best = torch.full((grid,), -float("inf"), dtype=torch.float64)
    for plan in itertools.product(*[itertools.product(*choices) for _ in range(horizon)]):
        value = torch.zeros(grid, dtype=torch.float64)
        for t in reversed(range(horizon)):
            s = x[list(plan[t])]
            nxt = growth(p, s[:, None], t, z[None, :]).clamp(max=x_max)
            cont = torch.where(nxt > p.threshold, interp1(value.expand(grid, -1), nxt, x_max),
                               torch.tensor(extinction_penalty(p, t), dtype=torch.float64))
            value = _extend_below_threshold(x - s + cont @ w, [x], p.threshold)
        best = torch.maximum(best, value)
    return best


@pytest.mark.parametrize("beta", [0.0, 0.23])
def test_dp_matches_brute_force_over_all_policies_on_a_tiny_grid(beta: float) -> None:
    p = model1(beta=beta, sigma=0.3).params
    sol = solve_single_species(p, 2, grid=4, nodes=3, x_max=1.2)
    torch.testing.assert_close(sol["V"][0], brute_force_values(p, 2, 4, 3, 1.2))


def test_dp_value_matches_monte_carlo_of_its_policy() -> None:
    sim = model1()
    trace = sim.sample_trace(500, 200, seed=11)
    result = single_species_dp(sim, trace)
    # 5.70 is the published optimum; beta=0.23 was chosen to reproduce it (README), so this
    # checks the calibration, not the DP: `test_dp_value_converges_under_grid_refinement` does
    assert result.objective == pytest.approx(5.70, abs=0.02)
    with torch.no_grad():
        values = sim.episode_metric(rollout(sim, result.policy, trace).rewards, 0)
    stderr = float(values.std() / len(values) ** 0.5)
    assert abs(float(values.mean()) - result.objective) < 3 * stderr


def test_dp_without_noise_or_predation_is_constant_escapement_at_half_k() -> None:
    sim = model1(beta=0.0, sigma=0.0, r=1.0, K=1.0, init_sigma=0.0)
    result = single_species_dp(sim, horizon=30, grid=401)
    obs = {"pop": torch.tensor([[0.8]]), "time": torch.tensor([[10 / 30]])}
    kept = 0.8 * (1 - float(result.policy(obs)))
    assert kept == pytest.approx(0.5, abs=0.01)
    # 0.8 - 0.5 now, then rK/4 = 0.25 a year, and (nearly) all of the last stock at the end
    assert result.objective > 0.3 + 0.25 * 28


def test_perfect_information_bounds_the_dp_policy_on_every_episode() -> None:
    sim = model1()
    trace = sim.sample_trace(16, 200, seed=5)
    bound = perfect_information_dp(sim, trace, grid=1601)
    with torch.no_grad():
        dp = sim.episode_metric(rollout(sim, single_species_dp(sim, trace).policy, trace).rewards, 0)
    assert bound.kind == "upper_bound"
    assert (bound.per_trace >= dp - 0.02).all()
    assert float(bound.per_trace.mean()) > float(dp.mean())


def test_trilinear_interpolation_is_exact_on_linear_functions() -> None:
    p = registry.make("fishery/model3").params
    axes = grid_axes(p, 6, (1.0, 2.0, 3.0))  # quadratic spacing from the threshold
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)
    coef = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    values = grid @ coef + 3.0
    gen = torch.Generator().manual_seed(0)
    pts = 0.05 + torch.rand(50, 3, dtype=torch.float64, generator=gen) * torch.tensor(
        [0.95, 1.95, 2.95], dtype=torch.float64)
    torch.testing.assert_close(interp3(values, pts, axes), pts @ coef + 3.0)


def test_grid_dp_policy_is_feasible_and_reported_with_its_resolution() -> None:
    sim = registry.make("fishery/model3", horizon=5, eval_horizon=5)
    trace = sim.sample_trace(6, 5, seed=0)
    result = grid_dp_3d(sim, trace, grid=6, nodes=2)
    assert "6^3 grid" in result.status and result.kind == "lower_bound"
    assert result.status.startswith("grid policy, feasible") and "not refined" in result.status
    obs = sim.observe(sim.reset(trace), 0, trace)
    mortality = result.policy(obs)
    assert mortality.shape == (6, 2) and (mortality >= 0).all() and (mortality <= 1).all()


def test_references_refuse_a_warmup_and_pick_the_right_solvers() -> None:
    sim = model1(horizon=20, eval_horizon=20)
    trace = sim.sample_trace(4, 20, seed=0)
    with pytest.raises(ValueError, match="eval_warmup"):
        references(sim, trace, 5)
    kinds = [r.kind for r in references(sim, trace, 0)]
    assert kinds == ["optimal", "upper_bound", "upper_bound"]
    three = registry.make("fishery/model3", horizon=4, eval_horizon=4)
    kinds = [r.kind for r in references(three, three.sample_trace(2, 4, seed=0), 0)]
    assert kinds == ["lower_bound", "upper_bound"]


def test_dp_value_converges_under_grid_refinement() -> None:
    """1,601 -> 3,201 -> 6,401 points: the changes shrink, the reported error estimate (the
    change from halving the grid) covers the distance to the finest grid's value, and the kind
    follows the tolerance."""
    sim = model1(horizon=50, eval_horizon=50)
    values = {g: single_species_dp(sim, grid=g) for g in (1601, 3201, 6401)}
    v = {g: r.objective for g, r in values.items()}
    assert abs(v[6401] - v[3201]) < abs(v[3201] - v[1601])
    # about linear convergence: the error left at 1,601 points is about the last change
    assert abs(v[6401] - v[1601]) <= 1.5 * values[1601].details["grid_change"]
    assert values[1601].kind == "optimal" and values[1601].status.startswith("grid-refined")
    assert "tolerance 1e-03" in values[1601].status
    coarse = single_species_dp(sim, grid=41, nodes=16, tolerance=1e-3)
    assert coarse.kind == "best_known"  # 21 -> 41 points moves the value by far more than 0.1 %
    assert coarse.details["grid_change"] > 1e-3 * abs(coarse.objective)


def test_grid_dp_3d_converges_under_refinement_and_its_policy_matches_the_estimate() -> None:
    """A finer 3-D grid moves the DP estimate less each time, and the finest grid's policy,
    simulated, achieves its estimate within the last change plus Monte-Carlo error."""
    sim = registry.make("fishery/model2")
    trace = sim.sample_trace(256, 3, seed=0)
    est = {g: grid_dp_3d(sim, trace, horizon=3, grid=g).objective for g in (9, 17)}
    fine = grid_dp_3d(sim, trace, horizon=3, grid=24, check_grid=17)
    change = fine.details["grid_change"]
    assert change == pytest.approx(abs(fine.objective - est[17]))
    assert change < abs(est[17] - est[9])
    assert "17^3 -> 24^3 changes it by" in fine.status
    with torch.no_grad():
        values = sim.episode_metric(rollout(sim, fine.policy, trace).rewards, 0)
    stderr = float(values.std() / len(values) ** 0.5)
    assert abs(float(values.mean()) - fine.objective) < change + 3 * stderr
