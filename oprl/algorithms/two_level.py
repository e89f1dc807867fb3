"""Two-level RL (the AI Economist's curriculum, Zheng et al. 2022): agents and planner co-adapt.

Phase 1: the agents learn alone, taxes off, labour cost annealed up. Phase 2: the planner
joins (rate cap and entropy bonus annealed) while the agents, the fast timescale, keep
learning. Phase 3: the planner's schedule is frozen while the agents settle; best-on-dev is
judged on settled agents. ``candidates`` keeps a pool of the planner's best schedules, all
settled to at once, because against learning agents where the schedule stops is luck. Each
level learns by policy gradient ("pg") or pathwise; ``agent_learning='best_response'`` uses
the agents' exact best response; ``imitation`` adds self-imitation so agents find distant
better hours. Why each piece: docs/economy.md, "Two-level RL".

Needs ``step`` info ``agent_reward``, ``labour_cost`` ``[B, N]``; a policy with ``planner``
(``sample``, ``log_prob``, ``forward``, ``rate_limit``), ``agents`` (``raw``, ``squash``), ``act``
and optionally ``probe(trace)``. Results and resuming as `train_hdpo`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from oprl.algorithms.common import DEV_SEED_OFFSET
from oprl.algorithms.loop import (
    Algorithm,
    Evaluation,
    TrainingLoop,
    TrainResult,
    resolve_settings,
    run_loop,
)
from oprl.algorithms.settings import LoopSettings, require
from oprl.core import Simulator, Trace, resolve_device, rollout

__all__ = ["TrainResult", "TwoLevelSettings", "schedule_at", "train_two_level"]

LEARNING = ("pg", "pathwise")
AGENT_LEARNING = (*LEARNING, "best_response")


def linear(start: float, end: float, frac: float) -> float:
    """``start`` -> ``end`` as ``frac`` goes 0 -> 1 (clipped)."""
    frac = min(max(frac, 0.0), 1.0)
    return start + (end - start) * frac


@dataclass(frozen=True)
class Schedule:
    """Where training stands at a step: the phase and the annealed coefficients."""

    planner_on: bool  # the planner sets the schedule (else taxes are off)
    planner_learns: bool  # False in the final phase: its deterministic schedule, agents settle
    labour_scale: float
    rate_limit: float
    entropy: float
    noise: float
    restart: int = 0  # which planner attempt (`restarts`) the step belongs to
    segment_end: bool = False  # the last step of an attempt: evaluate it


def schedule_at(step: int, steps: int, *, agent_phase: float, settle_phase: float,
                labour_start: float, rate_anneal: float, entropy_start: float,
                entropy_end: float, noise_start: float, entropy_anneal: float = 1.0,
                restarts: int = 1) -> Schedule:
    """The curriculum as a pure function of the step (so a resumed run is exact). After the
    agents' phase the remaining steps are split into ``restarts`` equal attempts; each one
    starts a fresh planner (rates annealed from 0 again) and ends with its own settle phase
    (``settle_phase * steps / restarts`` steps). The entropy bonus reaches ``entropy_end``
    after ``entropy_anneal`` of an attempt's learning steps."""
    first = int(round(agent_phase * steps))
    if step < first:
        return Schedule(False, False, linear(labour_start, 1.0, step / max(first, 1)), 0.0, 0.0,
                        0.0)
    span = (steps - first) / restarts
    restart = min(int((step - first) / span), restarts - 1) if span > 0 else 0
    start = first + int(round(restart * span))
    end = steps if restart == restarts - 1 else first + int(round((restart + 1) * span))
    last = end - int(round(settle_phase * steps / restarts))
    is_end = step == end - 1
    if step >= last:
        return Schedule(True, False, 1.0, 1.0, 0.0, 0.0, restart, is_end)
    frac = (step - start) / max(last - start, 1)
    entropy = linear(entropy_start, entropy_end, frac / entropy_anneal if entropy_anneal > 0
                     else 1.0)
    return Schedule(True, True, 1.0,
                    linear(0.0, 1.0, frac / rate_anneal) if rate_anneal > 0 else 1.0,
                    entropy, linear(noise_start, 0.0, frac), restart, is_end)


def _normalised(x: Tensor) -> Tensor:
    return (x - x.mean(0)) / (x.std(0, unbiased=False) + 1e-8)


def _planner_advantage(returns: Tensor, quantile: float) -> Tensor:
    """Normalised advantages ``[B]``: against the batch mean (``quantile`` 0), or risk-seeking
    (Petersen et al. 2021): against the batch's ``quantile``-quantile, only better schedules
    counting. A planner that finally plays one deterministic schedule needs the best case,
    not the average over its exploration: with the mean baseline a product of per-bracket
    categoricals settles in a coordinate-wise local optimum (288.9 against 293.5 on the
    anchor economy)."""
    if quantile <= 0:
        return _normalised(returns)
    adv = (returns - torch.quantile(returns, quantile)).clamp_min(0.0)
    return adv / (adv.std(unbiased=False) + 1e-8)


def episode_losses(sim: Simulator, policy: nn.Module, trace: Trace, sched: Schedule, *,
                   agent_learning: str, planner_learning: str, agent_noise: float,
                   gen: torch.Generator, planner_quantile: float = 0.0,
                   saturation: float = 6.0, replay: list[Tensor] | None = None,
                   imitation: float = 0.0, imitation_samples: int = 1,
                   settle_rates: Callable[[Any], Tensor] | None = None,
                   ) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
    """Agents' and planner's surrogate losses on one batch, the batch's mean reward and the
    schedules played. ``replay``: play these schedules again (pg planner: scored by their
    log-probability under the current planner) instead of sampling new ones;
    ``settle_rates(obs)``: the schedules played while the planner does not learn."""
    state = sim.reset(trace)
    agent_terms, planner_rewards, logps, entropies = [], [], [], []
    agent_logps, played = [], []
    for t in range(trace.horizon):
        obs = sim.observe(state, t, trace)
        if sched.planner_learns and replay is not None and planner_learning == "pg":
            rates = replay[t]
            logp, ent = policy.planner.log_prob(obs, rates)
        elif sched.planner_learns:
            rates, logp, ent = policy.planner.sample(obs, gen, sched.noise)
            if planner_learning == "pg":
                rates = rates.detach()
        elif sched.planner_on:  # settle: the planner's schedule, or the candidates' ones
            rates = (policy.planner(obs) if settle_rates is None else settle_rates(obs)).detach()
            logp = ent = torch.zeros(trace.batch, device=trace.device)
        else:
            rates = torch.zeros(trace.batch, policy.planner.n_brackets, device=trace.device)
            logp = ent = torch.zeros(trace.batch, device=trace.device)
        played.append(rates.detach())
        if agent_learning == "best_response":  # infinitely fast agents: the exact response
            action = policy.act(obs, rates)
            state, reward, info = sim.step(state, action, t, trace)
            planner_rewards.append(reward)
            logps.append(logp)
            entropies.append(ent)
            continue
        raw = policy.agents.raw(obs, rates)
        # keep the agents' outputs out of deep saturation (there Adam would push on unseen)
        drift = (raw.abs() - saturation).clamp_min(0.0).pow(2).sum((-1, -2))
        if agent_learning == "pg":
            noisy = (raw + agent_noise * torch.randn(raw.shape, generator=gen).to(raw.device))
            noisy = noisy.detach()
            agent_logps.append((-0.5 * ((noisy - raw) / agent_noise) ** 2).sum(-1))
            raw = noisy
        hours, consume = policy.agents.squash(raw, obs)
        action = torch.cat([rates, hours] + ([] if consume is None else [consume]), -1)
        before = state
        state, reward, info = sim.step(state, action, t, trace)
        # annealed labour cost: add back the part of k * h^2 not yet charged
        term = (info["agent_reward"] + (1.0 - sched.labour_scale) * info["labour_cost"]
                - drift.unsqueeze(-1) / raw.shape[1])
        if imitation > 0 and agent_learning == "pathwise":
            term = term - imitation * _imitation(sim, before, rates, hours, consume, info, t,
                                                 trace, sched, gen, imitation_samples)
        agent_terms.append(term)
        planner_rewards.append(reward)
        logps.append(logp)
        entropies.append(ent)
    planner_return = torch.stack(planner_rewards, 1).sum(1)  # [B]
    if agent_learning == "best_response":
        agent_loss = torch.zeros((), device=trace.device, requires_grad=True)
    elif agent_learning == "pathwise":
        agent_return = torch.stack(agent_terms, 1).sum(1)  # [B, N]
        agent_loss = -agent_return.mean()
    else:
        agent_return = torch.stack(agent_terms, 1).sum(1)
        adv = _normalised(agent_return.detach())
        agent_loss = -(torch.stack(agent_logps, 1).sum(1) * adv).mean()
    if not sched.planner_learns:
        planner_loss = torch.zeros((), device=trace.device)
    elif planner_learning == "pathwise":
        planner_loss = -planner_return.mean() / trace.horizon
    else:
        adv = _planner_advantage(planner_return.detach(), planner_quantile)
        planner_loss = (-(torch.stack(logps, 1).sum(1) * adv).mean()
                        - sched.entropy * torch.stack(entropies, 1).sum(1).mean())
    return agent_loss, planner_loss, planner_return.mean().detach() / trace.horizon, played


def _imitation(sim: Simulator, before: dict, rates: Tensor, hours: Tensor,
               consume: Tensor | None, info: dict, t: int, trace: Trace, sched: Schedule,
               gen: torch.Generator, samples: int = 1) -> Tensor:
    """Self-imitation (Oh et al. 2018) against local optima: every agent also tries
    ``samples`` uniformly random hours; where the best of them would have paid more (own
    utility, lump sum excluded: exact for quadratic utility), its hours are pulled towards it
    with a force equal to the gain. Pathwise agents alone only climb to the nearest local
    optimum and never find a distant better choice, such as stopping work."""
    with torch.no_grad():
        max_hours = float(sim.params.max_hours)

        def own(i: dict) -> Tensor:
            return i["agent_reward"] - i["lump"] + (1.0 - sched.labour_scale) * i["labour_cost"]

        mine = own(info)
        best_gain = torch.zeros_like(hours)
        best_alt = hours.detach().clone()
        for _ in range(samples):
            alt = torch.rand(hours.shape, generator=gen).to(hours.device) * max_hours
            parts = [rates.detach(), alt] + ([] if consume is None else [consume.detach()])
            _, _, other = sim.step(before, torch.cat(parts, -1), t, trace)
            gain = own(other) - mine
            better = gain > best_gain
            best_gain = torch.where(better, gain, best_gain)
            best_alt = torch.where(better, alt, best_alt)
    return best_gain * (hours - best_alt).abs()


def _planner_key(policy: nn.Module, sim: Simulator, trace: Trace) -> tuple[float, ...]:
    """The planner's deterministic schedules on ``trace``'s first period, as a hashable key."""
    with torch.no_grad():
        obs = sim.observe(sim.reset(trace), 0, trace)
        return tuple(torch.round(policy.planner(obs) * 1e4).flatten().tolist())


def _offer_candidate(pool: list[dict], sim: Simulator, policy: nn.Module, dev_trace: Trace,
                     step: int, size: int) -> None:
    """Keep the ``size`` planner snapshots whose deterministic schedules scored best on the
    dev trace with the agents of the moment (one per distinct schedule: the best score)."""
    value = evaluate_reward(sim, policy, dev_trace)
    key = _planner_key(policy, sim, dev_trace)
    same = [c for c in pool if c["key"] == key]
    if same and same[0]["value"] >= value:
        return
    pool[:] = [c for c in pool if c["key"] != key]
    pool.append({"key": key, "value": value, "step": step,
                 "planner": {k: v.detach().clone() for k, v in policy.planner.state_dict().items()}})
    pool.sort(key=lambda c: -c["value"])
    del pool[size:]


def _pool_rates(pool: list[dict], shadow: nn.Module) -> Callable[[Any], Tensor]:
    """Schedules of the pooled planners, episode ``b`` playing candidate ``b mod K``."""

    def rates(obs: Any) -> Tensor:
        out = []
        for cand in pool:
            shadow.load_state_dict(cand["planner"])
            out.append(shadow(obs))
        stacked = torch.stack(out)  # [K, B, brackets]
        which = torch.arange(stacked.shape[1], device=stacked.device) % len(pool)
        return stacked[which, torch.arange(stacked.shape[1], device=stacked.device)]

    return rates


def _best_candidate(pool: list[dict], sim: Simulator, policy: nn.Module,
                    dev_trace: Trace) -> None:
    """Load into the policy the pooled planner whose schedule scores best on the dev trace
    with the settled agents."""
    scores = []
    for cand in pool:
        policy.planner.load_state_dict(cand["planner"])
        scores.append(evaluate_reward(sim, policy, dev_trace))
    best = max(range(len(pool)), key=lambda i: scores[i])
    policy.planner.load_state_dict(pool[best]["planner"])


def evaluate_reward(sim: Simulator, policy: nn.Module, trace: Trace) -> float:
    """Mean episode metric of the deterministic policy (no gradients)."""
    was = policy.training
    policy.eval()
    with torch.no_grad():
        value = sim.episode_metric(rollout(sim, policy, trace).rewards, 0).mean()
    policy.train(was)
    return float(value)


@dataclass(frozen=True)
class TwoLevelSettings(LoopSettings):
    """Two-level RL's hyper-parameters (`train_two_level`; the curriculum in the module
    docstring). ``agent_updates``: agent steps per planner step (extra ones replay the sampled
    schedules); ``planner_quantile``: risk-seeking baseline of the pg planner (0: the mean);
    ``imitation``: weight of the agents' self-imitation (0: off); ``settle_phase``: final
    fraction with the planner frozen. ``agent_learning='best_response'`` sets both phases to
    0 (nothing for the agents to learn first)."""

    steps: int = 3000
    eval_every: int = 100
    batch_size: int = 128
    agent_lr: float = 3e-3
    planner_lr: float = 0.02
    agent_learning: str = "pathwise"
    planner_learning: str = "pg"
    agent_phase: float = 0.2
    settle_phase: float = 0.15
    agent_updates: int = 1
    labour_start: float = 0.5
    rate_anneal: float = 0.3
    entropy_start: float = 0.2
    entropy_end: float = 0.0
    planner_noise: float = 0.5
    planner_quantile: float = 0.9
    entropy_anneal: float = 1.0
    restarts: int = 1
    candidates: int = 0
    candidate_every: int = 25
    imitation: float = 0.0
    imitation_samples: int = 1
    agent_noise: float = 0.3
    horizon: int | None = None
    dev_scenarios: int = 32
    grad_clip: float | None = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.agent_learning in AGENT_LEARNING, "agent_learning",
                f"one of {AGENT_LEARNING}", self.agent_learning)
        require(self.planner_learning in LEARNING, "planner_learning", f"one of {LEARNING}",
                self.planner_learning)
        if self.best_response and self.planner_learning == "pathwise":
            raise ValueError("planner_learning: 'pathwise' needs learned (differentiable) agents")
        require(self.candidates >= 0, "candidates", "an integer >= 0", self.candidates)
        require(self.candidate_every >= 1, "candidate_every", "an integer >= 1",
                self.candidate_every)
        require(self.imitation_samples >= 1, "imitation_samples", "an integer >= 1",
                self.imitation_samples)
        require(self.restarts >= 1, "restarts", "an integer >= 1", self.restarts)
        require(0 < self.entropy_anneal <= 1, "entropy_anneal", "a number in (0, 1]",
                self.entropy_anneal)
        require(0 <= self.planner_quantile < 1, "planner_quantile", "a number in [0, 1)",
                self.planner_quantile)
        require(self.agent_updates >= 1, "agent_updates", "an integer >= 1", self.agent_updates)
        require(self.batch_size >= 2, "batch_size", "an integer >= 2", self.batch_size)
        require(self.dev_scenarios >= 1, "dev_scenarios", "an integer >= 1", self.dev_scenarios)
        require(self.horizon is None or self.horizon >= 1, "horizon", "an integer >= 1 or null",
                self.horizon)
        for name in ("agent_lr", "planner_lr", "agent_noise"):
            require(getattr(self, name) > 0, name, "a number > 0", getattr(self, name))
        require(self.grad_clip is None or self.grad_clip > 0, "grad_clip",
                "a number > 0 or null", self.grad_clip)
        require(0 <= self.phases[0] < 1, "agent_phase", "a number in [0, 1)", self.agent_phase)
        require(0 <= self.phases[1] < 1 - self.phases[0], "settle_phase",
                "a number in [0, 1 - agent_phase)", self.settle_phase)

    @property
    def best_response(self) -> bool:
        return self.agent_learning == "best_response"

    @property
    def phases(self) -> tuple[float, float]:
        """``(agent_phase, settle_phase)`` as trained: both 0 against exact best responses."""
        return (0.0, 0.0) if self.best_response else (self.agent_phase, self.settle_phase)


class TwoLevel(Algorithm):
    """Agents and planner updated on one batch per step, along the curriculum."""

    train_columns = ("train_reward",)

    def __init__(self, sim: Simulator, policy: nn.Module, s: TwoLevelSettings, *, seed: int,
                 device: str | torch.device | None):
        if s.best_response:
            if not hasattr(policy, "exact_agents"):
                raise ValueError("agent_learning: 'best_response' needs a policy with exact agents")
            policy.exact_agents.fill_(1.0)
        if s.planner_learning == "pathwise" and policy.planner.kind != "continuous":
            raise ValueError("planner_learning: 'pathwise' needs the continuous planner "
                             "(policy_kwargs planner='continuous')")
        self.sim, self.policy, self.s = sim, policy, s
        self.device = dev = resolve_device(device)
        self.horizon = int(s.horizon or sim.horizon)
        policy.to(dev)
        self.opt_agents = torch.optim.Adam(policy.agents.parameters(), lr=s.agent_lr)
        self.opt_planner = torch.optim.Adam(policy.planner.parameters(), lr=s.planner_lr)
        self.dev_trace = sim.sample_trace(s.dev_scenarios, self.horizon,
                                          seed=seed + DEV_SEED_OFFSET, device=dev)
        agent_phase, self.settle_phase = s.phases
        self.curriculum = dict(agent_phase=agent_phase, settle_phase=self.settle_phase,
                               labour_start=s.labour_start, rate_anneal=s.rate_anneal,
                               entropy_start=s.entropy_start, entropy_end=s.entropy_end,
                               noise_start=s.planner_noise, entropy_anneal=s.entropy_anneal,
                               restarts=s.restarts)
        self.sched: Schedule | None = None  # the last step's

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"agents": self.opt_agents, "planner": self.opt_planner}

    def begin(self, loop: TrainingLoop) -> None:
        self.extra = loop.extra
        if "planner_init" not in self.extra:  # what every restart of the planner starts from
            self.extra.update(
                planner_init={k: v.detach().clone()
                              for k, v in self.policy.planner.state_dict().items()},
                planner_opt_init=copy.deepcopy(self.opt_planner.state_dict()),
                restart=0, pool=[])
        self.shadow = copy.deepcopy(self.policy.planner)  # plays the pooled candidates

    def update(self, step: int, seed: int) -> dict[str, float]:
        s, sim, policy, extra = self.s, self.sim, self.policy, self.extra
        sched = self.sched = schedule_at(step, s.steps, **self.curriculum)
        if sched.restart != extra["restart"]:  # a fresh planner; the agents keep learning
            policy.planner.load_state_dict(extra["planner_init"])
            self.opt_planner.load_state_dict(extra["planner_opt_init"])
            extra.update(restart=sched.restart, pool=[])
        policy.planner.rate_limit.fill_(sched.rate_limit if sched.planner_on else 1.0)
        trace = sim.sample_trace(s.batch_size, self.horizon, seed=seed, device=self.device)
        gen = torch.Generator().manual_seed(seed)
        policy.train()
        pool = extra["pool"]
        settle = (_pool_rates(pool, self.shadow) if pool and sched.planner_on
                  and not sched.planner_learns else None)
        losses = dict(agent_learning=s.agent_learning, planner_learning=s.planner_learning,
                      agent_noise=s.agent_noise, gen=gen, planner_quantile=s.planner_quantile,
                      imitation=s.imitation, imitation_samples=s.imitation_samples,
                      settle_rates=settle)
        agent_loss, planner_loss, mean_reward, played = episode_losses(
            sim, policy, trace, sched, **losses)
        if not s.best_response:
            _update(self.opt_agents, policy.agents, agent_loss, s.grad_clip)
            # agents are the fast timescale: they adapt to the very schedules just sampled
            # before those schedules are scored for the planner
            for extra_update in range(s.agent_updates - 1):
                agent_loss, planner_loss, mean_reward, _ = episode_losses(
                    sim, policy, trace, sched, replay=played, **losses)
                if extra_update < s.agent_updates - 2 or not sched.planner_learns:
                    _update(self.opt_agents, policy.agents, agent_loss, s.grad_clip)
        if sched.planner_learns:
            _update(self.opt_planner, policy.planner, planner_loss, s.grad_clip)
        done = step + 1
        if s.candidates and sched.planner_learns and done % s.candidate_every == 0:
            policy.planner.rate_limit.fill_(sched.rate_limit)
            _offer_candidate(pool, sim, policy, self.dev_trace, done, s.candidates)
        return {"train_reward": float(mean_reward)}

    def evaluate_now(self, step: int) -> bool:
        return self.sched is not None and self.sched.segment_end and self.s.restarts > 1

    def evaluate(self, step: int) -> Evaluation:
        sched, policy = self.sched, self.policy
        if sched is None:  # the initial weights: kept only until a settled schedule is scored
            return self._evaluation(selectable=True, provisional=True)
        policy.planner.rate_limit.fill_(sched.rate_limit if sched.planner_on else 0.0)
        pool = self.extra["pool"]
        if pool and sched.segment_end:  # the attempt's choice: its best settled candidate
            _best_candidate(pool, self.sim, policy, self.dev_trace)
        # agents mid-curriculum (labour cost not yet full) are no fair test of a schedule;
        # with a settle phase, only settled agents (an attempt's last step) are
        settled = sched.segment_end if self.settle_phase > 0 else True
        return self._evaluation(selectable=sched.planner_on and settled)

    def _evaluation(self, selectable: bool, provisional: bool = False) -> Evaluation:
        """The dev reward (with the rate cap as it stands) and the policy's probes."""
        value = evaluate_reward(self.sim, self.policy, self.dev_trace)
        probe = getattr(self.policy, "probe", None)
        columns = probe(self.dev_trace) if probe is not None else {}
        return Evaluation(value, columns, selectable=selectable, provisional=provisional)


def train_two_level(
    sim: Simulator,
    policy: nn.Module,
    settings: TwoLevelSettings | None = None,
    *,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
    callback: Callable[..., Any] | None = None,
    start_state: dict[str, Any] | None = None,
    progress: bool = False,
    **overrides: Any,
) -> TrainResult:
    """Train agents then planner+agents; returns the best-on-dev policy (planner reward,
    with the rate cap it was selected under). ``settings`` (default `TwoLevelSettings`) with
    keyword ``overrides``; the loop's arguments as `TrainingLoop`."""
    s = resolve_settings(TwoLevelSettings, settings, overrides, "two_level")
    algorithm = TwoLevel(sim, policy, s, seed=seed, device=device)
    return run_loop(algorithm, s, metric="dev_reward", maximise=True, seed=seed,
                    callback=callback, start_state=start_state, progress=progress)


def _update(opt: torch.optim.Optimizer, module: nn.Module, loss: Tensor,
            grad_clip: float | None) -> None:
    """Gradient of ``loss`` for ``module``'s parameters only (the other level's are kept)."""
    params = [p for p in module.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    for p, g in zip(params, grads):
        p.grad = torch.zeros_like(p) if g is None else g
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
