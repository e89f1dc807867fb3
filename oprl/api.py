"""The Python API behind the CLI: ``train``, ``benchmark`` and ``solve``.

``oprl.train('inventory/one_store_lost', {'lead_time': 4})`` trains the scenario's default
policy with its default algorithm; ``oprl.benchmark(...)`` trains (or loads) it, tunes the
classical heuristics on training traces, computes the solver references on the evaluation
traces and scores everything on those same traces.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from oprl import registry
from oprl.algorithms.loop import settings_class
from oprl.algorithms.settings import LoopSettings, parse_settings
from oprl.core import resolve_device
from oprl.evaluate import COLUMNS, Entry, evaluate
from oprl.result import SolverResult
from oprl.runs import RunDir, write_csv

EVAL_SEED, TUNE_SEED = 1_234_567, 7_654_321


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in params.items()}


def make_policy(scenario: str, kind: str, sim, **kwargs: Any) -> nn.Module:
    """A fresh learned policy of ``kind`` (one of the scenario's ``policies``) sized for ``sim``."""
    return registry.get(scenario).policy_builder(kind)(sim, **kwargs)


def dev_key(history: list[dict[str, float]]) -> str:
    """The history column training selected on: ``dev_cost`` (lower is better) or
    ``dev_reward`` (higher is better)."""
    for key in ("dev_cost", "dev_reward"):
        if history and key in history[-1]:
            return key
    raise ValueError("history: rows carry neither 'dev_cost' nor 'dev_reward'")


def best_dev(history: list[dict[str, float]]) -> float:
    key = dev_key(history)
    values = [h[key] for h in history]
    return min(values) if key == "dev_cost" else max(values)


@dataclass
class TrainOutcome:
    """A trained policy, where its run folder is, and how training went."""

    run_dir: Path
    policy: nn.Module
    history: list[dict[str, float]]
    best_step: int
    steps_done: int
    wall_s: float


def train(
    scenario: str,
    params: dict[str, Any] | None = None,
    *,
    algo: str | None = None,
    policy: str | None = None,
    steps: int | None = None,
    device: str | None = "cpu",
    out: str | Path | None = None,
    resume: bool = False,
    seed: int = 0,
    progress: bool = False,
    **hyper: Any,
) -> TrainOutcome:
    """Train a policy on ``scenario`` into the run folder ``out`` (checkpoint after every dev
    evaluation; ``resume=True`` continues a killed run from its last checkpoint)."""
    spec = registry.get(scenario)
    params = dict(params or {})
    out = Path(out) if out is not None else Path("runs") / scenario.replace("/", "-")
    config = {
        "scenario": scenario, "params": _jsonable(params), "algo": algo or spec.algorithm,
        "policy": policy or spec.policy, "seed": seed,
        "policy_kwargs": spec.policy_kwargs if (policy or spec.policy) == spec.policy else {},
        "hyper": {**spec.hyper(algo or spec.algorithm, params), **hyper}, "steps": steps,
    }
    if not resume:  # a mistake is reported before the run folder is written
        settings = _settings(spec.trainer(config["algo"]), config["hyper"], steps,
                             config["algo"])
        config["hyper"] = {k: _jsonable_value(getattr(settings, k)) for k in config["hyper"]}
        spec.policy_builder(config["policy"])
    run = RunDir(out)
    saved = run.create(config, resume=resume)
    if resume:  # the saved configuration decides what the run is; only the budget may grow
        config = {**saved, "steps": steps if steps is not None else saved["steps"]}
    trainer = spec.trainer(config["algo"])
    settings = _settings(trainer, config["hyper"], config["steps"], config["algo"])
    builder = spec.policy_builder(config["policy"])
    sim = spec.build(**config["params"])
    with torch.random.fork_rng(devices=[]):  # seeded initial weights, global RNG untouched
        torch.manual_seed(config["seed"])
        net = builder(sim, **config.get("policy_kwargs", {}))
    checkpoint = run.load_checkpoint()
    start_state = checkpoint["train_state"] if checkpoint else None

    def on_eval(step, policy_, optimizer, history, state):
        run.save_checkpoint({"scenario": scenario, "config": config, "train_state": state})
        run.save_metrics(history)

    result = trainer(sim, net, settings, seed=config["seed"], device=device, callback=on_eval,
                     start_state=start_state, progress=progress)
    run.save_checkpoint({
        "scenario": scenario, "config": config,
        "train_state": (run.load_checkpoint() or {}).get("train_state"),
        "best_policy": {k: v.cpu() for k, v in result.policy.state_dict().items()},
        "best_step": result.best_step, "steps_done": result.steps_done, "wall_s": result.wall_s,
    })
    run.save_metrics(result.history)
    return TrainOutcome(out, result.policy, result.history, result.best_step,
                        result.steps_done, result.wall_s)


def _settings(trainer, hyper: dict[str, Any], steps: int | None, algo: str) -> LoopSettings:
    """The trainer's settings dataclass from the scenario's defaults and the user's
    ``hyper`` (``steps``, when given, overrides theirs): unknown names, wrong types and
    values out of range are a ValueError naming the setting."""
    values = dict(hyper) if steps is None else {**hyper, "steps": steps}
    return parse_settings(settings_class(trainer), values, owner=algo)


def _jsonable_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def load_policy(run_dir: str | Path, scenario: str | None = None) -> tuple[nn.Module, dict]:
    """The best policy of a finished run; a run of another scenario is a ValueError."""
    run = RunDir(run_dir)
    config = run.config()
    if scenario is not None and config["scenario"] != scenario:
        raise ValueError(
            f"run: {run_dir} was trained on {config['scenario']!r}, not {scenario!r}"
        )
    checkpoint = run.load_checkpoint()
    if checkpoint is None or "best_policy" not in checkpoint:
        raise ValueError(f"run: {run_dir} has no finished policy; resume it with --resume")
    sim = registry.make(config["scenario"], **config["params"])
    net = make_policy(config["scenario"], config["policy"], sim, **config.get("policy_kwargs", {}))
    net.load_state_dict(checkpoint["best_policy"])
    return net, checkpoint


def solve(
    scenario: str, params: dict[str, Any] | None = None, *, episodes: int = 16,
    horizon: int | None = None, device: str | None = "cpu", seed: int = EVAL_SEED,
) -> list[SolverResult]:
    """The scenario's reference solvers on ``episodes`` evaluation traces."""
    spec = registry.get(scenario)
    sim = spec.build(**(params or {}))
    horizon, warmup = eval_window(sim, horizon, None)
    trace = sim.sample_trace(episodes, horizon, seed=seed, device=resolve_device(device))
    return registry.load(spec.references)(sim, trace, warmup)


def eval_window(sim, horizon: int | None, warmup: int | None) -> tuple[int, int]:
    """Evaluation periods and uncounted warm-up; a shorter horizon keeps the scenario's
    warm-up fraction (e.g. 3,000 of 5,000)."""
    p = getattr(sim, "params", sim)
    horizon = int(horizon or p.eval_horizon)
    if horizon < 2:
        raise ValueError(f"horizon: evaluation needs at least 2 periods, got {horizon}")
    if warmup is None:
        warmup = p.eval_warmup if horizon == p.eval_horizon else int(
            horizon * p.eval_warmup / p.eval_horizon)
    if not 0 <= warmup < horizon:
        raise ValueError(f"eval_warmup: must lie in [0, {horizon}), got {warmup}")
    return horizon, warmup


def _rounding_note(policy: nn.Module) -> str:
    """Say so in the status when a learned policy's orders are rounded to whole units."""
    return "; whole-unit orders" if getattr(policy, "integer_orders", False) else ""


def benchmark(
    scenario: str,
    params: dict[str, Any] | None = None,
    *,
    train_steps: int | None = None,
    run: str | Path | None = None,
    policy: str | None = None,
    algos: list[str] | None = None,
    device: str | None = "cpu",
    eval_episodes: int | None = None,
    eval_horizon: int | None = None,
    eval_warmup: int | None = None,
    seed: int = 0,
    csv: str | Path | None = None,
    progress: bool = False,
    log=print,
    train_hyper: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Learned policies vs tuned heuristics vs solver references, all on the same traces.

    Trains one policy per algorithm in ``algos`` (default: the scenario's
    ``bench_algorithms``), or loads one from the run folder ``run``.
    ``frame.attrs['histories']`` maps each algorithm trained here to its training history
    (``frame.attrs['history']`` is the first one's)."""
    spec = registry.get(scenario)
    params = dict(params or {})
    dev = resolve_device(device)
    defaults = {"eval_episodes": 256, "tune_episodes": 64, "tune_horizon": 1000,
                **spec.bench_defaults}
    eval_episodes = int(eval_episodes or defaults["eval_episodes"])
    if eval_episodes < 1:
        raise ValueError(f"episodes: must be >= 1, got {eval_episodes}")
    learned: list[Entry] = []
    histories: dict[str, list[dict[str, float]]] = {}
    if run is not None:
        net, checkpoint = load_policy(run, scenario)
        learned.append(Entry(f"{checkpoint['config']['algo']}-{checkpoint['config']['policy']}",
                             net.to(dev), "learned",
                             f"loaded; best of {checkpoint['steps_done']} steps at "
                             f"{checkpoint['best_step']}{_rounding_note(net)}", checkpoint["wall_s"]))
        params = checkpoint["config"]["params"]
    sim = spec.build(**params)
    horizon, warmup = eval_window(sim, eval_horizon, eval_warmup)
    train_hyper = dict(train_hyper or {})
    train_steps = train_hyper.pop("steps", train_steps) if train_steps is None else train_steps
    train_hyper.pop("steps", None)  # ``train_steps`` wins over a ``steps`` setting
    if run is None:
        for algo in algos or list(spec.bench_algorithms or (spec.algorithm,)):
            kind = policy or spec.policy
            log(f"[oprl] training {kind} with {algo} on {scenario} ...")
            with tempfile.TemporaryDirectory() as tmp:
                outcome = train(scenario, params, algo=algo, policy=policy, steps=train_steps,
                                device=device, out=Path(tmp) / "run", seed=seed,
                                progress=progress, **train_hyper)
            histories[algo] = outcome.history
            learned.append(Entry(f"{algo}-{kind}", outcome.policy.to(dev), "learned",
                                 f"trained {outcome.steps_done} steps, best at "
                                 f"{outcome.best_step}{_rounding_note(outcome.policy)}",
                                 outcome.wall_s))
    log("[oprl] tuning heuristics on training traces ...")
    start = time.perf_counter()
    tune_trace = sim.sample_trace(int(defaults["tune_episodes"]),
                                  min(horizon, int(defaults["tune_horizon"])),
                                  seed=seed + TUNE_SEED, device=dev)
    tune_warmup = min(warmup, tune_trace.horizon // 3)
    heuristics = registry.load(spec.heuristics)(sim, tune_trace, tune_warmup)
    tune_s = time.perf_counter() - start
    entries = learned + [
        Entry(name, pol, "heuristic", status, tune_s) for name, (pol, status) in heuristics.items()
    ]
    log("[oprl] solving references on the evaluation traces ...")
    trace = sim.sample_trace(eval_episodes, horizon, seed=seed + EVAL_SEED, device=dev)
    references = registry.load(spec.references)(sim, trace, warmup)
    log(f"[oprl] evaluating on {eval_episodes} episodes x {horizon} periods "
        f"(first {warmup} not counted) ...")
    frame = evaluate(sim, trace, warmup, entries, references)
    frame.attrs["histories"] = histories
    frame.attrs["history"] = next(iter(histories.values()), [])
    if csv is not None:
        write_csv(Path(csv), frame[COLUMNS])
    return frame
