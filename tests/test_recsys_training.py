"""Policies, heuristics and the constrained actor-critic trainers on small instances."""

import pytest
import torch

from oprl import registry
from oprl.algorithms.constrained_ac import collect, estimate_totals, train_rcpo, train_tscac
from oprl.policies.recsys import CandidateGNN, CandidateMLP, WeightedRanking, recsys_heuristics
from oprl.runs import through_checkpoint
from oprl.simulators.recsys import short_video, tabular


def small_tabular():
    return tabular(horizon=30, eval_horizon=30)


def test_policies_give_probabilities_over_candidates():
    sim = short_video(n_items=30, n_candidates=6)
    trace = sim.sample_trace(5, 2, seed=0)
    obs = sim.observe(sim.reset(trace), 0, trace)
    for net in (CandidateMLP(sim, hidden=(8,)), CandidateGNN(sim, hidden=8, layers=1)):
        probs = net(obs)
        assert probs.shape == (5, 6)
        assert torch.allclose(probs.sum(-1), torch.ones(5))
        # permuting the candidates permutes the probabilities (the slate has no order)
        perm = torch.tensor([5, 4, 3, 2, 1, 0])
        obs_p = {**obs, "items": obs["items"][:, perm]}
        assert torch.allclose(net(obs_p), probs[:, perm], atol=1e-5)


def test_myopic_ranking_picks_the_longest_predicted_watch():
    sim = short_video(n_items=30, n_candidates=6)
    trace = sim.sample_trace(7, 2, seed=1)
    obs = sim.observe(sim.reset(trace), 0, trace)
    probs = WeightedRanking([1, 0, 0, 0, 0])(obs)
    assert torch.equal(probs.argmax(-1), obs["pred_watch"].argmax(-1))
    assert torch.equal(probs.sum(-1), torch.ones(7))


def test_scalarisation_meets_thresholds_myopic_misses():
    sim = small_tabular()
    trace = sim.sample_trace(256, seed=2)
    heur = recsys_heuristics(sim, trace, 0)
    assert "meets all thresholds" in heur["scalarised"][1]
    batch = collect(sim, heur["myopic watch-time"][0], trace, sim.constraint_signals,
                    torch.ones(5))
    assert (batch.totals.mean(0)[1:] < torch.tensor(sim.constraint_thresholds)).any()


def _run(trainer, steps, start_state=None, capture=None, **hyper):
    sim = small_tabular()
    torch.manual_seed(0)
    net = CandidateMLP(sim, hidden=(16,))

    def callback(step, policy, opt, history, state):
        if capture is not None and step == capture[0]:
            capture.append(through_checkpoint(state))

    res = trainer(sim, net, steps=steps, batch_size=32, dev_episodes=32, eval_every=2,
                  critic_iters=3, actor_iters=3, minibatch=64, callback=callback,
                  start_state=start_state, **hyper)
    return res


@pytest.mark.parametrize("hyper", [
    {}, {"dual_source": "dev", "margin": 0.0, "tolerance": 0.005},
    {"dual_source": "sample", "dual_episodes": 64, "dev_z": 1.0, "reeval_fraction": 0.5,
     "average": 0.5, "mu_kp": 0.5}])
def test_trainers_follow_the_contract_and_resume_exactly(hyper):
    for trainer in (train_tscac, train_rcpo):
        other = "reeval_fraction" if trainer is train_rcpo else "mu_kp"  # the other's setting
        own = {k: v for k, v in hyper.items() if k != other}
        capture = [4]
        full = _run(trainer, 6, capture=capture, **own)
        rows = full.history
        assert rows and all({"step", "wall_s", "dev_reward"} <= set(r) for r in rows)
        assert [r["step"] for r in rows] == sorted(r["step"] for r in rows)
        resumed = _run(trainer, 6, start_state=capture[1], **own)
        for a, b in zip(full.policy.state_dict().values(), resumed.policy.state_dict().values()):
            assert torch.equal(a, b)
        assert [r["dev_reward"] for r in full.history] == [r["dev_reward"] for r in resumed.history]


@pytest.mark.parametrize("bad", [{"dual_source": "oracle"}, {"tolerance": 1.5},
                                 {"tolerance": -0.1}, {"dev_z": -1.0}, {"dev_values": "exact"}, {"average": 1.0},
                                 {"dual_episodes": 1, "dual_source": "sample"}])
def test_bad_dual_settings_are_a_clear_error(bad):
    for trainer in (train_tscac, train_rcpo):
        with pytest.raises(ValueError, match=next(iter(bad))):
            _run(trainer, 2, **bad)


def test_scenarios_registered():
    spec = registry.get("recsys/tabular")
    assert spec.bench_algorithms == ("tscac", "rcpo")
    sim = registry.make("recsys/short_video", n_items=20, n_candidates=4)
    assert sim.metric.name == "watch_time/episode" and not sim.metric.minimise


def test_collect_weighs_continuation_by_the_exit_probability():
    """Tabular: every live step goes on with probability 1 - exit[s, a] (0 at the horizon),
    and its next observation is the state it would continue in; without
    ``expected_continue`` the realised survival (0 or 1) is used."""
    sim = tabular(horizon=6, eval_horizon=6)
    trace = sim.sample_trace(64, seed=4)
    names = sim.constraint_signals
    uniform = CandidateMLP(sim, hidden=(4,), init_gain=0.0)
    batch = collect(sim, uniform, trace, names, torch.ones(5))
    state = batch.obs["state_index"]
    exit_p = sim._exit[state, batch.action]
    last = batch.obs["user"][:, -1] == 5 / 6  # time fraction of the final step
    assert torch.allclose(batch.cont[~last], 1 - exit_p[~last])
    assert (batch.cont[last] == 0).all()
    moved = (batch.next_obs["state_index"] - state).abs()
    assert (moved <= 1).all() and torch.allclose(batch.next_obs["user"][:, -1][~last],
                                                 batch.obs["user"][:, -1][~last] + 1 / 6)

    class Realised:  # the same simulator without the expected continuation
        def __getattr__(self, name):
            return getattr(sim, name)

        def step(self, *args):
            new, reward, info = sim.step(*args)
            return new, reward, {k: v for k, v in info.items() if k != "expected_continue"}

    real = collect(Realised(), uniform, trace, names, torch.ones(5))
    assert set(real.cont.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(real.obs["state_index"], state)
    ended = real.cont == 0
    assert int(ended.sum()) == trace.batch  # every episode ends once (exit or horizon)


def test_bad_reeval_fraction_is_a_clear_error():
    with pytest.raises(ValueError, match="reeval_fraction"):
        _run(train_tscac, 2, reeval_fraction=1.5)


@pytest.mark.parametrize("realised", [False, True])
def test_monte_carlo_dev_estimate_is_unbiased_and_compaction_exact(realised):
    """The dev estimate (Monte-Carlo mean and standard error) agrees with the exact totals
    within 4 s.e. for the LP's stochastic policy; dropping finished sessions from the batch
    changes nothing but the cost."""
    from oprl.simulators.recsys import exact_policy_values
    from oprl.solvers.recsys import cmdp_lp

    sim = small_tabular()
    policy = cmdp_lp(sim).policy
    trace = sim.sample_trace(4096, seed=11)
    mean, se = estimate_totals(sim, policy, trace, sim.constraint_signals, realised=realised,
                               compact=True)
    full, _ = estimate_totals(sim, policy, trace, sim.constraint_signals, realised=realised)
    assert torch.allclose(mean, full, rtol=1e-5)
    exact = exact_policy_values(sim, policy, 30)
    truth = torch.tensor([exact["watch_time"], *(exact[s] for s in sim.constraint_signals)])
    assert ((mean - truth).abs() < 4 * se).all() and (se > 0).all()


def test_expected_values_have_less_noise_than_realised():
    sim = small_tabular()
    trace = sim.sample_trace(2048, seed=12)
    uniform = CandidateMLP(sim, hidden=(4,), init_gain=0.0)
    _, se_exp = estimate_totals(sim, uniform, trace, sim.constraint_signals)
    _, se_real = estimate_totals(sim, uniform, trace, sim.constraint_signals, realised=True)
    assert (se_exp[1:] < se_real[1:]).all()


@pytest.mark.parametrize("trainer", [train_tscac, train_rcpo])
def test_selection_never_reads_the_exact_evaluator(trainer):
    """A simulator whose ``exact_totals`` lies trains and selects exactly as one without it:
    the exact values are only reported (history ``exact_*``)."""
    sim = small_tabular()

    class Lying(type(sim)):
        def exact_totals(self, policy, horizon=None):
            return torch.tensor([1e9, -1.0, -1.0, -1.0, -1.0])

    class Without(type(sim)):
        def exact_totals(self, policy, horizon=None):
            return None  # no exact model, as `oprl.core.Constrained` declares by default

    out = []
    for wrapped in (Lying(sim.params), Without(sim.params)):
        torch.manual_seed(0)
        net = CandidateMLP(sim, hidden=(8,))
        out.append(trainer(wrapped, net, steps=6, batch_size=32, dev_episodes=64, eval_every=2,
                           critic_iters=2, actor_iters=2, minibatch=64, dual_source="dev"))
    lying, without = out
    assert lying.best_step == without.best_step
    assert lying.history[-1]["exact_reward"] == 1e9 and "exact_reward" not in without.history[-1]
    for a, b in zip(lying.policy.state_dict().values(), without.policy.state_dict().values()):
        assert torch.equal(a, b)


def test_confidence_check_demands_a_surplus_of_z_standard_errors():
    """A signal exactly at its threshold is met with ``dev_z=0`` and missed with ``dev_z=1``
    (its estimate less one standard error falls short)."""
    from oprl.algorithms.constrained_ac import feasible_shortfall

    sim = small_tabular()
    thr = torch.tensor(sim.constraint_thresholds)
    vals = torch.tensor([100.0, *sim.constraint_thresholds])
    se = torch.full((5,), 0.01)
    for z, short in ((0.0, False), (1.0, True)):
        assert (feasible_shortfall(vals, se, thr, dev_z=z, tolerance=0.0) > 0) == short
