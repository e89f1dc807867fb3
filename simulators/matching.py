"""Batched exact assignment in torch: a Jacobi forward auction (Bertsekas 1988) on candidate lists.

Problem, for every sample of a batch at once: ``M`` persons (orders) each list up to ``K``
candidate objects (vehicles, ids in ``[0, N)``, ``-1`` = padding) with benefits; choose a
matching (each person and each object at most once) of maximum total benefit. Leaving a person
unmatched ("no order"/"no vehicle") is worth 0, so only positive benefits are ever matched.

Why it is exact: benefits are rounded to integers in units of ``resolution`` and multiplied by
``M + 1``, and the auction runs with ``epsilon = 1`` in those units. Each person holds a private
"unmatched" object worth 0 that nobody else can bid on, so all persons end up assigned; prices
start at 0 and only rise, and an object once bid on stays assigned, so every unassigned object
keeps price 0, the minimum. That is Bertsekas' condition for the asymmetric problem: the final
matching is within ``M * epsilon < M + 1`` scaled units, i.e. less than one integer unit, of the
optimum, hence optimal for the rounded benefits. Epsilon scaling (phases with epsilon divided by
``scaling`` down to 1, prices carried over) keeps the number of rounds small; since carried-over
prices can leave objects unassigned at a positive price, which would break that condition, every
phase ends with reverse-auction steps (Bertsekas, Castanon & Tsaknakis 1993) that lower such
prices to 0 or let the object win a person, preserving epsilon-complementary slackness.

Everything is tensor ops over ``[B, M, K]``; the only Python loop is over auction rounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

UNASSIGNED, NO_MATCH = -2, -1
MATCHERS = ("auto", "auction", "scipy")
# largest [B, M, K] problem accepted (int64 work tensors of this many elements ~ 8 bytes each)
MAX_PAIRS = 200_000_000


@dataclass(frozen=True)
class Matching:
    """``assignment[b, m]``: the object given to person m (``-1``: unmatched); ``choice[b, m]``:
    its position in the candidate list (``-1``: unmatched); ``value[b]``: total benefit of the
    rounded problem (in benefit units); ``rounds``: auction rounds run."""

    assignment: Tensor
    choice: Tensor
    value: Tensor
    rounds: int


def check_problem_size(batch: int, persons: int, candidates: int, what: str = "matching") -> None:
    """Refuse a problem whose work tensors would not fit, before allocating anything."""
    pairs = batch * persons * candidates
    if pairs > MAX_PAIRS:
        raise ValueError(
            f"{what}: {batch} x {persons} x {candidates} = {pairs:,} candidate pairs exceeds the "
            f"matcher's limit of {MAX_PAIRS:,}; use fewer vehicles, candidates or episodes"
        )


def integer_benefits(values: Tensor, valid: Tensor, resolution: float) -> Tensor:
    """Benefits rounded to integer multiples of ``resolution``; invalid or non-positive pairs
    (never better than staying unmatched) become 0 and are ignored."""
    if resolution <= 0:
        raise ValueError(f"resolution: must be > 0, got {resolution}")
    if not torch.isfinite(values[valid]).all():
        raise ValueError("values: candidate benefits must be finite")
    a = torch.round(values.double() / resolution).to(torch.int64)
    return torch.where(valid & (a > 0), a, torch.zeros_like(a))


def auction_match(
    values: Tensor,
    candidates: Tensor,
    n_objects: int,
    *,
    resolution: float = 1e-3,
    scaling: int = 6,
    max_rounds: int = 1_000_000,
) -> Matching:
    """Maximum-benefit matching of every batch sample (see the module docstring).

    ``values [B, M, K]`` float benefits, ``candidates [B, M, K]`` object ids (``-1`` pads);
    a person must not list an object twice. ``scaling`` divides epsilon between phases."""
    if values.shape != candidates.shape or values.dim() != 3:
        raise ValueError(
            f"values, candidates: must both be [B, M, K], got {tuple(values.shape)} and "
            f"{tuple(candidates.shape)}"
        )
    if scaling < 2:
        raise ValueError(f"scaling: must be >= 2, got {scaling}")
    b, m, k = values.shape
    check_problem_size(b, m, k)
    valid = candidates >= 0
    if (candidates >= n_objects).any():
        raise ValueError(f"candidates: object ids must lie in [-1, {n_objects}), got "
                         f"{int(candidates.max())}")
    a = integer_benefits(values, valid, resolution)
    flipped = _transpose(a, candidates, n_objects)
    if flipped is not None and flipped[0].shape[1] < m:
        # fewer objects than persons: let the objects bid (far fewer conflicts per round)
        a_t, cand_t, k_of, _ = flipped
        choice_t, rounds = _solve(a_t, cand_t, m, scaling, max_rounds)
        hit = choice_t >= 0
        safe = choice_t.clamp_min(0).unsqueeze(-1)
        person = cand_t.gather(-1, safe).squeeze(-1)[hit]
        rows = torch.arange(b, device=a.device).view(-1, 1).expand_as(choice_t)[hit]
        choice = torch.full((b, m), NO_MATCH, dtype=torch.int64, device=a.device)
        choice[rows, person] = k_of.gather(-1, safe).squeeze(-1)[hit]
    else:
        choice, rounds = _solve(a, candidates, n_objects, scaling, max_rounds)
    matched = choice >= 0
    safe = choice.clamp_min(0).unsqueeze(-1)
    assignment = torch.where(matched, candidates.gather(-1, safe).squeeze(-1),
                             torch.full_like(choice, NO_MATCH))
    gained = torch.where(matched, a.gather(-1, safe).squeeze(-1), torch.zeros_like(choice))
    return Matching(assignment, choice, gained.sum(-1).double() * resolution, rounds)


def _transpose(a: Tensor, candidates: Tensor, n_objects: int
               ) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
    """The same problem with roles swapped: each object present lists the persons that list it.
    Returns benefits and person ids ``[B, P, L]`` (``-1`` pads), the position of each pair in
    the person's original list, and the object id of each new person ``[B, P]``."""
    b = a.shape[0]
    bi, mi, ki = torch.nonzero(a > 0, as_tuple=True)
    if bi.numel() == 0:
        return None
    key = bi * n_objects + candidates[bi, mi, ki]
    uniq, inv, counts = torch.unique(key, return_inverse=True, return_counts=True)
    batch_of = torch.div(uniq, n_objects, rounding_mode="floor")
    first = torch.searchsorted(batch_of, torch.arange(b, device=a.device))
    local = torch.arange(len(uniq), device=a.device) - first[batch_of]
    order = torch.argsort(inv, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(inv)
    rank[order] = torch.arange(len(inv), device=a.device) - starts[inv[order]]
    p, width = int(local.max()) + 1, int(counts.max())
    a_t = torch.zeros(b, p, width, dtype=a.dtype, device=a.device)
    cand_t = torch.full((b, p, width), -1, dtype=torch.int64, device=a.device)
    k_of = torch.zeros((b, p, width), dtype=torch.int64, device=a.device)
    where = (bi, local[inv], rank)
    a_t[where] = a[bi, mi, ki]
    cand_t[where] = mi
    k_of[where] = ki
    obj = torch.full((b, p), -1, dtype=torch.int64, device=a.device)
    obj[batch_of, local] = uniq % n_objects
    return a_t, cand_t, k_of, obj


def _solve(a: Tensor, candidates: Tensor, n_objects: int, scaling: int, max_rounds: int
           ) -> tuple[Tensor, int]:
    """Epsilon-scaled forward auction with reverse clean-up on integer benefits ``a``;
    returns each person's chosen position ``[B, M]`` (-1: unmatched) and the rounds run."""
    m = a.shape[1]
    p = _Problem(a * (m + 1), candidates, n_objects)
    price = torch.zeros(a.shape[0] * n_objects, dtype=torch.int64, device=a.device)
    eps = max(1, int(p.a.max()) // scaling) if p.usable.any() else 1
    rounds = 0
    while True:
        choice, owner, used = _forward(p, price, eps, max_rounds - rounds)
        rounds += used
        # every phase ends with unassigned objects at price 0, so the next phase's warm prices
        # leave the reverse step only a few epsilon-steps of work per object
        rounds += _reverse(p, price, owner, choice, eps, max_rounds - rounds)
        if eps == 1:
            break
        eps = max(1, eps // scaling)
    return torch.where(choice >= 0, choice, torch.full_like(choice, NO_MATCH)), rounds


class _Problem:
    """Scaled integer benefits and flat (batch-offset) object ids of the usable pairs."""

    def __init__(self, a: Tensor, candidates: Tensor, n_objects: int) -> None:
        b, m, k = a.shape
        self.b, self.m, self.k, self.n = b, m, k, n_objects
        self.a = a
        self.usable = a > 0
        cand = torch.where(self.usable, candidates, torch.zeros_like(candidates))
        self.flat = cand + (torch.arange(b, device=a.device) * n_objects).view(b, 1, 1)
        self.person = torch.arange(b * m, device=a.device).view(b, m)
        self.neg = torch.iinfo(torch.int64).min // 4

    def profit(self, price: Tensor, choice: Tensor) -> Tensor:
        """Each person's current profit ``[B, M]`` (0 when unmatched)."""
        safe = choice.clamp_min(0).unsqueeze(-1)
        own = self.a.gather(-1, safe).squeeze(-1) - price[self.flat.gather(-1, safe).squeeze(-1)]
        return torch.where(choice >= 0, own, torch.zeros_like(own))


def _forward(p: _Problem, price: Tensor, eps: int, budget: int) -> tuple[Tensor, Tensor, int]:
    """One epsilon phase of the Jacobi forward auction from the given prices (updated in
    place): every person ends on an object or on its private "unmatched" slot. Each round
    works only on the persons still unassigned."""
    dev = price.device
    a, flat, usable = p.a.view(-1, p.k), p.flat.view(-1, p.k), p.usable.view(-1, p.k)
    owner = torch.full_like(price, -1)
    choice = torch.full((p.b * p.m,), UNASSIGNED, dtype=torch.int64, device=dev)
    choice[~usable.any(-1)] = NO_MATCH
    rounds = 0
    while True:
        who = torch.nonzero(choice == UNASSIGNED).squeeze(-1)
        if who.numel() == 0:
            return choice.view(p.b, p.m), owner, rounds
        if rounds >= budget:
            raise RuntimeError("auction_match: no convergence within max_rounds")
        rounds += 1
        f = flat[who]
        net = torch.where(usable[who], a[who] - price[f], torch.full_like(f, p.neg))
        zero = torch.zeros(len(who), 1, dtype=torch.int64, device=dev)
        top = torch.cat([net, zero], dim=-1).topk(2, dim=-1)  # option K = stay unmatched
        best, second, pick = top.values[:, 0], top.values[:, 1], top.indices[:, 0]
        quits = pick == p.k
        choice[who[quits]] = NO_MATCH
        bids = ~quits
        if not bool(bids.any()):
            continue
        who, pick, f = who[bids], pick[bids], f[bids]
        obj = f.gather(1, pick.unsqueeze(-1)).squeeze(-1)
        bid = price[obj] + (best - second)[bids] + eps
        key = bid * (p.b * p.m) + who  # highest bid wins; ties to the highest person id
        best_key = torch.full_like(price, p.neg)
        best_key.scatter_reduce_(0, obj, key, reduce="amax")
        won = best_key[obj] == key
        obj, who, bid, pick = obj[won], who[won], bid[won], pick[won]
        loser = owner[obj]
        choice[loser[loser >= 0]] = UNASSIGNED
        owner[obj] = who
        price[obj] = bid
        choice[who] = pick


def _reverse(p: _Problem, price: Tensor, owner: Tensor, choice: Tensor, eps: int,
             budget: int) -> int:
    """Reverse auction (Bertsekas, Castanon & Tsaknakis 1993) for objects left unassigned at
    a positive price by the warm-started phases: each lowers its price to the second-best
    person's margin and takes the best person, or drops to 0. Ends when every unassigned object
    has price 0, the optimality condition of the asymmetric problem. Updates in place."""
    bmk = p.b * p.m * p.k
    rounds = 0
    while True:
        loose = (owner < 0) & (price > 0)
        if not bool(loose.any()):
            return rounds
        if rounds >= budget:
            raise RuntimeError("auction_match: no convergence within max_rounds")
        rounds += 1
        idx = torch.nonzero((p.usable & loose[p.flat]).view(-1)).squeeze(-1)  # pairs in play
        objs = p.flat.view(-1)[idx]
        beta = p.a.view(-1)[idx] - p.profit(price, choice).view(-1)[idx // p.k]
        key = beta * bmk + idx
        first = torch.full_like(price, p.neg).scatter_reduce_(0, objs, key, reduce="amax")
        rest = key != first[objs]
        second = torch.full_like(price, p.neg).scatter_reduce_(0, objs[rest], key[rest],
                                                                reduce="amax")
        has1, has2 = first > p.neg, second > p.neg
        beta1 = torch.div(first, bmk, rounding_mode="floor")
        beta2 = torch.div(second, bmk, rounding_mode="floor")
        drop = loose & (~has1 | (beta1 - eps <= 0))
        price[drop] = 0
        offer = loose & ~drop
        if not bool(offer.any()):
            continue
        obj = torch.nonzero(offer).squeeze(-1)
        pair = torch.remainder(first[obj], bmk)
        new_price = torch.where(has2[obj], (beta2[obj] - eps).clamp_min(0), torch.zeros_like(obj))
        who = pair // p.k
        gain = p.a.view(-1)[pair] - new_price
        pkey = gain * (p.b * p.n) + obj  # each person accepts its best offer
        best = torch.full((p.b * p.m,), p.neg, dtype=torch.int64, device=price.device)
        best.scatter_reduce_(0, who, pkey, reduce="amax")
        ok = best[who] == pkey
        # a refused object still lowers its price as far as epsilon-CS allows
        refused = obj[~ok]
        price[refused] = (beta1[refused] - eps).clamp_min(0).minimum(price[refused])
        obj, pair, who, new_price = obj[ok], pair[ok], who[ok], new_price[ok]
        flat_choice = choice.view(-1)
        old = flat_choice[who]
        had = old >= 0
        owner[p.flat.view(p.b * p.m, p.k)[who[had], old[had]]] = -1
        owner[obj] = who
        price[obj] = new_price
        flat_choice[who] = pair % p.k


def ortools_match(
    values: Tensor, candidates: Tensor, n_objects: int, *, resolution: float = 1e-3
) -> tuple[Tensor, Tensor]:
    """The same problem solved per sample by OR-Tools' linear sum assignment (the reference):
    ``assignment [B, M]`` and ``value [B]``. Squared up with an "unmatched" object per person
    and an "idle" person per object, since OR-Tools needs a balanced problem."""
    from ortools.graph.python import linear_sum_assignment

    b, m, k = values.shape
    valid = candidates >= 0
    a = integer_benefits(values, valid, resolution).cpu()
    cand = candidates.cpu()
    out = torch.full((b, m), NO_MATCH, dtype=torch.int64)
    value = torch.zeros(b, dtype=torch.float64)
    idle_left = np.repeat(np.arange(m, m + n_objects), m + 1)
    idle_right = np.concatenate(
        [np.concatenate([[j], n_objects + np.arange(m)]) for j in range(n_objects)])
    for s in range(b):
        solver = linear_sum_assignment.SimpleLinearSumAssignment()
        rows, cols = np.nonzero(a[s].numpy() > 0)
        solver.add_arcs_with_cost(rows, cand[s].numpy()[rows, cols], -a[s].numpy()[rows, cols])
        solver.add_arcs_with_cost(np.arange(m), n_objects + np.arange(m), np.zeros(m, np.int64))
        # every object may stay idle, taking any person's "unmatched" slot
        solver.add_arcs_with_cost(idle_left, idle_right, np.zeros(len(idle_left), np.int64))
        if solver.solve() != solver.OPTIMAL:
            raise RuntimeError("ortools_match: linear sum assignment did not solve to optimality")
        value[s] = -solver.optimal_cost() * resolution
        for i in range(m):
            j = solver.right_mate(i)
            out[s, i] = j if j < n_objects else NO_MATCH
    return out, value


def scipy_match(
    values: Tensor, candidates: Tensor, n_objects: int, *, resolution: float = 1e-3
) -> Matching:
    """The same problem solved exactly per sample by scipy's Jonker-Volgenant
    ``linear_sum_assignment`` on the dense persons x listed-objects matrix of rounded benefits
    (a loop over the batch in C speed: the fast choice on a CPU, where the auction's many
    rounds cost more than they save). Zero-benefit matches are dropped (worth "no match")."""
    from scipy.optimize import linear_sum_assignment

    b, m, k = values.shape
    check_problem_size(b, m, k)
    valid = candidates >= 0
    a = integer_benefits(values, valid, resolution).cpu().numpy()
    cand = candidates.cpu().numpy()
    choice = np.full((b, m), NO_MATCH, dtype=np.int64)
    total = np.zeros(b)
    for s in range(b):
        rows, ks = np.nonzero(a[s] > 0)
        if rows.size == 0:
            continue
        objs, col = np.unique(cand[s][rows, ks], return_inverse=True)
        dense = np.zeros((m, objs.size), dtype=np.int64)
        dense[rows, col] = a[s][rows, ks]
        where = np.full((m, objs.size), -1, dtype=np.int64)
        where[rows, col] = ks
        r, c = linear_sum_assignment(dense, maximize=True)
        keep = dense[r, c] > 0
        choice[s, r[keep]] = where[r[keep], c[keep]]
        total[s] = dense[r[keep], c[keep]].sum() * resolution
    choice_t = torch.as_tensor(choice, device=values.device)
    safe = choice_t.clamp_min(0).unsqueeze(-1)
    assignment = torch.where(choice_t >= 0, candidates.gather(-1, safe).squeeze(-1),
                             torch.full_like(choice_t, NO_MATCH))
    return Matching(assignment, choice_t, torch.as_tensor(total, dtype=torch.float64), 0)


def match(values: Tensor, candidates: Tensor, n_objects: int, *, resolution: float = 1e-3,
          method: str = "auto") -> Matching:
    """Exact matching by ``method``: 'auction' (batched torch), 'scipy' (per sample), or
    'auto' (the auction on a GPU, scipy on a CPU)."""
    if method == "auto":
        method = "auction" if values.device.type == "cuda" else "scipy"
    if method == "auction":
        return auction_match(values, candidates, n_objects, resolution=resolution)
    if method == "scipy":
        return scipy_match(values, candidates, n_objects, resolution=resolution)
    raise ValueError(f"matcher: 'auto', 'auction' or 'scipy', got {method!r}")
