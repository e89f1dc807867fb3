"""Dispatch simulator: closed-form rewards, conservation of orders and vehicles, expiry,
geography derived from the shapefile, trip-file replay and clear errors on bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from oprl import registry
from oprl.core import Trace, rollout
from oprl.data import dataset_path, load_trips
from oprl.policies.dispatch import NearestGreedy, PairMLP, PickupAssignment, ZoneGNN, prior_scores
from oprl.simulators.dispatch import DispatchParams, DispatchSimulator, manhattan

TLC = Path(__file__).parent / "data" / "tlc_tiny.csv"


def small(**kw) -> DispatchSimulator:
    return manhattan(n_vehicles=kw.pop("n_vehicles", 40), requests=kw.pop("requests", 150),
                     horizon=10, eval_horizon=10, candidates=4, **kw)


def one_order_trace(sim: DispatchSimulator, origin: int, dest: int, vehicle_zone: int,
                    horizon: int = 8) -> Trace:
    o = torch.full((1, horizon, 1), -1)
    d = torch.full((1, horizon, 1), -1)
    o[0, 0, 0], d[0, 0, 0] = origin, dest
    v = sim.params.n_vehicles
    return Trace({"origin": o, "dest": d,
                  "vehicle_zone": torch.full((1, horizon, v), vehicle_zone),
                  "vehicle_free": torch.zeros(1, horizon, v, dtype=torch.long)})


def test_zones_are_manhattan_with_true_centroids_and_a_connected_graph():
    sim = small()
    z = sim.zones
    assert z.n == 69 and len(set(z.ids)) == 69 and {103, 104, 105} <= set(z.ids)
    times_sq = z.ids.index(230)  # Times Square is at about (-73.9855, 40.7580)
    assert abs(float(z.lon[times_sq]) + 73.9855) < 0.01
    assert abs(float(z.lat[times_sq]) - 40.7580) < 0.01
    reach, frontier = {0}, [0]
    adj = z.edges.t().tolist()
    while frontier:
        node = frontier.pop()
        for a, b in adj:
            for u, w in ((a, b), (b, a)):
                if u == node and w not in reach:
                    reach.add(w)
                    frontier.append(w)
    assert len(reach) == 69
    assert dataset_path("manhattan_zones.csv").is_file()


def test_one_order_reward_is_the_closed_form():
    sim = small(n_vehicles=1)
    tt = sim.travel_minutes(0)
    a, b = sim.zones.ids.index(230), sim.zones.ids.index(4)
    trace = one_order_trace(sim, a, b, vehicle_zone=b)
    result = rollout(sim, PickupAssignment(sim), trace, keep_metrics=True)
    pick, trip = int(tt[b, a]), int(tt[a, b])
    km = float(sim.distance_km[a, b])
    expected = 3 + km - 3 * pick / 60 - 5 * max(pick + trip - 40, 0) / 60
    assert math.isclose(float(result.rewards.sum()), expected, rel_tol=1e-5)
    assert float(result.rewards[0, 0]) == pytest.approx(expected, rel=1e-5)
    assert result.metrics["served"].sum() == 1 and result.metrics["expired"].sum() == 0


def test_an_unserved_order_expires_after_five_minutes():
    sim = small(n_vehicles=1)
    trace = one_order_trace(sim, 0, 1, vehicle_zone=0)
    trace.data["vehicle_free"][:] = 20  # the only vehicle is busy all episode
    result = rollout(sim, PickupAssignment(sim), trace, keep_metrics=True)
    assert result.metrics["expired"][0].tolist() == [0, 0, 0, 0, 1, 0, 0, 0]
    assert float(result.rewards.sum()) == -1.0


@pytest.mark.parametrize("policy", [NearestGreedy, PickupAssignment, PairMLP, ZoneGNN])
def test_every_order_is_served_or_expires_and_no_vehicle_is_double_booked(policy):
    sim = small()
    trace = sim.sample_trace(3, 10, seed=5)
    torch.manual_seed(0)
    pol = policy(sim)
    state = sim.reset(trace)
    served = expired = 0
    with torch.no_grad():
        for t in range(trace.horizon):
            busy_before = state["vehicle_free"] > t
            obs = sim.observe(state, t, trace)
            choice = sim.decide(state, pol(obs), t)
            veh = obs["cand_vehicle"].gather(2, choice.clamp_min(0).unsqueeze(-1)).squeeze(-1)
            for b in range(3):
                ids = veh[b][choice[b] >= 0]
                assert ids.numel() == ids.unique().numel()
                assert not busy_before[b, ids].any()
            state, _, info = sim.apply(state, choice, t, trace)
            served += info["served"]
            expired += info["expired"]
    total = (trace["origin"] >= 0).sum((1, 2)).float()
    assert torch.equal(served + expired, total)


@pytest.mark.parametrize("policy", [PickupAssignment, PairMLP])
def test_every_matcher_finds_the_same_step_optimum(policy):
    """Along one episode, the batched matchers pick matchings of the same total score as scipy
    at every step (ties may pick other pairs, so the episodes themselves may differ)."""
    sims = {m: small(matcher=m) for m in ("scipy", "sap", "auction")}
    sim = sims["scipy"]
    trace = sim.sample_trace(3, 10, seed=2)
    torch.manual_seed(0)
    pol = policy(sim)
    state = sim.reset(trace)
    with torch.no_grad():
        for t in range(trace.horizon):
            scores = pol(sim.observe(state, t, trace))
            rounded = torch.round(scores.double() / 1e-3)
            totals = {}
            for name, s in sims.items():
                choice = s.decide(state, scores, t)
                gained = rounded.gather(2, choice.clamp_min(0).unsqueeze(-1)).squeeze(-1)
                totals[name] = (gained * (choice >= 0)).sum(-1)
            assert torch.equal(totals["sap"], totals["scipy"])
            assert torch.equal(totals["auction"], totals["scipy"])
            state, _, _ = sim.apply(state, sim.decide(state, scores, t), t, trace)


def test_exact_assignment_matches_at_least_as_many_as_greedy_each_step():
    sim = small()
    trace = sim.sample_trace(2, 10, seed=1)
    state = sim.reset(trace)
    obs = sim.observe(state, 0, trace)
    exact = sim.decide(state, PickupAssignment(sim)(obs), 0)
    greedy = sim.decide(state, NearestGreedy(sim)(obs), 0)
    assert ((exact >= 0).sum(1) >= (greedy >= 0).sum(1)).all()


def test_trace_is_reproducible_and_demand_matches_the_model():
    sim = small(requests=400)
    a, b = sim.sample_trace(64, 10, seed=3), sim.sample_trace(64, 10, seed=3)
    assert all(torch.equal(a[k], b[k]) for k in a.data)
    count = (a["origin"] >= 0).sum((1, 2)).float()
    assert abs(float(count.mean()) - 400) < 4 * 20 / 8  # Poisson(400): sd 20, 64 episodes
    assert torch.allclose(sim.od_intensity(10).sum(), torch.tensor(400.0))
    assert torch.allclose(sim.rate(3), sim.rate(10)[:3])  # per minute, whatever the horizon


def test_trip_file_replays_every_record():
    sim = small(trip_file=str(TLC), n_vehicles=10)
    trace = sim.sample_trace(2, 10, seed=0)
    trips = load_trips(TLC, list(sim.zones.ids), 10)
    assert int((trace["origin"][0] >= 0).sum()) == len(trips.minute) == 24
    first = sim.zones.ids[int(trace["origin"][0, 0, 0])]
    assert first == trips.origin[0]
    result = rollout(sim, PickupAssignment(sim), trace, keep_metrics=True)
    m = sim.episode_metrics(result)
    assert torch.equal(m["served_orders"] + m["expired_orders"], torch.full((2,), 24.0))


@pytest.mark.parametrize("edit, message", [
    (lambda f: f.drop(columns=["DOLocationID"]), "missing column"),
    (lambda f: f.assign(PULocationID=f["PULocationID"].where(f.index != 3, 1)), "unknown zone"),
    (lambda f: f.iloc[::-1], "out of order"),
    (lambda f: f.assign(tpep_pickup_datetime="2024-03-05 19:30:00").pipe(
        lambda g: g.iloc[:1]).pipe(lambda g: _with_first(f, g)), "outside the episode"),
])
def test_bad_trip_files_are_named(tmp_path, edit, message):
    import pandas as pd

    frame = edit(pd.read_csv(TLC))
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match=message):
        load_trips(path, list(small().zones.ids), 10)


def _with_first(full, late):
    import pandas as pd

    return pd.concat([full.iloc[:1], late]).reset_index(drop=True)


def test_parquet_trip_file(tmp_path):
    import pandas as pd

    path = tmp_path / "trips.parquet"
    pd.read_csv(TLC).to_parquet(path)
    assert len(load_trips(path, list(small().zones.ids), 10).minute) == 24


@pytest.mark.parametrize("field, value", [
    ("n_vehicles", 0), ("expiry", 0), ("requests", -1.0), ("street_factor", float("nan")),
    ("initial_busy", 1.5), ("speeds_kmh", (10.0,) * 3), ("matcher", "magic"),
    ("warmup", 30),
])
def test_bad_parameters_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        DispatchParams(**{field: value})


def test_a_fleet_too_large_for_memory_is_refused_before_allocating():
    sim = manhattan(n_vehicles=2_000_000, initial_busy=1.0)
    trace = Trace({"origin": torch.zeros(64, 2, 200, dtype=torch.long),
                   "dest": torch.zeros(64, 2, 200, dtype=torch.long),
                   "vehicle_zone": torch.zeros(64, 2, 1, dtype=torch.long).expand(64, 2, 2_000_000),
                   "vehicle_free": torch.zeros(64, 2, 1, dtype=torch.long).expand(64, 2, 2_000_000)})
    with pytest.raises(ValueError, match="n_vehicles"):
        sim.reset(trace)


def test_infeasible_explicit_choices_are_refused():
    sim = small()
    trace = sim.sample_trace(1, 10, seed=0)
    state = sim.reset(trace)
    obs = sim.observe(state, 0, trace)
    m = obs["order_valid"].shape[1]
    with pytest.raises(ValueError, match="two orders"):
        sim.decide(state, torch.zeros(1, m, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="pair scores"):
        sim.decide(state, torch.zeros(1, m, 1), 0)


def test_scenario_is_registered():
    spec = registry.get("dispatch/manhattan")
    assert spec.algorithm == "ospo" and spec.bench_algorithms == ("ospo", "grpo")
    sim = registry.make("dispatch/manhattan", n_vehicles=30, requests=50, horizon=5)
    assert sim.params.n_vehicles == 30


def test_zone_gnn_leaves_each_orders_level_to_the_prior():
    """The GNN's learned residual sums to 0 over each order's valid candidates (its level is
    the prior's: the per-order training surrogate cannot learn it), even with random weights
    in the layers that start at 0; invalid pairs score 0."""
    sim = small()
    trace = sim.sample_trace(2, 4, seed=1)
    torch.manual_seed(0)
    gnn = ZoneGNN(sim, init_gain=1.0)
    obs = sim.observe(sim.reset(trace), 2, trace)
    with torch.no_grad():
        residual = gnn(obs) - prior_scores(obs, gnn.prior_scale)
    valid = obs["cand_valid"]
    assert residual[valid].abs().max() > 1e-3  # the weights do move the scores
    per_order = torch.where(valid, residual, torch.zeros_like(residual)).sum(-1)
    assert torch.allclose(per_order, torch.zeros_like(per_order), atol=1e-5)
    assert (gnn(obs)[~valid] == 0).all()
