"""REINFORCE (score-function) gradients for the same deterministic policies HDPO trains, and a
gradient-variance probe comparing the two estimators.

The stochastic policy is Gaussian around the deterministic output, ``a = mu + sigma * scale *
eps`` with ``scale`` the policy's per-edge order scale (mean demand) when it has one. The
estimator uses reward-to-go and a per-period batch-mean baseline, its usual strong form, so the
comparison with HDPO's pathwise gradient is fair. It needs no gradient through the simulator,
which is what makes it the fallback where the dynamics are not differentiable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from oprl.algorithms.hdpo import episode_cost
from oprl.core import Simulator, Trace, rollout


def action_scale(policy: nn.Module, like: Tensor) -> Tensor:
    """Per-edge noise scale: the policy's order scale if it exposes one, else 1."""
    features = getattr(policy, "features", None)
    scale = getattr(features, "edge_scale", None)
    return torch.ones_like(like) if scale is None else scale.expand_as(like)


def reward_to_go_weights(horizon: int, warmup: int) -> Tensor:
    """Weight of each period in the objective: uniform after ``warmup``, zero before."""
    w = torch.zeros(horizon)
    w[warmup:] = 1.0 / (horizon - warmup)
    return w


def reinforce_loss(
    sim: Simulator, policy: nn.Module, trace: Trace, warmup: int, sigma: float, seed: int
) -> tuple[Tensor, Tensor]:
    """Surrogate whose gradient is the REINFORCE estimate of d(mean cost)/d(weights), and the
    batch's mean cost. Actions are sampled (no gradient through the simulator)."""
    gen = torch.Generator(device=trace.device).manual_seed(int(seed))
    state = sim.reset(trace)
    log_probs, costs = [], []
    for t in range(trace.horizon):
        obs = sim.observe(state, t, trace)
        mu = policy(obs)
        std = sigma * action_scale(policy, mu)
        noise = torch.randn(mu.shape, generator=gen, device=mu.device, dtype=mu.dtype)
        action = (mu + std * noise).detach()
        log_probs.append((-0.5 * ((action - mu) / std) ** 2).sum(-1))
        with torch.no_grad():
            state, reward, _ = sim.step(state, action, t, trace)
        costs.append(-reward)
    cost = torch.stack(costs, 1)  # [B, T]
    unit = float(episode_cost(sim, -torch.ones(1, trace.horizon), 0))  # e.g. 1 / stores
    weighted = cost * reward_to_go_weights(trace.horizon, warmup).to(cost.device) * unit
    to_go = weighted.flip(1).cumsum(1).flip(1)  # [B, T]
    advantage = to_go - to_go.mean(0, keepdim=True)
    surrogate = (torch.stack(log_probs, 1) * advantage).sum(1).mean()
    return surrogate, weighted.sum(1).mean()


def pathwise_gradient(sim: Simulator, policy: nn.Module, trace: Trace, warmup: int) -> Tensor:
    """HDPO's gradient estimate on one batch, flattened ``[P]``."""
    policy.zero_grad(set_to_none=True)
    episode_cost(sim, rollout(sim, policy, trace).rewards, warmup).mean().backward()
    return flat_grad(policy)


def reinforce_gradient(
    sim: Simulator, policy: nn.Module, trace: Trace, warmup: int, *, sigma: float = 0.1,
    seed: int = 0,
) -> Tensor:
    """REINFORCE's gradient estimate on one batch, flattened ``[P]``."""
    policy.zero_grad(set_to_none=True)
    surrogate, _ = reinforce_loss(sim, policy, trace, warmup, sigma, seed)
    surrogate.backward()
    return flat_grad(policy)


def flat_grad(policy: nn.Module) -> Tensor:
    return torch.cat([
        (p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
        for p in policy.parameters() if p.requires_grad
    ])


@dataclass(frozen=True)
class GradientStats:
    """Spread of a gradient estimator over independent batches."""

    mean: Tensor  # [P] mean estimate
    per_param_variance: float  # mean over parameters of the across-batch variance
    total_variance: float  # trace of the covariance (sum of per-parameter variances)
    projection_variance: float  # variance of the estimate projected on ``direction``
    relative_variance: float  # total variance / squared norm of the mean estimate


def gradient_variance(
    sim: Simulator,
    policy: nn.Module,
    estimator: str | Callable[[Simulator, nn.Module, Trace, int], Tensor] = "hdpo",
    *,
    n_batches: int = 8,
    batch_size: int = 64,
    horizon: int = 60,
    warmup: int = 20,
    sigma: float = 0.1,
    seed: int = 0,
    direction: Tensor | None = None,
    device: str | torch.device = "cpu",
) -> GradientStats:
    """Gradient estimates of a fixed ``policy`` on ``n_batches`` independent trace batches and
    their spread. ``estimator`` is "hdpo", "reinforce" or a callable returning a flat gradient.
    ``direction`` (e.g. a large-batch HDPO gradient) defaults to the estimator's own mean."""
    grads = []
    for k in range(n_batches):
        trace = sim.sample_trace(batch_size, horizon, seed=seed * 10_007 + k, device=device)
        if estimator == "hdpo":
            g = pathwise_gradient(sim, policy, trace, warmup)
        elif estimator == "reinforce":
            g = reinforce_gradient(sim, policy, trace, warmup, sigma=sigma, seed=seed + k)
        elif callable(estimator):
            g = estimator(sim, policy, trace, warmup)
        else:
            raise ValueError(f"estimator: 'hdpo', 'reinforce' or a callable, got {estimator!r}")
        grads.append(g.detach().double())
    policy.zero_grad(set_to_none=True)
    g = torch.stack(grads)
    mean, var = g.mean(0), g.var(0)
    d = mean if direction is None else direction.double().to(mean.device)
    unit = d / d.norm().clamp_min(1e-30)
    return GradientStats(
        mean=mean.float(),
        per_param_variance=float(var.mean()),
        total_variance=float(var.sum()),
        projection_variance=float((g @ unit).var()),
        relative_variance=float(var.sum() / mean.pow(2).sum().clamp_min(1e-30)),
    )
