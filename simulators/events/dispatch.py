"""A simpy event-driven twin of the dispatch simulator, for differential tests.

One episode of a trace is replayed as events: a request arrives (at minute t - 0.25), a vehicle
drops off its passenger (at its free minute - 0.5), the dispatcher decides at each whole minute,
an order still open at the end of its last matchable minute expires (t + 0.5). Bookkeeping is
plain Python (dicts and lists), written independently of the batched tensors; only the
geography tables (travel minutes, km) are shared.

Decisions come from a plain-Python dispatcher ``decide(now, open_orders, idle, twin) -> [(order,
vehicle), ...]`` (`nearest_greedy` mirrors `policies.dispatch.NearestGreedy`), or are replayed
from the batched simulator (`record_decisions` + `replayed`), which the twin checks for
feasibility while it books rewards itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import simpy
import torch

from oprl.core import Trace
from simulators.dispatch import DispatchSimulator

Order = tuple[int, int]  # (request minute, position in that minute of the trace)


@dataclass
class TwinEpisode:
    """Per-minute rewards and counts booked by the twin."""

    rewards: list[float]
    served: list[int]
    expired: list[int]
    pickup_minutes: list[float]
    log: list[str] = field(default_factory=list)


class DispatchTwin:
    """Event-driven replay of episode ``episode`` of ``trace``."""

    def __init__(self, sim: DispatchSimulator, trace: Trace, episode: int) -> None:
        self.sim, self.p = sim, sim.params
        self.horizon = trace.horizon
        origin, dest = trace["origin"][episode].tolist(), trace["dest"][episode].tolist()
        self.requests = {(t, k): (o, d) for t in range(self.horizon)
                         for k, (o, d) in enumerate(zip(origin[t], dest[t])) if o >= 0}
        self.zone = trace["vehicle_zone"][episode, 0].tolist()
        self.free_at = trace["vehicle_free"][episode, 0].tolist()
        self.idle = {v for v, f in enumerate(self.free_at) if f <= 0}
        self.open: dict[Order, tuple[int, int]] = {}
        self.env = simpy.Environment()

    def nearest(self, order: Order, now: int) -> list[tuple[int, int]]:
        """The order's candidate vehicles: the ``candidates`` nearest idle ones as
        (pickup minutes, vehicle), ties to the lower vehicle id."""
        tt = self.sim.travel_minutes(now)
        o = self.open[order][0]
        ranked = sorted((int(tt[self.zone[v], o]), v) for v in self.idle)
        return ranked[: self.p.candidates]

    def run(self, decide: Callable[..., list[tuple[Order, int]]]) -> TwinEpisode:
        h = self.horizon
        out = TwinEpisode([0.0] * h, [0] * h, [0] * h, [0.0] * h)
        for order, od in self.requests.items():
            self.env.process(self._arrive(order, od))
        for v, f in enumerate(self.free_at):
            if f > 0:
                self.env.process(self._drop_off(v, f))
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

    def _drop_off(self, vehicle: int, free_minute: int):
        yield self.env.timeout(max(free_minute - 0.5 - self.env.now, 0))
        self.idle.add(vehicle)

    def _dispatcher(self, decide, out: TwinEpisode):
        self._out = out
        p = self.p
        for now in range(self.horizon):
            yield self.env.timeout(now - self.env.now)
            pairs = decide(now, dict(self.open), set(self.idle), self)
            tt = self.sim.travel_minutes(now)
            km = self.sim.distance_km
            taken = set()
            for order, vehicle in pairs:
                if order not in self.open or vehicle not in self.idle or vehicle in taken:
                    raise ValueError(f"twin: infeasible pair {order} -> vehicle {vehicle} at {now}")
                if vehicle not in {v for _, v in self.nearest(order, now)}:
                    raise ValueError(f"twin: vehicle {vehicle} is not a candidate of {order}")
                taken.add(vehicle)
                o, d = self.open.pop(order)
                pick, trip = int(tt[self.zone[vehicle], o]), int(tt[o, d])
                late = max(now - order[0] + pick + trip - p.late_threshold_min, 0) / 60
                out.rewards[now] += (p.base_reward + p.km_reward * float(km[o, d])
                                     - p.pickup_cost * pick / 60 - p.late_cost * late)
                out.served[now] += 1
                out.pickup_minutes[now] += pick
                self.idle.discard(vehicle)
                self.zone[vehicle] = d
                self.env.process(self._drop_off(vehicle, now + pick + trip))
                out.log.append(f"{now}: {order} -> {vehicle}")


def nearest_greedy(now: int, open_orders: dict, idle: set, twin: DispatchTwin
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
    def decide(now, open_orders, idle, twin):
        return decisions.get(now, [])
    return decide
