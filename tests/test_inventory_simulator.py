"""Behaviour tests of the batched inventory simulator: stock conservation and feasibility under
random (also huge, zero and negative) orders, per-sample parameters, hand-computed costs,
validation of bad input, pathwise gradients, and the real-data scenario."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from oprl.core import Observation, Trace, rollout
from oprl.simulators import inventory as inv
from oprl.simulators.inventory import SUPPLIER, Demand, InventoryParams, InventorySimulator, Network
from oprl.simulators.inventory_data import real_data

DATA = Path(__file__).parent / "data" / "tiny_demand.csv"


# -- helpers ------------------------------------------------------------------------------------


def order_up_to(sim: InventorySimulator, levels: Tensor):
    """Order up to ``levels`` on each destination's position, split over its inbound edges."""
    dst = torch.tensor([d for _, d in sim.network.edges])
    share = torch.tensor([1.0 / len(sim.network.inbound(d)) for _, d in sim.network.edges])

    def policy(obs: Observation) -> Tensor:
        nodes = obs["nodes"][:, :-1]
        position = nodes[..., 0] + nodes[..., 1 : 1 + sim.slots].sum(-1)
        return (levels - position).clamp_min(0.0)[:, dst] * share

    return policy


def single_store(lead_time: int, lost_sales: bool, order_cost: float = 0.0,
                 initial: float = 0.0) -> InventorySimulator:
    """One store, h=1, p=9; demand comes from hand-written traces."""
    return InventorySimulator(InventoryParams(
        network=Network(("store",), ((SUPPLIER, 0),)),
        demand=Demand("normal", torch.tensor([5.0]), torch.tensor([1.0])),
        lead_time=lead_time, holding=1.0, penalty=9.0, order_cost=order_cost,
        lost_sales=lost_sales, initial_onhand=[initial],
    ))


def demand_trace(*rows: list[float]) -> Trace:
    """A trace ``[len(rows), horizon, stores]`` from per-episode lists of per-period demands
    (a number per period for one store, or a list per period for several)."""
    t = torch.tensor(rows, dtype=torch.float32)
    return Trace({"demand": t.unsqueeze(-1) if t.dim() == 2 else t})


def constant_orders(sim: InventorySimulator, trace: Trace, orders: list[float]) -> Tensor:
    """Per-period costs ``[batch, horizon]`` of ordering ``orders`` (one per edge) every period."""
    action = torch.tensor([orders]).expand(trace.batch, -1)
    return -rollout(sim, lambda obs: action, trace).rewards


# -- invariants under random orders ---------------------------------------------------------------


def _small_sim(kind: str, leads: list[int], initial: float) -> InventorySimulator:
    common = {"initial_onhand": initial}
    if kind == "one_store_backlog":
        return inv.one_store_backlog(lead_time=leads[0], **common)
    if kind == "one_store_lost":
        return inv.one_store_lost(lead_time=leads[0], **common)
    if kind == "serial":
        return inv.serial(lead_times=leads[:4], **common)
    if kind == "transshipment":
        return inv.transshipment(n_stores=2, warehouse_lead_time=leads[0],
                                 store_lead_time=leads[1], **common)
    if kind == "one_warehouse":
        return inv.one_warehouse(n_stores=2, warehouse_lead_time=leads[0], **common)
    sim = inv.many_warehouses(n_warehouses=2, n_stores=3, **common)
    lead = torch.tensor((leads * 4)[: sim.network.n_edges])
    return InventorySimulator(dataclasses.replace(sim.params, lead_time=lead))


def _random_actions(shape: tuple[int, ...], seed: int, huge: float) -> Tensor:
    """A mix of zero, negative, moderate and huge orders."""
    g = torch.Generator().manual_seed(seed)
    mode = torch.randint(4, shape, generator=g)
    moderate = 15.0 * torch.rand(shape, generator=g)
    return torch.where(mode == 0, 0.0, torch.where(mode == 1, -3.0, torch.where(
        mode == 2, moderate, torch.full(shape, huge))))


def _stock(state: dict[str, Tensor]) -> Tensor:
    """Everything in the network: net on-hand everywhere plus all pipelines ``[B]``."""
    return state["onhand"].sum(-1) + state["pipeline"].sum((0, -1))  # pipeline [slots, B, E]


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(["one_store_backlog", "one_store_lost", "serial", "transshipment",
                          "one_warehouse", "many_warehouses"]),
    leads=st.lists(st.integers(0, 3), min_size=4, max_size=4),
    initial=st.sampled_from([0.0, 7.5, 40.0]),
    batch=st.integers(1, 3),
    horizon=st.integers(1, 10),
    seed=st.integers(0, 10_000),
    huge=st.sampled_from([50.0, 1e6]),
)
def test_conservation_and_feasibility_under_random_orders(
    kind: str, leads: list[int], initial: float, batch: int, horizon: int, seed: int, huge: float
) -> None:
    sim = _small_sim(kind, leads, initial)
    lost = sim.params.lost_sales
    trace = sim.sample_trace(batch, horizon, seed=seed)
    actions = _random_actions((horizon, batch, sim.network.n_edges), seed, huge)
    src = sim.edge_src
    from_supplier = src == SUPPLIER
    internal_nodes = [n for n in range(sim.network.n_nodes) if sim.network.kinds[n] != "store"]
    state = sim.reset(trace)
    for t in range(horizon):
        action = actions[t]
        before = _stock(state)
        scale = 1.0 + before.abs().max() + action.clamp_min(0).sum(-1).max()
        tol = 1e-5 * scale
        idx = sim._indices(torch.device("cpu"))
        ship, shipped = sim._feasible(action.clamp_min(0.0), state["onhand"], idx)
        # shipments: non-negative, supplier ships as ordered, a source never ships more than it
        # had on hand; a transshipment centre ships exactly what it had
        assert (ship >= 0).all()
        assert torch.equal(ship[:, from_supplier], action.clamp_min(0.0)[:, from_supplier])
        for node in internal_nodes:
            out = ship[:, src == node].sum(-1)
            had = state["onhand"][:, node].clamp_min(0.0)
            assert (out <= had + tol).all()
            # the per-source total the on-hand update uses is the shipments' own sum
            k = idx.source_nodes.tolist().index(node)
            torch.testing.assert_close(shipped[:, k], out, rtol=1e-5, atol=float(tol))
            if sim.network.kinds[node] == "transship":
                torch.testing.assert_close(out, had, rtol=1e-5, atol=float(tol))
        state, reward, info = sim.step(state, action, t, trace)
        torch.testing.assert_close(info["shipped"], ship.sum(-1), rtol=1e-5, atol=float(tol))
        # conservation: the network gains what the supplier ships; it loses sales (lost sales)
        # or demand (backlog: on-hand is net, so backlogged demand is already subtracted)
        leaves = info["sales"] if lost else info["demand"]
        expected = before + ship[:, from_supplier].sum(-1) - leaves
        torch.testing.assert_close(_stock(state), expected, rtol=1e-5, atol=float(tol))
        # non-negativity: lost-sales stock and all upstream stock; pipelines
        onhand = state["onhand"]
        if lost:
            assert (onhand >= -tol).all()
        else:
            assert (onhand[:, internal_nodes] >= -tol[..., None]).all()
        assert (state["pipeline"] >= 0).all()
        # the running total the observation reads is the pipeline's sum
        torch.testing.assert_close(state["in_transit"], state["pipeline"].sum(0),
                                   rtol=1e-5, atol=float(tol.max()))
        # costs and service metrics
        parts = info["holding_cost"] + info["underage_cost"] + info["ordering_cost"]
        for name in ("cost", "holding_cost", "underage_cost", "ordering_cost", "shortfall"):
            assert (info[name] >= 0).all(), name
        torch.testing.assert_close(-reward, parts)
        assert (info["sales"] <= info["demand"] + 1e-4).all()
        if lost:
            torch.testing.assert_close(info["sales"] + info["shortfall"], info["demand"])
        else:  # the penalty is charged on the whole backlog (arrivals at period end only cut it)
            backlog = (-onhand[:, sim.stores]).clamp_min(0.0).sum(-1)
            assert (info["shortfall"] >= backlog - tol).all()


# -- per-sample parameters -------------------------------------------------------------------------


def _row(value: Tensor, b: int) -> Tensor:
    return value[b] if value.dim() == 2 else value


@pytest.mark.parametrize("which", ["lead_time", "costs", "both"])
def test_per_sample_parameters_equal_separate_runs(which: str) -> None:
    base = inv.serial(initial_onhand=[10.0, 5.0, 5.0, 5.0])
    changes: dict[str, Tensor] = {}
    if which in ("lead_time", "both"):
        changes["lead_time"] = torch.tensor([[2, 4, 3, 1], [0, 0, 0, 0], [1, 2, 0, 3]])
    if which in ("costs", "both"):
        changes["holding"] = torch.tensor([[0.1, 0.2, 0.5, 1.0], [0.0, 0.0, 1.0, 2.0],
                                           [1.0, 1.0, 1.0, 1.0]])
        changes["penalty"] = torch.tensor([[9.0], [4.0], [39.0]])
        changes["order_cost"] = torch.tensor([[0.0] * 4, [0.1, 0.2, 0.3, 0.4], [1.0] * 4])
        changes["initial_onhand"] = torch.tensor([[0.0] * 4, [20.0, 0, 0, 3], [1.0] * 4])
    batched = InventorySimulator(dataclasses.replace(base.params, **changes))
    trace = batched.sample_trace(3, 30, seed=11)
    levels = torch.tensor([25.0, 20.0, 18.0, 14.0])
    together = -rollout(batched, order_up_to(batched, levels), trace).rewards
    for b in range(3):
        one = {k: _row(v, b) for k, v in changes.items()}
        sim = InventorySimulator(dataclasses.replace(base.params, **one))
        alone = -rollout(sim, order_up_to(sim, levels), trace.select(slice(b, b + 1))).rewards
        torch.testing.assert_close(together[b : b + 1], alone)


def test_lead_time_zero_lands_before_demand() -> None:
    trace = demand_trace([4.0, 4.0, 4.0])
    instant = constant_orders(single_store(0, lost_sales=True), trace, [4.0])
    delayed = constant_orders(single_store(1, lost_sales=True), trace, [4.0])
    assert instant.tolist() == [[0.0, 0.0, 0.0]]  # every order meets its own period's demand
    assert delayed.tolist() == [[36.0, 0.0, 0.0]]  # the first order arrives one period late


# -- hand-computed costs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lead_time", "lost_sales", "order_cost", "initial", "demand", "expected"),
    [
        # L=1, start with 3, order 5 each period at 0.5/unit:
        # on hand 3-2=1 (h 1), 6-6=0, 5-5=0, 5-3=2 (h 2), 7-8=-1 (p 9); plus 2.5 ordering each
        (1, False, 0.5, 3.0, [2, 6, 5, 3, 8], [3.5, 2.5, 2.5, 4.5, 11.5]),
        (1, True, 0.5, 3.0, [2, 6, 5, 3, 8], [3.5, 2.5, 2.5, 4.5, 11.5]),
        # L=0: the order lands before demand: 3+5-2=6, 6+5-6=5, 5, 7, 7+5-8=4
        (0, False, 0.5, 3.0, [2, 6, 5, 3, 8], [8.5, 7.5, 7.5, 9.5, 6.5]),
        # L=2 backlog: the backlog -6, -12, -13, -14 is charged 9 per unit in every period
        (2, False, 0.0, 0.0, [6, 6, 6, 6], [54.0, 108.0, 117.0, 126.0]),
        # L=2 lost sales: 6 lost, 6 lost, then 5 arrive each period and 1 is lost
        (2, True, 0.0, 0.0, [6, 6, 6, 6], [54.0, 54.0, 9.0, 9.0]),
    ],
)
def test_constant_order_hand_computed_costs(
    lead_time: int, lost_sales: bool, order_cost: float, initial: float, demand: list[float],
    expected: list[float],
) -> None:
    sim = single_store(lead_time, lost_sales, order_cost, initial)
    costs = constant_orders(sim, demand_trace([float(d) for d in demand]), [5.0])
    torch.testing.assert_close(costs, torch.tensor([expected]))


def test_short_warehouse_ships_proportionally_hand_computed() -> None:
    # warehouse holds 6; stores order 6 and 3 (lead time 0) -> ship 4 and 2; demand 5 and 1:
    # store 1 sells 4 and loses 1 (p 10), store 2 keeps 1 (h 1); warehouse ends with 0
    sim = InventorySimulator(InventoryParams(
        network=Network(("warehouse", "store", "store"), ((SUPPLIER, 0), (0, 1), (0, 2))),
        demand=Demand("normal", torch.tensor([5.0, 1.0]), torch.tensor([1.0, 1.0])),
        lead_time=[1, 0, 0], holding=[0.5, 1.0, 1.0], penalty=10.0, order_cost=0.0,
        lost_sales=True, initial_onhand=[6.0, 0.0, 0.0],
    ))
    trace = demand_trace([[5.0, 1.0]])
    state, reward, info = sim.step(sim.reset(trace), torch.tensor([[0.0, 6.0, 3.0]]), 0, trace)
    assert -reward.item() == pytest.approx(11.0)
    assert state["onhand"].tolist() == [[0.0, 0.0, 1.0]]
    assert info["shipped"].item() == pytest.approx(6.0)


@pytest.mark.parametrize(("orders", "expected"), [([1.0, 2.0], [2.0, 4.0]), ([0.0, 0.0], [3.0, 3.0])])
def test_transshipment_centre_forwards_all_stock(orders: list[float], expected: list[float]) -> None:
    sim = inv.transshipment(n_stores=2, store_lead_time=0, initial_onhand=[6.0, 0.0, 0.0])
    trace = demand_trace([[0.0, 0.0]])
    state, _, _ = sim.step(sim.reset(trace), torch.tensor([[0.0, *orders]]), 0, trace)
    assert state["onhand"][0].tolist() == pytest.approx([0.0, *expected])


# -- validation --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: inv.one_store_backlog(lead_time=-1), "lead_time"),
        (lambda: inv.one_store_backlog(lead_time=1.5), "lead_time"),
        (lambda: inv.serial(lead_times=[1, 2, float("nan"), 1]), "lead_time"),
        (lambda: inv.one_store_backlog(penalty=-1.0), "penalty"),
        (lambda: inv.one_store_backlog(holding=float("nan")), "holding"),
        (lambda: inv.one_store_backlog(mean=float("nan")), "demand.mean"),
        (lambda: inv.one_store_backlog(initial_onhand=[-2.0]), "initial_onhand"),
        (lambda: Network(("warehouse", "warehouse", "store"),
                         ((SUPPLIER, 0), (0, 1), (1, 0), (1, 2))), "cycle"),
        (lambda: Network(("store", "store"), ((SUPPLIER, 0),)), "cannot be reached"),
        (lambda: Network(("store", "store"), ((SUPPLIER, 0), (0, 1))), "store 0 cannot ship"),
        (lambda: Network(("store", "factory"), ((SUPPLIER, 0), (SUPPLIER, 1))), "kind"),
        (lambda: Network(("warehouse", "store"), ((SUPPLIER, 0), (SUPPLIER, 1))), "no outgoing"),
        (lambda: Network(("warehouse", "store"), ((SUPPLIER, 0), (0, 1), (0, 1))), "duplicate"),
        (lambda: inv.transshipment(n_stores=0), "n_stores"),
        (lambda: real_data(None), "path"),
    ],
)
def test_bad_parameters_raise_value_error_naming_the_field(build, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    ("demand", "match"),
    [
        (torch.tensor([[[1.0], [float("nan")]]]), "trace.demand"),
        (torch.tensor([[[1.0], [-1.0]]]), "trace.demand"),
        (torch.ones(1, 2), "trace.demand"),  # [batch, horizon]: the store axis is missing
        (torch.ones(1, 2, 3), "trace.demand"),  # three stores for a one-store network
    ],
)
def test_bad_trace_raises(demand: Tensor, match: str) -> None:
    sim = inv.one_store_lost()
    with pytest.raises(ValueError, match=match):
        sim.reset(Trace({"demand": demand}))


def test_bad_action_shape_raises() -> None:
    sim = inv.serial()
    trace = sim.sample_trace(2, 3, seed=0)
    with pytest.raises(ValueError, match="action"):
        sim.step(sim.reset(trace), torch.zeros(2, 3), 0, trace)
    with pytest.raises(ValueError, match="action"):
        sim.step(sim.reset(trace), torch.zeros(1, 4), 0, trace)


@pytest.mark.parametrize("field", ["lead_time", "penalty", "holding", "order_cost"])
def test_per_sample_parameter_with_wrong_batch_raises(field: str) -> None:
    base = inv.one_store_backlog()
    value = {"lead_time": torch.tensor([[1], [2]]), "penalty": torch.tensor([[4.0], [9.0]]),
             "holding": torch.tensor([[1.0], [2.0]]), "order_cost": torch.tensor([[0.0], [1.0]])}
    sim = InventorySimulator(dataclasses.replace(base.params, **{field: value[field]}))
    with pytest.raises(ValueError, match="batch 2 but the trace has batch 3"):
        sim.reset(sim.sample_trace(3, 4, seed=0))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("nan.csv", "product,0,1\na,1,\nb,2,3\n", "nan.csv.*missing"),
        ("negative.csv", "product,0,1\na,1,-2\n", "negative.csv.*non-negative"),
        ("long_gap.csv", "product,period,demand\na,0,1\na,1,2\nb,0,3\n", "missing"),
        ("text.csv", "product,0,1\na,1,lots\n", "is not a number"),
        ("demand.xlsx", "irrelevant", "path.*csv or .parquet"),
    ],
)
def test_bad_demand_files_raise(tmp_path: Path, name: str, text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        inv.load_demand_series(_write(tmp_path / name, text))


def test_missing_demand_file_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="path.*does not exist"):
        inv.load_demand_series(tmp_path / "nowhere.csv")


# -- gradients -----------------------------------------------------------------------------------------


def _orders_policy(orders: Tensor):
    """Replays ``orders[:, t]`` at period t; the orders are the leaves we differentiate."""
    step = iter(range(orders.shape[1]))
    return lambda obs: orders[:, next(step)]


@pytest.mark.parametrize("lost_sales", [False, True])
def test_gradient_flows_through_the_horizon(lost_sales: bool) -> None:
    lead, horizon = 2, 20
    sim = single_store(lead, lost_sales, order_cost=0.0, initial=10.0)
    trace = inv.one_store_lost().sample_trace(4, horizon, seed=3)
    orders = torch.full((4, horizon, 1), 6.0, requires_grad=True)
    costs = -rollout(sim, _orders_policy(orders), trace).rewards
    # d(last period's cost) / d(first order): a unit ordered at t=0 still sits on hand (or
    # still fills backlog) at the end of the horizon
    (grad_first,) = torch.autograd.grad(costs[:, -1].sum(), orders, retain_graph=True)
    assert (grad_first[:, 0] != 0).any()
    # every order that lands inside the horizon moves the total cost
    (grad,) = torch.autograd.grad(costs.sum(), orders)
    assert (grad[:, : horizon - lead].abs().sum(0) > 0).all()
    assert torch.isfinite(grad).all()


def test_gradient_flows_through_a_short_warehouse_to_its_level() -> None:
    sim = inv.one_warehouse(n_stores=2, initial_onhand=[4.0, 2.0, 2.0])
    trace = sim.sample_trace(2, 15, seed=5)
    levels = torch.tensor([12.0, 15.0, 15.0], requires_grad=True)
    costs = -rollout(sim, order_up_to(sim, levels), trace).rewards
    (grad,) = torch.autograd.grad(costs.sum(), levels)
    assert torch.isfinite(grad).all() and (grad != 0).all()


# -- real data -----------------------------------------------------------------------------------------


def test_tiny_demand_file_loads_in_wide_and_long_format(tmp_path: Path) -> None:
    wide = inv.load_demand_series(DATA)
    assert wide.shape == (3, 30)
    lines = ["product,period,demand"] + [
        f"p{i},{t},{float(wide[i, t])}" for t in range(30) for i in range(3)
    ]
    long = inv.load_demand_series(_write(tmp_path / "long.csv", "\n".join(lines) + "\n"))
    torch.testing.assert_close(long, wide)


def test_real_data_samples_windows_of_the_training_periods() -> None:
    sim = real_data(DATA, lead_time=2, demand_lags=3, horizon=12, warmup=2)
    series = inv.load_demand_series(DATA)
    trace = sim.sample_trace(8, 12, seed=4)
    assert trace["demand"].shape == (8, 12, 1)
    train = series[:, :15]  # 30 periods: the last 9 test, the 6 before them dev
    windows = train.unfold(1, 12, 1).reshape(-1, 12)  # every training window of every product
    for row in trace["demand"][..., 0]:
        assert (windows == row).all(-1).any(), "a sampled episode is not a training window"
    result = rollout(sim, order_up_to(sim, torch.tensor([30.0])), trace)
    assert torch.isfinite(result.rewards).all()
    with pytest.raises(ValueError, match="horizon"):
        sim.sample_trace(2, 16, seed=0)


@pytest.mark.parametrize("build", [
    lambda: inv.one_store_lost(lead_time=3, demand_lags=2),
    lambda: inv.transshipment(n_stores=3),
    lambda: inv.many_warehouses(n_warehouses=2, n_stores=4, demand_lags=1),
])
def test_fast_observation_equals_its_feature_by_feature_definition(build):
    sim = build()
    trace = sim.sample_trace(5, 12, seed=3)
    state = sim.reset(trace)
    gen = torch.Generator().manual_seed(0)
    for t in range(12):
        fast, slow = sim.observe(state, t, trace), sim.reference_observe(state, t, trace)
        assert torch.equal(fast["nodes"], slow["nodes"]) and torch.equal(fast["edges"], slow["edges"])
        position = slow["nodes"][:, :-1, 0] + slow["nodes"][:, :-1, 1 : 1 + sim.slots].sum(-1)
        assert torch.allclose(fast["onhand"] + fast["inbound"], position)
        action = 6 * torch.rand(5, sim.network.n_edges, generator=gen)
        state, _, _ = sim.step(state, action, t, trace)


def test_benchmark_where_filter_selects_backlog_instances() -> None:
    """`benchmarks/inventory_gaps.py --where lead_time=15,20 --where penalty=39`."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "inventory_gaps.py"
    spec = importlib.util.spec_from_file_location("inventory_gaps", path)
    gaps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gaps)
    wanted = gaps.parse_where(["lead_time=15,20", "penalty=39"])
    chosen = [p for _, p, _ in gaps.suites()["backlog"] if gaps.matches(p, wanted)]
    assert chosen == [{"penalty": 39, "lead_time": 15}, {"penalty": 39, "lead_time": 20}]
    assert not gaps.matches({"n_stores": 3}, wanted)  # a missing key never matches
    with pytest.raises(SystemExit):
        gaps.parse_where(["lead_time"])
