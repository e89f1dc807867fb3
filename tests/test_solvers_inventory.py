"""Inventory solvers against published optima, brute-force simulation and each other."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from oprl.core import Trace, rollout
from oprl.policies.inventory_heuristics import evaluate_levels, newsvendor_levels
from oprl.simulators import inventory as inv
from oprl.simulators.inventory_rules import BaseStock, EchelonBaseStock
from oprl.solvers.inventory import (
    balanced_allocation_bound,
    base_stock_optimum,
    decoupled_base_stock_bound,
    echelon_base_stock_optimum,
    lost_sales_dp,
    perfect_information_lp,
    pooled_newsvendor_bound,
    references,
)


def _simulate(sim, policy, trace: Trace, warmup: int) -> torch.Tensor:
    with torch.no_grad():
        result = rollout(sim, policy, trace)
    return sim.cost_per_store_period(result.rewards, warmup)


def _mean_se(costs: torch.Tensor) -> tuple[float, float]:
    return float(costs.mean()), float(costs.std() / costs.numel() ** 0.5)


# -- base-stock ------------------------------------------------------------------------------


def test_base_stock_optimum_matches_brute_force_search():
    sim = inv.one_store_backlog(lead_time=1, penalty=9.0)
    res = base_stock_optimum(sim)
    assert res.kind == "optimal"
    trace = sim.sample_trace(32, 1500, seed=3)
    levels = res.details["level"] + torch.linspace(-2.0, 2.0, 9)
    costs = evaluate_levels(sim, lambda lv: BaseStock(sim, lv), levels[:, None], trace, 200)
    assert abs(float(levels[int(costs.argmin())]) - res.details["level"]) <= 0.51
    sim_cost, se = _mean_se(_simulate(sim, res.policy, trace, 200))
    assert abs(sim_cost - res.objective) <= 3 * se + 0.01 * res.objective
    assert float(costs.min()) >= res.objective - 3 * se - 0.01 * res.objective


def test_serial_chain_of_one_equals_base_stock():
    one = echelon_base_stock_optimum(inv.serial(holding=(1.0,), lead_times=[4], std=1.6))
    ref = base_stock_optimum(inv.one_store_backlog(lead_time=4))
    assert one.objective == pytest.approx(ref.objective, rel=1e-3)
    assert one.details["levels"][0] == pytest.approx(ref.details["level"], abs=0.05)


# -- lost-sales DP ---------------------------------------------------------------------------


@pytest.mark.parametrize("penalty,zipkin", [(4.0, 4.73), (9.0, 6.84)])
def test_lost_sales_dp_reproduces_zipkin_lead_time_4(penalty, zipkin):
    res = lost_sales_dp(inv.one_store_lost(lead_time=4, penalty=penalty))
    assert res.kind == "optimal" and res.status.startswith("converged")
    assert res.objective == pytest.approx(zipkin, rel=0.005)
    assert not res.details["cap_binding"]


def test_lost_sales_dp_policy_simulates_to_its_value():
    sim = inv.one_store_lost(lead_time=2, penalty=9.0)
    res = lost_sales_dp(sim)
    trace = sim.sample_trace(64, 2500, seed=11)
    sim_cost, se = _mean_se(_simulate(sim, res.policy, trace, 500))
    assert abs(sim_cost - res.objective) <= 3.5 * se
    # and no base-stock level does better on the same trace (DP optimal over all policies)
    levels = torch.arange(10.0, 22.0)[:, None]
    costs = evaluate_levels(sim, lambda lv: BaseStock(sim, lv), levels, trace, 500)
    assert float(costs.min()) >= sim_cost - 3 * se


def test_lost_sales_dp_rejects_backlog():
    # lead time 0 is the newsvendor closed form (tests/test_bad_input.py checks its answer)
    with pytest.raises(ValueError, match="lost-sales"):
        lost_sales_dp(inv.one_store_backlog())


# -- serial ----------------------------------------------------------------------------------


def test_echelon_optimum_matches_simulation():
    sim = inv.serial(store_lead_time=1, penalty=9.0)
    res = echelon_base_stock_optimum(sim)
    assert res.kind == "optimal"
    levels = res.details["levels"]
    assert levels == sorted(levels, reverse=True)  # echelon levels grow upstream
    # the optimum and 8 perturbations (+-3 on each level) in one batched rollout, paired traces
    cands = torch.tensor(levels).repeat(9, 1)
    for k in range(4):
        cands[1 + 2 * k, k] += 3.0
        cands[2 + 2 * k, k] -= 3.0
    batch = 40
    trace = sim.sample_trace(batch, 600, seed=5)
    tiled = Trace({"demand": trace["demand"].repeat(9, 1, 1)})
    policy = EchelonBaseStock(sim, cands.repeat_interleave(batch, dim=0))
    costs = _simulate(sim, policy, tiled, 150).view(9, batch)
    sim_cost, se = _mean_se(costs[0])
    assert abs(sim_cost - res.objective) <= 3.5 * se + 0.005 * res.objective
    assert float(costs[1:].mean(1).min()) >= sim_cost - 0.005 * sim_cost


# -- transshipment ---------------------------------------------------------------------------


def test_pooled_bound_below_base_stock_and_correlation_raises_it():
    sim = inv.transshipment(n_stores=3, store_lead_time=2, correlation=0.5)
    bound = pooled_newsvendor_bound(sim)
    assert bound.kind == "lower_bound" and bound.details["periods"] == 6
    trace = sim.sample_trace(16, 1200, seed=2)
    base = newsvendor_levels(sim)
    cands = base.repeat(7, 1)
    cands[:, 1:] += torch.linspace(-3, 3, 7)[:, None]  # a small search over the store levels
    costs = evaluate_levels(sim, lambda lv: BaseStock(sim, lv), cands, trace, 200)
    assert bound.objective <= float(costs.min())
    indep = pooled_newsvendor_bound(inv.transshipment(n_stores=3, store_lead_time=2))
    assert indep.objective < bound.objective


def test_pooled_bound_matches_normal_formula_when_clipping_is_negligible():
    from scipy.stats import norm

    sim = inv.transshipment(n_stores=4, store_lead_time=2, correlation=0.5, mean=20.0, std=2.0)
    res = pooled_newsvendor_bound(sim)
    sd = 2.0 * (6 * 4 * (1 + 3 * 0.5)) ** 0.5  # S sigma^2 (1 + (S-1) rho) per period, 6 periods
    closed = (9.0 + 1.0) * sd * norm.pdf(norm.ppf(0.9)) / 4
    assert res.objective == pytest.approx(closed, rel=2e-3)


def test_balanced_bound_is_the_pooled_newsvendor_for_one_store():
    # one store: moving stock between stores is no relaxation, both bounds are the same
    # single-location newsvendor over L_w + L_s + 1 periods (L_w = 0 counts as 1)
    for lw in (0, 3):
        sim = inv.transshipment(n_stores=1, store_lead_time=2, warehouse_lead_time=lw)
        pooled, balanced = pooled_newsvendor_bound(sim), balanced_allocation_bound(sim)
        assert balanced.objective == pytest.approx(pooled.objective, rel=1e-4)


@pytest.mark.parametrize("rho", [0.0, 0.5])
def test_balanced_bound_tightens_both_bounds_and_no_echelon_policy_beats_it(rho):
    sim = inv.transshipment(n_stores=3, store_lead_time=2, correlation=rho, penalty=9.0)
    bound = balanced_allocation_bound(sim)
    assert bound.kind == "lower_bound"
    assert bound.objective > pooled_newsvendor_bound(sim).objective
    assert bound.objective > decoupled_base_stock_bound(sim).objective
    # echelon base-stock at the bound's system level, store levels on a grid: the best
    # of them comes within 2% of the bound and none goes below it
    trace = sim.sample_trace(48, 1000, seed=5)
    cands = torch.tensor([[bound.details["system_level"]] + [s] * 3
                          for s in (18.0, 19.0, 20.0, 21.0, 22.0)])
    costs = evaluate_levels(sim, lambda lv: EchelonBaseStock(sim, lv), cands, trace, 200)
    assert float(costs.min()) >= bound.objective
    assert float(costs.min()) <= 1.02 * bound.objective


def test_balanced_bound_is_the_transshipment_reference_and_refuses_unequal_stores():
    sim = inv.transshipment(n_stores=3, store_lead_time=2)
    names = [r.name for r in references(sim, sim.sample_trace(2, 10, seed=0), 2)]
    assert "balanced_allocation_bound" in names
    with pytest.raises(ValueError, match="identical stores"):
        balanced_allocation_bound(inv.transshipment(n_stores=2, penalty=torch.tensor([4.0, 9.0])))


# -- perfect-information LP -------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["highs", "glop"])
def test_lp_hand_checkable_deterministic_demand(backend):
    # lost sales, L=2, start empty: the first two periods' demand (5 each) is lost, then
    # orders placed with hindsight match demand exactly: cost 9 * 10 over 20 periods
    lost = inv.one_store_lost(lead_time=2, penalty=9.0)
    trace = Trace({"demand": torch.full((2, 20, 1), 5.0)})
    res = perfect_information_lp(lost, trace, 0, backend=backend)
    assert res.status == "optimal" and res.kind == "lower_bound"
    assert res.per_trace.tolist() == pytest.approx([4.5, 4.5], abs=1e-7)
    # backlog, L=1: period 0 is backlogged (5 units at p=9), then nothing: 45 / 10
    back = inv.one_store_backlog(lead_time=1, penalty=9.0)
    res = perfect_information_lp(back, Trace({"demand": torch.full((1, 10, 1), 5.0)}), 0,
                                 backend=backend)
    assert res.objective == pytest.approx(4.5, abs=1e-7)
    # counting from period 2 on, hindsight ordering costs nothing
    assert perfect_information_lp(lost, trace, 2, backend=backend).objective == pytest.approx(
        0.0, abs=1e-7)


def test_lp_reference_pairs_on_its_episodes_only_over_the_same_periods(monkeypatch):
    import oprl.solvers.inventory as solvers_inventory
    from oprl.evaluate import Entry, evaluate

    sim = inv.many_warehouses(n_warehouses=2, n_stores=3, instance_seed=1)
    trace = sim.sample_trace(6, 40, seed=4)
    lp = references(sim, trace, 5)[0]
    assert lp.details["episodes"] == [0, 1, 2, 3] and lp.details["paired"]
    policy = BaseStock(sim, newsvendor_levels(sim))
    frame = evaluate(sim, trace, 5, [Entry("bs", policy, "heuristic")], [lp])
    row = frame[(frame["policy"] == "bs") & (frame["metric"] == sim.metric.name)].iloc[0]
    costs = _simulate(sim, policy, trace, 5).double()[:4]
    expected = 100 * float((costs - lp.per_trace).mean() / lp.per_trace.mean())
    assert row["gap_pct"] == pytest.approx(expected, rel=1e-6)
    # an LP over the first periods only is not paired with the whole evaluation window
    monkeypatch.setattr(solvers_inventory, "LP_PERIODS", 30)
    windowed = references(sim, trace, 5)[0]
    assert windowed.per_trace is None and not windowed.details["paired"]


def hindsight_cost(sim, demand: np.ndarray, warmup: int) -> float:
    """The perfect-information optimum of one trace ``demand`` ``[T, S]``, written from the
    simulator's period order with OR-Tools' modelling API (GLOP), independently of the solver
    module: on-hand stock is never a variable but the running sum of what came in minus what
    went out. Each period: internal sources ship from their start-of-period stock (a
    transshipment centre ships all of it), zero-lead shipments land at once, stores meet
    demand (lost: sales <= demand and stock; backlog: net stock may go negative), holding is
    paid on the end-of-period stock (positive part at a backlogged store), the penalty on the
    shortfall (lost) or backlog, the order cost on shipments; shipments with lead L >= 1 land
    at the end of period t + L - 1. Costs count from ``warmup``."""
    from ortools.linear_solver import pywraplp

    p, net = sim.params, sim.network
    lead = [int(v) for v in p.lead_time]
    hold, pen, ocost = (np.asarray(p.holding, float), np.asarray(p.penalty, float),
                        np.asarray(p.order_cost, float))
    init = np.zeros(net.n_nodes) if p.initial_onhand is None else np.asarray(p.initial_onhand)
    stores = {node: i for i, node in enumerate(net.stores)}
    horizon = demand.shape[0]
    lp = pywraplp.Solver.CreateSolver("GLOP")
    ship = [[lp.NumVar(0, lp.infinity(), f"q{t}_{k}") for k in range(net.n_edges)]
            for t in range(horizon)]
    sales = {(t, s): lp.NumVar(0, float(demand[t, s]), f"s{t}_{s}")
             for t in range(horizon) for s in stores.values()} if p.lost_sales else {}
    cost = []
    stock = {n: float(init[n]) for n in range(net.n_nodes)}  # a linear expression per node
    for t in range(horizon):
        for n in range(net.n_nodes):
            out = [ship[t][k] for k, (src, _) in enumerate(net.edges) if src == n]
            if out and net.kinds[n] == "transship":
                lp.Add(sum(out) == stock[n])
            elif out:
                lp.Add(sum(out) <= stock[n])
            stock[n] = stock[n] - sum(out) + sum(
                ship[t][k] for k, (_, dst) in enumerate(net.edges) if dst == n and lead[k] == 0)
        for n, s in stores.items():
            if p.lost_sales:
                lp.Add(sales[t, s] <= stock[n])
                stock[n] = stock[n] - sales[t, s]
                short = float(demand[t, s]) - sales[t, s]
                held = stock[n]
            else:
                stock[n] = stock[n] - float(demand[t, s])
                held = lp.NumVar(0, lp.infinity(), "")  # >= positive part, >= 0
                short = lp.NumVar(0, lp.infinity(), "")  # >= backlog
                lp.Add(held >= stock[n])
                lp.Add(short >= -stock[n])
            if t >= warmup:
                cost += [hold[n] * held, pen[s] * short]
        if t >= warmup:
            cost += [hold[n] * stock[n] for n in range(net.n_nodes) if n not in stores]
            cost += [ocost[k] * ship[t][k] for k in range(net.n_edges)]
        for k, (_, dst) in enumerate(net.edges):
            if lead[k] >= 1 and t - lead[k] + 1 >= 0:
                stock[dst] = stock[dst] + ship[t - lead[k] + 1][k]
    lp.Minimize(sum(cost))
    assert lp.Solve() == lp.OPTIMAL
    return lp.Objective().Value()


@pytest.mark.parametrize("make", [
    lambda: inv.many_warehouses(n_warehouses=2, n_stores=3, instance_seed=1),
    lambda: inv.many_warehouses(n_warehouses=3, n_stores=2, links_per_store=3, instance_seed=5),
    lambda: inv.one_warehouse(n_stores=2, instance_seed=4, warehouse_lead_time=0),
    lambda: inv.transshipment(n_stores=2, store_lead_time=0, warehouse_lead_time=1),
    lambda: inv.serial(store_lead_time=1, lead_times=[0, 2, 1, 1]),
    lambda: inv.one_store_backlog(lead_time=2, initial_onhand=[7.0]),
])
def test_lp_matches_an_independent_model_on_small_networks(make):
    """The solver's HiGHS LP against `hindsight_cost` (GLOP, separately written) on two
    traces of 12 periods, costs from period 2."""
    sim = make()
    trace = sim.sample_trace(2, 12, seed=4)
    res = perfect_information_lp(sim, trace, 2)
    assert res.status == "optimal"
    demand = trace["demand"].double().numpy()
    counted = len(sim.network.stores) * 10
    expected = [hindsight_cost(sim, demand[i], 2) / counted for i in range(2)]
    assert res.per_trace.tolist() == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_lp_bounds_simulated_policies():
    sim = inv.one_warehouse(n_stores=3, instance_seed=2)
    trace = sim.sample_trace(3, 50, seed=7)
    lp = perfect_information_lp(sim, trace, 0)
    for scale in (0.6, 1.0, 1.5):
        policy = BaseStock(sim, newsvendor_levels(sim) * scale)
        costs = _simulate(sim, policy, trace, 0).double()
        assert (lp.per_trace <= costs + 1e-5).all()


def test_lp_rejects_per_sample_parameters_and_bad_warmup():
    sim = inv.one_store_lost(lead_time=torch.tensor([[1], [2]]))
    trace = sim.sample_trace(2, 10, seed=0)
    with pytest.raises(ValueError, match="per-sample lead_time"):
        perfect_information_lp(sim, trace, 0)
    with pytest.raises(ValueError, match="warmup"):
        perfect_information_lp(inv.one_store_lost(), trace, 10)


# -- dispatch and bad input ------------------------------------------------------------------


def test_references_dispatch_and_wrong_scenarios():
    sim = inv.one_store_backlog(lead_time=2)
    trace = sim.sample_trace(2, 50, seed=0)
    (res,) = references(sim, trace, 10)
    assert res.name == "base_stock_optimum" and res.kind == "optimal"
    wh = inv.one_warehouse(n_stores=2)
    lp, decoupled = references(wh, wh.sample_trace(6, 30, seed=0), 5)
    assert lp.kind == "lower_bound" and lp.per_trace.shape == (4,) and "subset" in lp.details
    assert decoupled.kind == "lower_bound" and decoupled.objective > 0
    with pytest.raises(ValueError, match="single store"):
        base_stock_optimum(inv.serial())
    with pytest.raises(ValueError, match="serial"):
        echelon_base_stock_optimum(inv.transshipment())
    with pytest.raises(ValueError, match="transshipment"):
        pooled_newsvendor_bound(inv.one_warehouse(n_stores=2))
    with pytest.raises(ValueError, match="normal"):
        base_stock_optimum(_poisson_backlog())
    custom = inv.one_store_backlog()
    object.__setattr__(custom, "name", "inventory/custom")
    with pytest.raises(ValueError, match="no inventory reference"):
        references(custom, trace, 10)


def _poisson_backlog() -> inv.InventorySimulator:
    params = inv.InventoryParams(
        network=inv.Network(("store",), ((inv.SUPPLIER, 0),)),
        demand=inv.Demand("poisson", torch.tensor([5.0])),
        lead_time=1, holding=1.0, penalty=9.0, order_cost=0.0,
    )
    return inv.InventorySimulator(params)


def test_decoupled_bound_matches_monte_carlo_newsvendor_and_bounds_heuristics():
    from oprl.policies.inventory_heuristics import evaluate_levels, newsvendor_levels
    from oprl.simulators.inventory_rules import BaseStock
    from oprl.solvers.inventory import _clipped_normal_newsvendor, decoupled_newsvendor_bound

    gen = torch.Generator().manual_seed(0)
    d = (5 + 2 * torch.randn(400_000, generator=gen, dtype=torch.float64)).clamp_min(0)
    levels = torch.linspace(4, 9, 101, dtype=torch.float64)
    costs = [float((1 * (s - d).clamp_min(0) + 9 * (d - s).clamp_min(0)).mean()) for s in levels]
    assert _clipped_normal_newsvendor(5.0, 2.0, 1.0, 9.0) == pytest.approx(min(costs), rel=6e-3)
    # a heavily clipped demand: P(D = 0) matters
    d = (0.5 + 2 * torch.randn(400_000, generator=gen, dtype=torch.float64)).clamp_min(0)
    levels = torch.linspace(0, 5, 201, dtype=torch.float64)
    costs = [float((1 * (s - d).clamp_min(0) + 4 * (d - s).clamp_min(0)).mean()) for s in levels]
    assert _clipped_normal_newsvendor(0.5, 2.0, 1.0, 4.0) == pytest.approx(min(costs), rel=6e-3)
    wh = inv.one_warehouse(n_stores=3)
    bound = decoupled_newsvendor_bound(wh).objective
    trace = wh.sample_trace(16, 300, seed=1)
    simulated = evaluate_levels(wh, lambda lv: BaseStock(wh, lv), newsvendor_levels(wh)[None], trace, 100)
    assert bound < float(simulated)


def lost_sales_lead_one_lp(mean: float, holding: float, penalty: float, cap: int = 30) -> float:
    """Average-cost optimum of the lost-sales store with lead time 1, by a second method: the
    linear program over stationary state-action frequencies mu(x, q) (x: on hand after the
    arrival, q: the order, arriving next period). Period order as in the simulator: demand D
    is met from x, h per unit left and p per unit short, next x = (x - D)^+ + q. Positions
    x + q are capped at ``cap`` (far above anything optimal for Poisson(5))."""
    from scipy.optimize import linprog

    d = np.arange(cap + 1)
    pmf = np.array([math.exp(-mean) * mean**k / math.factorial(k) for k in d])
    pairs = [(x, q) for x in range(cap + 1) for q in range(cap + 1 - x)]
    cost, balance = [], np.zeros((cap + 1, len(pairs)))
    for col, (x, q) in enumerate(pairs):
        left = np.clip(x - d, 0, None)  # (x - D)^+ for D = 0..cap, D > cap leaves nothing
        tail = 1.0 - pmf[: x + 1].sum()  # P(D > x) beyond the table is folded into left = 0
        short = mean - x + float((left * pmf).sum())  # E(D - x)^+ = E D - x + E(x - D)^+
        cost.append(holding * float((left * pmf).sum()) + penalty * short)
        np.add.at(balance[:, col], left[: x + 1] + q, pmf[: x + 1])
        balance[q, col] += tail
        balance[x, col] -= 1.0
    a_eq = np.vstack([balance, np.ones(len(pairs))])
    b_eq = np.append(np.zeros(cap + 1), 1.0)
    res = linprog(cost, A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    assert res.status == 0
    return float(res.fun)


def test_lost_sales_dp_at_lead_time_one_matches_the_occupancy_lp_and_simulates_to_its_value():
    """Relative value iteration against the state-action frequency LP (5.44 in Zipkin 2008,
    Table 1, p = 9, L = 1), then the DP's policy simulated."""
    sim = inv.one_store_lost(lead_time=1, penalty=9.0)
    res = lost_sales_dp(sim)
    assert res.kind == "optimal"
    assert res.objective == pytest.approx(lost_sales_lead_one_lp(5.0, 1.0, 9.0), abs=1e-5)
    assert res.objective == pytest.approx(5.44, abs=0.005)
    trace = sim.sample_trace(64, 1500, seed=3)
    with torch.no_grad():
        cost = sim.episode_metric(rollout(sim, res.policy, trace).rewards, 300)
    assert float(cost.mean()) == pytest.approx(res.objective, abs=4 * float(cost.std()) / 8 + 0.02)


def test_decoupled_base_stock_bound_is_valid_and_exact_for_one_store():
    from oprl.solvers.inventory import decoupled_base_stock_bound

    one = inv.one_store_backlog(lead_time=3, penalty=9.0)
    assert decoupled_base_stock_bound(one).objective == pytest.approx(
        base_stock_optimum(one).objective, rel=1e-6)
    sim = inv.transshipment(n_stores=3, store_lead_time=2, penalty=9.0)
    bound = decoupled_base_stock_bound(sim).objective
    assert bound > pooled_newsvendor_bound(sim).objective  # tighter here
    trace = sim.sample_trace(32, 400, seed=2)
    echelon = EchelonBaseStock(sim, torch.tensor([40.0, 18.0, 18.0, 18.0]))
    with torch.no_grad():
        cost = sim.episode_metric(rollout(sim, echelon, trace).rewards, 100).mean()
    assert bound < float(cost)
