"""Scenario names -> simulator factory, policies, algorithms, heuristics, references.

Scenarios live in ``oprl/scenarios/<domain>.py`` as "module:function" paths imported on first
use (`oprl list` stays fast; one domain's optional dependency never breaks another). Contracts:

- ``factory(**params) -> Simulator``: its return annotation names a subclass of
  `oprl.core.Simulator` (metric, episode windows, capabilities); the factory's own arguments
  and, through a ``**kw``, the fields of that class's ``Params`` are the scenario's parameters;
- ``policies[name](sim, **policy_kwargs) -> nn.Module`` (observation -> action);
- ``algorithms[name](sim, policy, settings, *, seed, device, callback, start_state, progress)``:
  a trainer on the shared loop (docs/algorithms.md) whose ``settings`` parameter is annotated
  with its settings dataclass (``train_defaults`` and ``--hyper`` are checked against it); it
  declares the simulator capabilities it needs with `oprl.core.requires`, and `register` refuses
  a scenario whose simulator lacks one;
- ``heuristics(sim, trace, warmup) -> {name: (policy, status)}`` (fitted on training traces);
  ``references(sim, trace, warmup) -> list[SolverResult]`` (on the evaluation trace itself).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from oprl.core import Simulator, is_fixed, required_capabilities
from oprl.param_types import annotations, check_params


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
    # per-algorithm overrides of ``train_defaults``
    algorithm_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    # overrides that depend on the scenario's parameters: "module:function" mapping the
    # parameters given to the overrides (applied after ``algorithm_defaults``)
    param_defaults: str = ""
    # every name ``heuristics`` / ``references`` may return (lets a sweep spec be checked
    # before any work; empty: not checked)
    heuristic_names: tuple[str, ...] = ()
    reference_names: tuple[str, ...] = ()

    def build(self, **params: Any):
        factory = load(self.factory)
        allowed = self.parameters()
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise ValueError(
                f"{self.name}: unknown parameter {unknown[0]!r}; allowed: {', '.join(allowed)}"
            )
        params = check_params(params, annotations(factory, self.simulator_type().Params))
        try:
            return factory(**params)
        except TypeError as err:  # e.g. a string where a number belongs
            raise ValueError(f"{self.name}: bad parameter value ({err})") from None
        except RuntimeError as err:  # torch's complaint about a malformed value
            raise ValueError(f"{self.name}: bad parameter value ({err})") from None
        except MemoryError:
            raise ValueError(f"{self.name}: the parameters {_sizes(params)} do not fit in "
                             "memory; reduce them") from None

    def parameters(self) -> dict[str, Any]:
        """Every parameter the scenario accepts, with its default (None: none)."""
        return _parameters(load(self.factory), self.simulator_type().Params)

    def simulator_type(self) -> type[Simulator]:
        """The `Simulator` subclass the factory returns (its return annotation)."""
        factory = load(self.factory)
        hint = inspect.signature(factory).return_annotation
        if isinstance(hint, str):
            try:
                hint = eval(hint, getattr(factory, "__globals__", {}))  # noqa: S307
            except NameError:
                hint = None
        if not (inspect.isclass(hint) and issubclass(hint, Simulator)):
            raise ValueError(f"{self.name}: factory {self.factory} must be annotated to return "
                             f"a subclass of oprl.core.Simulator, got {hint!r}")
        return hint

    def check(self) -> None:
        """ValueError unless the simulator has every capability the algorithms need."""
        if self.algorithm not in self.algorithms:
            raise ValueError(f"{self.name}: algorithm {self.algorithm!r} is not one of "
                             f"{', '.join(self.algorithms) or 'no algorithms'}")
        sim_type = self.simulator_type()
        for name in self.algorithms:
            for capability in required_capabilities(self.trainer(name)):
                if not issubclass(sim_type, capability):
                    raise ValueError(
                        f"{self.name}: algorithm {name!r} needs a {capability.__name__} "
                        f"simulator; {sim_type.__name__} does not subclass "
                        f"oprl.core.{capability.__name__}")

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


def _sizes(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items()) or "(defaults)"


def load(path: str) -> Callable:
    """The object a "module:attribute" path names (imported on first use)."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def _parameters(factory: Callable, params_type: type) -> dict[str, Any]:
    """Named parameters of a factory with their defaults; a pass-through ``**kw`` adds the
    fields of the simulator's ``Params`` dataclass not declared `oprl.core.fixed`."""
    sig = inspect.signature(factory)
    out = {
        n: (None if p.default is inspect.Parameter.empty else p.default)
        for n, p in sig.parameters.items()
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        for f in fields(params_type):
            if not is_fixed(f) and f.name not in out:
                out[f.name] = _default(f)
    return out


def _default(f) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


SCENARIOS: dict[str, Scenario] = {}


def register(scenario: Scenario, scenarios: dict[str, Scenario] | None = None) -> Scenario:
    """Add ``scenario`` (e.g. one defined outside the package) so that `get`, `make`,
    `oprl.api.train` and `oprl.api.benchmark` find it; a taken name or a missing capability is
    a ValueError."""
    scenarios = SCENARIOS if scenarios is None else scenarios
    if not isinstance(scenario, Scenario):
        raise ValueError(f"scenario: expected an oprl.registry.Scenario, got {type(scenario).__name__}")
    if scenario.name in scenarios:
        raise ValueError(f"scenario: {scenario.name!r} is already registered")
    scenario.check()
    scenarios[scenario.name] = scenario
    return scenario


def discover() -> dict[str, Scenario]:
    """Every scenario listed in ``SCENARIOS`` of a module of `oprl.scenarios`."""
    package = importlib.import_module("oprl.scenarios")
    scenarios: dict[str, Scenario] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for spec in getattr(module, "SCENARIOS", ()):
            register(spec, scenarios)
    return scenarios


SCENARIOS.update(discover())


def get(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise ValueError(f"scenario: unknown {name!r}; available: {', '.join(sorted(SCENARIOS))}")
    return SCENARIOS[name]


def make(name: str, **params: Any):
    """Build the simulator of a named scenario, e.g. ``make('inventory/serial', penalty=19)``."""
    return get(name).build(**params)
