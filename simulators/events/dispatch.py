"""A simpy event-driven twin of the dispatch simulator, for differential tests.

One episode of a trace is replayed as events: a request arrives (at minute t - 0.25), each
vehicle's driver reaches the stops of its route one by one (a stop due at minute m is reached at
m - 0.5), the dispatcher decides at each whole minute, an order still open at the end of its last
matchable minute expires (t + 0.5). Routes are plain Python lists of stops and the cheapest
insertion (pooling) is written out as loops over positions, independently of the batched tensors;
only the geography tables (travel minutes, km) are shared. With capacity 1 a route is one
pickup and one drop-off, so the twin checks the plain dispatch dynamics too.

Decisions come from a plain-Python dispatcher ``decide(now, open_orders, available, twin) ->
[(order, vehicle), ...]`` (`nearest_greedy` mirrors `policies.dispatch.NearestGreedy`), or are
replayed from the batched simulator (`record_decisions` + `replayed`), which the twin checks for
feasibility while it books rewards itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import simpy
import torch

from oprl.core import Trace
from oprl.simulators.dispatch import DispatchSimulator

Order = tuple[int, int]  # (request minute, position in that minute of the trace)


@dataclass
class TwinEpisode:
    """Per-minute rewards and counts booked by the twin."""

    rewards: list[float]
    served: list[int]
    expired: list[int]
    pickup_minutes: list[float]
    log: list[str] = field(default_factory=list)
    shared: int = 0  # orders given to a vehicle that already had riders assigned


@dataclass
class Stop:
    """A stop of a vehicle's route: a pickup or a drop-off, due at ``minute``."""

    zone: int
    minute: int
    drop: bool
    request: int  # the rider's request minute


@dataclass
class Plan:
    """One way to serve an order with a vehicle: its new route and what the pair earns."""

    route: list[Stop]
    pickup: int
    drop_minute: int
    detour: int  # delay minutes added to the drop-offs of riders already assigned
    extra_late: float  # minutes those riders' lateness grows by


class DispatchTwin:
    """Event-driven replay of episode ``episode`` of ``trace``."""

    def __init__(self, sim: DispatchSimulator, trace: Trace, episode: int) -> None:
        self.sim, self.p = sim, sim.params
        self.horizon = trace.horizon
        origin, dest = trace["origin"][episode].tolist(), trace["dest"][episode].tolist()
        self.requests = {(t, k): (o, d) for t in range(self.horizon)
                         for k, (o, d) in enumerate(zip(origin[t], dest[t])) if o >= 0}
        self.zone = trace["vehicle_zone"][episode, 0].tolist()  # where each vehicle ends up
        free0 = trace["vehicle_free"][episode, 0].tolist()
        self.route: list[list[Stop]] = [
            [Stop(z, f, True, f)] if f > 0 else [] for z, f in zip(self.zone, free0)]
        self.open: dict[Order, tuple[int, int]] = {}
        self.env = simpy.Environment()
        self.wake = [self.env.event() for _ in self.route]

    def riders(self, vehicle: int) -> int:
        return sum(stop.drop for stop in self.route[vehicle])

    def available(self) -> set[int]:
        """Vehicles with a free seat."""
        return {v for v in range(len(self.route)) if self.riders(v) < self.p.capacity}

    def _start(self, vehicle: int, now: int) -> tuple[int, int]:
        """Where and when the vehicle can next change course: its next stop, or here and now."""
        route = self.route[vehicle]
        return (route[0].zone, route[0].minute) if route else (self.zone[vehicle], now)

    def nearest(self, order: Order, now: int) -> list[tuple[int, int]]:
        """The order's candidate vehicles: the ``candidates`` with a free seat that reach its
        origin soonest from their next stop, as (minutes, vehicle), ties to the lower id."""
        tt = self.sim.travel_minutes(now)
        o = self.open[order][0]
        ranked = []
        for v in self.available():
            zone, minute = self._start(v, now)
            ranked.append((minute - now + int(tt[zone, o]), v))
        return sorted(ranked)[: self.p.candidates]

    def plan(self, order: Order, vehicle: int, now: int) -> Plan:
        """Cheapest insertion of ``order`` into the vehicle's route after its next stop: least
        drop-off minute + delay to riders aboard, earliest positions on ties."""
        tt = self.sim.travel_minutes(now)
        o, d = self.open[order]
        zone, minute = self._start(vehicle, now)
        route = self.route[vehicle]
        head = route[0] if route else Stop(zone, minute, False, 0)
        path = [head, *route[1:]]

        def leg(a: int, b: int) -> int:
            return int(tt[a, b])

        def late(s: Stop, minute: int) -> float:
            return max(minute - s.request - self.p.late_threshold_min, 0.0)

        def detour_between(a: Stop, zones: list[int], nxt: Stop | None) -> int:
            """Extra minutes for the stops after ``a`` when ``zones`` are visited right after it."""
            if nxt is None:
                return 0
            hops = [a.zone, *zones, nxt.zone]
            return sum(leg(x, y) for x, y in zip(hops, hops[1:])) - leg(a.zone, nxt.zone)

        best, best_cost = None, None
        for i in range(len(path)):
            for j in range(i, len(path)):
                after_i = path[i + 1] if i + 1 < len(path) else None
                pickup = Stop(o, path[i].minute + leg(path[i].zone, o), False, order[0])
                if i == j:
                    dropoff = Stop(d, pickup.minute + leg(o, d), True, order[0])
                    shifts = [0] * (i + 1) + [detour_between(path[i], [o, d], after_i)] * (
                        len(path) - i - 1)
                else:
                    first = detour_between(path[i], [o], after_i)
                    after_j = path[j + 1] if j + 1 < len(path) else None
                    second = detour_between(path[j], [d], after_j)
                    dropoff = Stop(d, path[j].minute + first + leg(path[j].zone, d), True,
                                   order[0])
                    shifts = [0] * (i + 1) + [first] * (j - i) + [first + second] * (
                        len(path) - j - 1)
                moved = [Stop(s.zone, s.minute + k, s.drop, s.request)
                         for s, k in zip(path, shifts)]
                new = [*moved[: i + 1], pickup, *moved[i + 1: j + 1], dropoff, *moved[j + 1:]]
                if not route:
                    new = new[1:]  # the idle vehicle's position is not a stop
                detour = sum(k for s, k in zip(path[1:], shifts[1:]) if s.drop)
                extra = sum(late(s, s.minute + k) - late(s, s.minute)
                            for s, k in zip(path[1:], shifts[1:]) if s.drop)
                cost = dropoff.minute - now + detour
                if best_cost is None or cost < best_cost:
                    best_cost = cost
                    best = Plan(new, pickup.minute - now, dropoff.minute, detour, extra)
        return best

    def run(self, decide: Callable[..., list[tuple[Order, int]]]) -> TwinEpisode:
        h = self.horizon
        out = TwinEpisode([0.0] * h, [0] * h, [0] * h, [0.0] * h)
        for order, od in self.requests.items():
            self.env.process(self._arrive(order, od))
        for v in range(len(self.route)):
            self.env.process(self._driver(v))
        self.env.process(self._dispatcher(decide, out))
        self.env.run(until=h + 1)
        return out

    def _arrive(self, order: Order, od: tuple[int, int]):
        yield self.env.timeout(order[0] - 0.25 + 0.25 * (order[0] == 0))
        self.open[order] = od
        self.env.process(self._expire(order))

    def _expire(self, order: Order):
        last = min(order[0] + self.p.expiry - 1, self.horizon - 1)
        yield self.env.timeout(last + 0.5 - self.env.now)
        if order in self.open:
            del self.open[order]
            self._out.expired[last] += 1
            self._out.rewards[last] -= self.p.timeout_cost

    def _driver(self, vehicle: int):
        """Reach the route's stops in order; wait for work when the route is empty. The next
        stop's minute never changes once it is next (insertions come after it)."""
        while True:
            route = self.route[vehicle]
            if not route:
                self.wake[vehicle] = self.env.event()
                yield self.wake[vehicle]
                continue
            stop = route[0]
            yield self.env.timeout(max(stop.minute - 0.5 - self.env.now, 0))
            assert self.route[vehicle][0] == stop, "twin: the next stop changed"
            self.route[vehicle].pop(0)

    def _dispatcher(self, decide, out: TwinEpisode):
        self._out = out
        p = self.p
        for now in range(self.horizon):
            yield self.env.timeout(now - self.env.now)
            pairs = decide(now, dict(self.open), self.available(), self)
            km = self.sim.distance_km
            taken = set()
            for order, vehicle in pairs:
                if order not in self.open or vehicle not in self.available() \
                        or vehicle in taken:
                    raise ValueError(f"twin: infeasible pair {order} -> vehicle {vehicle} at {now}")
                if vehicle not in {v for _, v in self.nearest(order, now)}:
                    raise ValueError(f"twin: vehicle {vehicle} is not a candidate of {order}")
                taken.add(vehicle)
                plan = self.plan(order, vehicle, now)
                o, d = self.open.pop(order)
                late = max(plan.drop_minute - order[0] - p.late_threshold_min, 0) / 60
                out.rewards[now] += (p.base_reward + p.km_reward * float(km[o, d])
                                     - p.pickup_cost * plan.pickup / 60 - p.late_cost * late
                                     - (p.detour_cost * plan.detour
                                        + p.late_cost * plan.extra_late) / 60)
                out.served[now] += 1
                out.pickup_minutes[now] += plan.pickup
                was_idle = not self.route[vehicle]
                out.shared += self.riders(vehicle) > 0
                self.route[vehicle] = plan.route
                self.zone[vehicle] = plan.route[-1].zone
                if was_idle:
                    self.wake[vehicle].succeed()
                out.log.append(f"{now}: {order} -> {vehicle}")


def nearest_greedy(now: int, open_orders: dict, available: set, twin: DispatchTwin
                   ) -> list[tuple[Order, int]]:
    """Oldest order first (ties: trace position), nearest free candidate vehicle."""
    pairs, taken = [], set()
    for order in sorted(open_orders):
        for _, v in twin.nearest(order, now):
            if v not in taken:
                taken.add(v)
                pairs.append((order, v))
                break
    return pairs


def record_decisions(sim: DispatchSimulator, policy, trace: Trace
                     ) -> tuple[list[dict[int, list[tuple[Order, int]]]], torch.Tensor]:
    """Run the batched simulator and note, per episode and minute, the matched (order,
    vehicle) pairs; also returns its rewards ``[B, T]``."""
    state = sim.reset(trace)
    width = trace["origin"].shape[2]
    decisions: list[dict[int, list]] = [{} for _ in range(trace.batch)]
    rewards = []
    with torch.no_grad():
        for t in range(trace.horizon):
            obs = sim.observe(state, t, trace)
            choice = sim.decide(state, policy(obs), t)
            cand = sim.candidates(state, t)
            veh = cand.vehicle.gather(2, choice.clamp_min(0).unsqueeze(-1)).squeeze(-1)
            for b, m in (choice >= 0).nonzero().tolist():
                slot = int(cand.slot[b, m])
                order = (int(state["requested"][b, slot]), slot % width)
                decisions[b].setdefault(t, []).append((order, int(veh[b, m])))
            state, reward, _ = sim.apply(state, choice, t, trace)
            rewards.append(reward)
    return decisions, torch.stack(rewards, 1)


def replayed(decisions: dict[int, list[tuple[Order, int]]]):
    """A twin dispatcher that replays recorded pairs."""
    def decide(now, open_orders, available, twin):
        return decisions.get(now, [])
    return decide
