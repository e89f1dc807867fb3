"""OSPO and GRPO: critic-free policy gradients for dispatch (Zhao & Li 2025).

The policy scores vehicle-order pairs; seeded Gumbel noise perturbs the scores and the
simulator's exact matcher picks the assignment. Each matched pair's log-probability is its
order's softmax over its candidates (`policies.dispatch.pair_log_prob`). Advantages, no
critic: OSPO the pair's one-step reward, GRPO the vehicle's discounted reward-to-go, each
normalised across the pairs matched in the same step of the same episode. PPO's clipped
ratio over ``epochs`` passes (Adam), on the shared loop (`oprl.algorithms.loop`). More:
docs/dispatch.md, "Learned policies and training".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from oprl.algorithms.common import DEV_SEED_OFFSET
from oprl.algorithms.loop import Algorithm, Evaluation, TrainResult, resolve_settings, run_loop
from oprl.algorithms.settings import LoopSettings, require
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


@dataclass(frozen=True)
class OSPOSettings(LoopSettings):
    """OSPO's and GRPO's hyper-parameters (`train_ospo`). ``advantage``: 'ospo' (one-step)
    or 'grpo' (discounted reward-to-go, discount ``gamma``); ``epochs`` PPO passes per batch
    with ratio clip ``clip``; ``temperature`` of the Gumbel noise; ``no_match=True`` adds "no
    match" to each order's softmax (the policy may then learn to decline; `pair_log_prob`)."""

    steps: int = 40
    eval_every: int = 5
    batch_size: int = 8
    horizon: int | None = None
    lr: float = 3e-3
    temperature: float = 0.05
    epochs: int = 2
    clip: float = 0.2
    dev_scenarios: int = 8
    advantage: str = "ospo"
    gamma: float = 0.9
    grad_clip: float | None = 1.0
    no_match: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.advantage in ("ospo", "grpo"), "advantage", "'ospo' or 'grpo'",
                self.advantage)
        require(self.batch_size >= 1, "batch_size", "an integer >= 1", self.batch_size)
        require(self.horizon is None or self.horizon >= 1, "horizon", "an integer >= 1 or null",
                self.horizon)
        require(self.lr > 0, "lr", "a number > 0", self.lr)
        require(self.temperature > 0, "temperature", "a number > 0", self.temperature)
        require(self.epochs >= 1, "epochs", "an integer >= 1", self.epochs)
        require(0 < self.clip < 1, "clip", "a number in (0, 1)", self.clip)
        require(self.dev_scenarios >= 1, "dev_scenarios", "an integer >= 1", self.dev_scenarios)
        require(0 <= self.gamma <= 1, "gamma", "a number in [0, 1]", self.gamma)
        require(self.grad_clip is None or self.grad_clip > 0, "grad_clip",
                "a number > 0 or null", self.grad_clip)


class OSPO(Algorithm):
    """PPO-clipped updates of pair scores with critic-free advantages (module docstring)."""

    train_columns = ("train_reward",)

    def __init__(self, sim, policy: nn.Module, s: OSPOSettings, *, seed: int,
                 device: str | torch.device | None):
        self.sim, self.policy, self.s = sim, policy, s
        self.device = dev = resolve_device(device)
        self.horizon = int(s.horizon or sim.horizon)
        policy.to(dev)
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=s.lr)
        self.dev_trace = sim.sample_trace(s.dev_scenarios, self.horizon,
                                          seed=seed + DEV_SEED_OFFSET, device=dev)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"policy": self.optimizer}

    def update(self, step: int, seed: int) -> dict[str, float]:
        s, policy = self.s, self.policy
        trace = self.sim.sample_trace(s.batch_size, self.horizon, seed=seed, device=self.device)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        policy.train()
        ep = collect(self.sim, policy, trace, s.temperature, gen, s.no_match)
        adv = ospo_advantages(ep) if s.advantage == "ospo" else grpo_advantages(ep, s.gamma)
        for _ in range(s.epochs):
            loss = ppo_loss(policy, ep, adv, s.temperature, s.clip, s.no_match)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if s.grad_clip is not None:
                nn.utils.clip_grad_norm_(policy.parameters(), s.grad_clip)
            self.optimizer.step()
        return {"train_reward": float(ep.episode_reward.mean())}

    def evaluate(self, step: int) -> Evaluation:
        reward, served = evaluate_reward(self.sim, self.policy, self.dev_trace)
        return Evaluation(reward, {"dev_served": served})


@dataclass(frozen=True)
class GRPOSettings(OSPOSettings):
    """`OSPOSettings` with GRPO's advantages by default."""

    advantage: str = "grpo"


def train_ospo(
    sim,
    policy: nn.Module,
    settings: OSPOSettings | None = None,
    *,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
    callback: Callable[..., Any] | None = None,
    start_state: dict[str, Any] | None = None,
    progress: bool = False,
    **overrides: Any,
) -> TrainResult:
    """Train pair scores by OSPO (``advantage='ospo'``) or GRPO (``'grpo'``); returns the
    best-on-dev weights (highest dev reward). ``settings`` (default `OSPOSettings`) with
    keyword ``overrides``; the loop's arguments as `TrainingLoop`."""
    s = resolve_settings(OSPOSettings, settings, overrides, "ospo")
    algorithm = OSPO(sim, policy, s, seed=seed, device=device)
    return run_loop(algorithm, s, metric="dev_reward", maximise=True, seed=seed,
                    callback=callback, start_state=start_state, progress=progress)


def train_grpo(sim, policy: nn.Module, settings: GRPOSettings | None = None,
               **kw: Any) -> TrainResult:
    """GRPO: `train_ospo` with per-vehicle discounted reward-to-go advantages."""
    loop_args = {k: kw.pop(k) for k in ("seed", "device", "callback", "start_state", "progress")
                 if k in kw}
    return train_ospo(sim, policy, resolve_settings(GRPOSettings, settings, kw, "grpo"),
                      **loop_args)
