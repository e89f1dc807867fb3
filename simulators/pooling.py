"""Ride pooling for the dispatch simulator: vehicle routes as fixed-size stop arrays, and the
cheapest insertion of a new order into a route, batched over episodes, orders and vehicles.

A vehicle of capacity ``c`` carries a route of at most ``2c`` stops (a pickup and a drop-off per
rider), each with its zone, arrival minute, kind and the rider's request minute. A vehicle with
fewer than ``c`` riders assigned may take a new order. It cannot turn mid-leg: the order is
inserted after the vehicle's next stop (an idle vehicle starts where it stands, now). Among the
positions that keep the existing stops in order and pick up before dropping off, the one with
the least ``new rider's drop-off minute + delay added to the riders already assigned`` wins (ties:
earliest positions). Every leg uses the travel minutes of the decision minute; stops after an
insertion move later by the detour (``tt[a, x] + tt[x, b] - tt[a, b] >= 0``), never earlier.

Conventions: a route field is ``[..., S]`` with ``S = 2 * capacity``; entries at or beyond the
route's length are padding (zone 0, minute 0, pickup, request 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

ROUTE_KEYS = ("route_zone", "route_time", "route_drop", "route_req")  # per stop


@dataclass(frozen=True)
class Insertion:
    """The cheapest insertion of each (order, vehicle) pair ``[...]``: pickup minutes from now,
    drop-off minute, delay minutes and extra late minutes it imposes on the riders already in
    the route, the path positions after which the pickup (``after_pickup``) and the drop-off
    (``after_drop``, in the path before the pickup is inserted) go, and the shifts of the stops
    between (``shift_between``) and after both (``shift_after``)."""

    pickup: Tensor
    drop_time: Tensor
    detour: Tensor
    late_others: Tensor
    after_pickup: Tensor
    after_drop: Tensor
    shift_between: Tensor
    shift_after: Tensor


def initial_routes(zone0: Tensor, free0: Tensor, capacity: int) -> dict[str, Tensor]:
    """Routes of the starting fleet: a vehicle busy until ``free0 > 0`` carries one rider whose
    drop-off is in ``zone0`` at ``free0`` (request minute = ``free0``: that rider is never
    delayed, an insertion always comes after the next stop)."""
    b, v = zone0.shape
    s = 2 * capacity
    busy = free0 > 0
    zone = torch.zeros(b, v, s, dtype=torch.long, device=zone0.device)
    time = torch.zeros_like(zone)
    zone[..., 0] = torch.where(busy, zone0, 0)
    time[..., 0] = torch.where(busy, free0, 0)
    drop = torch.zeros(b, v, s, dtype=torch.bool, device=zone0.device)
    drop[..., 0] = busy
    return {"route_zone": zone, "route_time": time, "route_drop": drop, "route_req": time.clone(),
            "route_len": busy.long()}


def routes_of(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The route fields of a simulator state (per-stop fields and ``route_len``)."""
    return {k: state[k] for k in (*ROUTE_KEYS, "route_len")}


def advance(routes: dict[str, Tensor], t: int) -> dict[str, Tensor]:
    """Remove the stops reached by minute ``t`` (arrival minute ``<= t``)."""
    length = routes["route_len"]
    s = routes["route_zone"].shape[-1]
    pos = torch.arange(s, device=length.device)
    live = pos < length.unsqueeze(-1)
    done = ((routes["route_time"] <= t) & live).sum(-1)
    if not bool(done.any()):
        return routes
    src = (pos + done.unsqueeze(-1)).clamp_max(s - 1)
    keep = pos < (length - done).unsqueeze(-1)
    out = {k: torch.where(keep, routes[k].gather(-1, src), torch.zeros_like(routes[k]))
           for k in ROUTE_KEYS}
    out["route_len"] = length - done
    return out


def riders(routes: dict[str, Tensor]) -> Tensor:
    """Riders assigned to each vehicle (drop-offs still in its route)."""
    s = routes["route_zone"].shape[-1]
    live = torch.arange(s, device=routes["route_len"].device) < routes["route_len"].unsqueeze(-1)
    return (routes["route_drop"] & live).sum(-1)


def paths(routes: dict[str, Tensor], vehicle_zone: Tensor, t: int) -> dict[str, Tensor]:
    """Insertion paths: node 0 is where the vehicle can next change course (its next stop, or
    its zone now if idle), then the rest of its route; ``path_len >= 1``."""
    busy = routes["route_len"] > 0
    zone, time = routes["route_zone"].clone(), routes["route_time"].clone()
    zone[..., 0] = torch.where(busy, zone[..., 0], vehicle_zone)
    time[..., 0] = torch.where(busy, time[..., 0], t)
    drop = routes["route_drop"].clone()
    drop[..., 0] &= busy
    return {"zone": zone, "time": time, "drop": drop, "req": routes["route_req"],
            "len": routes["route_len"].clamp_min(1)}


def cheapest_insertion(path: dict[str, Tensor], origin: Tensor, dest: Tensor, t: int,
                       travel: Tensor, late_threshold: float) -> Insertion:
    """Best insertion of orders ``(origin, dest)`` ``[...]`` into the paths ``[..., S]`` (same
    leading shape) at minute ``t`` under ``travel`` minutes ``[Z, Z]``; ``late_others`` counts
    the minutes by which the riders already assigned pass ``late_threshold`` (request to
    drop-off) beyond what they did before."""
    zone, time, length = path["zone"], path["time"], path["len"]
    s = zone.shape[-1]
    i, j = torch.triu_indices(s, s, device=zone.device)  # pickup after node i, drop after j >= i
    n = length.unsqueeze(-1)
    feasible = j < n
    nxt_i, nxt_j = (i + 1).clamp_max(s - 1), (j + 1).clamp_max(s - 1)
    has_i1, has_j1 = (i + 1) < n, (j + 1) < n
    zi, zj, zi1, zj1 = zone[..., i], zone[..., j], zone[..., nxt_i], zone[..., nxt_j]
    o, d = origin.unsqueeze(-1), dest.unsqueeze(-1)
    to_o, o_d, to_d = travel[zi, o], travel[o, d], travel[zj, d]
    arrive_o = time[..., i] + to_o
    same = i == j
    # pickup and drop-off back to back after node i
    shift_same = torch.where(has_i1, to_o + o_d + travel[d, zi1] - travel[zi, zi1], 0)
    # pickup after node i, drop-off after node j > i
    shift_pick = to_o + travel[o, zi1] - travel[zi, zi1]
    shift_drop = torch.where(has_j1, to_d + travel[d, zj1] - travel[zj, zj1], 0)
    between = torch.where(same, 0, shift_pick)
    after = torch.where(same, shift_same, shift_pick + shift_drop)
    drop_time = torch.where(same, arrive_o + o_d, time[..., j] + shift_pick + to_d)
    # delays of the riders already assigned: their drop-off nodes k after the insertion
    k = torch.arange(s, device=zone.device)
    in_between = (k > i.unsqueeze(-1)) & (k <= j.unsqueeze(-1))  # [P, S]
    past = k > j.unsqueeze(-1)
    shift = (in_between * between.unsqueeze(-1) + past * after.unsqueeze(-1))  # [..., P, S]
    counted = (path["drop"] & (k < n)).unsqueeze(-2)
    detour = (shift * counted).sum(-1)
    slack = (time - path["req"]).unsqueeze(-2) - late_threshold
    late = ((slack + shift).clamp_min(0) - slack.clamp_min(0)) * counted
    late_others = late.sum(-1)
    cost = torch.where(feasible, drop_time - t + detour, torch.iinfo(torch.long).max)
    best = cost.argmin(-1, keepdim=True)

    def pick(x: Tensor) -> Tensor:
        return x.expand_as(cost).gather(-1, best).squeeze(-1)

    return Insertion(
        pickup=pick(arrive_o) - t, drop_time=pick(drop_time), detour=pick(detour),
        late_others=pick(late_others), after_pickup=i[best.squeeze(-1)],
        after_drop=j[best.squeeze(-1)], shift_between=pick(between), shift_after=pick(after),
    )


def insert(path: dict[str, Tensor], ins: Insertion, origin: Tensor, dest: Tensor,
           request: Tensor, idle: Tensor, t: int) -> dict[str, Tensor]:
    """Routes ``[N, S]`` after inserting the chosen orders into their vehicles' paths ``[N, S]``:
    the pickup at position ``after_pickup + 1``, the drop-off at ``after_drop + 2``; an idle
    vehicle's node 0 (its position, not a stop) is then removed."""
    zone, time = path["zone"], path["time"]
    s = zone.shape[-1]
    q = torch.arange(s, device=zone.device).unsqueeze(0)
    i, j = ins.after_pickup.unsqueeze(-1), ins.after_drop.unsqueeze(-1)
    src = torch.where(q <= i, q, torch.where(q <= j + 1, q - 1, q - 2)).clamp(0, s - 1)
    at_pick, at_drop = q == i + 1, q == j + 2
    shift = (torch.where((src > i) & (src <= j), ins.shift_between.unsqueeze(-1), 0)
             + torch.where(src > j, ins.shift_after.unsqueeze(-1), 0))
    inserted = {
        "route_zone": torch.where(at_pick, origin.unsqueeze(-1), torch.where(
            at_drop, dest.unsqueeze(-1), zone.gather(-1, src))),
        "route_time": torch.where(at_pick, (t + ins.pickup).unsqueeze(-1), torch.where(
            at_drop, ins.drop_time.unsqueeze(-1), time.gather(-1, src) + shift)),
        "route_drop": torch.where(at_pick, False, at_drop | path["drop"].gather(-1, src)),
        "route_req": torch.where(at_pick | at_drop, request.unsqueeze(-1),
                                 path["req"].gather(-1, src)),
    }
    first = idle.long().unsqueeze(-1)
    length = path["len"].unsqueeze(-1) + 2 - first
    src = (q + first).clamp_max(s - 1)
    keep = q < length
    out = {k: torch.where(keep, v.gather(-1, src), torch.zeros_like(v))
           for k, v in inserted.items()}
    out["route_len"] = length.squeeze(-1)
    return out
