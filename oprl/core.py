"""The simulator contract: exogenous traces, deterministic dynamics, and `rollout`.

Every simulator draws all the randomness of a batch of episodes up front into a `Trace`
(tensors shaped ``[batch, horizon, ...]``).  Given a trace the dynamics are deterministic, so
the same trace can be replayed by the batched torch simulator, a solver computing a hindsight
bound, and the simpy event-driven twin: every comparison between them is paired.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import Field, dataclass, field, fields, is_dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

Observation = Mapping[str, Tensor]
State = dict[str, Tensor]
Policy = Callable[[Observation], Tensor]


class LazyDict(Mapping[str, Tensor]):
    """A read-only dict whose expensive entries are built on first access, then cached.

    Observations: a base-stock rule reads two small tensors, a neural policy the full feature
    tensors, and neither pays for what it does not read. Step metrics: built only when a
    rollout keeps them."""

    def __init__(self, values: dict[str, Tensor], builders: dict[str, Callable[[], Tensor]]) -> None:
        self._values = dict(values)
        self._builders = {k: f for k, f in builders.items() if k not in values}

    def __getitem__(self, key: str) -> Tensor:
        if key not in self._values:
            if key not in self._builders:
                raise KeyError(key)
            self._values[key] = self._builders.pop(key)()
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        yield from list(self._values) + list(self._builders)

    def __len__(self) -> int:
        return len(self._values) + len(self._builders)

    def __contains__(self, key: object) -> bool:
        return key in self._values or key in self._builders


@dataclass(frozen=True)
class Trace:
    """All exogenous randomness of ``batch`` episodes of ``horizon`` periods.

    ``data`` maps names to tensors whose first two dimensions are ``[batch, horizon]``.
    """

    data: Mapping[str, Tensor]
    seed: int | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("trace: data must hold at least one tensor")
        shapes = {name: tuple(t.shape[:2]) for name, t in self.data.items()}
        if len(set(shapes.values())) != 1 or any(t.dim() < 2 for t in self.data.values()):
            raise ValueError(f"trace: every tensor must be [batch, horizon, ...] alike, got {shapes}")

    def __getitem__(self, name: str) -> Tensor:
        return self.data[name]

    @property
    def batch(self) -> int:
        return next(iter(self.data.values())).shape[0]

    @property
    def horizon(self) -> int:
        return next(iter(self.data.values())).shape[1]

    @property
    def device(self) -> torch.device:
        return next(iter(self.data.values())).device

    def to(self, device: str | torch.device) -> Trace:
        return Trace({k: v.to(device) for k, v in self.data.items()}, self.seed, self.meta)

    def select(self, index: slice | Tensor) -> Trace:
        """A sub-batch (e.g. one episode for a solver or the simpy twin)."""
        return Trace({k: v[index] for k, v in self.data.items()}, self.seed, self.meta)


@dataclass(frozen=True)
class Metric:
    """The scenario's main metric: its name and whether lower values are better."""

    name: str
    minimise: bool = False

    def best(self, values: Iterable[float]) -> float:
        """The best of ``values`` in this metric's direction."""
        return min(values) if self.minimise else max(values)

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b``."""
        return a < b if self.minimise else a > b

    @property
    def direction(self) -> str:
        return "lower is better" if self.minimise else "higher is better"


WINDOW_FIELDS = ("horizon", "warmup", "eval_horizon", "eval_warmup")
_FIXED = "oprl.fixed"


def fixed(**field_kwargs: Any) -> Any:
    """A ``Params`` dataclass field that is not a scenario parameter: the scenario factory
    sets it itself (a network, a name) or it is data (a calibration table)."""
    return field(metadata={_FIXED: True}, **field_kwargs)


def is_fixed(f: Field) -> bool:
    """Whether a ``Params`` field was declared with `fixed`."""
    return bool(f.metadata.get(_FIXED, False))


class Simulator(ABC):
    """What every domain's simulator provides (docs/architecture.md, "The contract").

    A subclass declares once: ``Params`` (a frozen dataclass with the episode windows
    ``horizon``, ``warmup``, ``eval_horizon``, ``eval_warmup``; a scenario's parameters are
    derived from its fields), ``metric`` (name and direction), ``episode_metric`` and, where
    actions have a fixed shape, ``action_shape``/``action_bounds``. ``self.params`` holds the
    instance's ``Params`` and ``self.name`` the scenario name.
    """

    Params: ClassVar[type]
    metric: Metric
    name: str
    params: Any
    # one episode's action shape; None where it depends on the state (e.g. dispatch's
    # candidate pairs); bounds every entry of an action must respect
    action_shape: tuple[int, ...] | None = None
    action_bounds: tuple[float, float] = (-math.inf, math.inf)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "Params", None) is None:  # an abstract intermediate class
            return
        if not is_dataclass(cls.Params):
            raise TypeError(f"{cls.__name__}.Params: must be a dataclass")
        names = {f.name for f in fields(cls.Params)} | set(dir(cls.Params))
        missing = [n for n in WINDOW_FIELDS if n not in names]
        if missing:
            raise TypeError(f"{cls.__name__}.Params: needs the episode windows {missing}")

    # -- episode windows (training and evaluation defaults) -------------------------------
    @property
    def horizon(self) -> int:
        """Training episode length."""
        return int(self.params.horizon)

    @property
    def warmup(self) -> int:
        """Training periods not counted."""
        return int(self.params.warmup)

    @property
    def eval_horizon(self) -> int:
        """Evaluation episode length."""
        return int(self.params.eval_horizon)

    @property
    def eval_warmup(self) -> int:
        """Evaluation periods not counted."""
        return int(self.params.eval_warmup)

    # -- dynamics --------------------------------------------------------------------------
    @abstractmethod
    def sample_trace(
        self, batch: int, horizon: int | None = None, *, seed: int,
        device: str | torch.device = "cpu",
    ) -> Trace:
        """All exogenous randomness of ``batch`` episodes (``horizon=None``: ``self.horizon``)."""

    @abstractmethod
    def reset(self, trace: Trace) -> State:
        """The state at period 0 of every episode of ``trace``."""

    @abstractmethod
    def observe(self, state: State, t: int, trace: Trace) -> Observation:
        """What a policy sees at period ``t``."""

    @abstractmethod
    def step(
        self, state: State, action: Tensor, t: int, trace: Trace
    ) -> tuple[State, Tensor, dict[str, Tensor]]:
        """Next state, reward ``[B]`` (cost = -reward) and per-period metrics."""

    # -- metrics ---------------------------------------------------------------------------
    @abstractmethod
    def episode_metric(self, rewards: Tensor, warmup: int) -> Tensor:
        """The main metric of each episode ``[B]`` from rewards ``[B, T]`` after ``warmup``."""

    def episode_metrics(self, result: Rollout, warmup: int) -> dict[str, Tensor]:
        """Secondary metrics per episode ``{name: [B]}`` reported beside the main one."""
        return {}

    @property
    def has_secondary_metrics(self) -> bool:
        """Whether `episode_metrics` is overridden (rollouts then keep per-period metrics)."""
        return type(self).episode_metrics is not Simulator.episode_metrics


# -- optional capabilities: declared by subclassing, required by algorithms ---------------------
class Constrained(ABC):
    """A CMDP: auxiliary signals, each reported by ``step`` in ``info[name]`` ``[B]``, whose
    expected episode totals must reach ``constraint_thresholds`` (constrained RL)."""

    # every state and trace tensor is [B, ...] and episodes do not interact
    independent_rows: bool = False

    @property
    @abstractmethod
    def constraint_signals(self) -> tuple[str, ...]:
        """Names of the auxiliary signals."""

    @property
    @abstractmethod
    def constraint_thresholds(self) -> tuple[float, ...]:
        """Minimum expected episode total of each signal (same order)."""

    def exact_totals(self, policy: Policy, horizon: int | None = None) -> Tensor | None:
        """Exact expected episode totals ``[1 + K]`` (main, then each signal) where the
        simulator has an exact model; None otherwise. Reported only, never trained on."""
        return None


class Stackable(ABC):
    """Settings (simulators of one scenario) that a sweep stacks into one batched rollout."""

    @classmethod
    @abstractmethod
    def align(cls, sims: Sequence[Simulator]) -> list[Simulator]:
        """The same settings with one observation layout, so that they can share a batch."""

    @classmethod
    @abstractmethod
    def stack(cls, sims: Sequence[Simulator], episodes: int) -> Simulator:
        """One simulator running ``episodes`` episodes of each of ``sims`` in turn
        (ValueError where they cannot share a batch)."""


class StackablePolicy(ABC):
    """A policy class that merges per-setting instances into one per-sample policy."""

    @classmethod
    @abstractmethod
    def stacked(cls, policies: list, episodes: int) -> Policy:
        """One policy acting like ``policies[k]`` on rows ``[k*episodes, (k+1)*episodes)``."""


class LeadTimes(ABC):
    """Decisions settle only after a lead time: dev episodes must count enough windows."""

    @property
    @abstractmethod
    def max_lead_time(self) -> int:
        """The longest lead time in periods."""


SPLITS = ("train", "dev", "test")


class DataSplits(ABC):
    """A simulator replaying a recorded history split by date into train, dev and test blocks.

    ``sample_trace`` draws training windows from the train block only (training batches and
    heuristic tuning); `holdout` gives the fixed episodes that score a block: checkpoint
    selection reads 'dev', evaluation 'test'. The periods before a block are replayed first
    as a warm-up that is not counted, so demand lags and pipelines are those of real history."""

    @abstractmethod
    def holdout(self, purpose: str, device: str | torch.device = "cpu") -> tuple[Trace, int]:
        """One episode per series covering block ``purpose`` (one of `SPLITS`), and the number
        of uncounted warm-up periods before it."""


def check_split(purpose: str) -> str:
    """``purpose`` when it names a block of `SPLITS`, else a ValueError."""
    if purpose not in SPLITS:
        raise ValueError(f"purpose: {purpose!r}; allowed {', '.join(SPLITS)}")
    return purpose


class WholeUnitActions(ABC):
    """A policy that may round its actions (orders) to whole units outside training."""

    integer_orders: bool


Capability = type


def requires(*capabilities: Capability) -> Callable[[Callable], Callable]:
    """Declare the simulator capabilities a trainer needs (``@requires(Constrained)``); the
    registry refuses a scenario whose simulator lacks one."""

    def mark(trainer: Callable) -> Callable:
        trainer.requires = tuple(capabilities)
        return trainer

    return mark


def required_capabilities(trainer: Callable) -> tuple[Capability, ...]:
    """The capabilities ``trainer`` declared with `requires` (none by default)."""
    return tuple(trainer.__dict__.get("requires", ()))


@dataclass(frozen=True)
class Rollout:
    """Per-period rewards ``[batch, horizon]`` and per-period metrics of one rollout."""

    rewards: Tensor
    metrics: dict[str, Tensor]

    def mean_reward(self, warmup: int = 0) -> Tensor:
        """Mean reward per period of each episode, ignoring the first ``warmup`` periods."""
        if not 0 <= warmup < self.rewards.shape[1]:
            raise ValueError(
                f"warmup: must lie in [0, horizon={self.rewards.shape[1]}), got {warmup}"
            )
        return self.rewards[:, warmup:].mean(dim=1)


def rollout(
    sim: Simulator,
    policy: Policy,
    trace: Trace,
    *,
    keep_metrics: bool = False,
) -> Rollout:
    """Run ``policy`` on every episode of ``trace`` at once; loops over time only.

    Gradients flow through the simulator when the caller has autograd enabled (HDPO).
    """
    state = sim.reset(trace)
    rewards: list[Tensor] = []
    metrics: dict[str, list[Tensor]] = {}
    for t in range(trace.horizon):
        obs = sim.observe(state, t, trace)
        action = policy(obs)
        state, reward, info = sim.step(state, action, t, trace)
        rewards.append(reward)
        if keep_metrics:
            for k, v in info.items():
                metrics.setdefault(k, []).append(v)
    return Rollout(
        rewards=torch.stack(rewards, dim=1),
        metrics={k: torch.stack(v, dim=1) for k, v in metrics.items()},
    )


def trace_size(batch: int, horizon: int | None, default_horizon: int,
               period_bytes: float = 0.0) -> tuple[int, int]:
    """The validated ``(batch, horizon)`` of a trace to sample (``horizon=None``: the
    scenario's default); shared by every simulator's ``sample_trace``. ``period_bytes``: the
    simulator's estimate of one episode-period (trace and sampling scratch), so that a trace
    that cannot fit is refused before it is drawn."""
    if batch < 1:
        raise ValueError(f"batch: must be >= 1, got {batch}")
    horizon = default_horizon if horizon is None else int(horizon)
    if horizon < 1:
        raise ValueError(f"horizon: must be >= 1, got {horizon}")
    check_memory(float(batch) * horizon * period_bytes, f"batch={batch} x horizon={horizon}")
    return int(batch), horizon


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"auto" picks CUDA when present; an unavailable CUDA request is a clear error."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device: {device!r} is not a device; use cpu, cuda, cuda:N or auto") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device: {device!r} is not supported; use cpu, cuda, cuda:N or auto")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device: 'mps' was requested but is not available; use 'cpu'")
    if dev.type == "cuda" and dev.index is not None and torch.cuda.is_available() \
            and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device: {device!r} does not exist; this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was requested but no CUDA device is available; use 'cpu'")
    return dev


# -- size guards: refuse what cannot fit before allocating it -----------------------------------
def available_memory() -> int:
    """Bytes of memory available to this process now (Linux ``MemAvailable``; elsewhere the
    free physical pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**63 - 1


def check_memory(n_bytes: float, what: str, budget: float | None = None) -> None:
    """ValueError naming ``what`` (the parameters that set the size) when an estimated
    ``n_bytes`` exceed ``budget`` (default: the memory available now)."""
    budget = available_memory() if budget is None else budget
    if not n_bytes <= budget:
        raise ValueError(f"{what}: needs about {n_bytes / 2**30:,.1f} GiB (trace, state and "
                         f"rollout) but {budget / 2**30:,.1f} GiB is available; reduce it")
