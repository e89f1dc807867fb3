"""The smallest domain (tests/example_domain.py) runs through the engine with no engine edit."""

from __future__ import annotations

import math

import pytest
import torch
from example_domain import SCENARIO, critical_fractile, ensure_registered, newsvendor  # noqa: I001

from oprl import api, registry
from oprl.core import Constrained, requires
from oprl.registry import Scenario


@pytest.fixture(scope="module", autouse=True)
def registered():
    return ensure_registered()


def test_closed_form_matches_a_monte_carlo_estimate() -> None:
    """The critical-fractile order and cost against 400,000 simulated periods."""
    sim = newsvendor()
    order, cost = critical_fractile(sim.params)
    assert order == pytest.approx(10 + 2 * 0.841621, abs=1e-5)  # z of 0.8 from tables
    trace = sim.sample_trace(2_000, 200, seed=3)
    _, reward, _ = sim.step({}, torch.full((2_000,), order), 0, trace)
    demand = trace["demand"].reshape(-1)
    sampled = (4 * (demand - order).clamp_min(0) + (order - demand).clamp_min(0)).mean()
    assert float(sampled) == pytest.approx(cost, rel=0.01)
    # any other order costs more, in expectation
    for other in (order - 1, order + 1):
        worse = (4 * (demand - other).clamp_min(0) + (other - demand).clamp_min(0)).mean()
        assert worse > sampled


def test_parameters_come_from_the_params_dataclass() -> None:
    params = registry.get("example/newsvendor").parameters()
    assert params["underage"] == 4.0 and params["eval_horizon"] == 64
    assert "name" not in params  # declared `fixed`
    with pytest.raises(ValueError, match="unknown parameter 'nme'"):
        registry.make("example/newsvendor", nme="x")
    with pytest.raises(ValueError, match="std: must be > 0"):
        registry.make("example/newsvendor", std=0)


def test_register_refuses_a_duplicate_and_a_missing_capability() -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register(SCENARIO)

    @requires(Constrained)
    def constrained_trainer(sim, policy, **kw):  # pragma: no cover - never called
        raise AssertionError

    import example_domain

    example_domain.constrained_trainer = constrained_trainer
    bad = Scenario("example/constrained", SCENARIO.factory, "", SCENARIO.heuristics,
                   SCENARIO.references, algorithm="cac", policies=SCENARIO.policies,
                   algorithms={"cac": "example_domain:constrained_trainer"})
    with pytest.raises(ValueError, match="needs a Constrained simulator"):
        registry.register(bad, {})


def test_benchmark_learns_the_critical_fractile(tmp_path) -> None:
    """HDPO through the engine ends within 1% of the closed-form optimum, paired on the same
    512 episodes; the reference row is the closed form's exact value."""
    frame = api.benchmark("example/newsvendor", {"underage": 4.0}, seed=0, log=lambda m: None)
    rows = frame.set_index("policy")
    order, cost = critical_fractile(newsvendor().params)
    ref = rows.loc["critical_fractile"]
    assert ref["kind"] == "optimal" and ref["gap_pct"] == 0.0
    assert f"exact {cost:.4f}" in ref["status"]
    assert ref["mean"] == pytest.approx(cost, rel=0.05)  # a sample of 512 x 64 periods
    learned = rows.loc["hdpo-constant"]
    assert 0 <= learned["gap_pct"] < 1.0
    assert rows.loc["order the mean", "gap_pct"] > 10  # the symmetric order is far off
    assert frame.attrs["minimise"] is True


def test_train_writes_a_run_that_loads_back(tmp_path) -> None:
    outcome = api.train("example/newsvendor", steps=40, out=tmp_path / "run")
    order, _ = critical_fractile(newsvendor().params)
    assert math.isclose(float(outcome.policy.order.detach()), order, rel_tol=0.05)
    assert api.best_dev(outcome.history) == min(h["dev_cost"] for h in outcome.history)
    net, _ = api.load_policy(tmp_path / "run", "example/newsvendor")
    assert float(net.order.detach()) == pytest.approx(float(outcome.policy.order.detach()))
