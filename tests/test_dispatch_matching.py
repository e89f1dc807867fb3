"""The batched matchers (shortest augmenting paths, auction) and scipy equal OR-Tools' optimum;
bad input is refused."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from oprl.simulators import matching as mt


def random_instance(seed: int, b: int, m: int, n: int, k: int, ties: bool):
    g = torch.Generator().manual_seed(seed)
    if ties:
        values = torch.randint(-3, 8, (b, m, k), generator=g).float()
    else:
        values = torch.rand(b, m, k, generator=g) * 20 - 4
    cand = torch.stack([torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(m)])
                        for _ in range(b)])
    cand[torch.rand(b, m, k, generator=g) < 0.25] = -1  # padding
    return values, cand


def sap_start(values, cand, n: int, m: int, resolution: float):
    """`sap_match`'s problem before any stage: costs, live pairs, duals ``u``/``v``, empty
    assignment maps, the infinity and the tight pairs for the greedy start."""
    a, _ = mt._checked_benefits(values, cand, n, resolution)
    local, nl = mt._local_objects(a, cand, n)
    cost, live, u, inf, tight = mt._cost_matrix(a, local, nl, m <= nl)
    b, nr, nc = cost.shape
    u = torch.where(live, u, torch.zeros((), dtype=cost.dtype))
    v = torch.zeros(b, nc, dtype=cost.dtype)
    col4row = torch.full((b, nr), -1, dtype=torch.int64)
    row4col = torch.full((b, nc), -1, dtype=torch.int64)
    return cost, live, u, v, col4row, row4col, inf, tight


def check_invariants(cost, live, u, v, col4row, row4col) -> None:
    """Reduced costs >= 0, assigned pairs tight, free columns at v = 0, other columns at
    v <= 0, and the two assignment maps agree."""
    b, nr, _ = cost.shape
    reduced = cost - u.unsqueeze(2) - v.unsqueeze(1)
    assert (reduced[:, :-1][live[:, :-1]] >= 0).all()
    hit = col4row >= 0
    assert (reduced.gather(2, col4row.clamp_min(0).unsqueeze(2)).squeeze(2)[hit] == 0).all()
    assert (v[row4col < 0] == 0).all() and (v <= 0).all()
    rows = torch.arange(nr).expand(b, nr)
    assert torch.equal(row4col.gather(1, col4row.clamp_min(0))[hit], rows[hit])
    assert int(hit.sum()) == int((row4col >= 0).sum())


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(1, 9), n=st.integers(1, 9),
       ties=st.booleans())
def test_auction_and_scipy_equal_ortools(seed, m, n, ties):
    k = min(n, 5)
    values, cand = random_instance(seed, 3, m, n, k, ties)
    _, best = mt.ortools_match(values, cand, n, resolution=0.01)
    _, best_all = mt.ortools_match(values, cand, n, resolution=0.01, idle_arcs="all")
    assert torch.allclose(best_all, best, atol=1e-9)
    for result in (mt.sap_match(values, cand, n, resolution=0.01),
                   mt.sap_match(values, cand, n, resolution=0.01, greedy_passes=0),
                   mt.sap_match(values, cand, n, resolution=0.01, finish="batched"),
                   mt.sap_match(values, cand, n, resolution=0.01, finish="batched",
                                greedy_passes=0, reduction_rounds=0),
                   mt.sap_match(values, cand, n, resolution=0.01, finish_share=1.0),
                   mt.sap_match(values, cand, n, resolution=0.01, finish="batched",
                                augment="rounds"),
                   mt.sap_match(values, cand, n, resolution=0.01, finish="batched",
                                augment="rounds", greedy_passes=0, reduction_rounds=0),
                   mt.auction_match(values, cand, n, resolution=0.01),
                   mt.scipy_match(values, cand, n, resolution=0.01)):
        assert torch.allclose(result.value, best, atol=1e-9)
        check_feasible(result, values, cand)


def check_feasible(result: mt.Matching, values, cand) -> None:
    for b in range(values.shape[0]):
        chosen = result.assignment[b][result.assignment[b] >= 0].tolist()
        assert len(chosen) == len(set(chosen))  # no object twice
        for i, c in enumerate(result.choice[b].tolist()):
            if c >= 0:
                assert cand[b, i, c] == result.assignment[b, i]
                assert values[b, i, c] > 0  # never a pair worth no more than "no match"


def test_larger_batch_with_both_roles_equals_ortools():
    """More persons than objects (the matchers flip roles) and fewer (they do not)."""
    for m, n in ((30, 12), (12, 30)):
        values, cand = random_instance(7, 16, m, n, 8, ties=True)
        _, best = mt.ortools_match(values, cand, n, resolution=1.0)
        assert torch.equal(mt.auction_match(values, cand, n, resolution=1.0).value, best)
        result = mt.sap_match(values, cand, n, resolution=1.0)
        assert torch.equal(result.value, best)
        check_feasible(result, values, cand)


def test_sap_equals_ortools_on_alike_preferences_and_wide_benefits():
    """Persons who all rank objects alike (the auction's price war) with few objects, and
    benefits too wide for int32 work tensors (the int64 path)."""
    g = torch.Generator().manual_seed(3)
    b, m, n, k = 32, 40, 15, 10  # b >= 16: the hard tail runs on a compacted batch
    base = torch.rand(b, 1, n, generator=g) * 5
    cand = torch.stack([torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(m)])
                        for _ in range(b)])
    values = base.expand(b, m, n).gather(2, cand) + 0.01 * torch.rand(b, m, k, generator=g)
    for scale in (1.0, 1e7):
        _, best = mt.ortools_match(values * scale, cand, n)
        for finish in ("batched", "scipy"):
            for augment in ("paths", "rounds"):
                result = mt.sap_match(values * scale, cand, n, finish=finish, augment=augment)
                assert torch.allclose(result.value, best, rtol=0, atol=1e-6 * scale)
                check_feasible(result, values, cand)


def test_sap_equals_ortools_with_duplicate_rows_and_columns():
    """Dispatch's hard case: vehicles in one zone score every order alike and orders of one
    kind are scored alike (many exact ties, long chains of augmentations); more vehicles than
    orders and fewer. Batched to the end, and with the per-sample finish of the tail."""
    g = torch.Generator().manual_seed(11)
    b, k = 24, 6
    for m, n in ((40, 25), (20, 45)):
        kind = torch.randint(0, 5, (b, m), generator=g)  # order kinds
        zone = torch.randint(0, 4, (b, n), generator=g)  # vehicle zones
        table = torch.randint(0, 30, (b, 5, 4), generator=g).float() / 4
        cand = torch.stack([torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(m)])
                            for _ in range(b)])
        values = table[torch.arange(b).view(b, 1, 1), kind.unsqueeze(2), zone.gather(
            1, cand.view(b, -1)).view(b, m, k)]
        _, best = mt.ortools_match(values, cand, n, resolution=0.25)
        batched = mt.sap_match(values, cand, n, resolution=0.25, finish="batched")
        mixed = mt.sap_match(values, cand, n, resolution=0.25, finish="scipy", finish_share=0.5)
        early = mt.sap_match(values, cand, n, resolution=0.25, finish="scipy", finish_share=0.0,
                             finish_steps=2)
        assert batched.finished_per_sample == 0 and mixed.finished_per_sample > 0
        assert early.rounds <= 2 and early.finished_per_sample > 0
        rounds = mt.sap_match(values, cand, n, resolution=0.25, finish="batched",
                              augment="rounds")
        rounds_mixed = mt.sap_match(values, cand, n, resolution=0.25, finish="scipy",
                                    finish_share=0.5, augment="rounds")
        assert rounds.finished_per_sample == 0
        for result in (batched, mixed, early, rounds, rounds_mixed):
            assert torch.equal(result.value, best)
            check_feasible(result, values, cand)


def tied_instance(seed: int, b: int, m: int, n: int, k: int, kinds: int, zones: int):
    """Orders of ``kinds`` kinds, each kind listing the same vehicles with the same scores
    (identical columns or rows of the assignment), vehicles of ``zones`` alike zones, a quarter
    of the pairs padded, and the last sample with no usable pair at all."""
    g = torch.Generator().manual_seed(seed)
    kind = torch.randint(0, kinds, (b, m), generator=g)
    lists = torch.stack([torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(kinds)])
                         for _ in range(b)])  # [B, kinds, K]
    cand = lists.gather(1, kind.unsqueeze(2).expand(b, m, k)).clone()
    zone = torch.randint(0, zones, (b, n), generator=g)
    table = torch.randint(-2, 12, (b, kinds, zones), generator=g).float() / 4
    values = table[torch.arange(b).view(b, 1, 1), kind.unsqueeze(2),
                   zone.gather(1, cand.view(b, -1)).view(b, m, k)]
    pad = torch.rand(b, kinds, k, generator=g) < 0.25
    cand[pad.gather(1, kind.unsqueeze(2).expand(b, m, k))] = -1
    values[-1] = -1.0
    return values, cand


@pytest.mark.parametrize("m, n", [(40, 12), (12, 40), (30, 30), (1, 8), (8, 1)])
def test_rounds_equal_ortools_on_heavy_ties(m, n):
    """The parallel rounds (one search per free row, combined dual update, disjoint paths)
    on many identical columns and rows, both orientations, square, single row or column,
    padding and an empty sample: the optimum of OR-Tools, a feasible matching."""
    for seed in range(3):
        values, cand = tied_instance(seed, 20, m, n, min(n, 6), kinds=3, zones=2)
        _, best = mt.ortools_match(values, cand, n, resolution=0.25)
        for kw in ({}, {"greedy_passes": 0, "reduction_rounds": 0}):
            result = mt.sap_match(values, cand, n, resolution=0.25, finish="batched",
                                  augment="rounds", **kw)
            assert torch.equal(result.value, best)
            assert float(result.value[-1]) == 0.0 and (result.assignment[-1] == -1).all()
            check_feasible(result, values, cand)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(1, 12), n=st.integers(1, 12),
       kinds=st.integers(1, 4), zones=st.integers(1, 3))
def test_rounds_equal_ortools_on_random_ties(seed, m, n, kinds, zones):
    values, cand = tied_instance(seed, 5, m, n, min(n, 5), kinds, zones)
    _, best = mt.ortools_match(values, cand, n, resolution=0.25)
    result = mt.sap_match(values, cand, n, resolution=0.25, finish="batched", augment="rounds")
    assert torch.equal(result.value, best)
    check_feasible(result, values, cand)


def test_disjoint_paths_share_no_vertex_and_keep_each_samples_first():
    """Paths 0-3 of one sample and path 4 of another: 0 and 1 share row 5, 2 and 3 share
    their sink; the shortest of each conflicting pair is kept, 4 alone is kept."""
    pk = torch.tensor([0, 0, 1, 1, 2, 3, 4])
    row_slot = torch.tensor([5, 6, 5, 7, 8, 9, 5 + 100])
    sink_slot = torch.tensor([1, 2, 3, 3, 101])
    delta = torch.tensor([4, 2, 1, 3, 9])
    chosen = mt._disjoint(pk, row_slot, sink_slot, delta, 200)
    assert chosen.tolist() == [False, True, True, False, True]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(1, 9), n=st.integers(2, 9),
       rounds=st.integers(0, 6), ties=st.booleans())
def test_sap_stages_keep_the_optimality_invariants(seed, m, n, rounds, ties):
    """After the greedy start, the row reduction and the augmentations: reduced costs
    >= 0, assigned pairs tight, free columns at v = 0, other columns at v <= 0 (the exactness
    argument of `sap_match`)."""
    values, cand = random_instance(seed, 4, m, n, min(n, 4), ties)
    cost, live, u, v, col4row, row4col, inf, tight = sap_start(values, cand, n, m, 0.5)
    mt._greedy(*tight, live, col4row, row4col, 1)
    nc = cost.shape[2]
    stages = [lambda: mt._reduce_rows(cost, u, v, col4row, row4col, live, rounds)] if nc >= 2 \
        else []
    stages.append(lambda: mt._augment_all(cost, u, v, col4row, row4col, live, inf, -1, [0]))
    for stage in stages:
        stage()
        check_invariants(cost, live, u, v, col4row, row4col)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(1, 10), n=st.integers(2, 10),
       kinds=st.integers(1, 4), greedy=st.booleans())
def test_every_round_keeps_the_optimality_invariants(seed, m, n, kinds, greedy):
    """After every round of `_Rounds` (combined dual update, disjoint augmentations) the
    invariants hold and the round assigns at least one more row of each sample it ends."""
    values, cand = tied_instance(seed, 4, m, n, min(n, 4), kinds, 2)
    cost, live, u, v, col4row, row4col, _, tight = sap_start(values, cand, n, m, 0.25)
    b, nr, nc = cost.shape
    if greedy:
        mt._greedy(*tight, live, col4row, row4col, 1)
    rounds = mt._Rounds(cost, live)
    rounds.start(torch.ones(b, dtype=torch.bool), col4row, 0)
    for step in range(10 * nr * nc):
        searching, ready = rounds.progress()
        if not searching.any():
            break
        if ready.any():
            before = (col4row >= 0).sum(1)
            rounds.finish(ready, u, v, col4row, row4col)
            assert ((col4row >= 0).sum(1)[ready] > before[ready]).all()
            check_invariants(cost, live, u, v, col4row, row4col)
            rounds.start(ready, col4row, step)
        else:
            rounds.relax(u, v, row4col)
    assert not rounds.searching().any()
    assert ((col4row >= 0) == live).all()


def test_column_minimum_packed_or_not_and_its_tie_rules():
    g = torch.Generator().manual_seed(5)
    r = torch.randint(0, 3, (12, 5), generator=g)  # many ties
    rows = torch.randint(0, 9, (12,), generator=g)
    samples = torch.randint(0, 3, (12,), generator=g)
    span, mask, inf = 16, torch.tensor([0, 5, 9, 3, 14]), 2**30
    key = r * span + (rows.unsqueeze(1) ^ mask)
    low, none = mt._column_min(key, rows, samples, (inf * span + mask).repeat(3, 1), True)
    assert none is None
    value, row = low >> 4, (low & (span - 1)) ^ mask  # decoded
    plain, via = mt._column_min(r, rows, samples, torch.full((3, 5), inf), False)
    assert torch.equal(value, plain)
    # brute force: the smallest value; packed, the row with the smallest row ^ mask[column]
    # among those attaining it, plain, the lowest such row
    tie_broken = 0
    for s in range(3):
        for c in range(5):
            here = samples == s
            if not here.any():
                assert value[s, c] == inf and row[s, c] == 0 and via[s, c] == 0
                continue
            lowest = r[here, c].min()
            tied = rows[here][r[here, c] == lowest]
            assert value[s, c] == lowest and via[s, c] == tied.min()
            assert int(row[s, c]) == min(tied.tolist(), key=lambda x: x ^ int(mask[c]))
            tie_broken += int(row[s, c] != via[s, c])
    assert tie_broken > 0  # the two rules really differ on some tied slot


def test_sap_matches_nothing_without_positive_pairs():
    values = torch.tensor([[[-1.0, 0.0], [0.0004, -3.0]]])
    cand = torch.tensor([[[0, 1], [1, 0]]])
    r = mt.sap_match(values, cand, 2)
    assert r.assignment.tolist() == [[-1, -1]] and float(r.value) == 0.0
    for shape in ((0, 3, 2), (2, 0, 2), (2, 3, 0)):  # empty batch, no persons, no candidates
        r = mt.sap_match(torch.ones(shape), torch.zeros(shape, dtype=torch.int64), 1)
        assert r.assignment.shape == shape[:2] and (r.assignment == -1).all()
        assert r.value.shape == (shape[0],) and (r.value == 0).all()


def test_padding_only_and_negative_scores_match_nothing():
    values = torch.tensor([[[-1.0, 5.0], [2.0, 3.0]]])
    cand = torch.tensor([[[0, -1], [-1, -1]]])
    r = mt.auction_match(values, cand, 2)
    assert r.assignment.tolist() == [[-1, -1]] and float(r.value) == 0.0


def test_known_optimum_beats_greedy():
    # greedy would give object 0 to person 0 (10) and leave person 1 with 1: total 11;
    # the optimum gives 9 + 8 = 17
    values = torch.tensor([[[10.0, 9.0], [8.0, 1.0]]])
    cand = torch.tensor([[[0, 1], [0, 1]]])
    for fn in (mt.auction_match, mt.sap_match):
        r = fn(values, cand, 2, resolution=1.0)
        assert r.assignment.tolist() == [[1, 0]] and float(r.value) == 17.0


def test_bad_input_is_a_clear_error():
    values, cand = random_instance(0, 1, 3, 4, 2, ties=False)
    for fn in (mt.auction_match, mt.sap_match):
        with pytest.raises(ValueError, match="values, candidates"):
            fn(values[..., :1], cand, 4)
        with pytest.raises(ValueError, match="object ids"):
            fn(values, cand + 10, 4)
        with pytest.raises(ValueError, match="finite"):
            fn(torch.full_like(values, float("nan")), cand.clamp_min(0), 4)
    with pytest.raises(ValueError, match="finish"):
        mt.sap_match(values, cand, 4, finish="later")
    with pytest.raises(ValueError, match="finish_share"):
        mt.sap_match(values, cand, 4, finish_share=1.5)
    with pytest.raises(ValueError, match="augment"):
        mt.sap_match(values, cand, 4, augment="magic")
    with pytest.raises(ValueError, match="finish_steps"):
        mt.sap_match(values, cand, 4, finish_steps=-1)
    with pytest.raises(ValueError, match="idle_arcs"):
        mt.ortools_match(values, cand, 4, idle_arcs="some")
    with pytest.raises(ValueError, match="matcher's limit"):
        mt.check_problem_size(10_000, 10_000, 10_000)
    with pytest.raises(ValueError, match="matcher"):
        mt.match(values, cand, 4, method="magic")


def test_matchers_hand_back_tensors_autograd_can_use():
    """The matchers run under inference mode; what they return still serves as an index in a
    differentiable computation (inference tensors could not be saved for backward)."""
    values, cand = random_instance(0, 3, 4, 5, 3, False)
    for match in (mt.sap_match, mt.auction_match):
        scores = values.clone().requires_grad_()
        result = match(scores, cand, 5)
        assert not result.choice.is_inference() and not result.value.is_inference()
        scores.gather(2, result.choice.clamp_min(0).unsqueeze(2)).sum().backward()
        assert scores.grad is not None and scores.grad.abs().sum() > 0
