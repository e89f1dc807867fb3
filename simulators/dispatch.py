"""Batched ride-hailing dispatch over Manhattan's taxi zones (Zhao & Li 2025, OSPO/GRPO setting).

One step is one minute: new orders join the open ones, the policy scores each open order's
``candidates`` nearest idle vehicles, and an exact assignment (`simulators.matching`, "no
match" worth 0) picks the pairs of highest total score; a matched vehicle drives to the
origin, then the destination; unmatched orders expire after ``expiry`` steps. The reward pays
served orders (base + km, less pickup and lateness costs) and charges expired ones; with
``capacity`` 2-3 rides are pooled by cheapest insertion (`simulators.pooling`). Travel times
come from the 69 zones' centroids and assumed hourly speeds; all randomness is in the trace.
Matching is not differentiable: train with score-function methods (OSPO/GRPO). The full
model, reward and geography: docs/dispatch.md.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from oprl.core import (
    Metric,
    Observation,
    Rollout,
    Simulator,
    State,
    Trace,
    check_memory,
    trace_size,
)
from oprl.data import dataset_path, load_trips
from oprl.simulators.matching import MATCHERS, NO_MATCH, check_problem_size, match
from oprl.simulators.pooling import (
    Insertion,
    advance,
    cheapest_insertion,
    initial_routes,
    insert,
    paths,
    riders,
    routes_of,
)

# Assumed average taxi speeds (km/h) by hour of day in Manhattan: slow in the day and the
# evening peak, faster at night. A modelling assumption (stated in datasets/README.md).
DEFAULT_SPEEDS_KMH = (
    24.0, 25.0, 26.0, 26.0, 25.0, 22.0, 17.0, 13.0, 12.0, 12.0, 12.0, 12.0,
    12.0, 12.0, 12.0, 12.0, 12.0, 12.0, 13.0, 15.0, 17.0, 19.0, 21.0, 23.0,
)
MIDTOWN = 230  # Times Sq/Theatre District: centre of the assumed demand density
ZONE_FEATURES = ("idle", "open_orders", "freeing_soon", "demand_weight", "time")
ZONES_GUESS = 69  # zones of the Manhattan map, for size estimates before it is loaded
MAX_CAPACITY = 3  # pooling: at most three riders share a vehicle


@dataclass(frozen=True)
class ZoneMap:
    """Zone ids (TLC LocationIDs), names, centroids (degrees), areas and adjacency."""

    ids: tuple[int, ...]
    names: tuple[str, ...]
    lon: Tensor
    lat: Tensor
    area_km2: Tensor
    edges: Tensor  # [2, E] zone indices, each adjacent pair once

    @property
    def n(self) -> int:
        return len(self.ids)

    def great_circle_km(self) -> Tensor:
        """Haversine distance between centroids ``[Z, Z]``."""
        lat, lon = torch.deg2rad(self.lat.double()), torch.deg2rad(self.lon.double())
        dlat = lat.view(-1, 1) - lat.view(1, -1)
        dlon = lon.view(-1, 1) - lon.view(1, -1)
        h = torch.sin(dlat / 2) ** 2 + torch.cos(lat).view(-1, 1) * torch.cos(lat).view(1, -1) * (
            torch.sin(dlon / 2) ** 2)
        return 2 * 6371.0088 * torch.asin(h.clamp(0, 1).sqrt())


def load_manhattan() -> ZoneMap:
    """The shipped Manhattan zones and adjacency (see datasets/README.md)."""
    with open(dataset_path("manhattan_zones.csv"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    ids = tuple(int(r["LocationID"]) for r in rows)
    index = {z: i for i, z in enumerate(ids)}
    with open(dataset_path("manhattan_adjacency.csv"), newline="") as fh:
        pairs = [(index[int(r["a"])], index[int(r["b"])]) for r in csv.DictReader(fh)]
    return ZoneMap(
        ids=ids, names=tuple(r["zone"] for r in rows),
        lon=torch.tensor([float(r["lon"]) for r in rows]),
        lat=torch.tensor([float(r["lat"]) for r in rows]),
        area_km2=torch.tensor([float(r["area_km2"]) for r in rows]),
        edges=torch.tensor(pairs, dtype=torch.long).t().contiguous(),
    )


def _positive(name: str, value: float, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not (isinstance(value, (int, float)) and math.isfinite(value) and ok):
        raise ValueError(f"{name}: must be a finite number {'>= 0' if allow_zero else '> 0'}, "
                         f"got {value!r}")


@dataclass(frozen=True)
class DispatchParams:
    """Scenario parameters (validated; each error names the field)."""

    n_vehicles: int = 1000
    requests: float = 4000.0  # expected requests per episode (demand model)
    horizon: int = 30  # training episode length (minutes)
    warmup: int = 0
    eval_horizon: int = 30
    eval_warmup: int = 0
    start_minute: int = 18 * 60  # 18:00, the evening peak
    expiry: int = 5
    candidates: int = 16  # nearest idle vehicles scored per order
    street_factor: float = 1.3
    speeds_kmh: tuple[float, ...] = DEFAULT_SPEEDS_KMH
    trip_length_km: float = 2.0  # decay length of the destination choice
    peak_amplitude: float = 0.3  # request rate swings +-30% over the episode
    initial_busy: float = 0.5  # share of the fleet on a trip at the start
    initial_busy_max: int = 15  # those finish within U{1..this} minutes
    base_reward: float = 3.0
    km_reward: float = 1.0
    pickup_cost: float = 3.0  # per pickup hour
    timeout_cost: float = 1.0  # per expired order
    late_cost: float = 5.0  # per hour beyond late_threshold_min from request to drop-off
    late_threshold_min: float = 40.0
    capacity: int = 1  # riders per vehicle; 2-3 pools rides (`simulators.pooling`)
    detour_cost: float = 3.0  # per hour of delay a pooled pickup adds to riders already aboard
    score_resolution: float = 1e-3  # the matcher is exact for scores rounded to this
    matcher: str = "auto"  # 'sap' or 'auction' (batched torch), 'scipy' (per episode), 'auto'
    trip_file: str | None = None  # TLC trip records replayed instead of the demand model
    trip_start: str | None = None  # episode start in the trip file (default: first pickup)

    def __post_init__(self) -> None:
        for name in ("n_vehicles", "horizon", "eval_horizon", "expiry", "candidates",
                     "initial_busy_max", "capacity"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
        for name in ("warmup", "eval_warmup", "start_minute"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: must be an integer >= 0, got {value!r}")
        if self.warmup >= self.horizon or self.eval_warmup >= self.eval_horizon:
            raise ValueError("warmup, eval_warmup: must be smaller than their horizon")
        for name in ("requests", "street_factor", "trip_length_km", "score_resolution"):
            _positive(name, getattr(self, name))
        if self.capacity > MAX_CAPACITY:
            raise ValueError(f"capacity: riders per vehicle in [1, {MAX_CAPACITY}], "
                             f"got {self.capacity}")
        for name in ("base_reward", "km_reward", "pickup_cost", "timeout_cost", "late_cost",
                     "late_threshold_min", "peak_amplitude", "initial_busy", "detour_cost"):
            _positive(name, getattr(self, name), allow_zero=True)
        if self.peak_amplitude >= 1:
            raise ValueError(f"peak_amplitude: must lie in [0, 1), got {self.peak_amplitude}")
        if self.initial_busy > 1:
            raise ValueError(f"initial_busy: a share in [0, 1], got {self.initial_busy}")
        if self.matcher not in MATCHERS:
            raise ValueError(f"matcher: one of {MATCHERS}, got {self.matcher!r}")
        if len(self.speeds_kmh) != 24:
            raise ValueError(f"speeds_kmh: 24 hourly speeds required, got {len(self.speeds_kmh)}")
        for s in self.speeds_kmh:
            _positive("speeds_kmh", s)
        check_memory(self.episode_bytes(1, max(self.horizon, self.eval_horizon)),
                     f"requests={self.requests:g}, n_vehicles={self.n_vehicles}, "
                     f"horizon={self.horizon}, eval_horizon={self.eval_horizon}")

    def period_bytes(self) -> float:
        """Estimated bytes of one episode-minute of a trace while it is sampled: per request
        its zones and the destination CDF row it draws from (69 zones), per vehicle its start."""
        per_minute = self.requests / self.eval_horizon * (1 + self.peak_amplitude) + 10
        return per_minute * (ZONES_GUESS * 4 + 64) + self.n_vehicles * 16

    def episode_bytes(self, batch: int, horizon: int) -> float:
        """Trace plus one step's matching state (pending orders x candidates)."""
        per_minute = self.requests / self.eval_horizon * (1 + self.peak_amplitude) + 10
        step = per_minute * self.expiry * self.candidates * self.capacity * 64
        return float(batch) * (horizon * self.period_bytes() + step + self.n_vehicles * 256)


@dataclass
class Candidates:
    """Open orders (compacted to the front) and each one's nearest idle vehicles at step t."""

    t: int
    slot: Tensor  # [B, M] ring slot of each order (-1: none)
    valid: Tensor  # [B, M]
    origin: Tensor  # [B, M] zone index (0 where invalid)
    dest: Tensor  # [B, M]
    wait: Tensor  # [B, M] minutes since the request
    vehicle: Tensor  # [B, M, K] vehicle id (-1: none)
    pickup: Tensor  # [B, M, K] pickup minutes (0 where none)
    insertion: Insertion | None = None  # pooling: each pair's cheapest insertion [B, M, K]

    @property
    def detour(self) -> Tensor:
        """Delay minutes each pair would add to riders already aboard (0 without pooling)."""
        if self.insertion is None:
            return torch.zeros_like(self.pickup)
        return torch.where(self.pair_valid, self.insertion.detour, 0).float()

    @property
    def pair_valid(self) -> Tensor:
        return (self.vehicle >= 0) & self.valid.unsqueeze(-1)


class DispatchSimulator(Simulator):
    """Batched dispatch: every tensor is ``[batch, ...]``; only time is looped over."""

    Params = DispatchParams
    metric = Metric("reward")  # total per episode, higher is better

    def __init__(self, params: DispatchParams, zones: ZoneMap | None = None,
                 name: str = "dispatch/manhattan") -> None:
        self.params = params
        self.zones = zones if zones is not None else load_manhattan()
        self.name = name
        p = params
        gc = self.zones.great_circle_km()
        intra = 0.5 * self.zones.area_km2.double().sqrt()
        gc = gc + torch.diag(intra)
        self.distance_km = (gc * p.street_factor).float()  # [Z, Z]
        speeds = torch.tensor(p.speeds_kmh, dtype=torch.float64)
        minutes = torch.ceil(gc.unsqueeze(0) * p.street_factor / speeds.view(24, 1, 1) * 60 - 1e-9)
        self.travel_by_hour = minutes.clamp_min(1).long()  # [24, Z, Z]
        centre = self.zones.ids.index(MIDTOWN) if MIDTOWN in self.zones.ids else 0
        # zones are drawn to carry comparable trip volumes, so no area weighting: a
        # density that peaks in Midtown, and destinations by distance decay only
        weight = 0.2 + torch.exp(-gc[centre] / 2.5)
        self.origin_weight = (weight / weight.sum()).float()  # [Z]
        dest = torch.exp(-self.distance_km.double() / p.trip_length_km)
        self.dest_prob = (dest / dest.sum(1, keepdim=True)).float()  # [Z, Z] rows: origins
        self._trips = None
        if p.trip_file is not None:
            self._trips = load_trips(p.trip_file, list(self.zones.ids), p.eval_horizon,
                                     p.trip_start)

    # ---- geography and demand -------------------------------------------------------------
    def travel_minutes(self, t: int) -> Tensor:
        """Zone-to-zone travel minutes ``[Z, Z]`` at step ``t`` (speed of that hour)."""
        return self.travel_by_hour[((self.params.start_minute + t) // 60) % 24]

    def rate(self, horizon: int) -> Tensor:
        """Expected requests in each of the first ``horizon`` minutes ``[T]``: one smooth peak
        over the evaluation episode, which receives ``requests`` in total (minutes past it stay
        at the off-peak rate), so the rate per minute never depends on ``horizon``."""
        p = self.params
        full = p.eval_horizon

        def shape(t: Tensor) -> Tensor:
            inside = t < full
            peak = torch.sin(math.pi * (t.clamp_max(full - 1) + 0.5) / full)
            return 1 + p.peak_amplitude * torch.where(inside, peak, torch.zeros_like(peak))

        norm = shape(torch.arange(full, dtype=torch.float64)).mean()
        return (p.requests / full * shape(torch.arange(horizon, dtype=torch.float64)) / norm).float()

    def od_intensity(self, horizon: int) -> Tensor:
        """Expected requests per minute and origin-destination pair ``[T, Z, Z]``."""
        return self.rate(horizon).view(-1, 1, 1) * self.origin_weight.view(1, -1, 1) * (
            self.dest_prob.unsqueeze(0))

    def graph(self):
        """Zone adjacency as a torch-geometric ``Data`` (edge feature: road km)."""
        from torch_geometric.data import Data

        e = self.zones.edges
        return Data(edge_index=e, edge_attr=self.distance_km[e[0], e[1]].view(-1, 1),
                    num_nodes=self.zones.n)

    # ---- traces -----------------------------------------------------------------------------
    def sample_trace(self, batch: int, horizon: int, *, seed: int,
                     device: str | torch.device = "cpu") -> Trace:
        """Requests per minute (origin, destination; ``-1`` pads) and the fleet's start."""
        batch, horizon = trace_size(batch, horizon, self.params.horizon,
                                    self.params.period_bytes())
        p, z = self.params, self.zones.n
        gen = torch.Generator().manual_seed(int(seed))
        if self._trips is not None:
            origin, dest = self._replay(batch, horizon)
        else:
            counts = torch.poisson(self.rate(horizon).expand(batch, horizon).contiguous(),
                                   generator=gen).long()
            width = max(1, int(counts.max()))
            n = batch * horizon * width
            o = torch.multinomial(self.origin_weight, n, replacement=True, generator=gen)
            u = torch.rand(n, 1, generator=gen)
            cdf = self.dest_prob.cumsum(1)[o]
            d = torch.searchsorted(cdf, u * cdf[:, -1:]).squeeze(1).clamp_max(z - 1)
            live = torch.arange(width).view(1, 1, -1) < counts.unsqueeze(-1)
            origin = torch.where(live, o.view(batch, horizon, width), -1)
            dest = torch.where(live, d.view(batch, horizon, width), -1)
        v = p.n_vehicles
        zone0 = torch.multinomial(self.origin_weight, batch * v, replacement=True,
                                  generator=gen).view(batch, v)
        busy = torch.rand(batch, v, generator=gen) < p.initial_busy
        left = torch.randint(1, p.initial_busy_max + 1, (batch, v), generator=gen)
        free0 = torch.where(busy, left, torch.zeros_like(left))
        data = {"origin": origin, "dest": dest,
                "vehicle_zone": zone0.unsqueeze(1).expand(batch, horizon, v),
                "vehicle_free": free0.unsqueeze(1).expand(batch, horizon, v)}
        return Trace({k: t.to(device) for k, t in data.items()}, seed=seed,
                     meta={"source": "trip_file" if self._trips is not None else "od_model"})

    def _replay(self, batch: int, horizon: int) -> tuple[Tensor, Tensor]:
        trips = self._trips
        if max(trips.minute) >= horizon:
            raise ValueError(f"horizon: the trip file spans {max(trips.minute) + 1} minutes; "
                             f"replay needs horizon >= that, got {horizon}")
        index = {zid: i for i, zid in enumerate(self.zones.ids)}
        minute = torch.tensor(trips.minute)
        counts = torch.bincount(minute, minlength=horizon)
        width = max(1, int(counts.max()))
        rank = torch.arange(len(minute)) - torch.cumsum(counts, 0)[minute] + counts[minute]
        origin = torch.full((horizon, width), -1, dtype=torch.long)
        dest = torch.full((horizon, width), -1, dtype=torch.long)
        origin[minute, rank] = torch.tensor([index[o] for o in trips.origin])
        dest[minute, rank] = torch.tensor([index[d] for d in trips.destination])
        return origin.expand(batch, -1, -1).clone(), dest.expand(batch, -1, -1).clone()

    def check_trace(self, trace: Trace) -> None:
        for key in ("origin", "dest", "vehicle_zone", "vehicle_free"):
            if key not in trace.data:
                raise ValueError(f"trace: missing {key!r}")
        z, v = self.zones.n, self.params.n_vehicles
        if trace["vehicle_zone"].shape[2] != v:
            raise ValueError(f"trace.vehicle_zone: {trace['vehicle_zone'].shape[2]} vehicles, "
                             f"the scenario has n_vehicles={v}")
        o, d = trace["origin"], trace["dest"]
        if o.shape != d.shape or ((o < -1) | (o >= z)).any() or ((o >= 0) != (d >= 0)).any() \
                or ((d < -1) | (d >= z)).any():
            raise ValueError(f"trace.origin/dest: zone indices in [0, {z}) with -1 pads, alike")

    # ---- dynamics ---------------------------------------------------------------------------
    def reset(self, trace: Trace) -> State:
        self.check_trace(trace)
        b, width = trace.batch, trace["origin"].shape[2]
        slots = self.params.expiry * width
        # the largest pickup matrix a step may build: refuse it before allocating anything
        check_problem_size(b, slots, self.params.n_vehicles, what="n_vehicles")
        dev = trace.device
        state = {
            "vehicle_zone": trace["vehicle_zone"][:, 0].clone(),
            "vehicle_free": trace["vehicle_free"][:, 0].clone(),
            "origin": torch.zeros(b, slots, dtype=torch.long, device=dev),
            "dest": torch.zeros(b, slots, dtype=torch.long, device=dev),
            "requested": torch.zeros(b, slots, dtype=torch.long, device=dev),
            "open": torch.zeros(b, slots, dtype=torch.bool, device=dev),
        }
        if self.params.capacity > 1:
            state.update(initial_routes(state["vehicle_zone"], state["vehicle_free"],
                                        self.params.capacity))
        return self._arrive(state, 0, trace)

    def _arrive(self, state: State, t: int, trace: Trace) -> State:
        """Orders requested in minute ``t`` take the ring slots of minute ``t mod expiry``."""
        width = trace["origin"].shape[2]
        row = slice((t % self.params.expiry) * width, (t % self.params.expiry + 1) * width)
        o, d = trace["origin"][:, t], trace["dest"][:, t]
        state = dict(state)
        for key, value in (("origin", o.clamp_min(0)), ("dest", d.clamp_min(0)),
                           ("requested", torch.full_like(o, t)), ("open", o >= 0)):
            state[key] = state[key].clone()
            state[key][:, row] = value
        state.pop("_candidates", None)
        if self.params.capacity > 1:
            state.update(advance(routes_of(state), t))
        return state

    def candidates(self, state: State, t: int) -> Candidates:
        """Open orders and their ``candidates`` nearest idle vehicles (ties: lower vehicle id).
        Cached in the state, so `observe` and `step` agree and share the work."""
        cached = state.get("_candidates")
        if cached is not None and cached.t == t:
            return cached
        p = self.params
        open_ = state["open"]
        b, v = open_.shape[0], p.n_vehicles
        m = max(1, int(open_.sum(1).max()))
        slot = torch.argsort((~open_).to(torch.int8), dim=1, stable=True)[:, :m]
        valid = open_.gather(1, slot)
        slot = torch.where(valid, slot, -1)
        origin = torch.where(valid, state["origin"].gather(1, slot.clamp_min(0)), 0)
        dest = torch.where(valid, state["dest"].gather(1, slot.clamp_min(0)), 0)
        wait = (t - state["requested"].gather(1, slot.clamp_min(0))).float() * valid
        if p.capacity > 1:
            vehicle, pick, ins = self._pooled_candidates(state, t, origin, dest, valid)
            cand = Candidates(t, slot, valid, origin, dest, wait, vehicle, pick, ins)
            state["_candidates"] = cand
            return cand
        idle = state["vehicle_free"] <= t
        n_idle = max(1, int(idle.sum(1).max()))
        vid = torch.argsort((~idle).to(torch.int8), dim=1, stable=True)[:, :n_idle]
        vid_ok = idle.gather(1, vid)
        vzone = state["vehicle_zone"].gather(1, vid)
        tt = self.travel_minutes(t).to(open_.device)
        pickup = tt[vzone.unsqueeze(1), origin.unsqueeze(2)]  # [B, M, Vc]
        big = torch.iinfo(torch.long).max // 4
        key = torch.where(vid_ok.unsqueeze(1) & valid.unsqueeze(2),
                          pickup * (v + 1) + vid.unsqueeze(1), big)
        k = min(p.candidates, n_idle)
        near = key.topk(k, dim=2, largest=False, sorted=True)
        ok = near.values < big
        vehicle = torch.where(ok, vid.unsqueeze(1).expand(-1, m, -1).gather(2, near.indices), -1)
        pick = torch.where(ok, pickup.gather(2, near.indices), 0).float()
        if k < p.candidates:
            pad = p.candidates - k
            vehicle = torch.cat([vehicle, vehicle.new_full((b, m, pad), -1)], 2)
            pick = torch.cat([pick, pick.new_zeros(b, m, pad)], 2)
        cand = Candidates(t, slot, valid, origin, dest, wait, vehicle, pick)
        state["_candidates"] = cand
        return cand

    def _pooled_candidates(self, state: State, t: int, origin: Tensor, dest: Tensor,
                           valid: Tensor) -> tuple[Tensor, Tensor, Insertion]:
        """Each open order's ``candidates`` vehicles with a free seat that can reach its origin
        soonest if they picked it up right after their next stop (ties: lower vehicle id), and
        each pair's cheapest insertion (`simulators.pooling`)."""
        p = self.params
        b, m = origin.shape
        v = p.n_vehicles
        routes = routes_of(state)
        path = paths(routes, state["vehicle_zone"], t)
        seat = riders(routes) < p.capacity
        n_seat = max(1, int(seat.sum(1).max()))
        vid = torch.argsort((~seat).to(torch.int8), dim=1, stable=True)[:, :n_seat]
        vid_ok = seat.gather(1, vid)
        tt = self.travel_minutes(t).to(origin.device)
        start_zone = path["zone"][..., 0].gather(1, vid)
        start_lag = path["time"][..., 0].gather(1, vid) - t
        # the ranking depends on the order only through its origin: rank once per zone
        z = self.zones.n
        reach = start_lag.unsqueeze(1) + tt.t()[:, start_zone].transpose(0, 1)  # [B, Z, Vc]
        big = torch.iinfo(torch.long).max // 4
        key = torch.where(vid_ok.unsqueeze(1), reach * (v + 1) + vid.unsqueeze(1), big)
        k = min(p.candidates, n_seat)
        near = key.topk(k, dim=2, largest=False, sorted=True)
        per_zone = torch.where(near.values < big,
                               vid.unsqueeze(1).expand(-1, z, -1).gather(2, near.indices), -1)
        vehicle = per_zone.gather(1, origin.unsqueeze(-1).expand(-1, -1, k))
        vehicle = torch.where(valid.unsqueeze(-1), vehicle, -1)
        if k < p.candidates:
            vehicle = torch.cat([vehicle, vehicle.new_full((b, m, p.candidates - k), -1)], 2)
        flat = vehicle.clamp_min(0).view(b, -1)
        # a vehicle with a free seat has at most 2 (capacity - 1) stops: only those are paths
        s = 2 * p.capacity - 2
        cand_path = {key_: x[..., :s].gather(1, flat.unsqueeze(-1).expand(-1, -1, s))
                     .view(b, m, -1, s) for key_, x in path.items() if key_ != "len"}
        cand_path["len"] = path["len"].gather(1, flat).view_as(vehicle)
        ins = cheapest_insertion(cand_path, origin.unsqueeze(-1).expand_as(vehicle),
                                 dest.unsqueeze(-1).expand_as(vehicle), t, tt,
                                 p.late_threshold_min)
        pick = torch.where(vehicle >= 0, ins.pickup, 0).float()
        return vehicle, pick, ins

    def observe(self, state: State, t: int, trace: Trace) -> Observation:
        """Order, candidate-pair and zone features (see `ZONE_FEATURES`)."""
        p, z = self.params, self.zones.n
        c = self.candidates(state, t)
        b = c.valid.shape[0]
        dev = c.valid.device
        tt = self.travel_minutes(t).to(dev)
        km = self.distance_km.to(dev)
        vzone = state["vehicle_zone"]
        idle = (state["vehicle_free"] <= t).float()
        soon = ((state["vehicle_free"] > t) & (state["vehicle_free"] <= t + p.expiry)).float()
        per_zone = z / p.n_vehicles
        zone_idle = torch.zeros(b, z, device=dev).scatter_add_(1, vzone, idle) * per_zone
        zone_soon = torch.zeros(b, z, device=dev).scatter_add_(1, vzone, soon) * per_zone
        per_min = float(self.rate(trace.horizon).mean()) / z
        zone_open = torch.zeros(b, z, device=dev).scatter_add_(
            1, c.origin, c.valid.float()) / max(per_min, 1e-9)
        zones = torch.stack([
            zone_idle, zone_open, zone_soon,
            (self.origin_weight.to(dev) * z).expand(b, z),
            torch.full((b, z), t / max(trace.horizon, 1), device=dev)], dim=-1)
        return {
            "order_valid": c.valid, "order_origin": c.origin, "order_dest": c.dest,
            "order_wait": c.wait, "order_trip_min": tt[c.origin, c.dest].float() * c.valid,
            "order_trip_km": km[c.origin, c.dest] * c.valid,
            "cand_vehicle": c.vehicle, "cand_pickup": c.pickup, "cand_valid": c.pair_valid,
            "cand_detour": c.detour,
            "cand_zone": vzone.gather(1, c.vehicle.clamp_min(0).view(b, -1)).view_as(c.vehicle),
            "zones": zones, "time": torch.full((b,), t / max(trace.horizon, 1), device=dev),
        }

    def decide(self, state: State, action: Tensor, t: int) -> Tensor:
        """The candidate chosen for each open order ``[B, M]`` (``-1``: unmatched).

        A float ``action [B, M, K]`` is a matrix of pair scores: the exact assignment maximises
        their sum ("no match" = 0). An integer ``action [B, M]`` is an explicit choice of
        candidate per order (used by the sequential greedy heuristic), checked for feasibility."""
        c = self.candidates(state, t)
        pv = c.pair_valid
        if action.is_floating_point():
            if action.shape != pv.shape:
                raise ValueError(f"action: pair scores must be {tuple(pv.shape)}, got "
                                 f"{tuple(action.shape)}")
            vehicle = torch.where(pv, c.vehicle, -1)
            scores = torch.where(pv, action.detach(), torch.zeros_like(action))
            return match(scores, vehicle, self.params.n_vehicles,
                         resolution=self.params.score_resolution,
                         method=self.params.matcher).choice
        if action.shape != c.valid.shape:
            raise ValueError(f"action: a choice per order must be {tuple(c.valid.shape)}, got "
                             f"{tuple(action.shape)}")
        k = pv.shape[2]
        if ((action < NO_MATCH) | (action >= k)).any():
            raise ValueError(f"action: candidate choices must lie in [-1, {k})")
        chosen = action >= 0
        ok = pv.gather(2, action.clamp_min(0).unsqueeze(-1)).squeeze(-1)
        if (chosen & ~ok).any():
            raise ValueError("action: an order chose a missing candidate")
        veh = c.vehicle.gather(2, action.clamp_min(0).unsqueeze(-1)).squeeze(-1)
        flat = (veh + torch.arange(veh.shape[0], device=veh.device).view(-1, 1)
                * self.params.n_vehicles)[chosen]
        if flat.numel() != flat.unique().numel():
            raise ValueError("action: a vehicle was given to two orders")
        return action.long()

    def step(self, state: State, action: Tensor, t: int, trace: Trace
             ) -> tuple[State, Tensor, dict[str, Tensor]]:
        choice = self.decide(state, action, t)
        return self.apply(state, choice, t, trace)

    def pair_rewards(self, c: Candidates, choice: Tensor, t: int) -> tuple[Tensor, Tensor, Tensor]:
        """Reward, pickup minutes and trip minutes of each order's match ``[B, M]`` (0 if none)."""
        p = self.params
        matched = (choice >= 0) & c.valid

        def chosen(x: Tensor) -> Tensor:
            return x.gather(2, choice.clamp_min(0).unsqueeze(-1)).squeeze(-1) * matched

        pk = chosen(c.pickup)
        km = self.distance_km.to(pk.device)[c.origin, c.dest] * matched
        if c.insertion is None:
            tt = self.travel_minutes(t).to(pk.device)
            trip = tt[c.origin, c.dest].float() * matched
            others = 0.0
        else:  # pooled: the ride may pass other stops; riders aboard pay the detour
            trip = (chosen(c.insertion.drop_time) - t).float() * matched - pk
            others = (p.detour_cost * chosen(c.insertion.detour).float()
                      + p.late_cost * chosen(c.insertion.late_others).float()) / 60
        late = (c.wait + pk + trip - p.late_threshold_min).clamp_min(0) / 60
        r = (p.base_reward + p.km_reward * km - p.pickup_cost * pk / 60 - p.late_cost * late
             - others)
        return r * matched, pk, trip

    def apply(self, state: State, choice: Tensor, t: int, trace: Trace
              ) -> tuple[State, Tensor, dict[str, Tensor]]:
        """Dispatch the chosen pairs, expire stale orders, admit the next minute's requests."""
        p = self.params
        c = self.candidates(state, t)
        b, v = c.valid.shape[0], p.n_vehicles
        dev = c.valid.device
        matched = (choice >= 0) & c.valid
        r_pair, pk, trip = self.pair_rewards(c, choice, t)
        veh = c.vehicle.gather(2, choice.clamp_min(0).unsqueeze(-1)).squeeze(-1)
        rows = torch.arange(b, device=dev).view(-1, 1).expand_as(veh)
        vb, vv = rows[matched], veh[matched]
        new = {k: val for k, val in state.items() if k != "_candidates"}
        if c.insertion is None:
            new["vehicle_free"] = state["vehicle_free"].clone()
            new["vehicle_free"][vb, vv] = t + (pk + trip)[matched].long()
            new["vehicle_zone"] = state["vehicle_zone"].clone()
            new["vehicle_zone"][vb, vv] = c.dest[matched]
        else:
            new.update(self._pooled_dispatch(state, c, choice, matched, t))
        new["open"] = state["open"].clone()
        new["open"][vb, c.slot[matched]] = False
        stale = new["open"] & ((new["requested"] <= t - p.expiry + 1) | (t == trace.horizon - 1))
        expired = stale.sum(1).float()
        new["open"] = new["open"] & ~stale
        reward = r_pair.sum(1) - p.timeout_cost * expired
        vehicle_reward = torch.zeros(b, v, device=dev)
        vehicle_reward[vb, vv] = r_pair[matched]
        info = {
            "served": matched.sum(1).float(), "pickup_minutes": pk.sum(1),
            "expired": expired, "busy": (new["vehicle_free"] > t).float().mean(1),
            "vehicle_reward": vehicle_reward,
        }
        if t + 1 < trace.horizon:
            new = self._arrive(new, t + 1, trace)
        return new, reward, info

    def _pooled_dispatch(self, state: State, c: Candidates, choice: Tensor, matched: Tensor,
                         t: int) -> dict[str, Tensor]:
        """Routes, final zones and free minutes after inserting the matched orders."""
        mb, mm = matched.nonzero(as_tuple=True)
        pos = choice[mb, mm]
        vv = c.vehicle[mb, mm, pos]
        routes = routes_of(state)
        path = paths({k: x[mb, vv] for k, x in routes.items()}, state["vehicle_zone"][mb, vv], t)
        ins = Insertion(*(getattr(c.insertion, f)[mb, mm, pos]
                          for f in Insertion.__dataclass_fields__))
        request = state["requested"][mb, c.slot[mb, mm]]
        idle = routes["route_len"][mb, vv] == 0
        inserted = insert(path, ins, c.origin[mb, mm], c.dest[mb, mm], request, idle, t)
        out = {}
        for k, x in routes.items():
            out[k] = x.clone()
            out[k][mb, vv] = inserted[k]
        last = (inserted["route_len"] - 1).unsqueeze(-1)
        out["vehicle_zone"] = state["vehicle_zone"].clone()
        out["vehicle_zone"][mb, vv] = inserted["route_zone"].gather(1, last).squeeze(-1)
        out["vehicle_free"] = state["vehicle_free"].clone()
        out["vehicle_free"][mb, vv] = inserted["route_time"].gather(1, last).squeeze(-1)
        return out

    # ---- metrics ----------------------------------------------------------------------------
    def episode_metric(self, rewards: Tensor, warmup: int = 0) -> Tensor:
        """Total reward of each episode after ``warmup`` minutes ``[B]`` (higher is better)."""
        return rewards[:, warmup:].sum(1)

    def episode_metrics(self, result: Rollout, warmup: int = 0) -> dict[str, Tensor]:
        """Served and expired orders, mean pickup minutes per served order, mean fleet
        utilisation (share of vehicles on a trip) per episode."""
        m = {k: v[:, warmup:] for k, v in result.metrics.items()}
        served = m["served"].sum(1)
        return {
            "served_orders": served,
            "pickup_minutes": m["pickup_minutes"].sum(1) / served.clamp_min(1),
            "expired_orders": m["expired"].sum(1),
            "utilisation": m["busy"].mean(1),
        }


def manhattan(n_vehicles: int = 1000, requests: float = 4000.0, **kw) -> DispatchSimulator:
    """Scenario factory ``dispatch/manhattan`` (see `DispatchParams` for every field)."""
    if "speeds_kmh" in kw and not isinstance(kw["speeds_kmh"], tuple):
        kw["speeds_kmh"] = tuple(float(s) for s in kw["speeds_kmh"])
    return DispatchSimulator(DispatchParams(n_vehicles=n_vehicles, requests=requests, **kw))
