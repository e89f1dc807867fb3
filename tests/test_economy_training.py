"""Two-level RL: the curriculum, the risk-seeking planner advantage, exact resume, the planner
reaching the MILP optimum against best-responding agents, GNN agents learning the free-market
hours, and one set of policy weights serving any number of agents."""

from __future__ import annotations

import pytest
import torch

from oprl import registry
from oprl.algorithms import two_level as tl
from policies.economy import EconomyPolicy, economy_heuristics, economy_policy
from simulators.economy import EconomyParams, EconomySimulator

CURRICULUM = dict(agent_phase=0.2, settle_phase=0.1, labour_start=0.5, rate_anneal=0.5,
                  entropy_start=0.2, entropy_end=0.0, noise_start=0.5)


def test_curriculum_phases():
    first = tl.schedule_at(0, 100, **CURRICULUM)
    assert not first.planner_on and first.labour_scale == pytest.approx(0.5)
    assert tl.schedule_at(10, 100, **CURRICULUM).labour_scale == pytest.approx(0.75)
    join = tl.schedule_at(20, 100, **CURRICULUM)
    assert join.planner_on and join.planner_learns and join.rate_limit == 0.0
    assert join.labour_scale == 1.0 and join.entropy == pytest.approx(0.2)
    mid = tl.schedule_at(55, 100, **CURRICULUM)
    assert mid.rate_limit == pytest.approx(1.0) and 0 < mid.entropy < 0.2
    settle = tl.schedule_at(95, 100, **CURRICULUM)
    assert settle.planner_on and not settle.planner_learns and settle.rate_limit == 1.0


def test_risk_seeking_advantage_counts_only_the_best():
    returns = torch.arange(10.0)
    adv = tl._planner_advantage(returns, 0.8)
    assert (adv[:8] == 0).all() and (adv[8:] > 0).all() and adv[9] > adv[8]
    plain = tl._planner_advantage(returns, 0.0)
    assert float(plain.mean()) == pytest.approx(0.0, abs=1e-6)


def tiny() -> EconomySimulator:
    return EconomySimulator(EconomyParams(
        n_agents=2, skills=(1.0, 2.0), cutoffs=(0.0, 60.0), labour_cost=0.01,
        hours_step=10.0, rate_step=0.25))


def test_planner_reaches_the_milp_optimum_against_best_responses():
    """On the hand-checked 2-agent economy (optimum 120) the planner learns a schedule worth
    120 from rewards alone."""
    sim = tiny()
    torch.manual_seed(0)
    policy = economy_policy(sim, hidden=8, layers=1)
    result = tl.train_two_level(sim, policy, steps=120, batch_size=32, eval_every=40,
                                agent_learning="best_response", dev_scenarios=2, seed=0)
    assert result.best_dev_reward == pytest.approx(120.0, abs=1e-3)
    assert result.history[-1]["dev_reward_best_response"] == pytest.approx(120.0, abs=1e-3)


def test_gnn_agents_learn_free_market_hours():
    """Taxes off, full labour cost: each agent's hours approach s / (2k) = 47, 55, 69, 94."""
    sim = registry.make("economy/one_step")
    torch.manual_seed(0)
    policy = economy_policy(sim, hidden=16, layers=1)
    with torch.no_grad():  # start the agents away from the answer
        policy.agents.head.net[-1].bias.fill_(-0.5)
    tl.train_two_level(sim, policy, steps=150, batch_size=16, agent_phase=0.99, settle_phase=0.0,
                       labour_start=1.0, eval_every=150, dev_scenarios=2, agent_lr=1e-2)
    trace = sim.sample_trace(1, 1, seed=0)
    obs = sim.observe(sim.reset(trace), 0, trace)
    with torch.no_grad():
        hours, _ = policy.agents(obs, torch.zeros(1, 7))
    assert hours[0].tolist() == pytest.approx([47.0, 55.04, 68.75, 94.0], abs=1.5)


def test_resume_is_exact():
    sim = tiny()
    kw = dict(steps=12, batch_size=8, eval_every=4, agent_phase=0.25, settle_phase=0.25,
              dev_scenarios=2, seed=3, agent_updates=3)
    torch.manual_seed(0)
    full_policy = economy_policy(sim, hidden=8, layers=1)
    start = {k: v.clone() for k, v in full_policy.state_dict().items()}
    saved = {}

    def keep(step, policy, optimizer, history, state):
        if step == 8:
            saved.update(state)

    full = tl.train_two_level(sim, full_policy, callback=keep, **kw)
    resumed_policy = economy_policy(sim, hidden=8, layers=1)
    resumed_policy.load_state_dict(start)
    resumed = tl.train_two_level(sim, resumed_policy, start_state=saved, **kw)
    drop = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]  # noqa: E731
    assert drop(resumed.history) == drop(full.history)
    for key, value in full.policy.state_dict().items():
        assert torch.equal(value, resumed.policy.state_dict()[key]), key


def test_bad_hyperparameters():
    sim = tiny()
    policy = economy_policy(sim, hidden=8, layers=1)
    with pytest.raises(ValueError, match="agent_learning"):
        tl.train_two_level(sim, policy, steps=1, agent_learning="evolution")
    with pytest.raises(ValueError, match="continuous"):
        tl.train_two_level(sim, policy, steps=1, planner_learning="pathwise")
    with pytest.raises(ValueError, match="planner_quantile"):
        tl.train_two_level(sim, policy, steps=1, planner_quantile=1.0)


def test_one_policy_serves_any_number_of_agents():
    small = registry.make("economy/one_step")
    big = registry.make("economy/one_step", skills="pareto", n_agents=60)
    policy = EconomyPolicy(small, hidden=8, layers=1)
    trace = big.sample_trace(3, 1, seed=0)
    action = policy(big.observe(big.reset(trace), 0, trace))
    assert action.shape == (3, 7 + 60)
    _, reward, _ = big.step(big.reset(trace), action, 0, trace)
    assert torch.isfinite(reward).all()


def test_heuristics_cover_the_classical_schedules():
    sim = registry.make("economy/one_step")
    found = economy_heuristics(sim, sim.sample_trace(2, 1, seed=0), 0)
    assert set(found) == {"free market", "us federal", "saez"}


def test_pathwise_planner_moves_its_rates_through_the_agents():
    """A continuous planner learning pathwise gets a gradient through the agents' response."""
    sim = tiny()
    torch.manual_seed(0)
    policy = economy_policy(sim, hidden=8, layers=1, planner="continuous")
    before = policy.planner.bias.detach().clone()
    result = tl.train_two_level(sim, policy, steps=8, batch_size=8, eval_every=4,
                                agent_phase=0.25, settle_phase=0.0, planner_learning="pathwise",
                                agent_learning="pg", dev_scenarios=2)
    assert not torch.equal(before, result.policy.planner.bias.detach())
    assert all(torch.isfinite(torch.tensor(r["dev_reward"])) for r in result.history)


def test_self_imitation_pulls_only_towards_better_hours():
    """At the exact best response no random alternative pays more (no pull); from zero hours
    in a free market almost every alternative does."""
    from solvers.economy import best_response

    sim = registry.make("economy/one_step")
    trace = sim.sample_trace(64, 1, seed=0)
    state = sim.reset(trace)
    taxed = torch.tensor([[0.0, 0.9, 0.0, 0.4, 0.05, 0.1, 0.0]]).expand(64, -1)
    sched = tl.Schedule(True, True, 1.0, 1.0, 0.0, 0.0)
    exact = best_response(sim, trace["skills"][:, 0], taxed.double()).float()
    cases = ((taxed, exact, False), (torch.zeros(64, 7), torch.zeros(64, 4), True))
    for rates, hours, expect_pull in cases:
        _, _, info = sim.step(state, torch.cat([rates, hours], -1), 0, trace)
        pull = tl._imitation(sim, state, rates, hours, None, info, 0, trace, sched,
                             torch.Generator().manual_seed(1))
        assert (pull >= 0).all()
        assert bool((pull > 1e-3).float().mean() > 0.9) == expect_pull
        if not expect_pull:
            assert float(pull.max()) < 1e-3
