"""The one training loop every algorithm runs (docs/algorithms.md).

An algorithm supplies an `Algorithm`: its networks and optimisers, one update step and one dev
evaluation. `TrainingLoop` does the rest, the same way for all of them: the seed of each step's
batch (a pure function of ``(seed, step)``), dev evaluation every ``eval_every`` steps,
selection of the best weights in the metric's direction, history rows (``step``, the training
columns averaged since the last evaluation, the dev value and the algorithm's columns,
``wall_s``), the checkpoint callback whose ``state`` resumes the run exactly, patience and an
optional progress bar.
"""

from __future__ import annotations

import copy
import math
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from oprl.algorithms.common import invoke_callback, step_seed
from oprl.algorithms.settings import LoopSettings, S, parse_settings


@dataclass
class Evaluation:
    """One dev evaluation. ``value`` goes to the history under the loop's metric name,
    ``columns`` beside it. Selection keeps the weights of ``weights`` (default: the policy)
    when the evaluation is ``selectable`` and beats the kept one: by ``key`` (lower is better)
    where given, else by ``value`` in the metric's direction. A ``provisional`` evaluation is
    kept only until any selectable one arrives (e.g. the initial weights, before training has
    produced anything that may be chosen)."""

    value: float
    columns: dict[str, float] = field(default_factory=dict)
    selectable: bool = True
    provisional: bool = False
    key: tuple | None = None
    weights: nn.Module | None = None


@dataclass
class TrainResult:
    """Best-on-dev weights (already loaded into ``policy``) and how training went."""

    policy: nn.Module
    metric: str  # the history column selection read, e.g. "dev_cost"
    best_value: float  # its value at ``best_step`` (nan when nothing was selectable)
    best_step: int
    history: list[dict[str, float]] = field(default_factory=list)
    steps_done: int = 0
    wall_s: float = 0.0
    stopped_early: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # the algorithm's own outcome

    @property
    def best_dev_cost(self) -> float:
        return self.best_value

    @property
    def best_dev_reward(self) -> float:
        return self.best_value


class Algorithm:
    """What a trainer hands to the loop. Subclasses set ``policy`` and implement `optimizers`,
    `update` and `evaluate`; the rest has defaults."""

    policy: nn.Module
    train_columns: tuple[str, ...] = ()  # what `update` returns, averaged into the history
    evaluate_at_start: bool = True  # a history row for the initial weights (step 0)

    def modules(self) -> dict[str, nn.Module]:
        """Every network whose weights a checkpoint must hold."""
        return {"policy": self.policy}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimiser; the first one is the callback's ``optimizer`` argument."""
        raise NotImplementedError

    def begin(self, loop: TrainingLoop) -> None:
        """Called once before the first step, after a resume restored weights and
        ``loop.extra`` (the algorithm's own resumable state: plain values and tensors)."""

    def update(self, step: int, seed: int) -> dict[str, float]:
        """One training step on the batch of ``seed``; returns ``train_columns``."""
        raise NotImplementedError

    def evaluate(self, step: int) -> Evaluation:
        raise NotImplementedError

    def evaluate_now(self, step: int) -> bool:
        """Whether to evaluate after ``step`` steps besides every ``eval_every``."""
        return False

    @property
    def info(self) -> dict[str, Any]:
        """The algorithm's own outcome, `TrainResult.info` (e.g. final multipliers)."""
        return {}


def settings_class(trainer: Callable[..., Any]) -> type[LoopSettings]:
    """The settings dataclass a trainer declares on its ``settings`` parameter."""
    hint = typing.get_type_hints(trainer).get("settings")
    for option in typing.get_args(hint) or (hint,):
        if isinstance(option, type) and issubclass(option, LoopSettings):
            return option
    raise TypeError(f"{getattr(trainer, '__name__', trainer)}: declares no "
                    "'settings: <LoopSettings subclass>' parameter")


def resolve_settings(cls: type[S], settings: S | None, overrides: dict[str, Any],
                     owner: str) -> S:
    """``settings`` (default ``cls()``) with keyword ``overrides`` parsed and checked."""
    if settings is None:
        return parse_settings(cls, overrides, owner=owner)
    if not isinstance(settings, cls):
        raise ValueError(f"settings: expected {cls.__name__}, got {type(settings).__name__}")
    return settings.replace(**overrides) if overrides else settings


class TrainingLoop:
    """Runs ``algorithm`` for ``settings.steps`` steps; see the module docstring.

    ``metric``/``maximise``: the history column of the dev value and its direction.
    ``callback(step, policy, optimizer, history, state=...)`` runs after each dev evaluation;
    ``state`` passed back as ``start_state`` continues the run exactly."""

    def __init__(self, algorithm: Algorithm, settings: LoopSettings, *, metric: str,
                 maximise: bool, seed: int = 0, callback: Callable[..., Any] | None = None,
                 start_state: dict[str, Any] | None = None, progress: bool = False):
        self.algorithm, self.settings = algorithm, settings
        self.metric, self.maximise, self.seed = metric, bool(maximise), int(seed)
        self.callback, self.progress = callback, progress
        self.state = self._restore(start_state)
        self.start_time = time.perf_counter() - self.state["wall_s"]

    @property
    def extra(self) -> dict[str, Any]:
        """The algorithm's own resumable state (saved in every checkpoint)."""
        return self.state["extra"]

    def run(self) -> TrainResult:
        algo, s, state = self.algorithm, self.settings, self.state
        algo.begin(self)
        bar = self._bar()
        if state["step"] == 0 and state["best_state"] is None and algo.evaluate_at_start:
            self._evaluate(0, {c: float("nan") for c in algo.train_columns}, bar)
        while state["step"] < s.steps and not self._out_of_patience():
            step = state["step"]
            train = algo.update(step, step_seed(self.seed, step))
            state["step"] = done = step + 1
            for name, value in train.items():
                state["train"].setdefault(name, []).append(float(value))
            if done % s.eval_every == 0 or done == s.steps or algo.evaluate_now(done):
                means = {k: sum(v) / len(v) for k, v in state["train"].items()}
                state["train"] = {}
                self._evaluate(done, means, bar)
        if bar is not None:
            bar.close()
        if state["best_state"] is not None:
            algo.policy.load_state_dict(state["best_state"])
        return TrainResult(algo.policy, self.metric, state["best_value"], state["best_step"],
                           state["history"], state["step"], time.perf_counter() - self.start_time,
                           state["step"] < s.steps, algo.info)

    def offer(self, step: int, ev: Evaluation) -> bool:
        """Keep the weights of ``ev`` if it beats the kept ones (see `Evaluation`)."""
        state = self.state
        if not ev.selectable:
            return False
        key = list(ev.key) if ev.key is not None else [-ev.value if self.maximise else ev.value]
        if not (state["best_state"] is None or state["best_provisional"]
                or key < state["best_key"]):
            return False
        weights = ev.weights if ev.weights is not None else self.algorithm.policy
        state.update(best_key=key, best_step=step, best_value=float(ev.value),
                     best_provisional=ev.provisional,
                     best_state={k: v.detach().clone() for k, v in weights.state_dict().items()})
        return True

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to resume: pass it back as ``start_state``."""
        snap = copy.deepcopy(self.state)
        snap["modules"] = {k: {n: v.detach().clone() for n, v in m.state_dict().items()}
                           for k, m in self.algorithm.modules().items()}
        snap["optimizers"] = {k: copy.deepcopy(o.state_dict())
                              for k, o in self.algorithm.optimizers().items()}
        snap["wall_s"] = self.state["history"][-1]["wall_s"] if self.state["history"] else 0.0
        return snap

    def _evaluate(self, step: int, train: dict[str, float], bar) -> None:
        """A history row, selection and patience; after a training step also the callback and
        the progress bar."""
        ev = self.algorithm.evaluate(step)
        row = {"step": step, **train, self.metric: ev.value, **ev.columns,
               "wall_s": time.perf_counter() - self.start_time}
        self.state["history"].append(row)
        self.offer(step, ev)
        self._watch(ev)
        if step == 0:  # the initial weights: nothing trained to checkpoint yet
            return
        if self.callback is not None:
            optimizer = next(iter(self.algorithm.optimizers().values()))
            invoke_callback(self.callback, step, self.algorithm.policy, optimizer,
                            self.state["history"], self.snapshot)
        if bar is not None:
            bar.update(step - bar.n)
            bar.set_postfix({self.metric: f"{ev.value:.4f}"})

    def _watch(self, ev: Evaluation) -> None:
        """Patience: count selectable evaluations that do not beat the best dev value so far
        by more than ``min_improvement`` of its size."""
        if not ev.selectable:
            return
        best, tol = self.state["watch_value"], self.settings.min_improvement
        if best is None:
            improved = not math.isnan(ev.value)
        elif self.maximise:
            improved = ev.value > best + tol * abs(best)
        else:
            improved = ev.value < best - tol * abs(best)
        if improved:
            self.state.update(watch_value=float(ev.value), bad_evals=0)
        else:
            self.state["bad_evals"] += 1

    def _out_of_patience(self) -> bool:
        patience = self.settings.patience
        return patience is not None and self.state["bad_evals"] >= patience

    def _restore(self, start_state: dict[str, Any] | None) -> dict[str, Any]:
        if start_state is None:
            return {"step": 0, "history": [], "train": {}, "wall_s": 0.0, "extra": {},
                    "best_state": None, "best_key": None, "best_step": 0,
                    "best_value": float("nan"), "best_provisional": False,
                    "watch_value": None, "bad_evals": 0}
        if "modules" not in start_state or "optimizers" not in start_state:
            raise ValueError("start_state: not a checkpoint of this training loop (it lacks "
                             "'modules' and 'optimizers'); start the run afresh")
        state = copy.deepcopy({k: v for k, v in start_state.items()
                               if k not in ("modules", "optimizers")})
        for name, module in self.algorithm.modules().items():
            module.load_state_dict(start_state["modules"][name])
        for name, opt in self.algorithm.optimizers().items():
            opt.load_state_dict(start_state["optimizers"][name])
        return state

    def _bar(self):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.settings.steps, initial=self.state["step"], desc="train",
                    unit="step", leave=False)


def run_loop(algorithm: Algorithm, settings: LoopSettings, **kw: Any) -> TrainResult:
    """``TrainingLoop(algorithm, settings, **kw).run()``."""
    return TrainingLoop(algorithm, settings, **kw).run()

