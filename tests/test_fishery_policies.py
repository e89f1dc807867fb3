"""Fishery policies: output shapes and ranges, the classical starting rule, grid-searched
heuristics against the logistic closed forms, and a short HDPO run end to end."""

from __future__ import annotations

import pytest
import torch

from oprl import registry
from oprl.api import train
from oprl.policies.fishery import (
    ConstantEscapement,
    ConstantMortality,
    FisheryChoicePolicy,
    FisheryGNN,
    FisheryMLP,
    evaluate_candidates,
    fishery_heuristics,
    grid_search,
)
from oprl.simulators.fishery import model1


@pytest.mark.parametrize("cls", [FisheryMLP, FisheryGNN])
@pytest.mark.parametrize("scenario, actions", [("fishery/model1", 1), ("fishery/model3", 2)])
@pytest.mark.parametrize("output", ["escapement", "mortality"])
def test_learned_policies_give_feasible_mortalities(cls, scenario, actions, output) -> None:
    sim = registry.make(scenario)
    trace = sim.sample_trace(5, seed=0)
    obs = sim.observe(sim.reset(trace), 0, trace)
    obs["pop"] = obs["pop"] * torch.tensor([[0.0], [0.01], [1.0], [3.0], [9.0]])
    mortality = cls(sim, output=output)(obs)
    assert mortality.shape == (5, actions)
    assert torch.isfinite(mortality).all() and (mortality >= 0).all() and (mortality <= 1).all()


def test_escapement_output_starts_as_constant_escapement_at_half_k() -> None:
    sim = model1(K=2.0)
    torch.manual_seed(0)
    net = FisheryMLP(sim, init_gain=0.0)
    stocks = torch.tensor([[0.5], [1.5], [2.0]])
    obs = {"pop": stocks, "time": torch.zeros(3, 1), "alive": torch.ones(3, 1)}
    kept = stocks * (1 - net(obs))
    torch.testing.assert_close(kept, torch.tensor([[0.5], [1.0], [1.0]]))


def test_unknown_output_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="output"):
        FisheryMLP(model1(), output="quota")


def deterministic_logistic(r: float = 0.8, K: float = 1.0):
    return model1(beta=0.0, r=r, K=K, sigma=0.0, initial=0.5 * K, init_sigma=0.0, horizon=150)


def test_grid_search_finds_the_msy_escapement() -> None:
    sim = deterministic_logistic(K=1.0)
    trace = sim.sample_trace(1, seed=0)
    level, value = grid_search(sim, lambda lv: ConstantEscapement(sim, lv), 0.0, 1.0, trace, 0,
                               points=21, rounds=3)
    assert float(level) == pytest.approx(0.5, abs=0.01)
    assert value == pytest.approx(0.8 / 4 * 149, rel=1e-3)


def test_grid_search_finds_the_best_constant_mortality() -> None:
    r, K = 0.8, 1.0
    m = torch.linspace(0.0, 0.9, 9001, dtype=torch.float64)
    keep = 1 - m
    yield_ = m * (K * (keep * (1 + r) - 1) / (r * keep**2)).clamp_min(0)  # long-run harvest
    best = float(m[yield_.argmax()])
    sim = deterministic_logistic(r, K)
    trace = sim.sample_trace(1, seed=0)
    rate, _ = grid_search(sim, ConstantMortality, 0.0, 1.0, trace, 100, points=21, rounds=4)
    assert float(rate) == pytest.approx(best, abs=0.005)


def test_heuristics_report_their_training_value() -> None:
    sim = registry.make("fishery/model3", horizon=40, eval_horizon=40)
    trace = sim.sample_trace(8, seed=4)
    found = fishery_heuristics(sim, trace, 0)
    assert set(found) == {"constant mortality", "constant escapement"}
    pol, status = found["constant mortality"]
    value = evaluate_candidates(sim, lambda r: ConstantMortality(r), pol.rates[None], trace, 0)
    assert f"train {float(value):.3f}" in status


def test_hdpo_trains_a_fishery_policy_end_to_end(tmp_path) -> None:
    out = train("fishery/model1", {"horizon": 30, "eval_horizon": 30}, steps=4, out=tmp_path / "r",
                batch_size=8, dev_scenarios=8, eval_every=2)
    assert [h["step"] for h in out.history] == [0, 2, 4]
    assert all("dev_cost" in h for h in out.history)
    out_gnn = train("fishery/model3", {"horizon": 20, "eval_horizon": 20}, policy="gnn", steps=2,
                    out=tmp_path / "g", batch_size=4, dev_scenarios=4, eval_every=2)
    assert out_gnn.steps_done == 2


def test_menu_mode_executes_the_chosen_mortalities_for_the_constrained_ac() -> None:
    sim = registry.make("fishery/model3", menu=3, horizon=4, eval_horizon=4)
    assert sim.choices.shape == (9, 2) and sim.constraint_signals == ("years_alive",)
    assert registry.make("fishery/model3", menu=3, survival_signal="episode").constraint_signals \
        == ("episode_survival",)
    trace = sim.sample_trace(5, seed=0)
    state = sim.reset(trace)
    pick = torch.tensor([0, 4, 8, 2, 6])
    probs = torch.nn.functional.one_hot(pick, 9).float()
    _, _, info = sim.step(state, probs, 0, trace)
    assert torch.equal(info["action_index"], pick)
    stocks = state["pop"][:, :2]
    torch.testing.assert_close(info["harvest"], (stocks * sim.choices[pick]).sum(-1))
    assert (info["survival"] == 0).all()  # only the last year reports survival
    # choices 8, 2, 6 take all of X or Y: extinct in year 0; 0 and 4 survive it
    torch.testing.assert_close(info["years_alive"] * 4, torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0]))
    policy = FisheryChoicePolicy(sim)
    p = policy(sim.observe(state, 0, trace))
    torch.testing.assert_close(p.sum(-1), torch.ones(5))
    with pytest.raises(ValueError, match="menu"):
        FisheryChoicePolicy(registry.make("fishery/model3"))
    with pytest.raises(ValueError, match="menu"):
        registry.make("fishery/model1", menu=1)


def test_episode_survival_signal_totals_the_survival_indicator() -> None:
    """Dense (+1 in year 0, -1 in the year of death) yet its episode total is exactly whether
    the episode reached full length."""
    sim = registry.make("fishery/model3", menu=3, horizon=30, eval_horizon=30)
    trace = sim.sample_trace(64, seed=5)
    gen = torch.Generator().manual_seed(0)
    state = sim.reset(trace)
    total = torch.zeros(64)
    weight = torch.full((9,), 0.01)  # mostly mortalities 0 and 1/2, now and then all of a stock
    weight[[0, 1, 3, 4]] = 1.0
    for t in range(30):
        probs = torch.rand(64, 9, generator=gen) * weight
        state, _, info = sim.step(state, probs / probs.sum(-1, keepdim=True), t, trace)
        total += info["episode_survival"]
    torch.testing.assert_close(total, state["alive"])
    assert 0 < float(state["alive"].mean()) < 1


def test_expected_signals_match_monte_carlo_of_one_risky_year() -> None:
    sim = registry.make("fishery/model3", menu=3, initial=(0.056, 0.056, 1.0), init_sigma=0.0,
                        horizon=1, eval_horizon=1, survival_signal="episode")
    trace = sim.sample_trace(40_000, seed=9)
    state = sim.reset(trace)
    probs = torch.nn.functional.one_hot(torch.full((40_000,), 4), 9).float()  # mortality 1/2
    _, reward, info = sim.step(state, probs, 0, trace)
    expected = float(info["expected_episode_survival"][0])
    assert 0.1 < expected < 0.9  # a year that can go either way
    assert (info["expected_episode_survival"] == expected).all()  # one state, one number
    realised = info["episode_survival"]
    assert abs(float(realised.mean()) - expected) < 4 * float(realised.std()) / 200
    assert abs(float(reward.mean() - info["expected_reward"].mean())) < 4 * float(
        reward.std()) / 200

