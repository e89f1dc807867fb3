"""Batched exact assignment in torch on candidate lists, and per-sample references.

Problem, for every sample of a batch at once: ``M`` persons (orders) each list up to ``K``
candidate objects (vehicles, ids in ``[0, N)``, ``-1`` = padding) with benefits; choose a
matching (each person and each object at most once) of maximum total benefit. Leaving a person
unmatched ("no order"/"no vehicle") is worth 0, so only positive benefits are ever matched.
Benefits are rounded to integers in units of ``resolution``; every method is exact for them.

- ``sap_match``: batched shortest augmenting paths (Hungarian / Jonker-Volgenant) from all
  free rows at once; the fast batched matcher (see its docstring for the exactness argument).
- ``auction_match``: a Jacobi forward auction (Bertsekas 1988) with epsilon scaling and reverse
  steps. Exact because benefits are scaled by ``M + 1`` and the last phase runs at
  ``epsilon = 1``; every phase ends with reverse-auction steps (Bertsekas, Castanon & Tsaknakis
  1993) that bring unassigned objects to price 0, the asymmetric problem's optimality
  condition. Kept for comparison: price wars make it slow when preferences are alike.
- ``scipy_match`` / ``ortools_match``: per-sample references (scipy's Jonker-Volgenant, OR-Tools'
  linear sum assignment on a sparse balanced reduction).

The batched methods use tensor ops over the batch; the only Python loops are over rounds /
augmentations, never over samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

UNASSIGNED, NO_MATCH = -2, -1
MATCHERS = ("auto", "sap", "auction", "scipy")
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


def _checked_benefits(
    values: Tensor, candidates: Tensor, n_objects: int, resolution: float
) -> tuple[Tensor, Tensor]:
    """The batched matchers' input checks, then the integer benefits and the valid mask."""
    if values.shape != candidates.shape or values.dim() != 3:
        raise ValueError(
            f"values, candidates: must both be [B, M, K], got {tuple(values.shape)} and "
            f"{tuple(candidates.shape)}"
        )
    check_problem_size(*values.shape)
    valid = candidates >= 0
    if (candidates >= n_objects).any():
        raise ValueError(f"candidates: object ids must lie in [-1, {n_objects}), got "
                         f"{int(candidates.max())}")
    return integer_benefits(values, valid, resolution), valid


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
    if scaling < 2:
        raise ValueError(f"scaling: must be >= 2, got {scaling}")
    a, valid = _checked_benefits(values, candidates, n_objects, resolution)
    b, m, k = values.shape
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
    return _matching_from_choice(choice, candidates, a, resolution, rounds)


def _matching_from_choice(
    choice: Tensor, candidates: Tensor, a: Tensor, resolution: float, rounds: int
) -> Matching:
    """The `Matching` of each person's chosen list position (``NO_MATCH`` for none)."""
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


def sap_match(
    values: Tensor, candidates: Tensor, n_objects: int, *, resolution: float = 1e-3,
    greedy_passes: int = 2,
) -> Matching:
    """Maximum-benefit matching of every batch sample by batched shortest augmenting paths
    (Hungarian / Jonker-Volgenant) in torch; ``rounds`` counts the Dijkstra steps.

    Exactness: benefits are rounded to integers (units of ``resolution``) and all arithmetic is
    integer (int32 when a bound on distances and duals fits, else int64), so nothing is lost to
    rounding. The problem is posed as a dense rectangular assignment whose rows are the smaller
    side (persons, or the listed objects) and whose unlisted or non-positive pairs cost as much
    as "no match" (benefit 0); every row must take a column, which loses nothing since rows <=
    columns and a 0 pair stands for "unmatched". Rows with no positive pair are left out (each
    could take a left-over column at 0). Minimising ``cost = top - benefit`` (the same as
    maximising benefit, since every row takes one column) from row-reduced
    duals ``u`` and ``v = 0``, the method keeps three invariants: reduced costs
    ``cost - u - v >= 0``, assigned pairs have reduced cost 0, and free columns have ``v = 0``;
    with every row assigned these are the optimality conditions of the rectangular problem
    (as in Crouse 2016, scipy's ``linear_sum_assignment``). A greedy start assigns rows to free
    columns of reduced cost 0 (invariants hold). Each iteration runs Dijkstra on reduced costs
    from a virtual source joined at 0 to every free row, scanning whole distance levels, until
    a free column is reached at distance ``d``; the usual update (``u += d - dist`` on reached
    rows, ``v -= d - dist`` on scanned columns) keeps the reduced costs >= 0 and makes every
    shortest path tight; augmenting along one such path per search tree (paths in different
    trees share no vertex) keeps assigned pairs tight and assigns only free columns with
    ``v = 0``. Each iteration assigns at least one more row per sample, so it terminates with
    every row assigned: optimal.

    The batch advances in lockstep (one iteration serves every sample still short of rows);
    ``greedy_passes`` bounds the greedy start."""
    a, valid = _checked_benefits(values, candidates, n_objects, resolution)
    b, m, k = values.shape
    local, n = _local_objects(a, candidates, n_objects)
    persons_are_rows = m <= n
    check_problem_size(b, min(m, n), max(m, n), "dense assignment")
    cost, rows_live, row_min, inf = _cost_matrix(a, local, n, persons_are_rows)
    col4row, steps = _lsap(cost, rows_live, row_min, inf, greedy_passes)
    if persons_are_rows:
        obj = col4row
    else:
        obj = torch.full((b, m), -1, dtype=torch.int64, device=a.device)
        hit = col4row >= 0
        rows = torch.arange(b, device=a.device).view(-1, 1).expand_as(col4row)[hit]
        obj[rows, col4row[hit]] = torch.nonzero(hit, as_tuple=True)[1]
    # the position of the matched object in each person's list (unlisted or 0 pair: no match)
    listed = (local == obj.unsqueeze(-1)) & (obj >= 0).unsqueeze(-1) & (local >= 0)
    choice = torch.where(listed.any(-1), listed.to(torch.int8).argmax(-1),
                         torch.full_like(obj, NO_MATCH))
    return _matching_from_choice(choice, candidates, a, resolution, steps)


def _local_objects(a: Tensor, candidates: Tensor, n_objects: int) -> tuple[Tensor, int]:
    """Each usable pair's object renumbered ``0..`` within its sample (``-1``: unusable pair),
    and the largest number of distinct listed objects in a sample."""
    b = a.shape[0]
    usable = a > 0
    local = torch.full_like(candidates, -1)
    if not bool(usable.any()):
        return local, 1
    key = torch.arange(b, device=a.device).view(b, 1, 1) * n_objects + candidates
    uniq, inv = torch.unique(key[usable], return_inverse=True)
    batch_of = torch.div(uniq, n_objects, rounding_mode="floor")
    first = torch.searchsorted(batch_of, torch.arange(b, device=a.device))
    rank = torch.arange(len(uniq), device=a.device) - first[batch_of]
    local[usable] = rank[inv]
    return local, int(rank.max()) + 1


def _cost_matrix(a: Tensor, local: Tensor, n: int, persons_are_rows: bool
                 ) -> tuple[Tensor, Tensor, Tensor, int]:
    """Dense costs ``top - benefit`` ``[B, rows + 1, cols]`` over persons x listed objects (or
    transposed; unlisted pairs cost ``top``, worth "no match"; the last row is padding), in
    int32 when distances and duals provably fit (duals stay within ``top`` since a free column
    keeps ``v = 0``; the guard is far wider), else int64. Also each row's minimum cost
    (row-reduced duals), whether the row has any positive pair, and the "infinite" cost."""
    b, m, _ = a.shape
    bi, mi, ki = torch.nonzero(local >= 0, as_tuple=True)
    lo, gain = local[bi, mi, ki], a[bi, mi, ki]
    shape, row, col = ((b, m, n), mi, lo) if persons_are_rows else ((b, n, m), lo, mi)
    top = int(gain.max()) if gain.numel() else 1
    dtype = torch.int32 if 4 * top * (shape[1] + 2) < 2**30 else torch.int64
    inf = 2**30 if dtype == torch.int32 else 2**61
    # one extra row, never live, costs "infinity": the padding of row packs in the search
    cost = torch.full((b, shape[1] + 1, shape[2]), top, dtype=dtype, device=a.device)
    cost[:, -1] = inf
    cost[bi, row, col] = (top - gain).to(dtype)
    best = _row_max(gain.to(dtype), bi, row, (b, shape[1] + 1))
    return cost, best > 0, top - best, inf


def _row_max(gain: Tensor, bi: Tensor, row: Tensor, shape: tuple[int, int]) -> Tensor:
    """The largest gain of each row ``[B, R]`` (0 where a row has none)."""
    out = torch.zeros(shape[0] * shape[1], dtype=gain.dtype, device=gain.device)
    out.scatter_reduce_(0, bi * shape[1] + row, gain, reduce="amax")
    return out.view(shape)


def _lsap(cost: Tensor, rows_live: Tensor, u: Tensor, inf: int, greedy_passes: int
          ) -> tuple[Tensor, int]:
    """Minimum-cost assignment of every live row of ``cost [B, R, C]`` (``R <= C``) from the
    dual-feasible start ``u`` (row minima), ``v = 0``: ``col4row [B, R]`` (-1 for rows not
    live) and the Dijkstra steps run."""
    b, nr, nc = cost.shape
    u = torch.where(rows_live, u, torch.zeros((), dtype=cost.dtype))
    v = torch.zeros(b, nc, dtype=cost.dtype, device=cost.device)
    col4row = torch.full((b, nr), -1, dtype=torch.int64, device=cost.device)
    row4col = torch.full((b, nc), -1, dtype=torch.int64, device=cost.device)
    if greedy_passes:
        _greedy(cost == u.unsqueeze(2), rows_live, col4row, row4col, greedy_passes)
    steps = _augment_all(cost, u, v, col4row, row4col, rows_live, inf)
    return col4row[:, :-1], steps


def _augment_all(cost: Tensor, u: Tensor, v: Tensor, col4row: Tensor, row4col: Tensor,
                 rows_live: Tensor, inf: int) -> int:
    """Augment until every live row is assigned (in place). Once only a quarter of the
    samples still have free rows, continue on those alone: the tail of hard samples then
    runs on small tensors."""
    b = cost.shape[0]
    steps = 0
    while True:
        todo = rows_live & (col4row < 0)
        active = todo.any(1)
        n_active = int(active.sum())
        if n_active == 0:
            return steps
        if b >= 16 and 4 * n_active <= b:
            sel = torch.nonzero(active).squeeze(1)
            parts = [t[sel] for t in (u, v, col4row, row4col)]
            steps += _augment_all(cost[sel], *parts, rows_live[sel], inf)
            for t, part in zip((u, v, col4row, row4col), parts):
                t[sel] = part
            return steps
        steps += _augment_many(cost, u, v, col4row, row4col, todo, inf)


def _greedy(tight: Tensor, rows_live: Tensor, col4row: Tensor, row4col: Tensor,
            passes: int) -> None:
    """Start from the row-reduced duals: give rows free columns of zero reduced cost (one row
    per column per pass). Assigned pairs are tight, so the optimality invariants hold."""
    b, nr, nc = tight.shape
    rid = torch.arange(nr, device=tight.device).expand(b, nr)
    for _ in range(passes):
        want = rows_live & (col4row < 0)
        ok = tight & want.unsqueeze(2) & (row4col < 0).unsqueeze(1)
        has = ok.any(2)
        if not bool(has.any()):
            return
        j = ok.to(torch.int8).argmax(2)
        winner = torch.full((b, nc), -1, dtype=torch.int64, device=tight.device)
        winner.scatter_reduce_(1, j, torch.where(has, rid, -1), reduce="amax")
        wb, wr = torch.nonzero(has & (winner.gather(1, j) == rid), as_tuple=True)
        col4row[wb, wr] = j[wb, wr]
        row4col[wb, j[wb, wr]] = wr


def _augment_many(cost: Tensor, u: Tensor, v: Tensor, col4row: Tensor, row4col: Tensor,
                  todo: Tensor, inf: int) -> int:
    """Shortest augmenting paths from all free rows ``todo`` at once: Dijkstra from a virtual
    source joined to every free row at 0, scanning whole distance levels, until a free column
    is reached; the dual update that makes every shortest path tight; augmentation along one
    shortest path per search tree (paths in different trees of the shortest-path forest share
    no vertex). The last row of ``cost`` is padding. Updates in place; returns the steps."""
    b, nr1, nc = cost.shape
    dev = cost.device
    flat_cost, flat_u = cost.view(b * nr1, nc), u.view(-1)
    offset = (torch.arange(b, device=dev) * nr1).unsqueeze(1)
    shortest = torch.full((b, nc), inf, dtype=cost.dtype, device=dev)
    path = torch.zeros(b, nc, dtype=torch.int64, device=dev)
    root_col = torch.zeros(b, nc, dtype=torch.int64, device=dev)
    root_row = torch.arange(nr1, device=dev).expand(b, nr1).clone()
    seen_row = todo.clone()
    seen_col = torch.zeros(b, nc, dtype=torch.bool, device=dev)
    sinks = torch.zeros(b, nc, dtype=torch.bool, device=dev)
    rows = _pack(todo, nr1 - 1)
    searching = todo.any(1)
    free_col = row4col < 0
    dist = torch.zeros(b, dtype=cost.dtype, device=dev)
    steps = 0
    while True:
        steps += 1
        idx = (rows + offset).view(-1)
        r = (flat_cost.index_select(0, idx).view(b, -1, nc)
             - flat_u.index_select(0, idx).view(b, -1, 1))
        best, at = r.min(1)
        best += dist.unsqueeze(1) - v
        # reduced costs are >= 0, so a scanned column (distance <= dist) never improves
        better = best < shortest
        shortest = torch.where(better, best, shortest)
        via = rows.gather(1, at)
        path = torch.where(better, via, path)
        root_col = torch.where(better, root_row.gather(1, via), root_col)
        open_dist = torch.where(seen_col, inf, shortest)
        level = open_dist.min(1, keepdim=True).values
        dist = torch.where(searching, level.squeeze(1), dist)
        tie = (open_dist == level) & searching.unsqueeze(1)
        free = tie & free_col
        sinks |= free
        searching &= ~free.any(1)
        if not bool(searching.any()):
            break
        tie &= searching.unsqueeze(1)
        seen_col |= tie
        cols = _pack(tie, -1)
        ok = cols >= 0
        rows = torch.where(ok, row4col.gather(1, cols.clamp_min(0)), nr1 - 1)
        seen_row.scatter_(1, rows, True)
        root_row.scatter_(1, rows, root_col.gather(1, cols.clamp_min(0)))
    seen_row[:, -1] = False
    gap = dist.unsqueeze(1)
    d_row = torch.where(col4row >= 0, shortest.gather(1, col4row.clamp_min(0)), 0)
    u += torch.where(seen_row, gap - d_row, 0)
    v -= torch.where(seen_col, gap - shortest, 0)
    # one sink per search tree, then flip the chosen (vertex-disjoint) paths together
    sb, sj = torch.nonzero(sinks, as_tuple=True)
    root = root_col[sb, sj]
    pick = torch.full((b, nr1), -1, dtype=torch.int64, device=dev)
    pick[sb, root] = sj
    keep = pick[sb, root] == sj
    _flip_paths(path, col4row, row4col, sb[keep], sj[keep])
    return steps


def _flip_paths(path: Tensor, col4row: Tensor, row4col: Tensor, sb: Tensor, sj: Tensor) -> None:
    """Augment along vertex-disjoint alternating paths ending at free columns ``(sb, sj)``,
    walking back until a free row (the path's root) is reached."""
    while sb.numel():
        i = path[sb, sj]
        prev = col4row[sb, i]
        row4col[sb, sj] = i
        col4row[sb, i] = sj
        more = prev >= 0
        sb, sj = sb[more], prev[more]


def _pack(mask: Tensor, pad: int) -> Tensor:
    """The indices of the marked entries of each row of ``mask [B, N]``, packed ``[B, T]``
    (T = the most marks in a row), ``pad`` where a row has fewer."""
    width = max(1, int(mask.sum(1).max()))
    marks, idx = mask.to(torch.int16).topk(width, dim=1)
    return torch.where(marks > 0, idx, pad)


def ortools_match(
    values: Tensor, candidates: Tensor, n_objects: int, *, resolution: float = 1e-3,
    idle_arcs: str = "listed",
) -> tuple[Tensor, Tensor]:
    """The same problem solved per sample by OR-Tools' linear sum assignment (the reference):
    ``assignment [B, M]`` and ``value [B]``. OR-Tools needs a balanced problem, so each person
    gets a private "unmatched" object and each object an "idle" person, and an idle person may
    take the "unmatched" object of any person whose usable pair it joins (``idle_arcs='listed'``:
    a sparse reduction with as many arcs as usable pairs, the fair reference), or of any person
    at all (``'all'``: ``N x (M + 1)`` arcs over all ``N`` objects, the earlier formulation)."""
    from ortools.graph.python import linear_sum_assignment

    if idle_arcs not in ("listed", "all"):
        raise ValueError(f"idle_arcs: 'listed' or 'all', got {idle_arcs!r}")
    b, m, k = values.shape
    valid = candidates >= 0
    a = integer_benefits(values, valid, resolution).cpu().numpy()
    cand = candidates.cpu().numpy()
    out = torch.full((b, m), NO_MATCH, dtype=torch.int64)
    value = torch.zeros(b, dtype=torch.float64)
    for s in range(b):
        rows, ks = np.nonzero(a[s] > 0)
        if rows.size == 0:
            continue
        if idle_arcs == "listed":
            objs, col = np.unique(cand[s][rows, ks], return_inverse=True)
            n = objs.size
            # left: persons 0..m-1, idle persons m..m+n-1; right: objects 0..n-1, then the
            # persons' "unmatched" objects n..n+m-1
            tails = np.concatenate([rows, np.arange(m), m + np.arange(n), m + col])
            heads = np.concatenate([col, n + np.arange(m), np.arange(n), n + rows])
        else:
            objs, col, n = np.arange(n_objects), cand[s][rows, ks], n_objects
            tails = np.concatenate([rows, np.arange(m), np.repeat(m + np.arange(n), m + 1)])
            heads = np.concatenate([col, n + np.arange(m), np.concatenate(
                [np.concatenate([[j], n + np.arange(m)]) for j in range(n)])])
        costs = np.zeros(tails.size, dtype=np.int64)
        costs[:rows.size] = -a[s][rows, ks]
        solver = linear_sum_assignment.SimpleLinearSumAssignment()
        solver.add_arcs_with_cost(tails, heads, costs)
        if solver.solve() != solver.OPTIMAL:
            raise RuntimeError("ortools_match: linear sum assignment did not solve to optimality")
        value[s] = -solver.optimal_cost() * resolution
        for i in range(m):
            j = solver.right_mate(i)
            out[s, i] = int(objs[j]) if j < n else NO_MATCH
    return out, value


def scipy_match(
    values: Tensor, candidates: Tensor, n_objects: int, *, resolution: float = 1e-3
) -> Matching:
    """The same problem solved exactly per sample by scipy's Jonker-Volgenant
    ``linear_sum_assignment`` on the dense persons x listed-objects matrix of rounded benefits
    (a loop over the batch at compiled speed: still the fastest choice on a CPU, where every
    torch op of the batched matchers costs microseconds of overhead). Zero-benefit matches are
    dropped (worth "no match")."""
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
    """Exact matching by ``method``: 'sap' (batched shortest augmenting paths), 'auction'
    (batched auction), 'scipy' (per sample), or 'auto' (sap on a GPU, scipy on a CPU, where
    scipy's compiled per-sample loop is still the fastest)."""
    if method == "auto":
        method = "sap" if values.device.type == "cuda" else "scipy"
    if method == "sap":
        return sap_match(values, candidates, n_objects, resolution=resolution)
    if method == "auction":
        return auction_match(values, candidates, n_objects, resolution=resolution)
    if method == "scipy":
        return scipy_match(values, candidates, n_objects, resolution=resolution)
    raise ValueError(f"matcher: one of {MATCHERS}, got {method!r}")
