"""Scenario names -> simulator factory, policies, algorithms, heuristics, references.

Each domain lists its scenarios in ``oprl/scenarios/<domain>.py``. Code is referenced by
"module:function" paths and imported on first use, so `oprl list` stays fast and one domain's
optional dependency never breaks another.

Contracts of the referenced callables:

- ``factory(**params) -> Simulator`` (see `oprl.core.Simulator`); the simulator also has
  ``name``, ``metric_name``, ``episode_metric(rewards, warmup) -> [B]`` and evaluation defaults
  ``params.eval_horizon`` / ``params.eval_warmup``; optionally ``episode_metrics(rollout,
  warmup) -> {name: [B]}`` for secondary metrics reported beside the main one.
- ``policies[name](sim, **policy_kwargs) -> nn.Module`` mapping an observation to an action.
- ``algorithms[name](sim, policy, settings, *, seed, device, callback, start_state, progress)``
  with ``settings`` an instance of the trainer's settings dataclass (declared on that parameter,
  a `oprl.algorithms.settings.LoopSettings` subclass; ``train_defaults`` and ``--hyper`` are
  checked against it) runs `oprl.algorithms.loop.TrainingLoop` and returns its `TrainResult`:
  ``policy`` (best weights loaded), ``history`` (rows with ``step``, ``wall_s`` and
  ``dev_cost`` or ``dev_reward``), ``best_step``, ``steps_done``, ``wall_s``;
  ``callback(step, policy, optimizer, history, state=...)`` after each dev evaluation, where
  ``state`` passed back as ``start_state`` resumes the run exactly (docs/algorithms.md).
- ``heuristics(sim, trace, warmup) -> {name: (policy, status)}`` fits classical policies on
  training traces; ``references(sim, trace, warmup) -> list[SolverResult]`` computes optima or
  bounds on the evaluation trace itself.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

DOMAINS = ("inventory", "dispatch", "economy", "fishery", "recsys")


@dataclass(frozen=True)
class Scenario:
    """How to build, train and benchmark one named scenario."""

    name: str
    factory: str
    description: str
    heuristics: str
    references: str
    algorithm: str = "hdpo"
    policy: str = "mlp"
    train_defaults: dict[str, Any] = field(default_factory=dict)
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    policies: Mapping[str, str] = field(default_factory=dict)
    algorithms: Mapping[str, str] = field(default_factory=dict)
    # the learned policies `oprl bench` trains side by side (default: just ``algorithm``)
    bench_algorithms: tuple[str, ...] = ()
    # settings of `benchmark`: eval_episodes, tune_episodes, tune_horizon
    bench_defaults: dict[str, Any] = field(default_factory=dict)
    # parameter names a factory's ``**kw`` passes through (shown by `oprl list`, accepted)
    common_params: tuple[str, ...] = ()
    # per-algorithm overrides of ``train_defaults``
    algorithm_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    # overrides that depend on the scenario's parameters: "module:function" mapping the
    # parameters given to the overrides (applied after ``algorithm_defaults``)
    param_defaults: str = ""
    # every name ``heuristics`` / ``references`` may return (lets a sweep spec be checked
    # before any work; empty: not checked)
    heuristic_names: tuple[str, ...] = ()
    reference_names: tuple[str, ...] = ()
    # batching many settings into one rollout (`oprl.sweep`): ``align(sims) -> sims`` with one
    # observation layout, ``stack(sims, episodes) -> sim`` (ValueError if they cannot share)
    align: str = ""
    stack: str = ""

    def build(self, **params: Any):
        factory = load(self.factory)
        allowed = self.parameters()
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise ValueError(
                f"{self.name}: unknown parameter {unknown[0]!r}; allowed: {', '.join(allowed)}"
            )
        try:
            return factory(**params)
        except TypeError as err:  # e.g. a string where a number belongs
            raise ValueError(f"{self.name}: bad parameter value ({err})") from None
        except RuntimeError as err:  # torch's complaint about a malformed value
            raise ValueError(f"{self.name}: bad parameter value ({err})") from None

    def parameters(self) -> dict[str, Any]:
        return _parameters(load(self.factory), self.common_params)

    def policy_builder(self, name: str) -> Callable:
        if name not in self.policies:
            raise ValueError(f"policy: unknown {name!r} for {self.name}; allowed: "
                             f"{', '.join(self.policies)}")
        return load(self.policies[name])

    def trainer(self, name: str) -> Callable:
        if name not in self.algorithms:
            raise ValueError(f"algo: unknown {name!r} for {self.name}; allowed: "
                             f"{', '.join(self.algorithms)}")
        return load(self.algorithms[name])

    def hyper(self, algorithm: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Training defaults of ``algorithm`` on this scenario with ``params``."""
        out = {**self.train_defaults, **self.algorithm_defaults.get(algorithm, {})}
        if self.param_defaults:
            out.update(load(self.param_defaults)(dict(params or {})))
        return out


def load(path: str) -> Callable:
    """The object a "module:attribute" path names (imported on first use)."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def _parameters(factory: Callable, common: tuple[str, ...] = ()) -> dict[str, Any]:
    """Named parameters of a factory with their defaults; a pass-through ``**kw`` adds the
    scenario's common parameters."""
    sig = inspect.signature(factory)
    out = {
        n: (None if p.default is inspect.Parameter.empty else p.default)
        for n, p in sig.parameters.items()
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        for name in common:
            out.setdefault(name, None)
    return out


def _collect() -> dict[str, Scenario]:
    scenarios: dict[str, Scenario] = {}
    for domain in DOMAINS:
        module = f"oprl.scenarios.{domain}"
        if importlib.util.find_spec(module) is None:  # a domain not built yet
            continue
        for spec in importlib.import_module(module).SCENARIOS:
            if spec.name in scenarios:
                raise RuntimeError(f"scenario {spec.name!r} is registered twice")
            scenarios[spec.name] = spec
    return scenarios


SCENARIOS: dict[str, Scenario] = _collect()


def get(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise ValueError(f"scenario: unknown {name!r}; available: {', '.join(sorted(SCENARIOS))}")
    return SCENARIOS[name]


def make(name: str, **params: Any):
    """Build the simulator of a named scenario, e.g. ``make('inventory/serial', penalty=19)``."""
    return get(name).build(**params)
