"""OSPO/GRPO: advantages as defined, the trainer contract (history, best weights, exact resume)
and bad hyper-parameters refused."""

from __future__ import annotations

import pytest
import torch

from oprl.algorithms.ospo import (
    discounted_to_go,
    normalise_within_step,
    train_grpo,
    train_ospo,
)
from oprl.policies.dispatch import PairMLP, pair_log_prob
from oprl.runs import through_checkpoint
from oprl.simulators.dispatch import manhattan


def tiny():
    return manhattan(n_vehicles=20, requests=60, horizon=6, eval_horizon=6, candidates=3)


def test_normalisation_is_per_step_over_matched_pairs():
    values = torch.tensor([[1.0, 3.0, 100.0], [5.0, 5.0, 7.0]])
    matched = torch.tensor([[True, True, False], [True, False, False]])
    out = normalise_within_step(values, matched)
    assert torch.allclose(out[0, :2], torch.tensor([-1.0, 1.0]), atol=1e-5)
    assert out[0, 2] == 0 and out[1].abs().sum() == 0  # unmatched and lone pairs get 0


def test_discounted_reward_to_go_closed_form():
    r = torch.tensor([[[1.0], [0.0], [2.0]]])
    assert torch.allclose(discounted_to_go(r, 0.5).squeeze(), torch.tensor([1.5, 1.0, 2.0]))


def test_pair_log_probs_form_a_distribution():
    scores = torch.tensor([[[0.2, -0.1, 0.0]]])
    valid = torch.tensor([[[True, True, False]]])

    def total(no_match: bool) -> torch.Tensor:
        return sum(pair_log_prob(scores, valid, torch.tensor([[k]]), 0.1, no_match).exp()
                   for k in range(2))

    assert torch.allclose(total(False), torch.ones(1, 1))  # over the valid candidates only
    no_match = 1 / (1 + torch.exp(scores[0, 0, :2] / 0.1).sum())
    assert torch.allclose(total(True) + no_match, torch.ones(1, 1))
    shifted = pair_log_prob(scores + 5, valid, torch.tensor([[0]]), 0.1)
    assert torch.allclose(shifted, pair_log_prob(scores, valid, torch.tensor([[0]]), 0.1))


@pytest.mark.parametrize("trainer", [train_ospo, train_grpo])
def test_trainer_contract_and_exact_resume(trainer):
    sim = tiny()
    hyper = {"batch_size": 2, "dev_scenarios": 2, "eval_every": 1, "lr": 1e-2}
    torch.manual_seed(0)
    full = trainer(sim, PairMLP(sim, hidden=8), steps=2, seed=3, **hyper)
    assert [h["step"] for h in full.history] == [0, 1, 2]
    assert all({"step", "wall_s", "dev_reward"} <= set(h) for h in full.history)
    best = max(full.history, key=lambda h: h["dev_reward"])
    assert full.best_step == best["step"] and full.steps_done == 2
    saved = {}

    def keep(step, policy, optimizer, history, state):
        saved[step] = through_checkpoint(state)

    torch.manual_seed(0)
    trainer(sim, PairMLP(sim, hidden=8), steps=1, seed=3, callback=keep, **hyper)
    torch.manual_seed(1)  # different initial weights: the checkpoint must override them
    resumed = trainer(sim, PairMLP(sim, hidden=8), steps=2, seed=3, start_state=saved[1], **hyper)
    assert [h["dev_reward"] for h in resumed.history] == [h["dev_reward"] for h in full.history]
    for a, b in zip(resumed.policy.state_dict().values(), full.policy.state_dict().values()):
        assert torch.equal(a, b)


def test_bad_hyper_parameters_are_refused():
    sim = tiny()
    with pytest.raises(ValueError, match="temperature"):
        train_ospo(sim, PairMLP(sim), steps=1, temperature=0.0)
    with pytest.raises(ValueError, match="advantage"):
        train_ospo(sim, PairMLP(sim), steps=1, advantage="a2c")
