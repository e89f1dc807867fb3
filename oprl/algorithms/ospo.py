"""OSPO and GRPO: critic-free policy gradients for dispatch (Zhao & Li 2025).

The policy scores vehicle-order pairs; seeded Gumbel noise perturbs the scores and the
simulator's exact matcher picks the assignment. Each matched pair's log-probability is its
order's softmax over its candidates (`policies.dispatch.pair_log_prob`). Advantages, no
critic: OSPO the pair's one-step reward, GRPO the vehicle's discounted reward-to-go, each
normalised across the pairs matched in the same step of the same episode. PPO's clipped
ratio over ``epochs`` passes (Adam); best-on-dev weights are kept. Everything random derives
from ``seed`` and the step, so a resumed run continues exactly. More: docs/dispatch.md,
"Learned policies and training".
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from oprl.algorithms.common import DEV_SEED_OFFSET, RewardResult, invoke_callback, step_seed
from oprl.core import Trace, resolve_device, rollout
from oprl.policies.dispatch import gumbel_scores, pair_log_prob


@dataclass
class Episodes:
    """What one noisy rollout recorded, per step: observations, choices, old log-probs,
    pair rewards ``[B, M]``, matched vehicles ``[B, M]``, per-vehicle rewards ``[B, V]``."""

    obs: list[dict[str, Tensor]]
    choice: list[Tensor]
    old_logp: list[Tensor]
    pair_reward: list[Tensor]
    vehicle: list[Tensor]
    vehicle_reward: Tensor  # [B, T, V]
    episode_reward: Tensor  # [B]


def collect(sim, policy: nn.Module, trace: Trace, temperature: float,
            generator: torch.Generator, no_match: bool = False) -> Episodes:
    """Roll out the noisy policy, recording what the update needs (no gradients)."""
    rec: dict[str, list] = {k: [] for k in ("obs", "choice", "old_logp", "pair_reward",
                                            "vehicle", "vehicle_reward", "reward")}
    state = sim.reset(trace)
    with torch.no_grad():
        for t in range(trace.horizon):
            obs = sim.observe(state, t, trace)
            scores = policy(obs)
            choice = sim.decide(state, gumbel_scores(scores, temperature, generator), t)
            cand = sim.candidates(state, t)
            r_pair, _, _ = sim.pair_rewards(cand, choice, t)
            vehicle = cand.vehicle.gather(2, choice.clamp_min(0).unsqueeze(-1)).squeeze(-1)
            rec["obs"].append(obs)
            rec["choice"].append(choice)
            rec["old_logp"].append(
                pair_log_prob(scores, obs["cand_valid"], choice, temperature, no_match))
            rec["pair_reward"].append(r_pair)
            rec["vehicle"].append(torch.where(choice >= 0, vehicle, -1))
            state, reward, info = sim.apply(state, choice, t, trace)
            rec["vehicle_reward"].append(info["vehicle_reward"])
            rec["reward"].append(reward)
    return Episodes(rec["obs"], rec["choice"], rec["old_logp"], rec["pair_reward"],
                    rec["vehicle"], torch.stack(rec["vehicle_reward"], 1),
                    torch.stack(rec["reward"], 1).sum(1))


def normalise_within_step(values: Tensor, matched: Tensor) -> Tensor:
    """(value - mean) / std over the matched pairs of each episode's step ``[B, M]``
    (0 where unmatched; a lone pair gets 0)."""
    n = matched.sum(1, keepdim=True).clamp_min(1)
    mean = (values * matched).sum(1, keepdim=True) / n
    var = (((values - mean) * matched) ** 2).sum(1, keepdim=True) / n
    return torch.where(matched, (values - mean) / (var.sqrt() + 1e-6), torch.zeros_like(values))


def ospo_advantages(ep: Episodes) -> list[Tensor]:
    """One-step reward normalised across the pairs matched in the same step."""
    return [normalise_within_step(r, c >= 0) for r, c in zip(ep.pair_reward, ep.choice)]


def discounted_to_go(rewards: Tensor, gamma: float) -> Tensor:
    """``G[t] = r[t] + gamma * G[t+1]`` along dim 1 of ``[B, T, ...]``."""
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        running = rewards[:, t] + gamma * running
        out[:, t] = running
    return out


def grpo_advantages(ep: Episodes, gamma: float) -> list[Tensor]:
    """Per-vehicle discounted reward-to-go, normalised across the pairs matched in the step."""
    to_go = discounted_to_go(ep.vehicle_reward, gamma)  # [B, T, V]
    out = []
    for t, (veh, choice) in enumerate(zip(ep.vehicle, ep.choice)):
        g = to_go[:, t].gather(1, veh.clamp_min(0))
        out.append(normalise_within_step(g, choice >= 0))
    return out


def ppo_loss(policy: nn.Module, ep: Episodes, advantages: list[Tensor], temperature: float,
             clip: float, no_match: bool = False) -> Tensor:
    """Clipped surrogate averaged over every matched pair of the batch."""
    total = torch.zeros(())
    count = sum(int((c >= 0).sum()) for c in ep.choice)
    for obs, choice, old, adv in zip(ep.obs, ep.choice, ep.old_logp, advantages):
        matched = choice >= 0
        if not bool(matched.any()):
            continue
        logp = pair_log_prob(policy(obs), obs["cand_valid"], choice, temperature, no_match)
        ratio = torch.exp(logp - old)
        surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
        total = total - (surrogate * matched).sum()
    return total / max(count, 1)


def evaluate_reward(sim, policy: nn.Module, trace: Trace) -> tuple[float, float]:
    """Mean episode reward and served orders of the deterministic policy on ``trace``."""
    was = policy.training
    policy.eval()
    with torch.no_grad():
        result = rollout(sim, policy, trace, keep_metrics=True)
    policy.train(was)
    served = float(result.metrics["served"].sum(1).mean())
    return float(sim.episode_metric(result.rewards, 0).mean()), served


def train_ospo(
    sim,
    policy: nn.Module,
    *,
    steps: int = 40,
    batch_size: int = 8,
    horizon: int | None = None,
    lr: float = 3e-3,
    temperature: float = 0.05,
    epochs: int = 2,
    clip: float = 0.2,
    dev_scenarios: int = 8,
    eval_every: int = 5,
    advantage: str = "ospo",
    gamma: float = 0.9,
    grad_clip: float | None = 1.0,
    no_match: bool = False,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
    callback: Callable[..., Any] | None = None,
    start_state: dict[str, Any] | None = None,
) -> RewardResult:
    """Train pair scores by OSPO (``advantage='ospo'``) or GRPO (``'grpo'``); see the module
    docstring. ``no_match=True`` adds "no match" to each order's softmax (the policy may
    then learn to decline; see `pair_log_prob`). ``callback(step, policy, optimizer, history,
    state=...)`` after each dev
    evaluation; ``state`` passed back as ``start_state`` resumes exactly."""
    if advantage not in ("ospo", "grpo"):
        raise ValueError(f"advantage: 'ospo' or 'grpo', got {advantage!r}")
    if steps < 0 or batch_size < 1 or eval_every < 1 or epochs < 1:
        raise ValueError("steps >= 0, batch_size >= 1, eval_every >= 1, epochs >= 1 required")
    if temperature <= 0 or not 0 < clip < 1 or not 0 <= gamma <= 1:
        raise ValueError("temperature > 0, clip in (0, 1) and gamma in [0, 1] are required")
    dev = resolve_device(device)
    horizon = int(horizon or sim.params.horizon)
    policy.to(dev)
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
    dev_trace = sim.sample_trace(dev_scenarios, horizon, seed=seed + DEV_SEED_OFFSET, device=dev)
    state = _initial_state(policy, optimizer, start_state)
    start = time.perf_counter() - state["wall_s"]
    if state["step"] == 0 and state["best_state"] is None:
        _record(state, 0, float("nan"), *evaluate_reward(sim, policy, dev_trace), policy, start)
    while state["step"] < steps:
        s = step_seed(seed, state["step"])
        trace = sim.sample_trace(batch_size, horizon, seed=s, device=dev)
        gen = torch.Generator(device=dev).manual_seed(s)
        policy.train()
        ep = collect(sim, policy, trace, temperature, gen, no_match)
        adv = ospo_advantages(ep) if advantage == "ospo" else grpo_advantages(ep, gamma)
        for _ in range(epochs):
            loss = ppo_loss(policy, ep, adv, temperature, clip, no_match)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(policy.parameters(), grad_clip)
            optimizer.step()
        state["step"] += 1
        state["train_rewards"].append(float(ep.episode_reward.mean()))
        if state["step"] % eval_every == 0 or state["step"] == steps:
            train_reward = sum(state["train_rewards"]) / len(state["train_rewards"])
            state["train_rewards"] = []
            _record(state, state["step"], train_reward, *evaluate_reward(sim, policy, dev_trace),
                    policy, start)
            if callback is not None:
                invoke_callback(callback, state["step"], policy, optimizer, state["history"],
                      lambda: _snapshot(state, policy, optimizer))
    policy.load_state_dict(state["best_state"])
    return RewardResult(policy, state["best_reward"], state["best_step"], state["history"],
                      state["step"], time.perf_counter() - start)


def train_grpo(sim, policy: nn.Module, **kw: Any) -> RewardResult:
    """GRPO: `train_ospo` with per-vehicle discounted reward-to-go advantages."""
    return train_ospo(sim, policy, advantage="grpo", **kw)


def _initial_state(policy: nn.Module, optimizer: torch.optim.Optimizer,
                   start_state: dict[str, Any] | None) -> dict[str, Any]:
    if start_state is None:
        return {"step": 0, "history": [], "best_state": None, "best_reward": -math.inf,
                "best_step": 0, "train_rewards": [], "wall_s": 0.0}
    state = copy.deepcopy({k: v for k, v in start_state.items() if k not in ("policy", "optimizer")})
    policy.load_state_dict(start_state["policy"])
    optimizer.load_state_dict(start_state["optimizer"])
    return state


def _record(state: dict, step: int, train_reward: float, dev_reward: float, dev_served: float,
            policy: nn.Module, start: float) -> None:
    state["history"].append({"step": step, "train_reward": train_reward, "dev_reward": dev_reward,
                             "dev_served": dev_served, "wall_s": time.perf_counter() - start})
    if dev_reward > state["best_reward"]:
        state.update(best_reward=dev_reward, best_step=step,
                     best_state={k: v.detach().clone() for k, v in policy.state_dict().items()})


def _snapshot(state: dict, policy: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    snap = copy.deepcopy(state)
    snap["policy"] = {k: v.detach().clone() for k, v in policy.state_dict().items()}
    snap["optimizer"] = copy.deepcopy(optimizer.state_dict())
    snap["wall_s"] = state["history"][-1]["wall_s"] if state["history"] else 0.0
    return snap
