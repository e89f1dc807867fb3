"""Constrained actor-critic for CMDPs: two-stage TSCAC (Cai et al. 2023) and Lagrangian RCPO
(Tessler et al. 2019).

Maximise the main reward's expected episode total subject to ``E[sum_t c_k] >= threshold_k``
for each auxiliary signal k. TSCAC learns one policy and critic per signal (stage one), then
fits the actor to the closed-form maximiser of stage two's Lagrangian, a geometric mixture of
the stage-one policies tilted by the main critic, with multipliers that grow while a signal
misses its threshold. RCPO: one critic of the penalised return and projected dual ascent.
Critics are per-action Q networks evaluated by expected SARSA; signals are divided by their
threshold; the kept policy is chosen on sampled dev estimates only (a simulator's exact
values are reported, never read). Derivation, selection rule and the simulator/policy
contract: docs/recsys.md, "Constrained actor-critic".
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from oprl.algorithms.common import DEV_SEED_OFFSET, step_seed
from oprl.algorithms.loop import (
    Algorithm,
    Evaluation,
    TrainingLoop,
    TrainResult,
    resolve_settings,
    run_loop,
)
from oprl.algorithms.settings import LoopSettings, require
from oprl.core import Constrained, Simulator, Trace, requires, resolve_device

LOG_FLOOR = math.log(1e-12)
DUAL_SEED_OFFSET = 2_000_029  # the multipliers' on-policy samples (dual_source='sample')


@dataclass
class Batch:
    """On-policy experience, flattened over live (episode, step) pairs."""

    obs: dict[str, Tensor]  # each [N, ...]
    action: Tensor  # [N]
    totals: Tensor  # [B, 1 + K] episode totals (raw units)
    rewards: Tensor  # [N, 1 + K] the step's (expected) rewards (normalised)
    next_obs: dict[str, Tensor]  # each [N, ...]: the same episode's next observation
    cont: Tensor  # [N] probability the episode goes on to ``next_obs`` (0 where it cannot)


def _signals(sim: Constrained) -> tuple[tuple[str, ...], Tensor]:
    if not isinstance(sim, Constrained):
        raise ValueError(f"sim: constrained actor-critic needs an oprl.core.Constrained "
                         f"simulator, got {type(sim).__name__}")
    names, thr = sim.constraint_signals, sim.constraint_thresholds
    if not names or len(names) != len(thr):
        raise ValueError("sim: constraint_signals and constraint_thresholds must be non-empty "
                         f"and of equal length, got {len(names)} and {len(thr)}")
    return tuple(names), torch.tensor([float(v) for v in thr])


def collect(sim: Simulator, policy: nn.Module, trace: Trace, names: tuple[str, ...],
            scale: Tensor, explore: float = 0.0) -> Batch:
    """Roll ``policy`` out on ``trace`` (no gradients; with probability ``explore`` a uniform
    choice) and keep the live steps with their normalised rewards. Where the simulator reports the step's
    conditional expectations (``info['expected_reward']``, ``info['expected_<name>']``) they
    replace the realised values: same expected return, far less variance for rare signals.
    Likewise ``info['expected_continue']`` (the probability that the episode goes on after
    the step, where the next state is drawn independently of the ending) replaces the realised
    0/1 survival in the critics' targets, which then need the next observation of every live
    step, ending or not."""
    state = sim.reset(trace)
    obs_t, acts, rews, alive, cont = [], [], [], [], []
    with torch.no_grad():
        for t in range(trace.horizon):
            obs = sim.observe(state, t, trace)
            probs = policy(obs)
            if explore > 0:
                probs = (1 - explore) * probs + explore / probs.shape[-1]
            state, reward, info = sim.step(state, probs, t, trace)
            if "action_index" not in info:
                raise ValueError("info.action_index: the simulator must report the executed "
                                 "choice (see oprl.algorithms.constrained_ac)")
            live = info.get("alive", torch.ones_like(reward))
            obs_t.append({k: v for k, v in obs.items() if v.shape[:1] == reward.shape})
            acts.append(info["action_index"])
            main = info.get("expected_reward", reward)
            rews.append(torch.stack([main, *(info.get(f"expected_{n}", info[n]) for n in names)],
                                    -1))
            alive.append(live)
            cont.append(info.get("expected_continue"))
            if "alive" in info and float(state.get("alive", live).sum()) == 0:
                break
        steps = len(obs_t)
        if steps < trace.horizon and cont[-1] is not None:  # ending steps still look ahead
            last = sim.observe(state, steps, trace)
            obs_t.append({k: v for k, v in last.items() if v.shape[:1] == reward.shape})
    r = torch.stack(rews, 1)  # [B, T, 1+K]
    live_bt = torch.stack(alive, 1)  # [B, T]
    flat_mask = (live_bt > 0).transpose(0, 1).reshape(-1)  # rows ordered (t, b)
    if cont[-1] is not None:
        goes_on = torch.stack(cont, 1).clone()  # [B, T]
        if steps == trace.horizon:
            goes_on[:, -1] = 0.0  # the horizon truncates the episode
    else:  # realised survival: alive at the next step
        goes_on = torch.cat([live_bt[:, 1:], torch.zeros_like(live_bt[:, :1])], 1)
    nxt_t = torch.cat([torch.arange(1, steps), torch.tensor([steps if len(obs_t) > steps
                                                             else steps - 1])])
    obs = {k: torch.cat([o[k] for o in obs_t[:steps]], 0)[flat_mask] for k in obs_t[0]}
    next_obs = {k: torch.cat([obs_t[int(i)][k] for i in nxt_t], 0)[flat_mask] for k in obs_t[0]}
    return Batch(obs=obs, action=torch.stack(acts, 1).transpose(0, 1).reshape(-1)[flat_mask],
                 totals=r.sum(1),
                 rewards=(r / scale.to(r.device)).transpose(0, 1).reshape(-1, r.shape[-1])[flat_mask],
                 next_obs=next_obs,
                 cont=(goes_on * (live_bt > 0)).transpose(0, 1).reshape(-1)[flat_mask].float())


def _rows(n: int, minibatch: int, gen: torch.Generator) -> Tensor:
    return torch.randint(0, n, (min(minibatch, n),), generator=gen)


def fit_critic_td(critic: nn.Module, opt: torch.optim.Optimizer, batch: Batch, weights: Tensor,
                  target_policy: nn.Module, iters: int, minibatch: int, gen: torch.Generator,
                  gamma: float = 1.0, refresh: int = 5) -> float:
    """Expected-SARSA evaluation of ``target_policy``: regress ``Q(s, a)`` on
    ``r(s, a) + gamma * cont * sum_a' pi(a'|s') Q(s', a')`` (``r = rewards @ weights``, the
    step's expected reward; ``cont`` the probability of going on, 0 where the episode ended),
    targets refreshed every ``refresh`` minibatch steps. The reward is exact and the
    continuation is shared by all actions of a state, so action values are compared without
    Monte-Carlo noise."""
    reward = batch.rewards @ weights.to(batch.rewards.device)
    goes_on = batch.cont > 0
    with torch.no_grad():
        pi_next = target_policy(batch.next_obs)
    target, loss = reward, torch.tensor(0.0)
    for i in range(iters):
        if i % refresh == 0:
            with torch.no_grad():
                v = (pi_next * critic.scores(batch.next_obs)).sum(-1)
                target = reward + torch.where(goes_on, gamma * batch.cont * v, 0.0)
        idx = _rows(len(target), minibatch, gen).to(target.device)
        q = critic.scores({k: v[idx] for k, v in batch.obs.items()}).gather(
            1, batch.action[idx].unsqueeze(1)).squeeze(1)
        loss = (q - target[idx]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return float(loss.detach())


def fit_actor(actor: nn.Module, opt: torch.optim.Optimizer, obs: dict[str, Tensor],
              target: Tensor, iters: int, minibatch: int, gen: torch.Generator) -> float:
    """Minimise KL(target || actor) over the batch's states, on random minibatches."""
    loss = torch.tensor(0.0)
    for _ in range(iters):
        idx = _rows(len(target), minibatch, gen).to(target.device)
        logp = torch.log_softmax(actor.scores({k: v[idx] for k, v in obs.items()}), -1)
        loss = -(target[idx] * logp).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return float(loss.detach())


def _logp(policy: nn.Module, obs: dict[str, Tensor]) -> Tensor:
    with torch.no_grad():
        return torch.log_softmax(policy.scores(obs), -1).clamp_min(LOG_FLOOR)


def _q(critic: nn.Module, obs: dict[str, Tensor]) -> Tensor:
    with torch.no_grad():
        return critic.scores(obs)


def estimate_totals(sim: Simulator, policy: nn.Module, trace: Trace, names: tuple[str, ...],
                    *, realised: bool = False, compact: bool = False) -> tuple[Tensor, Tensor]:
    """Monte-Carlo episode totals of ``policy`` on ``trace`` (no exploration, no gradients):
    the mean ``[1 + K]`` (main, then each signal) over the episodes and its standard error.
    Each step counts the simulator's conditional expectation of the step's reward and signals
    where it reports one (``info['expected_*']``: the same per-step values the critics learn
    from; unbiased, less noise for rare signals), the realised values with ``realised=True``.
    It never reads a model's tables. ``compact=True`` drops finished episodes from the batch
    (once fewer than half are live), which needs a simulator whose state tensors are all
    ``[B, ...]`` and whose episodes do not interact (``sim.independent_rows``)."""
    was = policy.training
    policy.eval()
    state, sub = sim.reset(trace), trace
    rows = torch.arange(trace.batch, device=trace.device)
    totals = torch.zeros(trace.batch, 1 + len(names), dtype=torch.float64, device=trace.device)
    with torch.no_grad():
        for t in range(trace.horizon):
            state, reward, info = sim.step(state, policy(sim.observe(state, t, sub)), t, sub)
            main = reward if realised else info.get("expected_reward", reward)
            sig = [info[n] if realised else info.get(f"expected_{n}", info[n]) for n in names]
            totals.index_add_(0, rows, torch.stack([main, *sig], -1).double())
            if "alive" not in info:
                continue
            live = state.get("alive", info["alive"]) > 0
            if not bool(live.any()):
                break
            if compact and 2 * int(live.sum()) < len(rows):
                keep = live.nonzero().squeeze(1)
                state = {k: v[keep] for k, v in state.items()}
                sub, rows = sub.select(keep), rows[keep]
    policy.train(was)
    se = totals.std(0) / math.sqrt(trace.batch) if trace.batch > 1 else torch.zeros_like(totals[0])
    return totals.mean(0).float(), se.float()


def _fresh_copy(policy: nn.Module, seed: int) -> nn.Module:
    """Same architecture, new weights (critics, stage-one policies)."""
    net = copy.deepcopy(policy)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in net.modules():
            if m is not net and hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return net


def _shortfall(values: Tensor, thr: Tensor) -> float:
    return float(((thr - values) / thr.clamp_min(1e-9)).clamp_min(0).sum())


def feasible_shortfall(vals: Tensor, se: Tensor, thr: Tensor, *, dev_z: float,
                       tolerance: float) -> float:
    """Total relative shortfall of the dev estimates ``vals`` ``[1 + K]``, less ``dev_z``
    standard errors, below threshold x (1 - tolerance): 0 when every constraint is met with
    that confidence."""
    return _shortfall(vals[1:] - dev_z * se[1:], thr * (1 - tolerance))


@dataclass(frozen=True)
class ConstrainedSettings(LoopSettings):
    """What TSCAC and RCPO share (see `train_tscac` for their meaning)."""

    steps: int = 200
    eval_every: int = 10
    batch_size: int = 256
    horizon: int | None = None
    lr: float = 3e-3
    critic_lr: float = 1e-2
    explore: float = 0.1
    margin: float = 0.02
    dual_source: str = "batch"
    dual_episodes: int = 1024
    tolerance: float = 0.0
    dev_z: float = 0.0
    dev_values: str = "expected"
    average: float = 0.0
    critic_iters: int = 30
    actor_iters: int = 10
    minibatch: int = 512
    gamma: float = 1.0
    dev_episodes: int = 512

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.dual_source in ("batch", "dev", "sample"), "dual_source",
                "'batch', 'sample' or 'dev'", self.dual_source)
        require(self.dual_source != "sample" or self.dual_episodes >= 2, "dual_episodes",
                "an integer >= 2 with dual_source='sample'", self.dual_episodes)
        require(0 <= self.average < 1, "average", "a number in [0, 1)", self.average)
        require(0 <= self.tolerance < 1, "tolerance", "a number in [0, 1)", self.tolerance)
        require(self.dev_z >= 0, "dev_z", "a finite number >= 0", self.dev_z)
        require(self.dev_values in ("expected", "realised"), "dev_values",
                "'expected' or 'realised'", self.dev_values)
        require(0 <= self.explore <= 1, "explore", "a number in [0, 1]", self.explore)
        require(0 <= self.gamma <= 1, "gamma", "a number in [0, 1]", self.gamma)
        for name in ("batch_size", "dev_episodes", "critic_iters", "actor_iters", "minibatch"):
            require(getattr(self, name) >= 1, name, "an integer >= 1", getattr(self, name))
        require(self.horizon is None or self.horizon >= 1, "horizon", "an integer >= 1 or null",
                self.horizon)
        for name in ("lr", "critic_lr"):
            require(getattr(self, name) > 0, name, "a number > 0", getattr(self, name))


@dataclass(frozen=True)
class TSCACSettings(ConstrainedSettings):
    """TSCAC's hyper-parameters (`train_tscac`)."""

    stage1_fraction: float = 0.3
    reeval_fraction: float = 0.0
    stage1_tau: float = 0.01
    damping: float = 0.7
    lam_init: float | None = None
    lam_lr: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0 < self.stage1_fraction < 1, "stage1_fraction", "a number in (0, 1)",
                self.stage1_fraction)
        require(0 <= self.reeval_fraction <= 1, "reeval_fraction", "a number in [0, 1]",
                self.reeval_fraction)
        require(self.stage1_tau > 0, "stage1_tau", "a number > 0", self.stage1_tau)
        require(0 < self.damping <= 1, "damping", "a number in (0, 1]", self.damping)
        require(self.lam_init is None or self.lam_init > 0, "lam_init", "a number > 0 or null",
                self.lam_init)


@dataclass(frozen=True)
class RCPOSettings(ConstrainedSettings):
    """RCPO's hyper-parameters (`train_rcpo`)."""

    tau: float = 0.1
    mu_lr: float = 0.05
    mu_kp: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.tau > 0, "tau", "a number > 0", self.tau)
        require(self.mu_lr >= 0, "mu_lr", "a number >= 0", self.mu_lr)
        require(self.mu_kp >= 0, "mu_kp", "a number >= 0", self.mu_kp)


class _Constrained(Algorithm):
    """What TSCAC and RCPO share: traces per step, the optional moving average of the actor,
    dev and dual estimates, and the dev evaluation with its feasibility-first selection key.
    The loop keeps ``scale``, the multipliers and ``avg_on`` in ``loop.extra``."""

    evaluate_at_start = False  # the first evaluation comes after stage one / the first step

    def __init__(self, sim: Simulator, policy: nn.Module, s: ConstrainedSettings, *, seed: int,
                 device: str | torch.device | None, extra_nets: dict[str, nn.Module]):
        self.sim, self.policy, self.s, self.seed = sim, policy, s, seed
        self.realised = s.dev_values == "realised"
        self.compact = bool(sim.independent_rows)
        self.device = resolve_device(device)
        self.names, self.thr = _signals(sim)
        self.horizon = int(s.horizon if s.horizon is not None else sim.horizon)
        self.avg = copy.deepcopy(policy) if s.average > 0 else None
        self.nets = {"policy": policy, **extra_nets,
                     **({"avg": self.avg} if self.avg is not None else {})}
        for net in self.nets.values():
            net.to(self.device)
        self.opts = {k: torch.optim.Adam(n.parameters(), lr=s.critic_lr if k.startswith("q")
                                         else s.lr)
                     for k, n in self.nets.items() if k != "avg"}
        self.dev_trace = sim.sample_trace(s.dev_episodes, self.horizon,
                                          seed=seed + DEV_SEED_OFFSET, device=self.device)
        self.pending: dict[str, Any] = {}  # what the last step left for its evaluation

    def modules(self) -> dict[str, nn.Module]:
        return self.nets

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.opts

    def begin(self, loop: TrainingLoop) -> None:
        self.loop, self.extra = loop, loop.extra

    def trace(self, step: int) -> Trace:
        return self.sim.sample_trace(self.s.batch_size, self.horizon,
                                     seed=step_seed(self.seed, step), device=self.device)

    def scale(self) -> Tensor:
        """Normalisers: the thresholds for signals, the first batch's mean main total."""
        if self.extra.get("scale") is None:
            uniform = collect(self.sim, self.policy, self.trace(-1), self.names,
                              torch.ones(1 + len(self.names)))
            main = float(uniform.totals[:, 0].abs().mean().clamp_min(1e-6))
            self.extra["scale"] = [main, *[max(float(v), 1e-6) for v in self.thr]]
        return torch.tensor(self.extra["scale"])

    @property
    def info(self) -> dict[str, Any]:
        return {"multipliers": list(self.extra.get("lam", []))}

    @property
    def kept(self) -> nn.Module:
        """The policy that dev evaluation judges and selection keeps: the actor, or with
        ``average > 0`` the exponential moving average of its weights over the steps since
        `average_step` was first called (smooths the step-to-step swings of the actor)."""
        return self.avg if self.avg is not None and self.extra.get("avg_on") else self.policy

    def average_step(self) -> None:
        """Fold the actor's current weights into the moving average (the first call copies)."""
        if self.avg is None:
            return
        with torch.no_grad():
            started = self.extra.get("avg_on", False)
            for a, p in zip(self.avg.state_dict().values(), self.policy.state_dict().values()):
                if started and a.is_floating_point():
                    a.lerp_(p, 1.0 - self.s.average)
                else:
                    a.copy_(p)
        self.extra["avg_on"] = True

    def dev_values(self, actor: nn.Module) -> tuple[Tensor, Tensor]:
        """Monte-Carlo dev totals of ``actor`` and their standard errors (`estimate_totals`)."""
        return estimate_totals(self.sim, actor, self.dev_trace, self.names,
                               realised=self.realised, compact=self.compact)

    def dual_values(self, actor: nn.Module, step: int) -> Tensor:
        """Fresh on-policy totals of ``actor`` (``dual_episodes`` episodes of their own seed,
        apart from training, dev and evaluation traces) for the multipliers' update."""
        trace = self.sim.sample_trace(self.s.dual_episodes, self.horizon,
                                      seed=step_seed(self.seed + DUAL_SEED_OFFSET, step),
                                      device=self.device)
        return estimate_totals(self.sim, actor, trace, self.names, realised=self.realised,
                               compact=self.compact)[0]

    def dual_estimate(self, step: int, batch: Batch) -> Tensor:
        """The signal totals ``[K]`` the multipliers follow (``dual_source``); with 'dev' the
        dev estimate is also offered for selection and reused by the step's evaluation."""
        if self.s.dual_source == "sample":
            return self.dual_values(self.policy, step)[1:]
        if self.s.dual_source == "dev":
            vals, se = self.dev_values(self.kept)
            self.loop.offer(step, self.judge(vals, se, self.kept, True, {}))
            self.pending["dev"] = (vals, se)
            return vals[1:]
        return batch.totals.mean(0)[1:]

    def judge(self, vals: Tensor, se: Tensor, actor: nn.Module, selectable: bool,
              columns: dict[str, float]) -> Evaluation:
        """Selection key: feasible (`feasible_shortfall` 0) first, then the highest main return
        (else the smallest shortfall)."""
        short = feasible_shortfall(vals, se, self.thr, dev_z=self.s.dev_z,
                                   tolerance=self.s.tolerance)
        return Evaluation(float(vals[0]), columns, selectable=selectable,
                          key=(short > 0, short, -float(vals[0])), weights=actor)

    def evaluate(self, step: int) -> Evaluation:
        stage, actor = self.pending["stage"], self.pending["actor"]
        vals, se = self.pending.pop("dev", None) or self.dev_values(actor)
        feasible = feasible_shortfall(vals, se, self.thr, dev_z=self.s.dev_z,
                                      tolerance=self.s.tolerance) == 0
        columns = {"stage": stage, "dev_feasible": float(feasible), "dev_reward_se": float(se[0]),
                   **{f"dev_{n}": float(v) for n, v in zip(self.names, vals[1:])},
                   **{f"dev_{n}_se": float(v) for n, v in zip(self.names, se[1:])},
                   **_reported_exact(self.sim, actor, self.names, self.horizon),
                   **self.pending["columns"]}
        return self.judge(vals, se, self.kept, stage == 2, columns)


def _reported_exact(sim: Simulator, actor: nn.Module, names: tuple[str, ...],
                    horizon: int) -> dict[str, float]:
    """``exact_<name>`` history columns where the simulator offers ``exact_totals``: REPORTED
    only (how far the sampled dev estimates were from the truth); nothing reads them."""
    was = actor.training
    actor.eval()
    with torch.no_grad():
        vals = sim.exact_totals(actor, horizon)
    actor.train(was)
    if vals is None:  # no exact model
        return {}
    return {"exact_reward": float(vals[0]),
            **{f"exact_{n}": float(v) for n, v in zip(names, vals[1:])}}


def _unit(j: int, k_n: int) -> Tensor:
    out = torch.zeros(1 + k_n)
    out[j] = 1.0
    return out


def _gen(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(step_seed(seed + 17, step))


class TSCAC(_Constrained):
    """Stage one: each signal's own actor and critic; stage two: the main critic and the
    geometric mixture of the stage-one policies tilted by it (module docstring)."""

    def __init__(self, sim: Simulator, policy: nn.Module, s: TSCACSettings, *, seed: int,
                 device: str | torch.device | None):
        k_n = len(_signals(sim)[0])
        self.aux = {f"aux{k}": _fresh_copy(policy, seed * 101 + k) for k in range(k_n)}
        self.critics = {f"q{j}": _fresh_copy(policy, seed * 101 + 50 + j)
                        for j in range(1 + k_n)}
        super().__init__(sim, policy, s, seed=seed, device=device,
                         extra_nets={**self.aux, **self.critics})

    def begin(self, loop: TrainingLoop) -> None:
        super().begin(loop)
        s, k_n = self.s, len(self.names)
        per_signal = self.extra.setdefault(  # fixed at the start: a resumed run keeps it
            "per_signal", max(1, int(s.steps * s.stage1_fraction) // k_n))
        self.per_signal, self.stage1_end = per_signal, per_signal * k_n
        self.reeval_start = s.steps - int(round(s.reeval_fraction
                                                * max(s.steps - self.stage1_end, 0)))
        self.norm = self.scale()
        lam0 = 0.5 * s.stage1_tau if s.lam_init is None else s.lam_init
        self.lam = self.extra.setdefault("lam", [lam0] * k_n)

    def evaluate_now(self, step: int) -> bool:
        return step == self.stage1_end

    def update(self, step: int, seed: int) -> dict[str, float]:
        s, sim, names, k_n = self.s, self.sim, self.names, len(self.names)
        gen = _gen(self.seed, step)
        self.pending = {}
        if step < self.stage1_end:  # stage one: signal k's own policy and critic
            k = step // self.per_signal
            actor, critic = self.aux[f"aux{k}"], self.critics[f"q{k + 1}"]
            batch = collect(sim, actor, self.trace(step), names, self.norm, s.explore)
            fit_critic_td(critic, self.opts[f"q{k + 1}"], batch, _unit(k + 1, k_n), actor,
                          s.critic_iters, s.minibatch, gen, s.gamma)
            target = torch.softmax(_logp(actor, batch.obs) + _q(critic, batch.obs)
                                   / s.stage1_tau, -1)
            fit_actor(actor, self.opts[f"aux{k}"], batch.obs, target, s.actor_iters,
                      s.minibatch, gen)
            self.pending.update(stage=1, actor=actor, columns={"signal": float(k)})
            return {}
        # stage two: main critic, geometric mixture of stage one tilted by it
        policy, lam = self.policy, self.lam
        batch = collect(sim, policy, self.trace(step), names, self.norm, s.explore)
        refit = range(1 + k_n) if step >= self.reeval_start else range(1)
        for j in refit:  # the main critic, and the signals' in the re-estimation phase
            fit_critic_td(self.critics[f"q{j}"], self.opts[f"q{j}"], batch, _unit(j, k_n),
                          policy, s.critic_iters, s.minibatch, gen, s.gamma)
        total = float(sum(lam))
        logits = _q(self.critics["q0"], batch.obs) / total
        for j in range(k_n):  # log pi_j of the Boltzmann policy of critic j
            log_pi = torch.log_softmax(_q(self.critics[f"q{j + 1}"], batch.obs) / s.stage1_tau,
                                       -1)
            logits = logits + (lam[j] / total) * log_pi
        logits = s.damping * logits + (1 - s.damping) * _logp(policy, batch.obs)
        fit_actor(policy, self.opts["policy"], batch.obs, torch.softmax(logits, -1),
                  s.actor_iters, s.minibatch, gen)
        self.average_step()
        got = self.dual_estimate(step + 1, batch)
        want = self.thr * (1 + s.margin)
        violation = ((want - got) / want.clamp_min(1e-9)).clamp(-1.0, 1.0)
        lam[:] = (torch.tensor(lam) * torch.exp(s.lam_lr * violation)).clamp(1e-4, 1e3).tolist()
        self.pending.update(stage=2, actor=self.kept,
                            columns={f"lam_{n}": v for n, v in zip(names, lam)})
        return {}


class RCPO(_Constrained):
    """One critic of the penalised return, multipliers by projected (PID) dual ascent."""

    def __init__(self, sim: Simulator, policy: nn.Module, s: RCPOSettings, *, seed: int,
                 device: str | torch.device | None):
        _signals(sim)
        self.critic = _fresh_copy(policy, seed * 101 + 50)
        super().__init__(sim, policy, s, seed=seed, device=device,
                         extra_nets={"q": self.critic})

    def begin(self, loop: TrainingLoop) -> None:
        super().begin(loop)
        k_n = len(self.names)
        self.norm = self.scale()
        self.mu = self.extra.setdefault("lam", [0.0] * k_n)
        self.integral = self.extra.setdefault("mu_integral", [0.0] * k_n)

    def update(self, step: int, seed: int) -> dict[str, float]:
        s, policy, mu, integral = self.s, self.policy, self.mu, self.integral
        gen = _gen(self.seed, step)
        self.pending = {}
        batch = collect(self.sim, policy, self.trace(step), self.names, self.norm, s.explore)
        weights = torch.tensor([1.0, *mu]) / (1.0 + sum(mu))  # comparable scale as mu grows
        fit_critic_td(self.critic, self.opts["q"], batch, weights, policy, s.critic_iters,
                      s.minibatch, gen, s.gamma)
        target = torch.softmax(_logp(policy, batch.obs) + _q(self.critic, batch.obs) / s.tau, -1)
        fit_actor(policy, self.opts["policy"], batch.obs, target, s.actor_iters, s.minibatch, gen)
        self.average_step()
        got = self.dual_estimate(step + 1, batch)
        want = self.thr * (1 + s.margin)
        violation = (want - got) / want.clamp_min(1e-9)
        integral[:] = (torch.tensor(integral) + s.mu_lr * violation).clamp_min(0.0).tolist()
        mu[:] = (torch.tensor(integral) + s.mu_kp * violation).clamp_min(0.0).tolist()
        self.pending.update(stage=2, actor=self.kept,
                            columns={f"mu_{n}": v for n, v in zip(self.names, mu)})
        return {}


@requires(Constrained)
def train_tscac(
    sim: Simulator,
    policy: nn.Module,
    settings: TSCACSettings | None = None,
    *,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
    callback: Callable[..., Any] | None = None,
    start_state: dict[str, Any] | None = None,
    progress: bool = False,
    **overrides: Any,
) -> TrainResult:
    """Two-stage constrained actor-critic. ``steps`` counts on-policy iterations of both
    stages; ``stage1_fraction`` of them go to stage one, split equally over the signals.
    Stage-one actors improve by ``pi_k <- pi_k exp(Q_k / stage1_tau)`` (KL-regularised
    policy iteration) and stage two mixes their Boltzmann policies ``softmax(Q_k /
    stage1_tau)`` (exact log-probabilities at any sharpness); stage two moves ``damping`` of
    the way (in log space) from the current actor to the closed-form mixture each step.
    In the last ``reeval_fraction`` of stage two the signal critics ``Q_k`` are re-estimated
    for the current actor (expected SARSA on its batches, warm-started from stage one), so
    the mixture's anchors ``softmax(Q_k / stage1_tau)`` become the improvement directions of
    each signal from where the actor is; 0 keeps the stage-one anchors throughout.
    ``lam_init`` defaults to ``stage1_tau / 2`` (multipliers ``lam_k / stage1_tau`` of 0.5).
    Training episodes explore: with probability ``explore`` the item is uniform.

    The multipliers ``lam_k`` move each stage-two step on an estimate of the actor's signal
    totals, aiming at threshold x (1 + ``margin``): ``dual_source='batch'`` the training
    batch (exploring), ``'sample'`` a fresh on-policy Monte-Carlo sample of
    ``dual_episodes`` episodes, ``'dev'`` the dev estimate (then every stage-two step is
    also considered for selection). Selection: the dev estimates (Monte-Carlo on
    ``dev_episodes`` dev episodes, `estimate_totals`; ``dev_values='realised'`` counts the
    realised signals instead of their per-step expectations) count a threshold as met when
    ``estimate - dev_z x s.e. >= threshold x (1 - tolerance)``. With ``average > 0`` dev
    evaluation and selection judge the exponential moving average (decay ``average`` per
    stage-two step) of the actor's weights instead of the actor itself: an average of the
    last policies, steadier than any one of them (``dual_source='dev'`` then moves the
    multipliers on the average too; the other sources follow the actor)."""
    s = resolve_settings(TSCACSettings, settings, overrides, "tscac")
    return run_loop(TSCAC(sim, policy, s, seed=seed, device=device), s, metric="dev_reward",
                    maximise=True, seed=seed, callback=callback, start_state=start_state,
                    progress=progress)


@requires(Constrained)
def train_rcpo(
    sim: Simulator,
    policy: nn.Module,
    settings: RCPOSettings | None = None,
    *,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
    callback: Callable[..., Any] | None = None,
    start_state: dict[str, Any] | None = None,
    progress: bool = False,
    **overrides: Any,
) -> TrainResult:
    """Lagrangian actor-critic (RCPO): one critic of the penalised return
    ``main + sum_k mu_k signal_k`` (normalised units), the actor moved towards
    ``pi * exp(Q / tau)`` (exploring as in `train_tscac`), and ``mu_k >= 0`` by projected
    dual ascent on the violation of ``threshold_k (1 + margin)`` by the estimate that
    ``dual_source`` names; dev selection and ``average`` as in `train_tscac`. ``mu_kp > 0``
    adds a proportional term, ``mu = max(0, I + mu_kp x violation)`` with ``I`` the
    integral (PID Lagrangian, Stooke et al. 2020): it damps the multipliers' overshoot
    (pure integration lags the actor and cycles)."""
    s = resolve_settings(RCPOSettings, settings, overrides, "rcpo")
    return run_loop(RCPO(sim, policy, s, seed=seed, device=device), s, metric="dev_reward",
                    maximise=True, seed=seed, callback=callback, start_state=start_state,
                    progress=progress)
