"""Constrained actor-critic for CMDPs: two-stage TSCAC (Cai et al. 2023) and Lagrangian RCPO.

Problem: maximise the expected episode total of the main reward subject to
``E[sum_t c_k] >= threshold_k`` for each auxiliary signal k.

TSCAC (two-stage constrained actor-critic):
- Stage one learns, for each auxiliary signal k, a policy ``pi_k`` and a per-action critic
  ``Q_k`` maximising that signal alone (KL-regularised policy iteration: ``Q_k`` evaluates
  ``pi_k`` by expected SARSA, then ``pi_k`` moves towards ``pi_k * exp(Q_k / tau)``); the
  stage-one policy used in stage two is the Boltzmann policy ``softmax(Q_k / tau)``.
- Stage two maximises the main return while staying within a KL radius of every ``pi_k``.
  Its Lagrangian has the closed-form maximiser (the paper's Eq. for the dual solution)

      pi*(a|s)  ∝  prod_k pi_k(a|s) ** (lam_k / L)  *  exp(Q_main(s, a) / L),   L = sum_k lam_k,

  a geometric mixture of the stage-one policies tilted by the main critic; the actor is
  fitted to it by minimising KL(pi* || pi). The radii are not hand-set: each ``lam_k`` (the
  multiplier of radius k) grows multiplicatively while signal k misses its threshold on the
  training episodes and shrinks while it is met, which finds the widest radii that keep the
  constraints.
- RCPO (reward-constrained policy optimisation, Tessler et al. 2019): one critic of the
  penalised return ``main + sum_k mu_k c_k``; the actor moves towards ``pi * exp(Q / tau)``
  and the multipliers ``mu_k >= 0`` follow projected dual ascent on the violations.

Critics are per-action Q networks evaluated by expected SARSA (TD(0) with the target
policy's expectation over the next state's actions): the step's reward is exact (its
conditional expectation where the simulator reports it) and the continuation is shared by all
actions of a state, so actions are compared without Monte-Carlo noise. Training episodes
explore (probability ``explore`` of a uniform choice); the critic still evaluates the actor.

Signals are divided by their threshold (main: by its first-batch mean), so critics and
temperatures are unit-free. Best-on-dev selection: among dev evaluations whose every signal
meets its threshold (within ``tolerance``), the highest main return (else the smallest total
relative shortfall).

What a simulator must provide (the fishery domain can reuse this with a survival signal):
- the engine contract (`oprl.core.Simulator`) with ``params.horizon`` (training episodes);
- ``constraint_signals``: names of the auxiliary signals, each reported by ``step`` in
  ``info[name]`` as a per-step ``[B]`` tensor; ``constraint_thresholds``: the minimum
  expected episode total of each (same order); the main reward is ``step``'s reward;
- a discrete action set: the action is a ``[B, A]`` weight vector, the simulator draws the
  executed choice from it and reports it as ``info['action_index']`` ``[B]``;
- optionally ``info['alive']`` ``[B]`` (1 while the episode runs): finished episodes are
  masked out and the rollout stops once all have finished; ``info['expected_reward']`` and
  ``info['expected_<name>']`` (the step's conditional expectations, used instead of the
  realised values); ``info['expected_continue']`` (the probability that the episode goes on
  after the step, its next state drawn independently of the ending; the critics' targets
  then weigh the next state's value by it instead of the realised 0/1 survival, so the
  observation must not depend on whether the episode has ended);
  ``exact_totals(policy, horizon) -> [1 + K]`` (exact expected episode totals, used for
  noise-free dev evaluation, model selection and, with ``dual_source='dev'``, the
  multipliers).
What a policy must provide: ``scores(obs) -> [B, A]`` logits with ``forward = softmax``;
critics are fresh copies of the same network (per-action values through ``scores``).
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
from oprl.core import Simulator, Trace, resolve_device

LOG_FLOOR = math.log(1e-12)


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


def _signals(sim: Simulator) -> tuple[tuple[str, ...], Tensor]:
    names = getattr(sim, "constraint_signals", None)
    thr = getattr(sim, "constraint_thresholds", None)
    if not names or thr is None or len(names) != len(thr):
        raise ValueError("sim: constrained actor-critic needs constraint_signals and "
                         "constraint_thresholds of equal length (see the module docstring)")
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


def evaluate_constraints(sim: Simulator, policy: nn.Module, trace: Trace,
                         names: tuple[str, ...]) -> Tensor:
    """Mean episode totals ``[1 + K]`` (main, then each signal) of ``policy`` on ``trace``,
    or exactly when the simulator offers ``exact_totals(policy, horizon)``."""
    was = policy.training
    policy.eval()
    exact = getattr(sim, "exact_totals", None)
    if exact is not None:
        with torch.no_grad():
            totals = exact(policy, trace.horizon).to(torch.float32)
    else:
        totals = collect(sim, policy, trace, names, torch.ones(1 + len(names))).totals.mean(0)
    policy.train(was)
    return totals


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
                 tolerance: float = 0.0):
        self.sim, self.policy, self.seed = sim, policy, seed
        if not 0 <= tolerance < 1:
            raise ValueError(f"tolerance: must lie in [0, 1), got {tolerance}")
        self.tolerance = float(tolerance)
        self.dev = resolve_device(device)
        self.names, self.thr = _signals(sim)
        params = getattr(sim, "params", None)
        self.horizon = int(horizon if horizon is not None else params.horizon)
        self.batch_size, self.eval_every = int(batch_size), int(eval_every)
        if self.batch_size < 1 or self.eval_every < 1 or self.horizon < 1:
            raise ValueError("batch_size, eval_every and horizon must be >= 1")
        self.nets = {"policy": policy, **extra_nets}
        for net in self.nets.values():
            net.to(self.dev)
        self.opts = {k: torch.optim.Adam(n.parameters(), lr=critic_lr if k.startswith("q") else lr)
                     for k, n in self.nets.items()}
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

    def dev_values(self, actor: nn.Module) -> Tensor:
        return evaluate_constraints(self.sim, actor, self.dev_trace, self.names)

    def consider(self, step: int, vals: Tensor) -> None:
        """Keep the policy's weights if ``vals`` (its dev totals) beat the best so far: feasible
        (every signal >= threshold x (1 - tolerance)) first, then the highest main return."""
        short = _shortfall(vals[1:], self.thr * (1 - self.tolerance))
        key = (short > 0, short, -float(vals[0]))
        if self.state["best_key"] is None or key < tuple(self.state["best_key"]):
            self.state.update(best_key=list(key), best_step=step, best_state={
                k: v.detach().clone() for k, v in self.policy.state_dict().items()})

    def record(self, step: int, stage: int, actor: nn.Module, selectable: bool,
               extra: dict[str, float], callback, vals: Tensor | None = None) -> None:
        vals = self.dev_values(actor) if vals is None else vals
        feasible = bool(_shortfall(vals[1:], self.thr * (1 - self.tolerance)) == 0)
        row = {"step": step, "stage": stage, "dev_reward": float(vals[0]),
               "dev_feasible": float(feasible), "wall_s": time.perf_counter() - self.start_time,
               **{f"dev_{n}": float(v) for n, v in zip(self.names, vals[1:])}, **extra}
        self.state["history"].append(row)
        if selectable:
            self.consider(step, vals)
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


def _unit(j: int, k_n: int) -> Tensor:
    out = torch.zeros(1 + k_n)
    out[j] = 1.0
    return out


def _gen(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(step_seed(seed + 17, step))


def train_tscac(
    sim: Simulator,
    policy: nn.Module,
    *,
    steps: int = 200,
    stage1_fraction: float = 0.3,
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
    tolerance: float = 0.0,
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
    """Two-stage constrained actor-critic. ``steps`` counts on-policy iterations of both
    stages; ``stage1_fraction`` of them go to stage one, split equally over the signals.
    Stage-one actors improve by ``pi_k <- pi_k exp(Q_k / stage1_tau)`` (KL-regularised
    policy iteration) and stage two mixes their Boltzmann policies ``softmax(Q_k /
    stage1_tau)`` (exact log-probabilities at any sharpness); stage two moves ``damping`` of
    the way (in log space) from the current actor to the closed-form mixture each step.
    ``lam_init`` defaults to ``stage1_tau / 2`` (multipliers ``lam_k / stage1_tau`` of 0.5). Training episodes explore: with probability
    ``explore`` the item is uniform. ``margin`` asks each signal to exceed its threshold by
    that fraction on training batches, so the kept policy meets it on fresh episodes too.
    ``dual_source='dev'`` moves the multipliers on the actor's dev totals instead (exact where
    the simulator offers ``exact_totals``: no sampling noise, so ``margin`` can be 0) and
    considers every stage-two step for selection; ``tolerance`` is the relative shortfall
    that selection still counts as meeting a threshold."""
    if not 0 < stage1_fraction < 1:
        raise ValueError(f"stage1_fraction: must lie in (0, 1), got {stage1_fraction}")
    _check_dual_source(dual_source)
    names, _ = _signals(sim)
    k_n = len(names)
    aux = {f"aux{k}": _fresh_copy(policy, seed * 101 + k) for k in range(k_n)}
    critics = {f"q{j}": _fresh_copy(policy, seed * 101 + 50 + j) for j in range(1 + k_n)}
    run = _Run(sim, policy, seed=seed, device=device, batch_size=batch_size, horizon=horizon,
               dev_episodes=dev_episodes, eval_every=eval_every, lr=lr, critic_lr=critic_lr,
               start_state=start_state, tolerance=tolerance,
               extra_nets={**aux, **critics})
    per_signal = run.state["extra"].setdefault(  # fixed at the start: a resumed run keeps it
        "per_signal", max(1, int(steps * stage1_fraction) // k_n))
    stage1_end = per_signal * k_n
    scale = run.scale()
    lam0 = 0.5 * stage1_tau if lam_init is None else lam_init
    lam = run.state["extra"].setdefault("lam", [lam0] * k_n)
    while run.state["step"] < steps:
        step = run.state["step"]
        gen = _gen(seed, step)
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
            fit_critic_td(critics["q0"], run.opts["q0"], batch, _unit(0, k_n), policy,
                          critic_iters, minibatch, gen, gamma)
            total = float(sum(lam))
            logits = _q(critics["q0"], batch.obs) / total
            for j in range(k_n):  # log pi_j of the Boltzmann stage-one policy of critic j
                log_pi = torch.log_softmax(_q(critics[f"q{j + 1}"], batch.obs) / stage1_tau, -1)
                logits = logits + (lam[j] / total) * log_pi
            logits = damping * logits + (1 - damping) * _logp(policy, batch.obs)
            fit_actor(policy, run.opts["policy"], batch.obs, torch.softmax(logits, -1),
                      actor_iters, minibatch, gen)
            dev_vals = _dual_values(run, step + 1, dual_source)
            got = batch.totals.mean(0)[1:] if dev_vals is None else dev_vals[1:]
            want = run.thr * (1 + margin)
            violation = ((want - got) / want.clamp_min(1e-9)).clamp(-1.0, 1.0)
            lam[:] = (torch.tensor(lam) * torch.exp(lam_lr * violation)).clamp(1e-4, 1e3).tolist()
            extra = {f"lam_{n}": v for n, v in zip(names, lam)}
        run.state["step"] = step + 1
        done = run.state["step"]
        if done % run.eval_every == 0 or done in (stage1_end, steps):
            stage = 1 if step < stage1_end else 2
            shown = aux[f"aux{step // per_signal}"] if stage == 1 else policy
            run.record(done, stage, shown, stage == 2, extra, callback,
                       dev_vals if stage == 2 else None)
    return run.finish()


def _check_dual_source(dual_source: str) -> None:
    if dual_source not in ("batch", "dev"):
        raise ValueError(f"dual_source: {dual_source!r}; allowed 'batch', 'dev'")


def _dual_values(run: _Run, step: int, dual_source: str) -> Tensor | None:
    """With ``dual_source='dev'``: the actor's dev totals (also offered for selection)."""
    if dual_source != "dev":
        return None
    vals = run.dev_values(run.policy)
    run.consider(step, vals)
    return vals


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
    margin: float = 0.02,
    dual_source: str = "batch",
    tolerance: float = 0.0,
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
    ``pi * exp(Q / tau)`` (exploring as in `train_tscac`), and ``mu_k >= 0`` by projected dual ascent on each batch's
    violation of ``threshold_k (1 + margin)`` (or the dev totals' with ``dual_source='dev'``,
    as in `train_tscac`)."""
    _check_dual_source(dual_source)
    names, _ = _signals(sim)
    k_n = len(names)
    critic = _fresh_copy(policy, seed * 101 + 50)
    run = _Run(sim, policy, seed=seed, device=device, batch_size=batch_size, horizon=horizon,
               dev_episodes=dev_episodes, eval_every=eval_every, lr=lr, critic_lr=critic_lr,
               start_state=start_state, tolerance=tolerance,
               extra_nets={"q": critic})
    scale = run.scale()
    mu = run.state["extra"].setdefault("lam", [0.0] * k_n)
    while run.state["step"] < steps:
        step = run.state["step"]
        gen = _gen(seed, step)
        batch = collect(sim, policy, run.trace(step), names, scale, explore)
        weights = torch.tensor([1.0, *mu]) / (1.0 + sum(mu))  # comparable scale as mu grows
        fit_critic_td(critic, run.opts["q"], batch, weights, policy, critic_iters, minibatch,
                      gen, gamma)
        target = torch.softmax(_logp(policy, batch.obs) + _q(critic, batch.obs) / tau, -1)
        fit_actor(policy, run.opts["policy"], batch.obs, target, actor_iters, minibatch, gen)
        dev_vals = _dual_values(run, step + 1, dual_source)
        got = batch.totals.mean(0)[1:] if dev_vals is None else dev_vals[1:]
        want = run.thr * (1 + margin)
        violation = (want - got) / want.clamp_min(1e-9)
        mu[:] = (torch.tensor(mu) + mu_lr * violation).clamp_min(0.0).tolist()
        run.state["step"] = step + 1
        done = run.state["step"]
        if done % run.eval_every == 0 or done == steps:
            run.record(done, 2, policy, True, {f"mu_{n}": v for n, v in zip(names, mu)}, callback,
                       dev_vals)
    return run.finish()
