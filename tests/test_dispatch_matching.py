"""The batched matchers (shortest augmenting paths, auction) and scipy equal OR-Tools' optimum;
bad input is refused."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators import matching as mt


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
        result = mt.sap_match(values * scale, cand, n)
        assert torch.allclose(result.value, best, rtol=0, atol=1e-6 * scale)
        check_feasible(result, values, cand)


def test_sap_matches_nothing_without_positive_pairs():
    values = torch.tensor([[[-1.0, 0.0], [0.0004, -3.0]]])
    cand = torch.tensor([[[0, 1], [1, 0]]])
    r = mt.sap_match(values, cand, 2)
    assert r.assignment.tolist() == [[-1, -1]] and float(r.value) == 0.0


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
    with pytest.raises(ValueError, match="idle_arcs"):
        mt.ortools_match(values, cand, 4, idle_arcs="some")
    with pytest.raises(ValueError, match="matcher's limit"):
        mt.check_problem_size(10_000, 10_000, 10_000)
    with pytest.raises(ValueError, match="matcher"):
        mt.match(values, cand, 4, method="magic")
