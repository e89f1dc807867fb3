"""HDPO training, exact resumption, and HDPO vs REINFORCE gradient variance."""

from __future__ import annotations

import pytest
import torch

from oprl.algorithms.hdpo import evaluate_cost, lead_time_dev_horizon, train_hdpo
from oprl.algorithms.reinforce import gradient_variance, reinforce_loss
from oprl.policies.inventory_heuristics import tune_base_stock
from oprl.policies.inventory_mlp import InventoryMLP
from oprl.simulators import inventory as inv
from oprl.simulators.inventory_rules import BaseStock


def _policy(sim, seed: int = 0, head: str = "softplus") -> InventoryMLP:
    """The softplus head starts far from the optimum, so that learning shows."""
    torch.manual_seed(seed)
    return InventoryMLP(sim, hidden=(32, 32), head=head)


SMALL = dict(batch_size=64, horizon=40, warmup=10, dev_scenarios=64, lr=5e-3, seed=0)


def test_hdpo_reaches_tuned_base_stock_on_one_store_backlog() -> None:
    sim = inv.one_store_backlog(lead_time=2)
    policy = _policy(sim)
    result = train_hdpo(sim, policy, steps=80, eval_every=20, lr_final_fraction=0.1, **SMALL)
    assert result.history[0]["dev_cost"] > 5 * result.best_dev_cost  # it learned something
    test = sim.sample_trace(64, 300, seed=99)
    levels = tune_base_stock(sim, sim.sample_trace(32, 200, seed=5), 50, rounds=2, grid=11)
    optimum = evaluate_cost(sim, BaseStock(sim, levels), test, 50)
    learned = evaluate_cost(sim, result.policy, test, 50)
    assert learned <= 1.03 * optimum, (learned, optimum)


def test_base_stock_head_reaches_the_base_stock_optimum_closely() -> None:
    """The echelon base-stock head starts at the newsvendor level and training keeps it there:
    within 0.3% of the exact optimum on the same traces after 60 short steps."""
    from oprl.solvers.inventory import base_stock_optimum

    sim = inv.one_store_backlog(lead_time=4, penalty=19)
    policy = _policy(sim, head="base_stock")
    result = train_hdpo(sim, policy, steps=60, eval_every=20, lr_final_fraction=0.1, **SMALL)
    test = sim.sample_trace(64, 400, seed=99)
    optimum = evaluate_cost(sim, base_stock_optimum(sim).policy, test, 100)
    learned = evaluate_cost(sim, result.policy, test, 100)
    assert result.history[0]["dev_cost"] <= 1.01 * result.best_dev_cost  # starts near the optimum
    assert learned <= 1.003 * optimum, (learned, optimum)


@pytest.mark.parametrize("train_scenarios", [None, 128])
def test_resuming_continues_exactly(train_scenarios: int | None) -> None:
    sim = inv.one_store_lost(lead_time=2)
    kw = dict(SMALL, batch_size=32, horizon=30, warmup=10, dev_scenarios=16,
              train_scenarios=train_scenarios, eval_every=3, lr_final_fraction=0.2)
    full = train_hdpo(sim, _policy(sim), steps=12, **kw)

    saved: dict = {}

    def stop_at_6(step, policy, optimizer, history, state):
        if step == 6:
            saved.update(state)

    train_hdpo(sim, _policy(sim), steps=12, callback=stop_at_6, **kw)
    fresh = _policy(sim, seed=123)  # different init: every weight must come from the state
    resumed = train_hdpo(sim, fresh, steps=12, start_state=saved, **kw)
    for (name, a), b in zip(full.policy.state_dict().items(), resumed.policy.state_dict().values()):
        assert torch.equal(a, b), name
    costs = lambda h: [(r["step"], r["dev_cost"], str(r["train_cost"])) for r in h]  # noqa: E731
    assert costs(full.history) == costs(resumed.history)


def test_four_argument_callback_and_patience() -> None:
    sim = inv.one_store_backlog(lead_time=1)
    calls = []
    result = train_hdpo(sim, _policy(sim), steps=12, eval_every=2, patience=0, lr=1e-3,
                        batch_size=8, horizon=20, warmup=5, dev_scenarios=8,
                        callback=lambda step, policy, opt, history: calls.append(step))
    assert calls == [] and result.stopped_early  # patience 0: stop before any step
    result = train_hdpo(sim, _policy(sim), steps=4, eval_every=2, lr=1e-3, batch_size=8,
                        horizon=20, warmup=5, dev_scenarios=8,
                        callback=lambda step, policy, opt, history: calls.append(step))
    assert calls == [2, 4] and [h["step"] for h in result.history] == [0, 2, 4]


def test_bad_warmup_is_a_value_error() -> None:
    sim = inv.one_store_backlog()
    with pytest.raises(ValueError, match="warmup"):
        train_hdpo(sim, _policy(sim), steps=1, horizon=10, warmup=10)


def test_dev_episodes_count_lead_time_windows() -> None:
    """45 windows of L+1 periods after a 40-period warm-up; never shorter than training."""
    long, short = inv.one_store_backlog(lead_time=20), inv.one_store_backlog(lead_time=1)
    assert lead_time_dev_horizon(long, 100, 40, 45) == 40 + 45 * 21
    assert lead_time_dev_horizon(short, 100, 40, 45) == 130
    assert lead_time_dev_horizon(short, 100, 40, 20) == 100
    assert lead_time_dev_horizon(long, 100, 40, 0) == 100
    assert lead_time_dev_horizon(object(), 100, 40, 45) == 100  # no lead times: unchanged


def test_train_hdpo_samples_the_lengthened_dev_set(monkeypatch) -> None:
    sim = inv.one_store_backlog(lead_time=3)
    horizons: list[int] = []
    sample = sim.sample_trace

    def spy(batch, horizon=None, **kw):
        horizons.append(horizon)
        return sample(batch, horizon, **kw)

    monkeypatch.setattr(sim, "sample_trace", spy)
    train_hdpo(sim, _policy(sim), steps=1, batch_size=8, horizon=20, warmup=5, dev_scenarios=8,
               dev_windows=10)
    assert horizons[0] == 5 + 10 * 4 and horizons[1:] == [20]  # dev set first, then training
    horizons.clear()
    train_hdpo(sim, _policy(sim), steps=1, batch_size=8, horizon=20, warmup=5, dev_scenarios=8,
               dev_windows=10, dev_horizon=30)
    assert horizons == [30, 20]  # an explicit dev_horizon wins


def test_one_store_scenarios_lengthen_their_dev_sets() -> None:
    from oprl import registry

    for name in ("inventory/one_store_backlog", "inventory/one_store_lost", "inventory/serial"):
        assert registry.get(name).hyper("hdpo")["dev_windows"] > 0


def test_hdpo_gradient_variance_is_far_below_reinforce() -> None:
    sim = inv.one_store_backlog()
    policy = _policy(sim)
    kw = dict(n_batches=6, batch_size=32, horizon=40, warmup=10, seed=0)
    hdpo = gradient_variance(sim, policy, "hdpo", **kw)
    reinforce = gradient_variance(sim, policy, "reinforce", direction=hdpo.mean, **kw)
    assert reinforce.total_variance > 50 * hdpo.total_variance
    assert reinforce.projection_variance > 50 * hdpo.projection_variance
    # both estimate the same descent direction
    cosine = torch.nn.functional.cosine_similarity(hdpo.mean, reinforce.mean, dim=0)
    assert cosine > 0.5


def test_reinforce_surrogate_improves_the_policy_direction() -> None:
    """A few REINFORCE steps lower the cost of a badly scaled starting policy."""
    sim = inv.one_store_backlog(lead_time=1)
    policy = _policy(sim)
    dev = sim.sample_trace(64, 40, seed=3)
    before = evaluate_cost(sim, policy, dev, 10)
    opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
    for k in range(15):
        surrogate, _ = reinforce_loss(sim, policy, sim.sample_trace(64, 40, seed=k), 10, 0.2, k)
        opt.zero_grad()
        surrogate.backward()
        opt.step()
    assert evaluate_cost(sim, policy, dev, 10) < before
