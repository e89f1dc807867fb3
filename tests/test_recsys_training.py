"""Policies, heuristics and the constrained actor-critic trainers on small instances."""

import pytest
import torch

from oprl import registry
from oprl.algorithms.constrained_ac import collect, train_rcpo, train_tscac
from policies.recsys import CandidateGNN, CandidateMLP, WeightedRanking, recsys_heuristics
from simulators.recsys import short_video, tabular


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
            capture.append(state)

    res = trainer(sim, net, steps=steps, batch_size=32, dev_episodes=32, eval_every=2,
                  critic_iters=3, actor_iters=3, minibatch=64, callback=callback,
                  start_state=start_state, **hyper)
    return res


@pytest.mark.parametrize("hyper", [{}, {"dual_source": "dev", "margin": 0.0, "tolerance": 0.005}])
def test_trainers_follow_the_contract_and_resume_exactly(hyper):
    for trainer in (train_tscac, train_rcpo):
        capture = [4]
        full = _run(trainer, 6, capture=capture, **hyper)
        rows = full.history
        assert rows and all({"step", "wall_s", "dev_reward"} <= set(r) for r in rows)
        assert [r["step"] for r in rows] == sorted(r["step"] for r in rows)
        resumed = _run(trainer, 6, start_state=capture[1], **hyper)
        for a, b in zip(full.policy.state_dict().values(), resumed.policy.state_dict().values()):
            assert torch.equal(a, b)
        assert [r["dev_reward"] for r in full.history] == [r["dev_reward"] for r in resumed.history]


@pytest.mark.parametrize("bad", [{"dual_source": "oracle"}, {"tolerance": 1.5},
                                 {"tolerance": -0.1}])
def test_bad_dual_settings_are_a_clear_error(bad):
    for trainer in (train_tscac, train_rcpo):
        with pytest.raises(ValueError, match=next(iter(bad))):
            _run(trainer, 2, **bad)


def test_scenarios_registered():
    spec = registry.get("recsys/tabular")
    assert spec.bench_algorithms == ("tscac", "rcpo")
    sim = registry.make("recsys/short_video", n_items=20, n_candidates=4)
    assert sim.metric_name == "watch_time/episode"


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
