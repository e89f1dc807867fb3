"""Batched exact assignment in torch on candidate lists, and per-sample references.

For every sample of a batch at once: ``M`` persons (orders) each list up to ``K`` candidate
objects (vehicles, ids in ``[0, N)``, ``-1`` = padding) with benefits; find a matching of
maximum total benefit, "unmatched" worth 0. Benefits are rounded to integers in units of
``resolution``; every method is exact for them.

- ``sap_match``: batched Jonker-Volgenant shortest augmenting paths (default ``'paths'``, or
  parallel ``'rounds'``), finished per sample by scipy on a CPU;
- ``auction_match``: Jacobi forward auction with epsilon scaling and reverse steps (kept for
  comparison: slow when preferences are alike);
- ``scipy_match`` / ``ortools_match``: per-sample references.

Python loops run over rounds, never over samples. Proofs: docs/dispatch.md, "The exact matcher".
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

UNASSIGNED, NO_MATCH = -2, -1
MATCHERS = ("auto", "sap", "auction", "scipy")
# largest [B, M, K] problem accepted (int64 work tensors of this many elements ~ 8 bytes each)
MAX_PAIRS = 200_000_000
# sap_match: samples whose search has reached a free column wait until they are this share of
# the samples still searching, then augment together (0: at once; 1: the whole batch in step)
WAIT_SHARE = 0.25
# sap_match(augment='rounds'): a sample's round ends once this share of its searches converged
ROUND_SHARE = 0.5
# ... and waits until the samples so placed are this share of those searching
ROUND_WAIT = 0.5


@dataclass(frozen=True)
class Matching:
    """``assignment[b, m]``: the object given to person m (``-1``: unmatched); ``choice[b, m]``:
    its position in the candidate list (``-1``: unmatched); ``value[b]``: total benefit of the
    rounded problem (in benefit units); ``rounds``: auction rounds run (`sap_match`: search
    steps: relaxations of the rows whose labels fell, per search or, with
    ``augment='rounds'``, per free row);
    ``finished_per_sample``: the samples `sap_match` handed to its per-sample finish."""

    assignment: Tensor
    choice: Tensor
    value: Tensor
    rounds: int
    finished_per_sample: int = 0


def _without_autograd(matcher):
    """Run ``matcher`` under `torch.inference_mode`, with no autograd bookkeeping per op (on
    a CPU about a tenth of `sap_match`'s time on dispatch's instances, whose cost is mostly
    per-op overhead), and hand back ordinary tensors: callers may use them in autograd, which
    cannot save inference tensors for backward."""

    @functools.wraps(matcher)
    def run(*args, **kwargs) -> Matching:
        with torch.inference_mode():
            out = matcher(*args, **kwargs)
        return replace(out, assignment=out.assignment.clone(), choice=out.choice.clone(),
                       value=out.value.clone())

    return run


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
    if not bool((torch.isfinite(values) | ~valid).all()):
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


@_without_autograd
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


@_without_autograd
def sap_match(
    values: Tensor, candidates: Tensor, n_objects: int, *, resolution: float = 1e-3,
    greedy_passes: int = 2, reduction_rounds: int = 8, finish: str = "auto",
    finish_share: float = 0.25, finish_steps: int = 24, augment: str = "paths",
) -> Matching:
    """Maximum-benefit matching of every batch sample by batched shortest augmenting paths
    (Hungarian / Jonker-Volgenant) in torch; ``rounds`` counts the search steps and
    ``finished_per_sample`` the samples handed to the per-sample finish.

    Integer arithmetic throughout; a greedy start, ``reduction_rounds`` of augmenting row
    reduction, then shortest augmenting paths keep dual feasibility, so the result is optimal
    (proof: docs/dispatch.md, "Why `sap_match` is exact"). ``finish='scipy'`` hands the samples
    still unfinished (at most ``finish_share`` of the batch, or after ``finish_steps`` steps) to
    scipy's compiled solver on the same integer costs, cheaper per sample than torch ops on a
    CPU; ``'batched'`` stays in torch; ``'auto'`` is 'scipy' for CPU tensors. ``augment='rounds'``
    runs one search per free row in parallel rounds (Balas et al. 1991; docs/dispatch.md,
    "Parallel rounds"): fewer sequential steps on tied instances, more work per step."""
    if finish not in ("auto", "batched", "scipy"):
        raise ValueError(f"finish: 'auto', 'batched' or 'scipy', got {finish!r}")
    if augment not in ("paths", "rounds"):
        raise ValueError(f"augment: 'paths' or 'rounds', got {augment!r}")
    if not 0.0 <= finish_share <= 1.0:
        raise ValueError(f"finish_share: must lie in [0, 1], got {finish_share}")
    if finish_steps < 0:
        raise ValueError(f"finish_steps: must be >= 0, got {finish_steps}")
    a, valid = _checked_benefits(values, candidates, n_objects, resolution)
    b, m, k = values.shape
    if a.numel() == 0:  # no pairs at all: nobody is matched
        none = torch.full((b, m), NO_MATCH, dtype=torch.int64, device=a.device)
        return Matching(none, none.clone(), torch.zeros(b, dtype=torch.float64), 0)
    local, n = _local_objects(a, candidates, n_objects)
    persons_are_rows = m <= n
    check_problem_size(b, min(m, n), max(m, n), "dense assignment")
    cost, rows_live, row_min, inf, tight = _cost_matrix(a, local, n, persons_are_rows)
    if finish == "auto":
        finish = "scipy" if values.device.type == "cpu" else "batched"
    # scipy works in float64: exact while every sum of costs stays below 2**52
    per_sample = finish == "scipy" and (inf - 1) * (cost.shape[1] + 1) < 2**52
    col4row, steps, finished = _lsap(
        cost, rows_live, row_min, inf, tight, greedy_passes, reduction_rounds,
        int(finish_share * b) if per_sample else -1, finish_steps if per_sample else -1,
        augment)
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
    result = _matching_from_choice(choice, candidates, a, resolution, steps)
    return Matching(result.assignment, result.choice, result.value, steps, finished)


def _local_objects(a: Tensor, candidates: Tensor, n_objects: int) -> tuple[Tensor, int]:
    """Each usable pair's object renumbered ``0..`` within its sample in id order (``-1``:
    unusable pair), and the largest number of distinct listed objects in a sample. A count
    table over all ``B x N`` ids when that is small (no sort), else a sort."""
    b = a.shape[0]
    usable = a > 0
    if not bool(usable.any()):
        return torch.full_like(candidates, -1), 1
    key = torch.arange(b, device=a.device).view(b, 1, 1) * n_objects + candidates.clamp_min(0)
    if b * n_objects <= max(4 * key.numel(), 1 << 20):
        listed = torch.zeros(b * n_objects, dtype=torch.int32, device=a.device)
        listed.scatter_reduce_(0, key.view(-1), usable.view(-1).to(torch.int32), reduce="amax")
        rank = listed.view(b, n_objects).cumsum(1, dtype=torch.int32)
        local = rank.view(-1)[key].to(candidates.dtype) - 1
        return torch.where(usable, local, -1), int(rank[:, -1].max())
    local = torch.full_like(candidates, -1)
    uniq, inv = torch.unique(key[usable], return_inverse=True)
    batch_of = torch.div(uniq, n_objects, rounding_mode="floor")
    first = torch.searchsorted(batch_of, torch.arange(b, device=a.device))
    rank = torch.arange(len(uniq), device=a.device) - first[batch_of]
    local[usable] = rank[inv]
    return local, int(rank.max()) + 1


def _cost_matrix(a: Tensor, local: Tensor, n: int, persons_are_rows: bool
                 ) -> tuple[Tensor, Tensor, Tensor, int, tuple[Tensor, Tensor, Tensor]]:
    """Dense costs ``top - benefit`` ``[B, rows + 1, cols]`` over persons x listed objects (or
    transposed; unlisted pairs cost ``top``, worth "no match"; the last row is padding), in
    int32 when distances and duals provably fit (duals stay within ``top`` since a free column
    keeps ``v = 0``; the guard is far wider), else int64. Also whether each row has a positive
    pair, its minimum cost (row-reduced duals), the "infinite" cost, and the pairs ``(batch,
    row, column)`` at a row's minimum (zero reduced cost from the row-reduced start). Built by
    scatters over the whole ``[B, M, K]`` lists: unusable pairs land on the padding row, which
    is reset afterwards."""
    b, m, k = a.shape
    usable = local >= 0
    n_rows, n_cols = (m, n) if persons_are_rows else (n, m)
    person = torch.arange(m, device=a.device).view(1, m, 1).expand(b, m, k)
    row, col = (local, person) if not persons_are_rows else (person, local.clamp_min(0))
    row = torch.where(usable, row, n_rows)
    top = max(int(a.max()), 1) if a.numel() else 1
    dtype = torch.int32 if 4 * top * (n_rows + 2) < 2**30 else torch.int64
    inf = 2**30 if dtype == torch.int32 else 2**61
    flat_row = torch.arange(b, device=a.device).view(b, 1, 1) * (n_rows + 1) + row
    cost = torch.full((b * (n_rows + 1) * n_cols,), top, dtype=dtype, device=a.device)
    cost.scatter_(0, (flat_row * n_cols + col).view(-1), (top - a).to(dtype).view(-1))
    cost = cost.view(b, n_rows + 1, n_cols)
    # one extra row, never live, costs "infinity": the padding of row packs in the search
    cost[:, -1] = inf
    gain = a.to(dtype)
    best = torch.zeros(b * (n_rows + 1), dtype=dtype, device=a.device)
    best.scatter_reduce_(0, flat_row.view(-1), gain.view(-1), reduce="amax")
    best = best.view(b, n_rows + 1)
    best[:, -1] = 0
    bi, mi, ki = torch.nonzero(usable & (gain == best.view(-1)[flat_row]), as_tuple=True)
    return cost, best > 0, top - best, inf, (bi, row[bi, mi, ki], col[bi, mi, ki])


def _lsap(cost: Tensor, rows_live: Tensor, u: Tensor, inf: int,
          tight: tuple[Tensor, Tensor, Tensor], greedy_passes: int, reduction_rounds: int,
          finish_below: int, finish_after: int, augment: str = "paths"
          ) -> tuple[Tensor, int, int]:
    """Minimum-cost assignment of every live row of ``cost [B, R, C]`` (``R <= C``) from the
    dual-feasible start ``u`` (row minima), ``v = 0``: ``col4row [B, R]`` (-1 for rows not
    live), the search steps run and the samples finished one by one (see `sap_match`)."""
    b, nr, nc = cost.shape
    u = torch.where(rows_live, u, torch.zeros((), dtype=cost.dtype))
    v = torch.zeros(b, nc, dtype=cost.dtype, device=cost.device)
    col4row = torch.full((b, nr), -1, dtype=torch.int64, device=cost.device)
    row4col = torch.full((b, nc), -1, dtype=torch.int64, device=cost.device)
    if greedy_passes:
        _greedy(*tight, rows_live, col4row, row4col, greedy_passes)
    if nc >= 2:
        _reduce_rows(cost, u, v, col4row, row4col, rows_live, reduction_rounds)
    finished = [0]
    if augment == "rounds" and _rounds_fit(cost):
        steps = _augment_rounds(cost, u, v, col4row, row4col, rows_live, finish_below,
                                finished, finish_after)
    else:
        steps = _augment_all(cost, u, v, col4row, row4col, rows_live, inf, finish_below,
                             finished, finish_after)
    return col4row[:, :-1], steps, finished[0]


def _augment_all(cost: Tensor, u: Tensor, v: Tensor, col4row: Tensor, row4col: Tensor,
                 rows_live: Tensor, inf: int, finish_below: int, finished: list[int],
                 finish_after: int = -1) -> int:
    """Shortest augmenting paths until every live row is assigned (in place), each sample at
    its own pace: one step relaxes from the changed rows of every sample still searching, and
    a sample whose search ended updates its duals, augments and starts its next search in the
    next step, without waiting for the others. Once only a quarter of the samples
    are left, continue on those alone. Once at most ``finish_below`` samples are left, or
    after ``finish_after`` steps (``-1``: never), each sample left is solved by scipy (counted
    in ``finished``). Returns the steps."""
    search = _Search(cost, u, v, col4row, row4col, rows_live, inf)
    # a search ends within one scan per row (its shortest paths are simple) and assigns a free
    # row: more steps than this would be a bug, never data
    most_steps = (search.sb.numel() + 1) * (cost.shape[1] + 1)
    steps = 0
    while True:
        n_found, n_left = torch.stack([search.found, search.searching]).sum(1).tolist()
        if steps > most_steps:
            raise RuntimeError("sap_match: a search ran past one step per row")
        if n_found and n_found >= WAIT_SHARE * n_left:
            search.finish()
            n_left = int(search.searching.sum())
        if n_left == 0:
            return steps
        if n_left <= finish_below or 0 <= finish_after <= steps:
            _finish_per_sample(cost, rows_live, col4row, torch.nonzero(search.searching)[:, 0])
            finished[0] += n_left
            return steps
        b = cost.shape[0]
        if b >= 16 and 4 * n_left <= b:
            # continue on the samples left alone (their searches restart: a search changes
            # nothing before it finishes), so that the tail runs on small tensors
            sel = torch.nonzero(search.searching)[:, 0]
            parts = [t[sel] for t in (u, v, col4row, row4col)]
            steps += _augment_all(cost[sel], *parts, rows_live[sel], inf, finish_below,
                                  finished, finish_after - steps if finish_after >= 0 else -1)
            for t, part in zip((u, v, col4row, row4col), parts):
                t[sel] = part
            return steps
        steps += 1
        search.scan()


class _Search:
    """Shortest augmenting paths on reduced costs from every free row of each sample at once: a
    multi-source Bellman-Ford with a threshold. Each `scan` relaxes all columns from the rows whose
    label fell in the last scan; a sample's search ends once no column below its nearest free
    column's label fell, when every label below it is exact (docs/dispatch.md, "Why `sap_match` is
    exact"). `finish` augments the searches that ended. Updates ``u, v, col4row, row4col`` in
    place; the last row of ``cost`` is padding. A column's label and predecessor row are packed in
    one int64 key when that cannot overflow, so one scatter finds both (`_column_min`)."""

    def __init__(self, cost: Tensor, u: Tensor, v: Tensor, col4row: Tensor, row4col: Tensor,
                 rows_live: Tensor, inf: int) -> None:
        b, nr1, nc = cost.shape
        dev = cost.device
        self.u, self.v, self.col4row, self.row4col, self.rows_live = (
            u, v, col4row, row4col, rows_live)
        self.nr1 = nr1
        self.row_ids = torch.arange(nr1, device=dev).expand(b, nr1)
        span = 1 << max(nr1 - 1, 1).bit_length()  # rows fit in span, a power of two
        self.packed = inf < 2**62 // span
        self.span = span if self.packed else 1
        self.shift = self.span.bit_length() - 1
        self.row_mask = (torch.arange(nc, device=dev) * 40503 + 12345) % span
        self.flat_row_mask = self.row_mask.repeat(b)
        self.flat_cost = cost.view(b * nr1, nc)
        self.unreached = ((inf * span + self.row_mask) if self.packed
                          else torch.full((nc,), inf, device=dev)).repeat(b)
        self.key = self.unreached.view(b, nc).clone()
        self.via = None if self.packed else torch.zeros(b, nc, dtype=torch.int64, device=dev)
        self.beyond = (inf + 1) << self.shift  # above every key
        self.distance_bits = -1 << self.shift  # a key's distance part
        self.nearest_free = torch.full((b, 1), self.beyond, device=dev)
        self.root_row = self.row_ids.clone()
        self.matched = row4col >= 0
        todo = rows_live & (col4row < 0)
        self.searching = todo.any(1)
        self.found = torch.zeros(b, dtype=torch.bool, device=dev)
        sb, sr = torch.nonzero(todo, as_tuple=True)
        self._pending(sb, sr, torch.zeros_like(sb, dtype=u.dtype))

    def _pending(self, sb: Tensor, sr: Tensor, label: Tensor) -> None:
        """Rows ``(sb, sr)`` to relax in the next scan, at distance ``label``."""
        self.sb, self.sr, self.label, self.flat_row = sb, sr, label, sb * self.nr1 + sr

    def scan(self) -> None:
        """Relax every column from the pending rows; the rows of matched columns whose label
        fell below their sample's nearest free column are the next scan's; a searching
        sample with none has ended its search."""
        b, nc = self.key.shape
        sb, fr = self.sb, self.flat_row
        dist = self.flat_cost.index_select(0, fr) - self.v.index_select(0, sb)
        dist -= (self.u.view(-1).index_select(0, fr) - self.label).unsqueeze(1)
        if self.packed:
            key = (self.sr.unsqueeze(1) ^ self.row_mask).add_(dist, alpha=self.span)
        else:
            key = dist
        low, via = _column_min(key, self.sr, sb, self.unreached.view(b, nc), self.packed)
        # only a shorter distance counts (a tie taken up could close a cycle of pointers)
        better = low < (self.key & self.distance_bits)
        self.key = torch.where(better, low, self.key)
        if via is not None:
            self.via = torch.where(better, via.view(b, nc), self.via)
        self.nearest_free = torch.where(self.matched, self.beyond, self.key).amin(1, keepdim=True)
        below = self.nearest_free & self.distance_bits
        fell = (better & self.matched & (self.key < below)).view(-1)
        flat = torch.nonzero(fell).squeeze(1)
        sb = torch.div(flat, nc, rounding_mode="floor")
        key = self.key.view(-1).index_select(0, flat)
        sr = self.row4col.view(-1).index_select(0, flat)
        # a row joins the search tree of the row it is reached from
        base = sb * self.nr1
        roots = self.root_row.view(-1)
        roots[base + sr] = roots.index_select(0, base + self._came_from(key, flat))
        self._pending(sb, sr, (key >> self.shift).to(self.u.dtype))
        self.found = self.searching & ~fell.view(b, nc).any(1)

    def _came_from(self, key: Tensor, flat: Tensor) -> Tensor:
        """The row each listed column (flat ``sample * nc + column``, with its ``key``) was
        reached from."""
        if self.via is not None:
            return self.via.view(-1).index_select(0, flat)
        return (key & (self.span - 1)) ^ self.flat_row_mask.index_select(0, flat)

    def finish(self) -> None:
        """For the samples whose search ended at distance ``d``: the dual update that makes
        every shortest path tight (``u += d - dist`` on rows, ``v -= d - dist`` on columns,
        both where ``dist < d``), augmentation along one shortest path per search tree
        (different trees share no vertex), and a fresh search from their free rows."""
        u, v, col4row, row4col = self.u, self.v, self.col4row, self.row4col
        b, nc = self.key.shape
        done = self.found.unsqueeze(1)
        # distance at which each sample augments; -1 (below every label) for the others
        gap = torch.where(done, self.nearest_free >> self.shift, -1).to(u.dtype)
        dist = (self.key >> self.shift).to(u.dtype)
        d_row = torch.where(col4row >= 0, dist.gather(1, col4row.clamp_min(0)), 0)
        u += (gap - d_row).clamp_min(0)
        v -= (gap - dist).clamp_min(0)
        flat = torch.nonzero(((dist == gap) & ~self.matched).view(-1)).squeeze(1)
        sb, sj = torch.div(flat, nc, rounding_mode="floor"), flat % nc
        # each column's predecessor row, decoded once for the roots and the flips
        path = self.via if self.via is not None else (self.key & (self.span - 1)) ^ self.row_mask
        came_from = path.view(-1).index_select(0, flat)
        root = self.root_row.view(-1).index_select(0, sb * self.nr1 + came_from)
        pick = torch.full_like(self.root_row, -1)
        pick[sb, root] = sj
        keep = pick[sb, root] == sj
        _flip_paths(path, col4row, row4col, sb[keep], sj[keep])
        todo = self.rows_live & (col4row < 0) & done
        self.key = torch.where(done, self.unreached.view(b, nc), self.key)
        self.root_row = torch.where(done, self.row_ids, self.root_row)
        self.matched = row4col >= 0
        self.searching = (self.searching & ~self.found) | todo.any(1)
        self.found = torch.zeros_like(self.found)
        fb, fr = torch.nonzero(todo, as_tuple=True)
        self._pending(torch.cat([self.sb, fb]), torch.cat([self.sr, fr]),
                      torch.cat([self.label, torch.zeros_like(fb, dtype=self.label.dtype)]))


def _augment_rounds(cost: Tensor, u: Tensor, v: Tensor, col4row: Tensor, row4col: Tensor,
                    rows_live: Tensor, finish_below: int, finished: list[int],
                    finish_after: int = -1) -> int:
    """``augment='rounds'``: rounds of one shortest-path search per free row, all on the same
    duals, ended by the combined update and augmentation of `_Rounds.finish` (in place; see
    `sap_match`). A sample's round ends once ``ROUND_SHARE`` of its searches have converged
    (it waits until the samples so placed are ``ROUND_WAIT`` of those searching, so that the
    update is shared). Once at most ``finish_below`` samples are left, or after
    ``finish_after`` steps (``-1``: never), each sample left is solved by scipy (counted in
    ``finished``). Returns the relaxation steps."""
    rounds = _Rounds(cost, rows_live)
    rounds.start(torch.ones(cost.shape[0], dtype=torch.bool, device=cost.device), col4row, 0)
    steps = 0
    while True:
        searching, ready = rounds.progress()
        n_left, n_ready = int(searching.sum()), int(ready.sum())
        if rounds.overran(steps):  # a search converges within one step per row: a bug
            raise RuntimeError("sap_match: a search ran past every row")
        if n_ready and n_ready >= ROUND_WAIT * n_left:
            rounds.finish(ready, u, v, col4row, row4col)
            rounds.start(ready, col4row, steps)
            searching = rounds.searching()
            n_left = int(searching.sum())
        if n_left == 0:
            return steps
        if n_left <= finish_below or 0 <= finish_after <= steps:
            _finish_per_sample(cost, rows_live, col4row, torch.nonzero(searching)[:, 0])
            finished[0] += n_left
            return steps
        steps += 1
        rounds.relax(u, v, row4col)


def _rounds_fit(cost: Tensor) -> bool:
    """Whether `_Rounds` can pack (distance, row) and (distance, column) keys of ``cost`` in
    int64 (distances stay below ``4 * top``, see `_Rounds`)."""
    top = int(cost[:, :-1].max()) if cost.shape[1] > 1 and cost.numel() else 0
    return (4 * top + 4) * max(cost.shape[1], cost.shape[2]) < 2**62


class _Rounds:
    """One Bellman-Ford search per free row on reduced costs, all searches of all samples relaxed
    together, until each search's nearest free column is settled; `finish` applies the combined
    dual update and augments along vertex-disjoint paths (docs/dispatch.md, "Parallel rounds").
    Rows relax only their listed columns (compressed sparse rows); the unlisted ones, all at cost
    ``top``, count as one free column. Distance and predecessor share one int64 key, with a
    per-search rotation so alike searches pick different equally short paths; ``far = 4 top + 4``
    means "not reached" (bounds in the docs section)."""

    def __init__(self, cost: Tensor, rows_live: Tensor) -> None:
        b, nr1, nc = cost.shape
        dev = cost.device
        self.flat_cost, self.rows_live = cost.view(b * nr1, nc), rows_live
        self.b, self.nr1, self.nc = b, nr1, nc
        self.col_ids = torch.arange(nc, device=dev)
        top = int(cost[:, :-1].max()) if nr1 > 1 and cost.numel() else 0
        self.top, self.far = top, 4 * top + 4
        # each row's listed columns (cost below top) as compressed sparse rows
        lb, li, lj = torch.nonzero(cost[:, :-1] < top, as_tuple=True)
        self.deg = torch.bincount(lb * nr1 + li, minlength=b * nr1)
        self.first = torch.cumsum(self.deg, 0) - self.deg
        self.adj, self.adj_cost = lj, cost[lb, li, lj].to(torch.int64)
        empty = torch.zeros(0, dtype=torch.int64, device=dev)
        self.sb, self.src, self.rot, self.sinkd, self.born = (empty.clone() for _ in range(5))
        self.key = torch.zeros(0, nc, dtype=torch.int64, device=dev)
        self.vkey, self.skey = empty.clone(), empty.clone()
        self.ak, self.ai, self.ad = empty.clone(), empty.clone(), empty.clone()
        self.conv = torch.zeros(0, dtype=torch.bool, device=dev)

    def searching(self) -> Tensor:
        """Samples with a search under way ``[B]``."""
        out = torch.zeros(self.b, dtype=torch.bool, device=self.sb.device)
        out[self.sb] = True
        return out

    def start(self, samples: Tensor, col4row: Tensor, steps: int) -> None:
        """A search from every free live row of ``samples`` (their next round)."""
        fb, fr = torch.nonzero(self.rows_live & (col4row < 0) & samples.unsqueeze(1),
                               as_tuple=True)
        k0 = self.sb.numel()
        self.sb = torch.cat([self.sb, fb])
        self.src = torch.cat([self.src, fr])
        self.rot = torch.cat([self.rot, (fr * 40503 + fb * 977) % self.nr1])
        self.sinkd = torch.cat([self.sinkd, torch.full_like(fr, self.far)])
        self.born = torch.cat([self.born, torch.full_like(fr, steps)])
        self.vkey = torch.cat([self.vkey, torch.full_like(fr, self.far * self.nr1)])
        self.skey = torch.cat([self.skey, torch.full_like(fr, self.far * self.nc)])
        self.key = torch.cat([self.key, torch.full((fr.numel(), self.nc), self.far * self.nr1,
                                                   dtype=torch.int64, device=fr.device)])
        self.ak = torch.cat([self.ak, k0 + torch.arange(fr.numel(), device=fr.device)])
        self.ai = torch.cat([self.ai, fr])
        self.ad = torch.cat([self.ad, torch.zeros_like(fr)])

    def progress(self) -> tuple[Tensor, Tensor]:
        """Samples searching and samples whose round may end (enough searches converged)."""
        self.conv = torch.ones_like(self.sb, dtype=torch.bool)
        self.conv.index_fill_(0, self.ak, False)
        n_s = torch.bincount(self.sb, minlength=self.b)
        n_c = torch.bincount(self.sb, weights=self.conv.double(), minlength=self.b)
        return n_s > 0, (n_c > 0) & (n_c >= ROUND_SHARE * n_s)

    def overran(self, steps: int) -> bool:
        """Whether a search still relaxes after more steps than rows (impossible)."""
        return bool(self.ak.numel()) and steps - int(self.born[self.ak].min()) > self.nr1 + 1

    def relax(self, u: Tensor, v: Tensor, row4col: Tensor) -> None:
        """One Bellman-Ford step of every search: relax the listed columns of its active rows;
        the unlisted ones (cost ``top``) count only as one free column at ``top - u`` when
        the row has a free unlisted column (an unlisted column with ``v < 0`` is never nearer,
        and when every free column is listed one of them is nearer still). 1-D
        ``index_select`` throughout: several times faster than indexing on a CPU."""
        ak, ai, nr1, nc = self.ak, self.ai, self.nr1, self.nc
        sb = self.sb.index_select(0, ak)
        rk = sb * nr1 + ai
        deg = self.deg.index_select(0, rk)
        # one entry per (active row, listed column)
        pair = torch.repeat_interleave(torch.arange(ak.numel(), device=ak.device), deg)
        pos = torch.arange(pair.numel(), device=ak.device) + (
            self.first.index_select(0, rk) - torch.cumsum(deg, 0) + deg).index_select(0, pair)
        cols = self.adj.index_select(0, pos)
        flat_cols = sb.index_select(0, pair) * nc + cols
        base = u.view(-1).index_select(0, rk).to(torch.int64) - self.ad
        r = (self.adj_cost.index_select(0, pos) - base.index_select(0, pair)
             - v.view(-1).index_select(0, flat_cols).to(torch.int64))
        k_e = ak.index_select(0, pair)
        slot = k_e * nc + cols
        rot = (ai + self.rot.index_select(0, ak)) % nr1
        key = r * nr1
        flat_key = self.key.view(-1)
        # only a strictly shorter distance replaces a column's row (no zero-cost cycles)
        better = key + nr1 <= flat_key.index_select(0, slot)
        key = torch.where(better, key + rot.index_select(0, pair), self.far * nr1)
        flat_key.scatter_reduce_(0, slot, key, reduce="amin")
        won = better & (key == flat_key.index_select(0, slot))
        col_row = row4col.view(-1).index_select(0, flat_cols)
        col_free = col_row < 0
        n_free = (row4col < 0).sum(1)
        free_listed = torch.zeros_like(ak).index_add_(0, pair, col_free.to(torch.int64))
        far = self.top - base  # the free unlisted columns' distance
        # rows without a free unlisted column offer none (far stays "not reached")
        far = torch.where(n_free.index_select(0, sb) > free_listed, far, self.far)
        self.vkey.scatter_reduce_(0, ak, far * nr1 + rot, reduce="amin")
        self.sinkd.scatter_reduce_(0, ak, far, reduce="amin")
        e = torch.nonzero(won)[:, 0]
        k, dist = k_e.index_select(0, e), r.index_select(0, e)
        row = col_row.index_select(0, e)
        free = row < 0
        self.sinkd.scatter_reduce_(0, k, torch.where(free, dist, self.far), reduce="amin")
        # the nearest listed free column, ties to the search's rotation
        spin = (cols.index_select(0, e) + self.rot.index_select(0, k)) % nc
        self.skey.scatter_reduce_(0, k, torch.where(free, dist * nc + spin, self.far * nc),
                                  reduce="amin")
        go = torch.nonzero(~free & (dist < self.sinkd.index_select(0, k)))[:, 0]
        self.ak, self.ad = k.index_select(0, go), dist.index_select(0, go)
        self.ai = row.index_select(0, go)

    def finish(self, samples: Tensor, u: Tensor, v: Tensor, col4row: Tensor,
               row4col: Tensor) -> None:
        """End the round of ``samples``: the combined dual update of their converged searches,
        augmentation along a set of vertex-disjoint paths among them, their searches
        dropped."""
        nr1, nc, b = self.nr1, self.nc, self.b
        kf = torch.nonzero(samples.index_select(0, self.sb) & self.conv)[:, 0]
        sb, delta = self.sb.index_select(0, kf), self.sinkd.index_select(0, kf)
        rot, key = self.rot.index_select(0, kf), self.key.index_select(0, kf)
        # one nearest free column per search, chosen by its rotation among ties: a listed one,
        # else one its row does not list
        skey, vkey = self.skey.index_select(0, kf), self.vkey.index_select(0, kf)
        real = torch.div(skey, nc, rounding_mode="floor") == delta
        sink = (skey % nc - rot) % nc
        last = torch.where(real, -1, (vkey % nr1 - rot) % nr1)
        virtual = torch.nonzero(~real)[:, 0]
        if virtual.numel():
            rk = sb.index_select(0, virtual) * nr1 + last.index_select(0, virtual)
            deg = self.deg.index_select(0, rk)
            pair = torch.repeat_interleave(torch.arange(rk.numel(), device=rk.device), deg)
            pos = torch.arange(pair.numel(), device=rk.device) + (
                self.first.index_select(0, rk) - torch.cumsum(deg, 0) + deg).index_select(0, pair)
            free = row4col.index_select(0, sb.index_select(0, virtual)) < 0
            free[pair, self.adj.index_select(0, pos)] = False
            spin = (self.col_ids + rot.index_select(0, virtual).unsqueeze(1)) % nc
            sink[virtual] = torch.where(free, spin, -1).argmax(1)
        pk, pi, pj = _trace_paths(key, rot, sb, sink, last, col4row, nr1)
        sb_p = sb.index_select(0, pk)
        chosen = _disjoint(pk, sb_p * nr1 + pi, sb * nc + sink, delta, b * max(nr1, nc))
        # every vertex moves by the largest of the searches' updates (see `sap_match`); a
        # matched row moves with its column
        kk, cc = torch.nonzero(key < (delta * nr1).unsqueeze(1), as_tuple=True)
        gap = delta.index_select(0, kk) - torch.div(
            key.view(-1).index_select(0, kk * nc + cc), nr1, rounding_mode="floor")
        dv = torch.zeros(b * nc, dtype=torch.int64, device=key.device)
        dv.scatter_reduce_(0, sb.index_select(0, kk) * nc + cc, gap, reduce="amax")
        dv = dv.view(b, nc)
        du = torch.where(col4row >= 0, dv.gather(1, col4row.clamp_min(0)), 0)
        du.view(-1).index_copy_(0, sb * nr1 + self.src.index_select(0, kf), delta)
        u += du.to(u.dtype)
        v -= dv.to(v.dtype)
        take = torch.nonzero(chosen.index_select(0, pk))[:, 0]
        tb, ti, tj = (t.index_select(0, take) for t in (sb_p, pi, pj))
        col4row.view(-1).index_copy_(0, tb * nr1 + ti, tj)
        row4col.view(-1).index_copy_(0, tb * nc + tj, ti)
        self._keep(~samples.index_select(0, self.sb))

    def _keep(self, keep: Tensor) -> None:
        """Keep only the searches ``keep``."""
        remap = torch.cumsum(keep, 0) - 1
        stay = torch.nonzero(keep.index_select(0, self.ak))[:, 0]
        self.ak, self.ai, self.ad = (t.index_select(0, stay) for t in (self.ak, self.ai, self.ad))
        self.ak = remap.index_select(0, self.ak)
        at = torch.nonzero(keep)[:, 0]
        (self.sb, self.src, self.rot, self.sinkd, self.born, self.key, self.vkey,
         self.skey) = (t.index_select(0, at) for t in (
             self.sb, self.src, self.rot, self.sinkd, self.born, self.key, self.vkey, self.skey))


def _trace_paths(key: Tensor, rot: Tensor, sb: Tensor, sink: Tensor, last: Tensor,
                 col4row: Tensor, nr1: int) -> tuple[Tensor, Tensor, Tensor]:
    """Each search's path back from its sink column to its free source row, as the pairs
    ``(search, row, column)`` it would assign (a search's rows, taken strictly shorter each
    time, form a tree, so the walk ends). ``last``: the sink's row where the search did not
    store it (an unlisted sink), else -1."""
    idx = torch.arange(sink.numel(), device=sink.device)
    nc = key.shape[1]
    j = sink
    out: list[tuple[Tensor, Tensor, Tensor]] = []
    while idx.numel():
        i = (key.view(-1).index_select(0, idx * nc + j) % nr1 - rot.index_select(0, idx)) % nr1
        if not out:
            i = torch.where(last >= 0, last, i)
        out.append((idx, i, j))
        prev = col4row.view(-1).index_select(0, sb.index_select(0, idx) * nr1 + i)
        more = torch.nonzero(prev >= 0)[:, 0]
        idx, j = idx.index_select(0, more), prev.index_select(0, more)
    if not out:
        empty = torch.zeros(0, dtype=torch.int64, device=sink.device)
        return empty, empty, empty
    pk, pi, pj = (torch.cat(t) for t in zip(*out))
    return pk, pi, pj


def _disjoint(pk: Tensor, row_slot: Tensor, sink_slot: Tensor, delta: Tensor, n_slots: int,
              passes: int = 3) -> Tensor:
    """Which paths to augment: vertex-disjoint ones (rows ``row_slot`` of path ``pk``, one
    sink column each), greedy by shortest distance. A path is taken when it comes first, by
    ``(delta, index)``, at each of its vertices among the paths still open (so each sample's
    first path always is); paths meeting a taken one close; ``passes`` such passes."""
    n = delta.numel()
    dev = delta.device
    prio = delta * n + torch.arange(n, device=dev)
    chosen = torch.zeros(n, dtype=torch.bool, device=dev)
    open_ = torch.ones(n, dtype=torch.bool, device=dev)
    big = torch.iinfo(torch.int64).max
    for _ in range(passes):
        live = open_[pk]
        row_first = torch.full((n_slots,), big, dtype=torch.int64, device=dev)
        row_first.scatter_reduce_(0, row_slot[live], prio[pk[live]], reduce="amin")
        sink_first = torch.full((n_slots,), big, dtype=torch.int64, device=dev)
        sink_first.scatter_reduce_(0, sink_slot[open_], prio[open_], reduce="amin")
        lost = open_ & (sink_first[sink_slot] != prio)
        lost[pk[live & (row_first[row_slot] != prio[pk])]] = True
        win = open_ & ~lost
        chosen |= win
        taken_row = torch.zeros(n_slots, dtype=torch.bool, device=dev)
        taken_row[row_slot[win[pk]]] = True
        taken_sink = torch.zeros(n_slots, dtype=torch.bool, device=dev)
        taken_sink[sink_slot[win]] = True
        meets = taken_sink[sink_slot]
        meets[pk[taken_row[row_slot]]] = True
        open_ &= ~win & ~meets
        if not bool(open_.any()):
            break
    return chosen


def _finish_per_sample(cost: Tensor, rows_live: Tensor, col4row: Tensor, sel: Tensor) -> None:
    """Assign the live rows of samples ``sel`` optimally by scipy's Jonker-Volgenant on their
    integer cost rows (in place; ``row4col`` and the duals of these samples are not kept)."""
    from scipy.optimize import linear_sum_assignment

    cost_np, live_np = cost.cpu().numpy(), rows_live.cpu().numpy()
    for s in sel.tolist():
        rows = np.flatnonzero(live_np[s])
        r, c = linear_sum_assignment(cost_np[s, rows])
        col4row[s, torch.as_tensor(rows[r], device=cost.device)] = torch.as_tensor(
            c, dtype=torch.int64, device=cost.device)


def _greedy(bi: Tensor, row: Tensor, col: Tensor, rows_live: Tensor, col4row: Tensor,
            row4col: Tensor, passes: int) -> None:
    """Start from the row-reduced duals: give rows free columns of zero reduced cost (the pairs
    ``(bi, row, col)``; one row per column per pass). Assigned pairs are tight, so the
    optimality invariants hold. Works on the pair list, never on the dense matrix."""
    b, nr = col4row.shape
    nc = row4col.shape[1]
    flat_c4r, flat_r4c = col4row.view(-1), row4col.view(-1)
    rkey, ckey = bi * nr + row, bi * nc + col
    for _ in range(passes):
        ok = rows_live.view(-1)[rkey] & (flat_c4r[rkey] < 0) & (flat_r4c[ckey] < 0)
        if not bool(ok.any()):
            return
        rk, ck, r, c = rkey[ok], ckey[ok], row[ok], col[ok]
        # each row proposes its highest free tight column, each column takes its highest row
        pick = torch.full((b * nr,), -1, dtype=torch.int64, device=bi.device)
        pick.scatter_reduce_(0, rk, c, reduce="amax")
        prop = pick[rk] == c
        rk, ck, r, c = rk[prop], ck[prop], r[prop], c[prop]
        take = torch.full((b * nc,), -1, dtype=torch.int64, device=bi.device)
        take.scatter_reduce_(0, ck, r, reduce="amax")
        won = take[ck] == r
        flat_c4r[rk[won]] = c[won]
        flat_r4c[ck[won]] = r[won]


def _reduce_rows(cost: Tensor, u: Tensor, v: Tensor, col4row: Tensor, row4col: Tensor,
                 rows_live: Tensor, rounds: int) -> None:
    """Jonker-Volgenant's augmenting row reduction, all free rows at once (in place; the
    invariants it keeps are argued in `sap_match`). Needs at least two columns."""
    b, nr1, nc = cost.shape
    flat_cost = cost.view(b * nr1, nc)
    for _ in range(rounds):
        sb, sr = torch.nonzero(rows_live & (col4row < 0), as_tuple=True)
        if sb.numel() == 0:
            return
        h = flat_cost.index_select(0, sb * nr1 + sr) - v.index_select(0, sb)
        # among equal values a free column first (2h + 1 fits: h <= 2 top, see _cost_matrix)
        two = (2 * h + (row4col >= 0).to(h.dtype).index_select(0, sb)).topk(
            2, dim=1, largest=False)
        h1, h2 = torch.div(two.values, 2, rounding_mode="floor").to(torch.int64).unbind(1)
        j1 = two.indices[:, 0]
        gain = h2 - h1
        bid = (gain > 0) | (row4col[sb, j1] < 0)
        key = torch.where(bid, gain * nr1 + sr, -1)  # largest gain wins; ties: highest row
        best = torch.full((b * nc,), -1, dtype=torch.int64, device=cost.device)
        best.scatter_reduce_(0, sb * nc + j1, key, reduce="amax")
        won = bid & (best[sb * nc + j1] == key)
        wb, r, j, gain, h2 = sb[won], sr[won], j1[won], gain[won], h2[won]
        if wb.numel() == 0:
            return
        old = row4col[wb, j]
        had = old >= 0
        col4row[wb[had], old[had]] = -1
        row4col[wb, j] = r
        col4row[wb, r] = j
        v[wb, j] -= gain.to(v.dtype)
        u[wb, r] = h2.to(u.dtype)


def _column_min(key: Tensor, rows: Tensor, samples: Tensor, unreached: Tensor,
                packed: bool) -> tuple[Tensor, Tensor | None]:
    """Per sample and column, the smallest of ``key [L, C]`` over the rows ``rows [L]`` of
    samples ``samples [L]``, and the row attaining it; ``unreached [B, C]`` holds the keys
    before any row reaches. Any row attaining the minimum gives a shortest-path tree. Packed,
    a key is ``distance * span + (row ^ mask[column])`` (rows below ``span``, a power of two),
    so ties go to the smallest ``row ^ mask[column]``: tied rows root different columns'
    search trees and more of them augment in one phase, and the row comes back as ``None``
    (it is in the key). Else a key is the distance, and the row is the lowest one attaining
    it (0 where none reaches)."""
    b, c = unreached.shape
    # a flat scatter: several times faster on a CPU than one along dim 0 of [B, C]
    slot = ((samples * c).unsqueeze(1) + torch.arange(c, device=key.device)).view(-1)
    low = unreached.reshape(-1).clone()
    low.scatter_reduce_(0, slot, key.reshape(-1), reduce="amin")
    if packed:
        return low.view(b, c), None
    none = 2**62  # above every row
    at = torch.where(key.reshape(-1) == low[slot], rows.unsqueeze(1).expand_as(key).reshape(-1),
                     none)
    via = torch.full_like(low, none)
    via.scatter_reduce_(0, slot, at, reduce="amin")
    return low.view(b, c), torch.where(via < none, via, 0).view(b, c)


def _flip_paths(path: Tensor, col4row: Tensor, row4col: Tensor, sb: Tensor, sj: Tensor) -> None:
    """Augment along vertex-disjoint alternating paths ending at free columns ``(sb, sj)``,
    walking back until a free row (the path's root) is reached. A path has at most one arc
    per row; a longer walk is a cycle of pointers, a bug, and an error rather than a hang."""
    for _ in range(col4row.shape[1] + 1):
        if sb.numel() == 0:
            return
        i = path[sb, sj]
        prev = col4row[sb, i]
        row4col[sb, sj] = i
        col4row[sb, i] = sj
        more = prev >= 0
        sb, sj = sb[more], prev[more]
    raise RuntimeError("sap_match: an augmenting path ran past every row (a pointer cycle)")


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
