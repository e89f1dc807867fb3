"""The engine: traces, rollout, paired evaluation, run folders and the registry."""

import math

import pandas as pd
import pytest
import torch

import oprl
from oprl.core import Trace, rollout
from oprl.evaluate import COLUMNS, Entry, choose_reference, evaluate, failed_status, format_table
from oprl.result import SolverResult
from oprl.runs import RunDir, atomic_write
from oprl.simulators.inventory_rules import BaseStock


def test_trace_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="batch, horizon"):
        Trace({"a": torch.zeros(2, 5, 1), "b": torch.zeros(3, 5)})
    with pytest.raises(ValueError, match="at least one"):
        Trace({})


def test_trace_select_and_properties():
    trace = Trace({"demand": torch.arange(24.0).view(4, 6, 1)}, seed=3)
    sub = trace.select(slice(1, 3))
    assert (trace.batch, trace.horizon, sub.batch) == (4, 6, 2)
    assert torch.equal(sub["demand"], trace["demand"][1:3])


def test_make_rejects_unknown_scenario_and_parameter():
    with pytest.raises(ValueError, match="unknown 'inventory/nope'"):
        oprl.make("inventory/nope")
    with pytest.raises(ValueError, match="unknown parameter 'leadtime'.*lead_time"):
        oprl.make("inventory/one_store_lost", leadtime=3)


def test_rollout_is_deterministic_given_the_trace():
    sim = oprl.make("inventory/one_store_backlog", lead_time=2)
    trace = sim.sample_trace(4, 50, seed=0)
    policy = BaseStock(sim, 17.0)
    a = rollout(sim, policy, trace).rewards
    b = rollout(sim, policy, trace).rewards
    assert torch.equal(a, b)
    assert not torch.equal(a, rollout(sim, policy, sim.sample_trace(4, 50, seed=1)).rewards)


def test_evaluate_pairs_gaps_on_the_same_episodes():
    sim = oprl.make("inventory/one_store_backlog", lead_time=1)
    trace = sim.sample_trace(16, 300, seed=0)
    best, worse = BaseStock(sim, 12.0), BaseStock(sim, 16.0)
    ref = SolverResult("ref", 0.0, "optimal", "optimal", 0.1, policy=best)
    frame = evaluate(sim, trace, 100, [Entry("worse", worse, "heuristic")], [ref])
    assert list(frame.columns) == [*COLUMNS, "gap_stderr_pct"]
    rows = frame.set_index("policy")
    assert rows.loc["ref", "gap_pct"] == pytest.approx(0.0)
    r = rollout(sim, worse, trace).rewards
    q = rollout(sim, best, trace).rewards
    expected = 100 * ((-r[:, 100:].mean(1)) - (-q[:, 100:].mean(1))).mean() / (-q[:, 100:].mean(1)).mean()
    assert rows.loc["worse", "gap_pct"] == pytest.approx(float(expected), rel=1e-5)
    assert rows.loc["worse", "reference_kind"] == "optimal"


def test_evaluate_with_per_trace_bound_on_a_subset():
    sim = oprl.make("inventory/one_store_backlog", lead_time=1)
    trace = sim.sample_trace(8, 200, seed=0)
    bound = SolverResult("lp", 1.0, "lower_bound", "optimal", 0.0,
                         per_trace=torch.full((2,), 2.0), details={"episodes": [3, 5]})
    frame = evaluate(sim, trace, 50, [Entry("bs", BaseStock(sim, 12.0), "heuristic")], [bound])
    bs = frame.set_index("policy").loc["bs"]
    values = -rollout(sim, BaseStock(sim, 12.0), trace).rewards[:, 50:].mean(1)
    assert bs["gap_pct"] == pytest.approx(100 * (float(values[[3, 5]].mean()) - 2.0) / 2.0, rel=1e-5)


def test_choose_reference_prefers_a_solved_optimum_and_reports_failures():
    opt = SolverResult("dp", 1.0, "optimal", "converged", 0.0)
    lb = SolverResult("lp", 0.9, "lower_bound", "optimal", 0.0)
    failed = SolverResult("milp", 0.5, "optimal", "time_limit", 0.0)
    assert choose_reference([lb, opt]) is opt
    assert choose_reference([failed, lb]) is lb
    tight = SolverResult("pooled", 0.95, "lower_bound", "pooled newsvendor over 5 periods", 0.0)
    assert choose_reference([lb, tight]) is tight  # the tightest bound that did not fail
    infeasible = SolverResult("lp2", 0.99, "lower_bound", "infeasible", 0.0)
    assert choose_reference([lb, infeasible]) is lb


@pytest.mark.parametrize("status", [
    "time_limit", "maxTimeLimit", "maxIterations", "minStepLength", "Not Set", "Empty",
    "Bound on objective reached", "Target for objective reached", "objectiveLimit",
    "Iteration limit reached", "infeasibleOrUnbounded", "unknown", "error",
    "optimal; maxTimeLimit", "min-cost-flow status 3", "not converged (span 1e-02)", ""])
def test_choose_reference_never_returns_a_failed_result(status):
    failed = SolverResult("milp", 0.5, "optimal", status, 0.0)
    assert failed_status(status)
    assert choose_reference([failed]) is None  # no usable reference: no gaps, not wrong ones
    assert choose_reference([failed, failed]) is None
    lb = SolverResult("lp", 0.9, "lower_bound", "optimal", 0.0)
    assert choose_reference([failed, lb]) is lb


def test_choose_reference_skips_nan_objectives_and_expectation_only_bounds():
    nan = SolverResult("lp", math.nan, "upper_bound", "optimal", 0.0)
    assert choose_reference([nan]) is None
    fluid = SolverResult("fluid-lp", 5.0, "upper_bound", "fluid optimal (expected demand)", 0.0)
    flow = SolverResult("hindsight-flow", 9.0, "upper_bound", "optimal", 0.0)
    assert choose_reference([flow, fluid]) is flow  # tighter, yet not a per-trace bound
    assert choose_reference([fluid]) is None


def test_evaluate_without_a_usable_reference_reports_no_gaps():
    sim = oprl.make("inventory/one_store_backlog", lead_time=1)
    trace = sim.sample_trace(4, 60, seed=0)
    failed = SolverResult("milp", 1.0, "optimal", "maxTimeLimit", 0.0)
    frame = evaluate(sim, trace, 10, [Entry("bs", BaseStock(sim, 12.0), "heuristic")], [failed])
    assert (frame["reference"] == "").all() and frame["gap_pct"].isna().all()


def test_dispatch_fluid_lp_is_never_the_reference():
    from oprl.simulators.dispatch import manhattan
    from oprl.solvers.dispatch import references

    sim = manhattan(n_vehicles=25, requests=150, horizon=10, eval_horizon=10, candidates=4)
    refs = references(sim, sim.sample_trace(2, 10, seed=0), 0)
    assert [r.name for r in refs] == ["hindsight-flow", "fluid-lp"]
    cheap_fluid = SolverResult(refs[1].name, refs[0].objective - 1e6, refs[1].kind,
                               refs[1].status, 0.0)  # even a (spuriously) tighter one
    assert choose_reference([refs[0], cheap_fluid]) is refs[0]
    with pytest.raises(ValueError, match="kind"):
        SolverResult("x", 1.0, "guess", "ok", 0.0)


def test_atomic_write_leaves_nothing_half_written(tmp_path):
    target = tmp_path / "out.csv"
    atomic_write(target, lambda p: p.write_text("old"))

    def failing(p):
        p.write_text("partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, failing)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_run_dir_refuses_overwrite_and_foreign_resume(tmp_path):
    run = RunDir(tmp_path / "run")
    run.create({"scenario": "inventory/serial"}, resume=False)
    with pytest.raises(ValueError, match="already holds a run"):
        run.create({"scenario": "inventory/serial"}, resume=False)
    with pytest.raises(ValueError, match="holds a run of 'inventory/serial'"):
        run.create({"scenario": "inventory/one_store_lost"}, resume=True)
    with pytest.raises(ValueError, match="no run to resume"):
        RunDir(tmp_path / "other").create({"scenario": "x"}, resume=True)


def test_metric_table_is_a_dataframe_with_finite_numbers():
    sim = oprl.make("inventory/one_store_lost", lead_time=1)
    trace = sim.sample_trace(4, 100, seed=0)
    frame = evaluate(sim, trace, 20, [Entry("bs", BaseStock(sim, 11.0), "heuristic")])
    assert isinstance(frame, pd.DataFrame)
    assert math.isfinite(frame["mean"].iloc[0]) and frame["mean"].iloc[0] > 0


def test_evaluate_marks_an_optimal_policy_reference_exact_and_skips_mismatched_bounds():
    """An optimal reference with a policy shows its exact value beside the simulated mean; a
    second per-trace bound over other episodes than the policy rows gets a gap on its own
    episodes when the counts match and none (NaN) when they do not."""
    sim = oprl.make("inventory/one_store_backlog", lead_time=1)
    trace = sim.sample_trace(4, 60, seed=0)
    opt = SolverResult("opt", 7.25, "optimal", "optimal", 0.0, policy=BaseStock(sim, 12.0))
    frame = evaluate(sim, trace, 10, [], [opt]).set_index("policy")
    assert frame.loc["opt", "status"] == "optimal; exact 7.2500"
    lb = SolverResult("lp", 1.0, "lower_bound", "optimal", 0.0,
                      per_trace=torch.tensor([2.0, 4.0]), details={"episodes": [0, 1]})
    same = SolverResult("lp2", 0.5, "lower_bound", "optimal", 0.0,
                        per_trace=torch.tensor([1.0, 2.0]), details={"episodes": [0, 1]})
    other = SolverResult("lp3", 0.5, "lower_bound", "optimal", 0.0,
                         per_trace=torch.tensor([1.0, 2.0, 3.0]), details={"episodes": [0, 1, 2]})
    rows = evaluate(sim, trace, 10, [], [lb, same, other]).set_index("policy")
    assert rows.loc["lp", "reference"] == "lp"  # the tightest lower bound
    assert rows.loc["lp2", "gap_pct"] == pytest.approx(100 * (1.5 - 3.0) / 3.0)
    assert math.isnan(rows.loc["lp3", "gap_pct"])


def test_format_table_splits_the_main_metric_from_secondary_ones():
    base = {"scenario": "s", "kind": "heuristic", "stderr": 0.1, "reference": "", "status": "",
            "reference_kind": "", "gap_pct": float("nan"), "wall_s": 0.0,
            "gap_stderr_pct": float("nan")}
    frame = pd.DataFrame([{**base, "policy": "a", "metric": "cost", "mean": 1.0},
                          {**base, "policy": "b", "metric": "cost", "mean": 2.0},
                          {**base, "policy": "a", "metric": "served", "mean": 9.0}])
    main, secondary = format_table(frame).split("secondary metrics")
    assert "metric: cost" in main and " b " in main and "9.0000" not in main
    assert "served" in secondary and "cost" not in secondary and "9" in secondary


def test_evaluate_gaps_against_a_scalar_bound():
    """A reference with only an objective (no policy, no per-episode values): the gap is the
    policy's mean against that number, signed so that above a lower bound is positive."""
    sim = oprl.make("inventory/one_store_backlog", lead_time=1)
    trace = sim.sample_trace(8, 200, seed=0)
    bound = SolverResult("bound", 2.5, "lower_bound", "optimal", 0.0)
    frame = evaluate(sim, trace, 50, [Entry("bs", BaseStock(sim, 12.0), "heuristic")], [bound])
    rows = frame.set_index("policy")
    mean = float(-rollout(sim, BaseStock(sim, 12.0), trace).rewards[:, 50:].mean(1).mean())
    assert rows.loc["bs", "gap_pct"] == pytest.approx(100 * (mean - 2.5) / 2.5, rel=1e-5)
    assert rows.loc["bs", "reference_kind"] == "lower_bound"
    assert math.isnan(rows.loc["bs", "gap_stderr_pct"])  # nothing to pair episodes with
