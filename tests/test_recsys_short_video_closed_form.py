"""`recsys/short_video` against a closed form, on a degenerate catalogue.

With one topic and one item, every user matches the item perfectly (match = 1) and engagement
follows a deterministic path from its start e0: ``e' = clip((1 - r) e + 2 r q, 0, 1)`` with
the item's quality q. The calibration then fixes the expected watch time per impression at
``17 s x sigmoid(1 + q + e) / sigmoid(1.5 + q)`` and each signal's probability at
``rate_k x (0.5 + e)``; the session survives a step with ``1 - clip(exit_base (1.5 - e) / 2,
0.005, 0.9)``. Expected episode totals are sums over the survival curve, written here from the
model's equations (docs/recsys.md), not from the simulator's code, and compared with the
simulator's Monte-Carlo mean on the same users.
"""

from __future__ import annotations

import math

import torch

from oprl.core import rollout
from oprl.simulators.recsys import KUAIRAND, SIGNALS, short_video

EPISODES, HORIZON = 20_000, 40


def closed_form(e0: float, q: float, rate: float, exit_base: float) -> dict[str, float]:
    """Expected watch time, signals and impressions of one session starting at engagement e0."""
    sigmoid = lambda x: 1.0 / (1.0 + math.exp(-x))  # noqa: E731
    alive, e = 1.0, e0
    totals = {"watch": 0.0, "impressions": 0.0, **{s: 0.0 for s in SIGNALS}}
    for _ in range(HORIZON):
        totals["watch"] += alive * KUAIRAND["median_play_s"] * sigmoid(1 + q + e) / sigmoid(1.5 + q)
        totals["impressions"] += alive
        for s in SIGNALS:
            totals[s] += alive * min(KUAIRAND[s] * (0.5 + e), 0.95)
        alive *= 1.0 - min(max(exit_base * (1.5 - e) * 0.5, 0.005), 0.9)
        e = min(max((1 - rate) * e + rate * 2 * q, 0.0), 1.0)
    return totals


def test_short_video_matches_the_closed_form_on_a_one_item_catalogue():
    sim = short_video(n_items=1, n_topics=1, n_candidates=1, horizon=HORIZON,
                      eval_horizon=HORIZON)
    q = float(sim.item_quality[0])
    trace = sim.sample_trace(EPISODES, HORIZON, seed=3)
    with torch.no_grad():
        result = rollout(sim, lambda obs: torch.ones(obs["items"].shape[:2]), trace,
                         keep_metrics=True)
    simulated = {"watch": result.rewards.sum(1).double(),
                 "impressions": result.metrics["alive"].sum(1).double(),
                 **{s: result.metrics[s].sum(1).double() for s in SIGNALS}}
    p = sim.params
    exact = [closed_form(float(e0), q, p.engagement_rate, p.exit_base)
             for e0 in trace["engagement0"][:, 0]]
    for name, values in simulated.items():
        expected = sum(x[name] for x in exact) / EPISODES
        stderr = float(values.std()) / math.sqrt(EPISODES)
        assert abs(float(values.mean()) - expected) < 4 * stderr + 1e-9, (
            name, float(values.mean()), expected, stderr)


def test_random_exposure_at_the_start_watches_the_calibrated_17_seconds():
    """The calibration's promise: at the initial engagement, expected play time per impression
    equals KuaiRand's 17 s (here exactly, since one item and one topic leave nothing random)."""
    sim = short_video(n_items=1, n_topics=1, n_candidates=1)
    watch, probs, _, _ = sim.responses(torch.ones(1, 1), torch.full((1,), 0.5),
                                       torch.zeros(1, 1, dtype=torch.long))
    assert abs(float(watch[0, 0]) - KUAIRAND["median_play_s"]) < 1e-4
    for k, s in enumerate(SIGNALS):
        assert abs(float(probs[0, 0, k]) - KUAIRAND[s]) < 1e-7


def test_engagement_follows_its_deterministic_path():
    """Engagement is exact, not a sample: the observed path equals the recursion."""
    sim = short_video(n_items=1, n_topics=1, n_candidates=1, horizon=HORIZON,
                      eval_horizon=HORIZON)
    q, rate = float(sim.item_quality[0]), sim.params.engagement_rate
    trace = sim.sample_trace(8, HORIZON, seed=5)
    seen = []

    def policy(obs):
        seen.append(obs["user"][:, 1:3].clone())  # one topic: [interest, engagement, alive, t]
        return torch.ones(obs["items"].shape[:2])

    with torch.no_grad():
        rollout(sim, policy, trace)
    observed = torch.stack(seen, 1)  # [B, T, (engagement, alive)]
    compared = 0
    for b in range(8):
        e = float(trace["engagement0"][b, 0])
        for t in range(HORIZON):
            if observed[b, t, 1] == 0:  # the session ended: engagement no longer moves
                break
            assert abs(float(observed[b, t, 0]) - e) < 1e-5, (b, t)
            compared += 1
            e = min(max((1 - rate) * e + rate * 2 * q, 0.0), 1.0)
    assert compared >= 40
