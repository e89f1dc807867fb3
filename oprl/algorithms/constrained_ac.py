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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from oprl.algorithms.common import DEV_SEED_OFFSET, invoke_callback, step_seed
from oprl.core import Constrained, Simulator, Trace, requires, resolve_device

LOG_FLOOR = math.log(1e-12)
DUAL_SEED_OFFSET = 2_000_029  # the multipliers' on-policy samples (dual_source='sample')


@dataclass
class ConstrainedResult:
    """Best-on-dev weights (loaded into ``policy``) and the training history."""

    policy: nn.Module
    best_step: int
    history: list[dict[str, float]] = field(default_factory=list)
    steps_done: int = 0
    wall_s: float = 0.0
    multipliers: list[float] = field(default_factory=list)


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


class _Run:
    """Shared bookkeeping: traces per step, dev evaluation, history, best weights, resume."""

    def __init__(self, sim, policy, *, seed, device, batch_size, horizon, dev_episodes,
                 eval_every, lr, critic_lr, start_state, extra_nets: dict[str, nn.Module],
                 tolerance: float = 0.0, dev_z: float = 0.0, dev_values: str = "expected",
                 dual_episodes: int = 0, average: float = 0.0):
        self.sim, self.policy, self.seed = sim, policy, seed
        if not 0 <= average < 1:
            raise ValueError(f"average: must lie in [0, 1), got {average}")
        self.average = float(average)
        if not 0 <= tolerance < 1:
            raise ValueError(f"tolerance: must lie in [0, 1), got {tolerance}")
        if not (math.isfinite(dev_z) and dev_z >= 0):
            raise ValueError(f"dev_z: must be a finite number >= 0, got {dev_z}")
        if dev_values not in ("expected", "realised"):
            raise ValueError(f"dev_values: {dev_values!r}; allowed 'expected', 'realised'")
        self.tolerance, self.dev_z = float(tolerance), float(dev_z)
        self.realised = dev_values == "realised"
        self.names, self.thr = _signals(sim)
        self.compact = bool(sim.independent_rows)
        self.dev = resolve_device(device)
        self.horizon = int(horizon if horizon is not None else sim.horizon)
        self.batch_size, self.eval_every = int(batch_size), int(eval_every)
        self.dual_episodes = int(dual_episodes)
        if self.batch_size < 1 or self.eval_every < 1 or self.horizon < 1 or dev_episodes < 1:
            raise ValueError("batch_size, eval_every, dev_episodes and horizon must be >= 1")
        self.avg = copy.deepcopy(policy) if self.average > 0 else None
        self.nets = {"policy": policy, **extra_nets,
                     **({"avg": self.avg} if self.avg is not None else {})}
        for net in self.nets.values():
            net.to(self.dev)
        self.opts = {k: torch.optim.Adam(n.parameters(), lr=critic_lr if k.startswith("q") else lr)
                     for k, n in self.nets.items() if k != "avg"}
        self.dev_trace = sim.sample_trace(dev_episodes, self.horizon, seed=seed + DEV_SEED_OFFSET,
                                          device=self.dev)
        self.state = {"step": 0, "history": [], "best_state": None, "best_key": None,
                      "best_step": 0, "scale": None, "extra": {}}
        self.start_time = time.perf_counter()
        if start_state is not None:
            self.state = copy.deepcopy({k: v for k, v in start_state.items()
                                        if k not in ("nets", "opts")})
            for k, net in self.nets.items():
                net.load_state_dict(start_state["nets"][k])
            for k, opt in self.opts.items():
                opt.load_state_dict(start_state["opts"][k])
            self.start_time -= self.state.get("wall_s", 0.0)

    def trace(self, step: int) -> Trace:
        return self.sim.sample_trace(self.batch_size, self.horizon, seed=step_seed(self.seed, step),
                                     device=self.dev)

    def scale(self) -> Tensor:
        """Normalisers: the thresholds for signals, the first batch's mean main total."""
        if self.state["scale"] is None:
            uniform = collect(self.sim, self.policy, self.trace(-1), self.names,
                              torch.ones(1 + len(self.names)))
            main = float(uniform.totals[:, 0].abs().mean().clamp_min(1e-6))
            self.state["scale"] = [main, *[max(float(v), 1e-6) for v in self.thr]]
        return torch.tensor(self.state["scale"])

    @property
    def kept(self) -> nn.Module:
        """The policy that dev evaluation judges and selection keeps: the actor, or with
        ``average > 0`` the exponential moving average of its weights over the steps since
        `average_step` was first called (smooths the step-to-step swings of the actor)."""
        return self.avg if self.avg is not None and self.state["extra"].get("avg_on") else self.policy

    def average_step(self) -> None:
        """Fold the actor's current weights into the moving average (the first call copies)."""
        if self.avg is None:
            return
        with torch.no_grad():
            started = self.state["extra"].get("avg_on", False)
            for a, p in zip(self.avg.state_dict().values(), self.policy.state_dict().values()):
                if started and a.is_floating_point():
                    a.lerp_(p, 1.0 - self.average)
                else:
                    a.copy_(p)
        self.state["extra"]["avg_on"] = True

    def dev_values(self, actor: nn.Module) -> tuple[Tensor, Tensor]:
        """Monte-Carlo dev totals of ``actor`` and their standard errors (`estimate_totals`)."""
        return estimate_totals(self.sim, actor, self.dev_trace, self.names,
                               realised=self.realised, compact=self.compact)

    def dual_values(self, actor: nn.Module, step: int) -> Tensor:
        """Fresh on-policy totals of ``actor`` (``dual_episodes`` episodes of their own seed,
        apart from training, dev and evaluation traces) for the multipliers' update."""
        trace = self.sim.sample_trace(self.dual_episodes, self.horizon,
                                      seed=step_seed(self.seed + DUAL_SEED_OFFSET, step),
                                      device=self.dev)
        return estimate_totals(self.sim, actor, trace, self.names, realised=self.realised,
                               compact=self.compact)[0]

    def feasible_shortfall(self, vals: Tensor, se: Tensor) -> float:
        """Total relative shortfall of the dev estimates, less ``dev_z`` standard errors, below
        threshold x (1 - tolerance): 0 when every constraint is met with that confidence."""
        return _shortfall(vals[1:] - self.dev_z * se[1:], self.thr * (1 - self.tolerance))

    def consider(self, step: int, vals: Tensor, se: Tensor) -> None:
        """Keep the policy's weights if ``vals`` (its dev totals) beat the best so far: feasible
        (`feasible_shortfall` 0) first, then the highest main return."""
        short = self.feasible_shortfall(vals, se)
        key = (short > 0, short, -float(vals[0]))
        if self.state["best_key"] is None or key < tuple(self.state["best_key"]):
            self.state.update(best_key=list(key), best_step=step, best_state={
                k: v.detach().clone() for k, v in self.kept.state_dict().items()})

    def record(self, step: int, stage: int, actor: nn.Module, selectable: bool,
               extra: dict[str, float], callback,
               dev: tuple[Tensor, Tensor] | None = None) -> None:
        vals, se = self.dev_values(actor) if dev is None else dev
        feasible = self.feasible_shortfall(vals, se) == 0
        row = {"step": step, "stage": stage, "dev_reward": float(vals[0]),
               "dev_feasible": float(feasible), "wall_s": time.perf_counter() - self.start_time,
               "dev_reward_se": float(se[0]),
               **{f"dev_{n}": float(v) for n, v in zip(self.names, vals[1:])},
               **{f"dev_{n}_se": float(v) for n, v in zip(self.names, se[1:])},
               **_reported_exact(self.sim, actor, self.names, self.horizon), **extra}
        self.state["history"].append(row)
        if selectable:
            self.consider(step, vals, se)
        if callback is not None:
            invoke_callback(callback, step, self.policy, self.opts["policy"], self.state["history"],
                  self.snapshot)

    def snapshot(self) -> dict[str, Any]:
        snap = copy.deepcopy(self.state)
        snap["wall_s"] = time.perf_counter() - self.start_time
        snap["nets"] = {k: copy.deepcopy(n.state_dict()) for k, n in self.nets.items()}
        snap["opts"] = {k: copy.deepcopy(o.state_dict()) for k, o in self.opts.items()}
        return snap

    def finish(self) -> ConstrainedResult:
        if self.state["best_state"] is not None:
            self.policy.load_state_dict(self.state["best_state"])
        return ConstrainedResult(self.policy, self.state["best_step"], self.state["history"],
                                 self.state["step"], time.perf_counter() - self.start_time,
                                 list(self.state["extra"].get("lam", [])))


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


@requires(Constrained)
def train_tscac(
    sim: Simulator,
    policy: nn.Module,
    *,
    steps: int = 200,
    stage1_fraction: float = 0.3,
    reeval_fraction: float = 0.0,
    batch_size: int = 256,
    horizon: int | None = None,
    lr: float = 3e-3,
    critic_lr: float = 1e-2,
    stage1_tau: float = 0.01,
    damping: float = 0.7,
    explore: float = 0.1,
    lam_init: float | None = None,
    lam_lr: float = 0.3,
    margin: float = 0.02,
    dual_source: str = "batch",
    dual_episodes: int = 1024,
    tolerance: float = 0.0,
    dev_z: float = 0.0,
    dev_values: str = "expected",
    average: float = 0.0,
    critic_iters: int = 30,
    actor_iters: int = 10,
    minibatch: int = 512,
    gamma: float = 1.0,
    dev_episodes: int = 512,
    eval_every: int = 10,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
    callback: Callable[..., Any] | None = None,
    start_state: dict[str, Any] | None = None,
) -> ConstrainedResult:
    """Two-stage constrained actor-critic. ``steps`` counts on-policy iterations of both stages;
    ``stage1_fraction`` of them go to stage one, split equally over the signals. Stage two moves
    ``damping`` of the way (in log space) from the actor to the closed-form mixture each step;
    in its last ``reeval_fraction`` the signal critics are re-estimated for the current actor.
    The multipliers follow the estimate ``dual_source`` names ('batch', 'sample' or 'dev'),
    aiming at threshold x (1 + ``margin``); selection counts a threshold as met when
    ``estimate - dev_z x s.e. >= threshold x (1 - tolerance)``; ``average > 0`` judges an
    exponential moving average of the actor's weights instead. Training explores with
    probability ``explore``; ``lam_init`` defaults to ``stage1_tau / 2``. Each option's meaning
    and why: docs/recsys.md, "Constrained actor-critic"."""
    if not 0 < stage1_fraction < 1:
        raise ValueError(f"stage1_fraction: must lie in (0, 1), got {stage1_fraction}")
    if not 0 <= reeval_fraction <= 1:
        raise ValueError(f"reeval_fraction: must lie in [0, 1], got {reeval_fraction}")
    _check_dual_source(dual_source, dual_episodes)
    names, _ = _signals(sim)
    k_n = len(names)
    aux = {f"aux{k}": _fresh_copy(policy, seed * 101 + k) for k in range(k_n)}
    critics = {f"q{j}": _fresh_copy(policy, seed * 101 + 50 + j) for j in range(1 + k_n)}
    run = _Run(sim, policy, seed=seed, device=device, batch_size=batch_size, horizon=horizon,
               dev_episodes=dev_episodes, eval_every=eval_every, lr=lr, critic_lr=critic_lr,
               start_state=start_state, tolerance=tolerance, dev_z=dev_z, dev_values=dev_values,
               dual_episodes=dual_episodes, average=average, extra_nets={**aux, **critics})
    per_signal = run.state["extra"].setdefault(  # fixed at the start: a resumed run keeps it
        "per_signal", max(1, int(steps * stage1_fraction) // k_n))
    stage1_end = per_signal * k_n
    reeval_start = steps - int(round(reeval_fraction * max(steps - stage1_end, 0)))
    scale = run.scale()
    lam0 = 0.5 * stage1_tau if lam_init is None else lam_init
    lam = run.state["extra"].setdefault("lam", [lam0] * k_n)
    while run.state["step"] < steps:
        step = run.state["step"]
        gen = _gen(seed, step)
        dev = None
        if step < stage1_end:  # stage one: signal k's own policy and critic
            k = step // per_signal
            actor, critic = aux[f"aux{k}"], critics[f"q{k + 1}"]
            batch = collect(sim, actor, run.trace(step), names, scale, explore)
            fit_critic_td(critic, run.opts[f"q{k + 1}"], batch, _unit(k + 1, k_n), actor,
                          critic_iters, minibatch, gen, gamma)
            target = torch.softmax(_logp(actor, batch.obs) + _q(critic, batch.obs) / stage1_tau, -1)
            fit_actor(actor, run.opts[f"aux{k}"], batch.obs, target, actor_iters, minibatch, gen)
            extra = {"signal": float(k)}
        else:  # stage two: main critic, geometric mixture of stage one tilted by it
            batch = collect(sim, policy, run.trace(step), names, scale, explore)
            refit = range(1 + k_n) if step >= reeval_start else range(1)
            for j in refit:  # the main critic, and the signals' in the re-estimation phase
                fit_critic_td(critics[f"q{j}"], run.opts[f"q{j}"], batch, _unit(j, k_n), policy,
                              critic_iters, minibatch, gen, gamma)
            total = float(sum(lam))
            logits = _q(critics["q0"], batch.obs) / total
            for j in range(k_n):  # log pi_j of the Boltzmann policy of critic j
                log_pi = torch.log_softmax(_q(critics[f"q{j + 1}"], batch.obs) / stage1_tau, -1)
                logits = logits + (lam[j] / total) * log_pi
            logits = damping * logits + (1 - damping) * _logp(policy, batch.obs)
            fit_actor(policy, run.opts["policy"], batch.obs, torch.softmax(logits, -1),
                      actor_iters, minibatch, gen)
            run.average_step()
            got, dev = _dual_estimate(run, step + 1, dual_source, batch)
            want = run.thr * (1 + margin)
            violation = ((want - got) / want.clamp_min(1e-9)).clamp(-1.0, 1.0)
            lam[:] = (torch.tensor(lam) * torch.exp(lam_lr * violation)).clamp(1e-4, 1e3).tolist()
            extra = {f"lam_{n}": v for n, v in zip(names, lam)}
        run.state["step"] = step + 1
        done = run.state["step"]
        if done % run.eval_every == 0 or done in (stage1_end, steps):
            stage = 1 if step < stage1_end else 2
            shown = aux[f"aux{step // per_signal}"] if stage == 1 else run.kept
            run.record(done, stage, shown, stage == 2, extra, callback, dev)
    return run.finish()


def _check_dual_source(dual_source: str, dual_episodes: int) -> None:
    if dual_source not in ("batch", "dev", "sample"):
        raise ValueError(f"dual_source: {dual_source!r}; allowed 'batch', 'sample', 'dev'")
    if dual_source == "sample" and dual_episodes < 2:
        raise ValueError(f"dual_episodes: must be >= 2 with dual_source='sample', "
                         f"got {dual_episodes}")


def _dual_estimate(run: _Run, step: int, dual_source: str,
                   batch: Batch) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
    """The signal totals ``[K]`` the multipliers follow, and the dev estimate when it was
    computed (``dual_source='dev'``: then also offered for selection)."""
    if dual_source == "sample":
        return run.dual_values(run.policy, step)[1:], None
    if dual_source == "dev":
        vals, se = run.dev_values(run.kept)
        run.consider(step, vals, se)
        return vals[1:], (vals, se)
    return batch.totals.mean(0)[1:], None


@requires(Constrained)
def train_rcpo(
    sim: Simulator,
    policy: nn.Module,
    *,
    steps: int = 200,
    batch_size: int = 256,
    horizon: int | None = None,
    lr: float = 3e-3,
    critic_lr: float = 1e-2,
    tau: float = 0.1,
    explore: float = 0.1,
    mu_lr: float = 0.05,
    mu_kp: float = 0.0,
    margin: float = 0.02,
    dual_source: str = "batch",
    dual_episodes: int = 1024,
    tolerance: float = 0.0,
    dev_z: float = 0.0,
    dev_values: str = "expected",
    average: float = 0.0,
    critic_iters: int = 30,
    actor_iters: int = 10,
    minibatch: int = 512,
    gamma: float = 1.0,
    dev_episodes: int = 512,
    eval_every: int = 10,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
    callback: Callable[..., Any] | None = None,
    start_state: dict[str, Any] | None = None,
) -> ConstrainedResult:
    """Lagrangian actor-critic (RCPO): one critic of the penalised return
    ``main + sum_k mu_k signal_k`` (normalised units), the actor moved towards
    ``pi * exp(Q / tau)`` (exploring as in `train_tscac`), and ``mu_k >= 0`` by projected
    dual ascent on the violation of ``threshold_k (1 + margin)`` by the estimate that
    ``dual_source`` names; dev selection and ``average`` as in `train_tscac`. ``mu_kp > 0``
    adds a proportional term, ``mu = max(0, I + mu_kp x violation)`` with ``I`` the
    integral (PID Lagrangian, Stooke et al. 2020): it damps the multipliers' overshoot
    (pure integration lags the actor and cycles)."""
    _check_dual_source(dual_source, dual_episodes)
    names, _ = _signals(sim)
    k_n = len(names)
    critic = _fresh_copy(policy, seed * 101 + 50)
    run = _Run(sim, policy, seed=seed, device=device, batch_size=batch_size, horizon=horizon,
               dev_episodes=dev_episodes, eval_every=eval_every, lr=lr, critic_lr=critic_lr,
               start_state=start_state, tolerance=tolerance, dev_z=dev_z, dev_values=dev_values,
               dual_episodes=dual_episodes, average=average, extra_nets={"q": critic})
    scale = run.scale()
    mu = run.state["extra"].setdefault("lam", [0.0] * k_n)
    integral = run.state["extra"].setdefault("mu_integral", [0.0] * k_n)
    while run.state["step"] < steps:
        step = run.state["step"]
        gen = _gen(seed, step)
        batch = collect(sim, policy, run.trace(step), names, scale, explore)
        weights = torch.tensor([1.0, *mu]) / (1.0 + sum(mu))  # comparable scale as mu grows
        fit_critic_td(critic, run.opts["q"], batch, weights, policy, critic_iters, minibatch,
                      gen, gamma)
        target = torch.softmax(_logp(policy, batch.obs) + _q(critic, batch.obs) / tau, -1)
        fit_actor(policy, run.opts["policy"], batch.obs, target, actor_iters, minibatch, gen)
        run.average_step()
        got, dev = _dual_estimate(run, step + 1, dual_source, batch)
        want = run.thr * (1 + margin)
        violation = (want - got) / want.clamp_min(1e-9)
        integral[:] = (torch.tensor(integral) + mu_lr * violation).clamp_min(0.0).tolist()
        mu[:] = (torch.tensor(integral) + mu_kp * violation).clamp_min(0.0).tolist()
        run.state["step"] = step + 1
        done = run.state["step"]
        if done % run.eval_every == 0 or done == steps:
            run.record(done, 2, run.kept, True, {f"mu_{n}": v for n, v in zip(names, mu)},
                       callback, dev)
    return run.finish()
