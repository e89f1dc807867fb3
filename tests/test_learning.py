"""Learners that stop learning fail here: each trainer must beat its starting point or a
baseline by a stated margin on a tiny instance (fixed seeds). `benchmarks/mutations.py`
breaks each learner on purpose (advantage sign flipped, actor update dropped, ...) and checks
that these tests then fail."""

from __future__ import annotations

import torch

from oprl.algorithms.common import DEV_SEED_OFFSET
from oprl.algorithms.constrained_ac import train_rcpo, train_tscac
from oprl.algorithms.hdpo import train_hdpo
from oprl.algorithms.ospo import evaluate_reward, train_grpo, train_ospo
from oprl.core import rollout
from oprl.policies.dispatch import PairMLP, PickupAssignment
from oprl.policies.fishery import ConstantEscapement, FisheryMLP, grid_search
from oprl.policies.recsys import CandidateMLP
from oprl.simulators.dispatch import manhattan
from oprl.simulators.fishery import model1
from oprl.simulators.recsys import exact_policy_values, tabular
from oprl.solvers.recsys import cmdp_lp


def test_ospo_and_grpo_beat_their_start_and_the_per_step_assignment():
    """20 vehicles, 60 requests, 6 minutes; the untrained pair MLP scores by the pickup prior.
    Six steps must raise the dev reward by >= 5 % over both the start and the exact per-step
    min-pickup assignment on the same dev episodes (observed: +20 %); a flipped advantage
    sign lowers it instead."""
    sim = manhattan(n_vehicles=20, requests=60, horizon=6, eval_horizon=6, candidates=4)
    dev = sim.sample_trace(8, 6, seed=DEV_SEED_OFFSET)  # the trainers' dev episodes (seed 0)
    assignment = evaluate_reward(sim, PickupAssignment(sim), dev)[0]
    for trainer in (train_ospo, train_grpo):
        torch.manual_seed(0)
        res = trainer(sim, PairMLP(sim, hidden=16), steps=6, batch_size=4, dev_scenarios=8,
                      eval_every=2, lr=1e-2, seed=0)
        start = res.history[0]["dev_reward"]
        assert res.best_step > 0, trainer.__name__
        assert evaluate_reward(sim, res.policy, dev)[0] >= 1.05 * max(start, assignment)


def tiny_cmdp():
    """One user type, two engagement levels, three item kinds (long, social, filler); short
    sessions (exit >= 25 % per impression) so 30 impressions are the whole session."""
    return tabular(thresholds=(0.06, 0.005, 0.005, 0.005), user_mix=(1.0,),
                   interest=((0.9, 0.6, 0.2),), duration_s=(90.0, 25.0, 12.0),
                   quality=(0.4, 0.6, 0.3),
                   signal_rate=((0.005, 0.03, 0.005, 0.003), (0.08, 0.08, 0.04, 0.02),
                                (0.01, 0.02, 0.01, 0.01)),
                   levels=2, start_level=0, exit_min=0.25, exit_span=0.1, horizon=30,
                   eval_horizon=30)


def lagrangian(values: dict, lp) -> float:
    """Watch time plus the LP's duals times each signal's slack: by LP duality no policy
    exceeds the LP optimum in this, and the optimal policy attains it."""
    thr = dict(zip(("follow", "like", "comment", "share"), lp.details["thresholds"]))
    return values["watch_time"] + sum(lp.details["duals"][k] * (values[k] - thr[k]) for k in thr)


def test_tscac_and_rcpo_meet_every_constraint_and_close_most_of_the_gap_to_the_lp():
    """Exact values (no sampling) of the kept policy against the occupancy LP, after 60 steps:
    every threshold met, and the Lagrangian gap (LP duals) below 25 % of the optimum from about
    70 % for the untrained actor (observed 2026-12-07: TSCAC 15.9 %, RCPO 16.1 %). The watch
    time itself reaches 40 % or more of the LP's (observed: TSCAC 56 %, RCPO 48 %): the
    policies buy feasibility with more signals than the thresholds ask, which the Lagrangian
    credits at the duals' prices. An actor that stops learning stays near 70 %."""
    sim = tiny_cmdp()
    lp = cmdp_lp(sim)
    assert lp.status == "optimal"
    thresholds = dict(zip(("follow", "like", "comment", "share"), lp.details["thresholds"]))
    for trainer in (train_tscac, train_rcpo):
        torch.manual_seed(0)
        net = CandidateMLP(sim, hidden=(16,))
        start = lagrangian(exact_policy_values(sim, net), lp)
        assert start < 0.4 * lp.objective  # the untrained actor is far from the optimum
        res = trainer(sim, net, steps=60, batch_size=64, dev_episodes=256, eval_every=5, seed=0)
        values = exact_policy_values(sim, res.policy)
        name = trainer.__name__
        assert lagrangian(values, lp) > 0.75 * lp.objective, name
        assert values["watch_time"] >= 0.4 * lp.objective, name
        for signal, threshold in thresholds.items():
            assert values[signal] >= threshold, (name, signal, values[signal], threshold)


def test_hdpo_beats_the_best_constant_escapement_on_model1():
    """30 years of model 1: the best constant escapement (grid search on the training
    episodes) leaves its stock in the water at the end; HDPO, starting from constant
    escapement at K/2, must beat it on held-out episodes by >= 5 % (observed: 1.23 vs 0.97)."""
    sim = model1(horizon=30, eval_horizon=30)
    train = sim.sample_trace(64, 30, seed=1)
    test = sim.sample_trace(256, 30, seed=2)
    level, _ = grid_search(sim, lambda lv: ConstantEscapement(sim, lv), 0.0, 1.0, train, 0,
                           points=21, rounds=2)
    torch.manual_seed(0)
    res = train_hdpo(sim, FisheryMLP(sim), steps=20, batch_size=32, dev_scenarios=32,
                     eval_every=5, seed=0, lr=1e-2)
    with torch.no_grad():
        learned = sim.episode_metric(rollout(sim, res.policy, test).rewards, 0).mean()
        constant = sim.episode_metric(
            rollout(sim, ConstantEscapement(sim, level), test).rewards, 0).mean()
    assert float(learned) >= 1.05 * float(constant)
