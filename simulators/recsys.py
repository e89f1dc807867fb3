"""Short-video recommendation as a constrained MDP (docs/recsys.md).

Each step shows one video to each user, drawn from the action's weights over a slate of
candidates with the trace's uniform ``u_pick`` (so stochastic policies run as they are); then
watch time, the auxiliary signals (follow, like, comment, share) and the session's end are
drawn from the trace's uniforms, and engagement moves. Reward: watch time in seconds; the
signals are constrained per episode. Not differentiable in the action: trainers use
score-function or Q-based updates (`oprl.algorithms.constrained_ac`).

`RecsysSimulator` is calibrated to KuaiRand (Gao et al. 2022; the per-impression signal rates
are assumed, see docs/recsys.md, "Calibration"). `TabularRecsysSimulator` is the finite
variant whose CMDP the occupancy-measure LP in `solvers.recsys` solves exactly; its rates are
stylised (about 5x KuaiRand's) so that short sessions carry measurable constraints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from oprl.core import (
    Constrained,
    Metric,
    Observation,
    Rollout,
    Simulator,
    State,
    Trace,
    check_memory,
    fixed,
    trace_size,
)

SIGNALS = ("follow", "like", "comment", "share")

# per-impression rates under random exposure; sources: docs/recsys.md, "Calibration"
KUAIRAND = {
    # KuaiRand-Pure: median play time per impression ~17 s (public analysis); the mean is not
    # published, so the simulator's mean play time at random exposure is set to this median
    "median_play_s": 17.0,
    "median_duration_s": 81.0,  # KuaiRand-Pure: median video duration 1.35 min
    "follow": 0.003,  # assumed (rare, per the KuaiRand-Pure analysis)
    "like": 0.015,  # assumed (most frequent interaction)
    "comment": 0.003,  # assumed
    "share": 0.002,  # assumed (forwards are rarest)
}

USER_FEATURES_EXTRA = 3  # engagement, alive, time fraction
SIZE_BATCH = 128  # episodes assumed by the size guards (a training batch)
ITEM_FEATURES = 4 + len(SIGNALS)  # match, quality, log-duration, predicted watch, p_k


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: must be a finite number > 0, got {value!r}")


def _check_unit(name: str, value: float, closed: bool = True) -> None:
    ok = 0.0 <= value <= 1.0 if closed else 0.0 < value < 1.0
    if not (math.isfinite(value) and ok):
        raise ValueError(f"{name}: must lie in [0, 1], got {value!r}")


def _thresholds(value, name: str = "thresholds") -> tuple[float, ...]:
    vals = tuple(float(v) for v in value)
    if len(vals) != len(SIGNALS):
        raise ValueError(f"{name}: one per signal {SIGNALS}, got {len(vals)}")
    if any(not math.isfinite(v) or v < 0 for v in vals):
        raise ValueError(f"{name}: must be finite and >= 0, got {vals}")
    return vals


def _window(horizon: int, warmup: int, eval_horizon: int, eval_warmup: int) -> None:
    if horizon < 1:
        raise ValueError(f"horizon: must be >= 1, got {horizon}")
    if not 0 <= warmup < horizon:
        raise ValueError(f"warmup: must lie in [0, horizon={horizon})")
    if not 0 <= eval_warmup < eval_horizon:
        raise ValueError(f"eval_warmup: must lie in [0, eval_horizon={eval_horizon})")


def _sample_pick(weights: Tensor, u: Tensor) -> Tensor:
    """Index drawn from non-negative ``weights [B, K]`` by inverse CDF of ``u [B]`` (uniform
    when a row sums to zero)."""
    w = weights.clamp_min(0.0)
    total = w.sum(-1, keepdim=True)
    probs = torch.where(total > 0, w / total.clamp_min(1e-30), torch.full_like(w, 1 / w.shape[-1]))
    cdf = probs.cumsum(-1)
    idx = (cdf < u.unsqueeze(-1) * cdf[:, -1:]).sum(-1)
    return idx.clamp_max(w.shape[-1] - 1)


def _check_action(action: Tensor, batch: int, k: int) -> None:
    if action.shape != (batch, k):
        raise ValueError(f"action: expected weights [batch={batch}, candidates={k}], "
                         f"got {tuple(action.shape)}")
    if not action.is_cuda and not torch.isfinite(action).all():
        raise ValueError("action: weights must be finite (no NaN or inf)")


class _Episodes(Simulator, Constrained):
    """What both simulators share: the metric (watch time per episode), the auxiliary
    signals as secondary metrics with their thresholds, and the constraint interface that
    `oprl.algorithms.constrained_ac` needs (see its module docstring)."""

    metric = Metric("watch_time/episode")
    constraint_signals = SIGNALS
    independent_rows = True  # state and trace tensors are all [B, ...]; sessions don't interact

    @property
    def constraint_thresholds(self) -> tuple[float, ...]:
        return self.params.thresholds

    @property
    def action_shape(self) -> tuple[int, ...]:
        return (self.n_candidates,)  # one weight per candidate item

    def episode_metric(self, rewards: Tensor, warmup: int) -> Tensor:
        """Total watch time (seconds) of each episode after ``warmup`` steps ``[B]``."""
        return rewards[:, warmup:].sum(dim=1)

    def signal_name(self, k: int) -> str:
        return f"{SIGNALS[k]}/episode (>= {self.params.thresholds[k]:g})"

    def episode_metrics(self, rollout: Rollout, warmup: int) -> dict[str, Tensor]:
        """Each auxiliary signal's count per episode (its threshold in the name) and the
        session length."""
        out = {self.signal_name(k): rollout.metrics[s][:, warmup:].sum(1)
               for k, s in enumerate(SIGNALS)}
        out["impressions/episode"] = rollout.metrics["alive"][:, warmup:].sum(1)
        return out

    def graph(self):
        """User-candidate star graph (node 0 the user, 1..K the candidates) for GNN policies."""
        from torch_geometric.data import Data

        k = self.n_candidates
        src = torch.zeros(k, dtype=torch.long)
        dst = torch.arange(1, k + 1)
        return Data(edge_index=torch.stack([src, dst]), num_nodes=k + 1)


# ---------------------------------------------------------------------------------------------
# short-video simulator with continuous latent interests


@dataclass(frozen=True)
class RecsysParams:
    """Everything that defines a short-video scenario; validated on construction."""

    n_items: int = 300
    n_topics: int = 8
    n_candidates: int = 16
    interest_concentration: float = 0.5  # Dirichlet of user interests (lower: narrower tastes)
    item_concentration: float = 0.3  # Dirichlet of item topic vectors
    engagement_init: float = 0.5  # mean initial engagement in [0, 1]
    engagement_rate: float = 0.15  # how fast engagement follows satisfaction
    exit_base: float = 0.04  # per-step exit probability at engagement 0.5 and average match
    duration_sigma: float = 0.6  # log-normal spread of durations around 81 s
    interaction_duration_elasticity: float = 0.8  # short videos draw more interactions
    thresholds: tuple[float, ...] = (0.15, 0.9, 0.13, 0.08)  # per episode, order of SIGNALS
    catalog_seed: int = 0
    horizon: int = 60
    warmup: int = 0
    eval_horizon: int = 60
    eval_warmup: int = 0
    name: str = fixed(default="recsys/short_video")
    calibration: dict = fixed(default_factory=lambda: dict(KUAIRAND))

    def __post_init__(self) -> None:
        if self.n_items < 1:
            raise ValueError(f"n_items: the catalog is empty ({self.n_items} items); need >= 1")
        if self.n_topics < 1:
            raise ValueError(f"n_topics: must be >= 1, got {self.n_topics}")
        if not 1 <= self.n_candidates <= self.n_items:
            raise ValueError(f"n_candidates: must lie in [1, n_items={self.n_items}], "
                             f"got {self.n_candidates}")
        for name in ("interest_concentration", "item_concentration", "duration_sigma"):
            _check_positive(name, float(getattr(self, name)))
        for name in ("engagement_init", "engagement_rate", "exit_base",
                     "interaction_duration_elasticity"):
            _check_unit(name, float(getattr(self, name)))
        object.__setattr__(self, "thresholds", _thresholds(self.thresholds))
        _window(self.horizon, self.warmup, self.eval_horizon, self.eval_warmup)
        # the catalogue, one training batch's traces and the per-step candidate features kept
        # for the policy gradient
        catalog = 8 * self.n_items * (self.n_topics + ITEM_FEATURES + 8)
        check_memory(catalog + SIZE_BATCH * self.horizon * self.period_bytes(),
                     f"n_items={self.n_items}, n_topics={self.n_topics}, "
                     f"n_candidates={self.n_candidates}, horizon={self.horizon}")
        for key in ("median_play_s", "median_duration_s", *SIGNALS):
            if key not in self.calibration:
                raise ValueError(f"calibration: missing {key!r}")
            _check_positive(f"calibration.{key}", float(self.calibration[key]))

    def period_bytes(self) -> float:
        """Estimated bytes per episode-step: the candidate draw over the catalogue (float
        keys and their argsort) and the candidates' features."""
        return 12 * self.n_items + 4 * self.n_candidates * (self.n_topics + ITEM_FEATURES) + 64


class RecsysSimulator(_Episodes):
    """Batched users with latent topic interests and an engagement state; a fixed catalog of
    items with topic vectors, quality, duration and per-signal interaction propensities."""

    Params = RecsysParams

    def __init__(self, params: RecsysParams) -> None:
        self.params = params
        self.name = params.name
        self.n_candidates = params.n_candidates
        gen = torch.Generator().manual_seed(int(params.catalog_seed))
        p = params
        topics = torch.distributions.Dirichlet(torch.full((p.n_topics,), p.item_concentration))
        self.item_topic = _dirichlet(topics, p.n_items, gen)  # [N, Z]
        self.item_quality = _beta(2.0, 2.0, p.n_items, gen)  # [N]
        z = torch.randn(p.n_items, generator=gen)
        dur = p.calibration["median_duration_s"] * torch.exp(p.duration_sigma * z)
        self.item_duration = dur.clamp(5.0, 600.0)
        rel = (self.item_duration / p.calibration["median_duration_s"]).log()
        noise = 0.7 * torch.randn(p.n_items, len(SIGNALS), generator=gen)
        prop = torch.exp(noise - p.interaction_duration_elasticity * rel.unsqueeze(-1))
        self.item_propensity = prop / prop.mean(0, keepdim=True)  # [N, K], mean 1
        self._calibrate(gen)

    # -- response model ---------------------------------------------------------------------
    def _raw(self, match: Tensor, quality: Tensor, engagement: Tensor):
        """Un-normalised watch ratio and interaction multiplier for given match, quality and
        engagement (any broadcastable shapes)."""
        ratio = torch.sigmoid(-2.0 + 3.0 * match + 1.0 * quality + 1.0 * engagement)
        mult = (0.3 + match) * (0.5 + engagement)
        return ratio, mult

    def _calibrate(self, gen: torch.Generator) -> None:
        """Scale factors so that random exposure at the start of a session reproduces the
        KuaiRand rates (a large fixed sample of users; deterministic)."""
        p = self.params
        users = self._interest(4096, gen)  # [U, Z]
        match = self.match(users.unsqueeze(1), self.item_topic.unsqueeze(0))  # [U, N]
        e = torch.full_like(match, p.engagement_init)
        ratio, mult = self._raw(match, self.item_quality, e)
        self.watch_scale = p.calibration["median_play_s"] / float(
            (ratio * self.item_duration).mean())
        rates = torch.tensor([p.calibration[s] for s in SIGNALS])
        raw = (mult.unsqueeze(-1) * self.item_propensity.unsqueeze(0)).mean((0, 1))  # [K]
        self.signal_scale = rates / raw

    def _interest(self, n: int, gen: torch.Generator) -> Tensor:
        dist = torch.distributions.Dirichlet(
            torch.full((self.params.n_topics,), self.params.interest_concentration))
        return _dirichlet(dist, n, gen)

    @staticmethod
    def match(interest: Tensor, topic: Tensor) -> Tensor:
        """Cosine similarity of user interests and item topics, in [0, 1]."""
        num = (interest * topic).sum(-1)
        return num / (interest.norm(dim=-1) * topic.norm(dim=-1)).clamp_min(1e-9)

    def responses(self, interest: Tensor, engagement: Tensor, items: Tensor):
        """Expected watch time (s) ``[B, C]``, signal probabilities ``[B, C, 4]``, exit
        probability ``[B, C]`` and satisfaction ``[B, C]`` of showing ``items [B, C]``."""
        dev = interest.device
        topic = self.item_topic.to(dev)[items]
        quality = self.item_quality.to(dev)[items]
        duration = self.item_duration.to(dev)[items]
        m = self.match(interest.unsqueeze(1), topic)
        e = engagement.unsqueeze(-1)
        ratio, mult = self._raw(m, quality, e)
        watch = self.watch_scale * ratio * duration
        probs = (self.signal_scale.to(dev) * mult.unsqueeze(-1)
                 * self.item_propensity.to(dev)[items]).clamp_max(0.95)
        satisfaction = m * quality
        exit_p = (self.params.exit_base * (1.5 - e) * (1.5 - m)).clamp(0.005, 0.9)
        return watch, probs, exit_p, satisfaction

    # -- contract ---------------------------------------------------------------------------
    def sample_trace(self, batch: int, horizon: int | None = None, *, seed: int,
                     device="cpu") -> Trace:
        batch, horizon = trace_size(batch, horizon, self.params.horizon,
                                    self.params.period_bytes())
        p = self.params
        gen = torch.Generator().manual_seed(int(seed))
        interest = self._interest(batch, gen)
        spread = 0.2 * torch.rand(batch, generator=gen) - 0.1
        cand = torch.rand(batch, horizon, p.n_items, generator=gen).argsort(-1)[..., :p.n_candidates]
        data = {
            "interest": interest.unsqueeze(1).expand(-1, horizon, -1).contiguous(),
            "engagement0": (p.engagement_init + spread).unsqueeze(1).expand(-1, horizon).contiguous(),
            "candidates": cand,
            "u_pick": torch.rand(batch, horizon, generator=gen),
            "u_watch": torch.rand(batch, horizon, generator=gen),
            "u_signal": torch.rand(batch, horizon, len(SIGNALS), generator=gen),
            "u_exit": torch.rand(batch, horizon, generator=gen),
        }
        return Trace({k: v.to(device) for k, v in data.items()}, seed=seed)

    def check_trace(self, trace: Trace) -> None:
        need = ("interest", "engagement0", "candidates", "u_pick", "u_watch", "u_signal", "u_exit")
        missing = [k for k in need if k not in trace.data]
        if missing:
            raise ValueError(f"trace.{missing[0]}: required; trace holds {sorted(trace.data)}")
        cand = trace["candidates"]
        if cand.shape[-1] != self.n_candidates or int(cand.max()) >= self.params.n_items:
            raise ValueError(f"trace.candidates: expected [batch, horizon, {self.n_candidates}] "
                             f"indices < n_items={self.params.n_items}")

    def reset(self, trace: Trace) -> State:
        self.check_trace(trace)
        return {
            "interest": trace["interest"][:, 0],
            "engagement": trace["engagement0"][:, 0].clone(),
            "alive": torch.ones(trace.batch, device=trace.device),
        }

    def observe(self, state: State, t: int, trace: Trace) -> Observation:
        """User features ``[B, Z+3]`` and candidate features ``[B, C, 8]``: match, quality,
        log duration, predicted watch time (minutes) and the four signal probabilities (a
        perfect multi-task predictor)."""
        items = trace["candidates"][:, t]
        watch, probs, _, _ = self.responses(state["interest"], state["engagement"], items)
        dev = items.device
        cand = torch.cat([
            self.match(state["interest"].unsqueeze(1), self.item_topic.to(dev)[items]).unsqueeze(-1),
            self.item_quality.to(dev)[items].unsqueeze(-1),
            (self.item_duration.to(dev)[items] / self.params.calibration["median_duration_s"])
            .log().unsqueeze(-1),
            watch.unsqueeze(-1) / 60.0,
            probs,
        ], dim=-1)
        frac = torch.full_like(state["alive"], t / max(trace.horizon, 1))
        user = torch.cat([state["interest"], state["engagement"].unsqueeze(-1),
                          state["alive"].unsqueeze(-1), frac.unsqueeze(-1)], dim=-1)
        return {"user": user, "items": cand, "pred_watch": watch, "pred_signals": probs}

    def step(self, state: State, action: Tensor, t: int, trace: Trace):
        b = state["alive"].shape[0]
        _check_action(action, b, self.n_candidates)
        items = trace["candidates"][:, t]
        pick = _sample_pick(action, trace["u_pick"][:, t])
        shown = items.gather(1, pick.unsqueeze(-1))  # [B, 1]
        watch, probs, exit_p, sat = (x[:, 0] for x in
                                     self.responses(state["interest"], state["engagement"], shown))
        alive = state["alive"]
        watched = watch * 2.0 * trace["u_watch"][:, t] * alive
        fired = (trace["u_signal"][:, t] < probs).float() * alive.unsqueeze(-1)
        leaves = (trace["u_exit"][:, t] < exit_p).float() * alive
        rate = self.params.engagement_rate
        engagement = ((1 - rate) * state["engagement"] + rate * (2.0 * sat)).clamp(0.0, 1.0)
        engagement = torch.where(alive > 0, engagement, state["engagement"])
        new_state = dict(state, engagement=engagement, alive=alive - leaves)
        info = {"watch_time": watched, "alive": alive, "action_index": pick,
                "expected_reward": watch * alive,
                **{s: fired[:, k] for k, s in enumerate(SIGNALS)},
                **{f"expected_{s}": probs[:, k] * alive for k, s in enumerate(SIGNALS)}}
        return new_state, watched, info


def _dirichlet(dist, n: int, gen: torch.Generator) -> Tensor:
    """Dirichlet draws from an explicit generator (via Gamma = -log of uniforms products is
    not exact, so use numpy's seeded Dirichlet)."""
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    return torch.from_numpy(rng.dirichlet(dist.concentration.numpy(), size=n)).float()


def _beta(a: float, b: float, n: int, gen: torch.Generator) -> Tensor:
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    return torch.from_numpy(rng.beta(a, b, size=n)).float()


def short_video(
    n_items: int = 300,
    n_topics: int = 8,
    n_candidates: int = 16,
    thresholds: tuple[float, ...] = (0.15, 0.9, 0.13, 0.08),
    catalog_seed: int = 0,
    **kw,
) -> RecsysSimulator:
    """KuaiRand-calibrated short-video feed: maximise watch time per session subject to
    minimum follows, likes, comments and shares per session."""
    return RecsysSimulator(RecsysParams(n_items=n_items, n_topics=n_topics,
                                        n_candidates=n_candidates, thresholds=tuple(thresholds),
                                        catalog_seed=catalog_seed, **kw))


# ---------------------------------------------------------------------------------------------
# tabular variant: finite states and actions, solved exactly by the occupancy LP

ITEM_KINDS = ("long drama", "creator vlog", "meme", "quality niche")


@dataclass(frozen=True)
class TabularParams:
    """A finite CMDP: user types x engagement levels, item kinds as actions."""

    user_mix: tuple[float, ...] = (0.4, 0.35, 0.25)  # probability of each user type
    # interest[u][a] in [0, 1] of user type u in item kind a
    interest: tuple[tuple[float, ...], ...] = (
        (0.9, 0.4, 0.6, 0.3),
        (0.6, 0.8, 0.4, 0.5),
        (0.5, 0.4, 0.9, 0.7),
    )
    duration_s: tuple[float, ...] = (90.0, 25.0, 12.0, 40.0)
    quality: tuple[float, ...] = (0.35, 0.6, 0.4, 0.9)
    # per-impression signal rate of each item kind at full match and engagement, [kind][signal]
    signal_rate: tuple[tuple[float, ...], ...] = (
        (0.005, 0.03, 0.005, 0.003),
        (0.06, 0.08, 0.04, 0.01),
        (0.01, 0.15, 0.02, 0.05),
        (0.02, 0.10, 0.03, 0.02),
    )
    levels: int = 3  # engagement levels 0 .. levels-1
    start_level: int = 1
    exit_min: float = 0.06
    exit_span: float = 0.12
    move_rate: float = 0.5
    thresholds: tuple[float, ...] = (0.3, 0.8, 0.2, 0.15)
    horizon: int = 120
    warmup: int = 0
    eval_horizon: int = 120
    eval_warmup: int = 0
    name: str = fixed(default="recsys/tabular")

    def __post_init__(self) -> None:
        mix = tuple(float(v) for v in self.user_mix)
        if not mix or any(v < 0 for v in mix) or abs(sum(mix) - 1) > 1e-6:
            raise ValueError(f"user_mix: non-negative probabilities summing to 1, got {mix}")
        a = len(self.duration_s)
        if a < 1:
            raise ValueError("duration_s: the catalog is empty (no item kinds); need >= 1")
        for name, rows in (("interest", self.interest),
                           ("signal_rate", self.signal_rate)):
            arr = np.asarray(rows, dtype=float)
            want = (len(mix), a) if name == "interest" else (a, len(SIGNALS))
            if arr.shape != want:
                raise ValueError(f"{name}: expected shape {want}, got {arr.shape}")
            if not np.isfinite(arr).all() or (arr < 0).any() or (arr > 1).any():
                raise ValueError(f"{name}: entries must lie in [0, 1]")
        if len(self.quality) != a or any(not 0 <= q <= 1 for q in self.quality):
            raise ValueError(f"quality: one value in [0, 1] per item kind ({a})")
        if any(not (math.isfinite(d) and d > 0) for d in self.duration_s):
            raise ValueError("duration_s: durations must be finite and > 0")
        if self.levels < 1 or not 0 <= self.start_level < self.levels:
            raise ValueError(f"start_level: must lie in [0, levels={self.levels})")
        _check_unit("exit_min", self.exit_min)
        if self.exit_min <= 0 or self.exit_min + self.exit_span > 1 or self.exit_span < 0:
            raise ValueError("exit_min, exit_span: need 0 < exit_min and exit_min + exit_span <= 1")
        _check_unit("move_rate", self.move_rate)
        object.__setattr__(self, "thresholds", _thresholds(self.thresholds))
        _window(self.horizon, self.warmup, self.eval_horizon, self.eval_warmup)
        # the exact evaluator and the occupancy LP are dense over (type, level) states
        states = len(mix) * self.levels
        check_memory(8.0 * states * states * a * (len(SIGNALS) + 2) * 4,
                     f"levels={self.levels}")


@dataclass(frozen=True)
class TabularModel:
    """The CMDP's tables (numpy, float64); states s = user_type * levels + level."""

    init: np.ndarray  # [S] initial distribution
    watch: np.ndarray  # [S, A] expected watch time (s)
    signals: np.ndarray  # [K, S, A] signal probabilities
    exit: np.ndarray  # [S, A] probability the session ends after this impression
    trans: np.ndarray  # [S, A, S] next-state distribution given the session continues


class TabularRecsysSimulator(_Episodes):
    """Finite-state twin of `RecsysSimulator`; the policy weighs the item kinds."""

    Params = TabularParams

    def __init__(self, params: TabularParams) -> None:
        self.params = params
        self.name = params.name
        self.n_kinds = len(params.duration_s)
        self.n_candidates = self.n_kinds
        self.n_types = len(params.user_mix)
        self.n_states = self.n_types * params.levels
        self.model = build_tables(params)
        m = self.model
        self._watch = torch.tensor(m.watch, dtype=torch.float32)
        self._signals = torch.tensor(m.signals, dtype=torch.float32).permute(1, 2, 0)  # [S, A, K]
        self._exit = torch.tensor(m.exit, dtype=torch.float32)
        lv = params.levels
        up = np.zeros((self.n_states, self.n_kinds))
        down = np.zeros_like(up)
        for s in range(self.n_states):
            level = s % lv
            if level < lv - 1:
                up[s] = m.trans[s, :, s + 1]
            if level > 0:
                down[s] = m.trans[s, :, s - 1]
        self._up = torch.tensor(up, dtype=torch.float32)
        self._down = torch.tensor(down, dtype=torch.float32)

    def exact_totals(self, policy, horizon: int | None = None) -> Tensor:
        """Exact expected episode totals ``[1 + K]`` (watch time, then each signal) of any
        policy (see `exact_policy_values`). The trainers only REPORT it beside
        their Monte-Carlo dev estimates (history ``exact_*``); selection never reads it."""
        vals = exact_policy_values(self, policy, horizon or self.params.horizon)
        return torch.tensor([vals["watch_time"], *(vals[s] for s in SIGNALS)])

    def sample_trace(self, batch: int, horizon: int | None = None, *, seed: int,
                     device="cpu") -> Trace:
        batch, horizon = trace_size(batch, horizon, self.params.horizon)
        gen = torch.Generator().manual_seed(int(seed))
        mix = torch.tensor(self.params.user_mix, dtype=torch.float64)
        utype = torch.multinomial(mix, batch, replacement=True, generator=gen)
        data = {
            "user_type": utype.unsqueeze(1).expand(-1, horizon).contiguous(),
            "u_pick": torch.rand(batch, horizon, generator=gen),
            "u_watch": torch.rand(batch, horizon, generator=gen),
            "u_signal": torch.rand(batch, horizon, len(SIGNALS), generator=gen),
            "u_exit": torch.rand(batch, horizon, generator=gen),
            "u_move": torch.rand(batch, horizon, generator=gen),
        }
        return Trace({k: v.to(device) for k, v in data.items()}, seed=seed)

    def check_trace(self, trace: Trace) -> None:
        need = ("user_type", "u_pick", "u_watch", "u_signal", "u_exit", "u_move")
        missing = [k for k in need if k not in trace.data]
        if missing:
            raise ValueError(f"trace.{missing[0]}: required; trace holds {sorted(trace.data)}")
        if int(trace["user_type"].max()) >= self.n_types or int(trace["user_type"].min()) < 0:
            raise ValueError(f"trace.user_type: must lie in [0, {self.n_types})")

    def reset(self, trace: Trace) -> State:
        self.check_trace(trace)
        utype = trace["user_type"][:, 0]
        return {"state": utype * self.params.levels + self.params.start_level,
                "alive": torch.ones(trace.batch, device=trace.device)}

    def observe(self, state: State, t: int, trace: Trace) -> Observation:
        """User features: one-hot state, time fraction ``[B, S+1]`` (no alive flag: a
        session that just ended still shows the state it would continue in, which is what
        the critics' expected-continuation targets look at); candidate
        features per item kind ``[B, A, 8]``: one-hot-free summaries (log duration,
        quality, predicted watch in minutes, four signal probabilities, and a kind id)."""
        s = state["state"]
        dev = s.device
        onehot = torch.nn.functional.one_hot(s, self.n_states).float()
        frac = torch.full_like(state["alive"], t / max(trace.horizon, 1))
        user = torch.cat([onehot, frac.unsqueeze(-1)], -1)
        watch = self._watch.to(dev)[s]  # [B, A]
        probs = self._signals.to(dev)[s]  # [B, A, K]
        dur = torch.tensor(self.params.duration_s, device=dev).log().expand(s.shape[0], -1)
        qual = torch.tensor(self.params.quality, device=dev).expand(s.shape[0], -1)
        kind = (torch.arange(self.n_kinds, device=dev).float() / self.n_kinds).expand(s.shape[0], -1)
        cand = torch.cat([kind.unsqueeze(-1), qual.unsqueeze(-1), dur.unsqueeze(-1),
                          (watch / 60.0).unsqueeze(-1), probs], -1)
        return {"user": user, "items": cand, "pred_watch": watch, "pred_signals": probs,
                "state_index": s}

    def step(self, state: State, action: Tensor, t: int, trace: Trace):
        s, alive = state["state"], state["alive"]
        _check_action(action, s.shape[0], self.n_kinds)
        dev = s.device
        a = _sample_pick(action, trace["u_pick"][:, t])
        watched = self._watch.to(dev)[s, a] * 2.0 * trace["u_watch"][:, t] * alive
        fired = (trace["u_signal"][:, t] < self._signals.to(dev)[s, a]).float() * alive.unsqueeze(-1)
        leaves = (trace["u_exit"][:, t] < self._exit.to(dev)[s, a]).float() * alive
        u = trace["u_move"][:, t]
        up = (u < self._up.to(dev)[s, a]).long()
        down = (u > 1.0 - self._down.to(dev)[s, a]).long()
        moved = s + (up - down) * (alive > 0).long()
        new_state = {"state": moved, "alive": alive - leaves}
        probs = self._signals.to(dev)[s, a]
        info = {"watch_time": watched, "alive": alive, "action_index": a,
                "expected_reward": self._watch.to(dev)[s, a] * alive,
                # the session goes on with this probability; the move is drawn independently
                "expected_continue": (1.0 - self._exit.to(dev)[s, a]) * alive,
                **{name: fired[:, k] for k, name in enumerate(SIGNALS)},
                **{f"expected_{name}": probs[:, k] * alive for k, name in enumerate(SIGNALS)}}
        return new_state, watched, info


def build_tables(p: TabularParams) -> TabularModel:
    """The CMDP's tables from the stylised response model (same shape as the short-video
    one): watch ratio sigmoid(-1.5 + 2.5 match + 0.5 quality + engagement); signals scale with
    (0.3 + match)(0.5 + engagement); satisfaction = match x quality moves engagement up (or
    down below 0.3) with probability ``move_rate`` x distance; exit falls with engagement."""
    lv, a = p.levels, len(p.duration_s)
    interest = np.asarray(p.interest, dtype=float)
    rates = np.asarray(p.signal_rate, dtype=float)  # [A, K]
    dur, qual = np.asarray(p.duration_s), np.asarray(p.quality)
    n_types = len(p.user_mix)
    s_count = n_types * lv
    init = np.zeros(s_count)
    watch = np.zeros((s_count, a))
    signals = np.zeros((len(SIGNALS), s_count, a))
    exit_p = np.zeros((s_count, a))
    trans = np.zeros((s_count, a, s_count))
    for u in range(n_types):
        init[u * lv + p.start_level] = p.user_mix[u]
        for level in range(lv):
            s = u * lv + level
            e = level / max(lv - 1, 1)
            m = interest[u]
            ratio = 1.0 / (1.0 + np.exp(-(-1.5 + 2.5 * m + 0.5 * qual + e)))
            watch[s] = ratio * dur
            signals[:, s] = np.minimum(rates.T * ((0.3 + m) * (0.5 + e)) / 1.3, 0.95)
            sat = m * qual
            exit_p[s] = p.exit_min + p.exit_span * (1 - e) * (1 - sat)
            up = p.move_rate * np.clip(sat - 0.3, 0, None) if level < lv - 1 else np.zeros(a)
            down = p.move_rate * np.clip(0.3 - sat, 0, None) * 2 if level > 0 else np.zeros(a)
            if level < lv - 1:
                trans[s, :, s + 1] = up
            if level > 0:
                trans[s, :, s - 1] = down
            trans[s, :, s] += 1.0 - up - down
    return TabularModel(init, watch, signals, exit_p, trans)


def tabular(thresholds: tuple[float, ...] = (0.3, 0.8, 0.2, 0.15), **kw) -> TabularRecsysSimulator:
    """Finite CMDP (3 user types x 3 engagement levels, 4 item kinds) solved exactly by the
    occupancy-measure LP; thresholds are minimum follows, likes, comments, shares/episode."""
    return TabularRecsysSimulator(TabularParams(thresholds=tuple(thresholds), **kw))


def continuing(model: TabularModel) -> np.ndarray:
    """``[S, A, S]`` probability of continuing into each next state."""
    return (1.0 - model.exit)[..., None] * model.trans


def exact_policy_values(sim: TabularRecsysSimulator, policy, horizon: int | None = None) -> dict:
    """Exact expected episode totals (watch time, each signal) of any policy on the tabular
    simulator within ``horizon`` impressions: the policy is queried in every state at every
    step (it may depend on time), and the state distribution is pushed forward exactly.
    No sampling noise: this is how learned policies are compared with the LP optimum."""
    horizon = int(sim.params.eval_horizon if horizon is None else horizon)
    model, s_n = sim.model, sim.n_states
    cont = continuing(model)
    states = torch.arange(s_n)
    trace = Trace({"user_type": (states // sim.params.levels).unsqueeze(1).expand(-1, horizon),
                   "u": torch.zeros(s_n, horizon)})
    d = model.init.copy()
    totals = np.zeros(1 + len(SIGNALS))
    with torch.no_grad():
        for t in range(horizon):
            state = {"state": states, "alive": torch.ones(s_n)}
            pi = policy(sim.observe(state, t, trace)).double().numpy()
            pi = pi / pi.sum(1, keepdims=True)
            totals[0] += d @ (pi * model.watch).sum(1)
            totals[1:] += (pi[None] * model.signals).sum(2) @ d
            d = d @ np.einsum("sa,sat->st", pi, cont)
    return {"watch_time": float(totals[0]), **{s: float(v) for s, v in zip(SIGNALS, totals[1:])}}
