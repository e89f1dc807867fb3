"""Two-level RL: the curriculum, the risk-seeking planner advantage, exact resume, the planner
reaching the MILP optimum against best-responding agents, GNN agents learning the free-market
hours, and one set of policy weights serving any number of agents."""

from __future__ import annotations

import pytest
import torch

from oprl import registry
from oprl.algorithms import two_level as tl
from oprl.policies.economy import EconomyPolicy, economy_heuristics, economy_policy
from oprl.runs import through_checkpoint
from oprl.simulators.economy import EconomyParams, EconomySimulator

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
    # entropy_anneal 0.5: the bonus is spent halfway through the planner's 70 learning steps
    fast = {**CURRICULUM, "entropy_anneal": 0.5}
    assert tl.schedule_at(37, 100, **fast).entropy == pytest.approx(0.2 * (1 - 17 / 35))
    assert tl.schedule_at(55, 100, **fast).entropy == 0.0


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


@pytest.mark.parametrize("extra", [{}, {"candidates": 2, "candidate_every": 2, "restarts": 2,
                                         "imitation": 1.0, "imitation_samples": 2}])
def test_resume_is_exact(extra):
    """Resuming from the step-8 snapshot (with a candidate pool and restarts: the end of the
    first attempt) replays the rest of the run exactly."""
    sim = tiny()
    kw = dict(steps=12, batch_size=8, eval_every=4, agent_phase=0.25, settle_phase=0.25,
              dev_scenarios=2, seed=3, agent_updates=3, **extra)
    torch.manual_seed(0)
    full_policy = economy_policy(sim, hidden=8, layers=1)
    start = {k: v.clone() for k, v in full_policy.state_dict().items()}
    saved = {}

    def keep(step, policy, optimizer, history, state):
        if step == 8:
            saved.update(through_checkpoint(state))

    full = tl.train_two_level(sim, full_policy, callback=keep, **kw)
    resumed_policy = economy_policy(sim, hidden=8, layers=1)
    resumed_policy.load_state_dict(start)
    resumed = tl.train_two_level(sim, resumed_policy, start_state=saved, **kw)
    # repr: NaN (no training reward at step 0) equals itself only as text
    drop = lambda rows: [repr({k: v for k, v in r.items() if k != "wall_s"}) for r in rows]  # noqa: E731
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
    assert set(found) == {"free market", "us federal", "saez", "saez binned"}


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


@pytest.mark.parametrize("samples", [1, 4])
def test_self_imitation_pulls_only_towards_better_hours(samples):
    """At the exact best response no random alternative pays more (no pull); from zero hours
    in a free market almost every alternative does (with one sample or the best of four)."""
    from oprl.simulators.economy_response import best_response

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
                             torch.Generator().manual_seed(1), samples)
        assert (pull >= 0).all()
        assert bool((pull > 1e-3).float().mean() > 0.9) == expect_pull
        if not expect_pull:
            assert float(pull.max()) < 1e-3


def test_restarts_split_the_planner_phase():
    """100 steps, 20 for the agents, 2 attempts of 40: each anneals rates from 0 again and
    ends with its own 5 settle steps, flagged as the attempt's end."""
    kw = {**CURRICULUM, "restarts": 2}
    first = tl.schedule_at(20, 100, **kw)
    assert first.restart == 0 and first.planner_learns and first.rate_limit == 0.0
    assert not tl.schedule_at(55, 100, **kw).planner_learns  # settle steps 55-59
    assert tl.schedule_at(59, 100, **kw).segment_end
    second = tl.schedule_at(60, 100, **kw)
    assert second.restart == 1 and second.planner_learns and second.rate_limit == 0.0
    assert tl.schedule_at(99, 100, **kw).segment_end and not tl.schedule_at(98, 100, **kw).segment_end
    one = tl.schedule_at(99, 100, **CURRICULUM)  # one attempt: the run's last step ends it
    assert one.restart == 0 and one.segment_end


def test_candidate_pool_keeps_the_best_distinct_schedules():
    """Offered planners are kept by their dev score, one per distinct schedule, at most K;
    in the settle phase episode b plays candidate b mod K."""
    sim = tiny()
    torch.manual_seed(0)
    policy = economy_policy(sim, hidden=8, layers=1)
    policy.exact_agents.fill_(1.0)
    dev = sim.sample_trace(2, 1, seed=0)
    pool: list = []
    for step, rates in enumerate([[0.0, 0.5], [0.0, 0.25], [0.0, 0.5], [0.0, 1.0]]):
        with torch.no_grad():  # a planner whose deterministic schedule is `rates`
            index = torch.round(torch.tensor(rates) / 0.25).long()
            policy.planner.bias.fill_(0.0)
            policy.planner.bias[torch.arange(2), index] = 5.0
        tl._offer_candidate(pool, sim, policy, dev, step, size=2)
    # worth 120 (50% above 60), 120 (25%: agent 2 works 70 h), 100 (100%: it stops at 30 h)
    assert [c["value"] for c in pool] == pytest.approx([120.0, 120.0], abs=1e-3)
    assert {c["key"] for c in pool} == {(0.0, 5000.0) * 2, (0.0, 2500.0) * 2}
    trace = sim.sample_trace(4, 1, seed=0)
    obs = sim.observe(sim.reset(trace), 0, trace)
    played = tl._pool_rates(pool, economy_policy(sim, hidden=8, layers=1).planner)(obs)
    assert torch.equal(played[0], played[2]) and not torch.equal(played[0], played[1])
