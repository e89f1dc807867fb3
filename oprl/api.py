"""The Python API behind the CLI: ``train``, ``benchmark`` and ``solve``.

``oprl.train('inventory/one_store_lost', {'lead_time': 4})`` trains the scenario's default
policy with its default algorithm; ``oprl.benchmark(...)`` trains (or loads) it, tunes the
classical heuristics on training traces, computes the solver references on the evaluation
traces and scores everything on those same traces.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from oprl import registry
from oprl.algorithms.loop import settings_class
from oprl.algorithms.settings import LoopSettings, parse_settings
from oprl.core import Metric, WholeUnitActions, resolve_device
from oprl.evaluate import COLUMNS, Entry
from oprl.result import SolverResult
from oprl.runs import RunDir, folder_lock, write_csv
from oprl.scoring import (  # noqa: F401  (EVAL_SEED, TUNE_SEED, eval_window: public API)
    EVAL_SEED,
    TUNE_SEED,
    bench_settings,
    eval_window,
    prepare_cell,
    score_cell,
)


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in params.items()}


def make_policy(scenario: str, kind: str, sim, **kwargs: Any) -> nn.Module:
    """A fresh learned policy of ``kind`` (one of the scenario's ``policies``) sized for ``sim``."""
    return registry.get(scenario).policy_builder(kind)(sim, **kwargs)


# what a trainer records each dev evaluation: a cost it minimised (HDPO: the metric where the
# simulator minimises it, else the reward per period negated) or a reward it maximised
DEV_METRICS = {"dev_cost": Metric("dev_cost", minimise=True), "dev_reward": Metric("dev_reward")}


def dev_key(history: list[dict[str, float]]) -> str:
    """The history column training selected on (a key of `DEV_METRICS`)."""
    for key in DEV_METRICS:
        if history and key in history[-1]:
            return key
    raise ValueError(f"history: rows carry none of {', '.join(DEV_METRICS)}")


def best_dev(history: list[dict[str, float]]) -> float:
    """The best dev value in the history, in the direction of its column."""
    key = dev_key(history)
    return DEV_METRICS[key].best(h[key] for h in history)


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
    evaluation; ``resume=True`` continues a killed run from its last checkpoint). Everything
    given is checked before the folder is written, and the folder is locked while training."""
    spec = registry.get(scenario)
    params = dict(params or {})
    out = Path(out) if out is not None else Path("runs") / scenario.replace("/", "-")
    resolve_device(device)  # 'bogus' or an absent CUDA: refused before anything is written
    with folder_lock(out, "out"):
        return _train_in(spec, RunDir(out), params, algo=algo, policy=policy, steps=steps,
                         device=device, resume=resume, seed=seed, progress=progress,
                         hyper=hyper)


def _train_in(spec: registry.Scenario, run: RunDir, params: dict[str, Any], *, algo: str | None,
              policy: str | None, steps: int | None, device: str | None, resume: bool,
              seed: int, progress: bool, hyper: dict[str, Any]) -> TrainOutcome:
    """`train` inside the locked run folder."""
    scenario = spec.name
    config = {
        "scenario": scenario, "params": _jsonable(params), "algo": algo or spec.algorithm,
        "policy": policy or spec.policy, "seed": seed,
        "policy_kwargs": spec.policy_kwargs if (policy or spec.policy) == spec.policy else {},
        "hyper": {**spec.hyper(algo or spec.algorithm, params), **hyper}, "steps": steps,
    }
    if resume and run.exists():  # the saved configuration decides what the run is
        saved = run.config()
        _check_resume(spec, run.path, saved, params, hyper, algo=algo, policy=policy)
        config = {**saved, "steps": steps if steps is not None else saved["steps"]}
    # every mistake is reported before the run folder is written
    sim = spec.build(**config["params"])
    trainer = spec.trainer(config["algo"])
    settings = _settings(trainer, config["hyper"], config["steps"], config["algo"])
    builder = spec.policy_builder(config["policy"])
    if not resume:
        config["hyper"] = {k: _jsonable_value(getattr(settings, k)) for k in config["hyper"]}
    run.create(config, resume=resume)
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
    return TrainOutcome(run.path, result.policy, result.history, result.best_step,
                        result.steps_done, result.wall_s)


def _check_resume(spec: registry.Scenario, path: Path, saved: dict[str, Any],
                  params: dict[str, Any],
                  hyper: dict[str, Any], *, algo: str | None, policy: str | None) -> None:
    """A resumed run keeps its saved configuration: a new value that differs from it is a
    ValueError naming the first differing key (rather than being silently ignored)."""
    if saved.get("scenario") != spec.name:
        raise ValueError(f"resume: {path} holds a run of {saved.get('scenario')!r}, not "
                         f"{spec.name!r}")
    defaults = spec.parameters()
    for key, value in _jsonable(params).items():
        old = saved["params"].get(key, defaults.get(key))
        if not _same_value(value, old):
            raise ValueError(f"resume: --set {key}={value!r} differs from the saved run's "
                             f"{key}={old!r}; drop it or start a new run in another --out")
    if hyper:  # compared as the settings read them ("1e-3" == 0.001)
        trainer = spec.trainer(saved["algo"])
        before = _settings(trainer, saved["hyper"], None, saved["algo"])
        after = _settings(trainer, {**saved["hyper"], **hyper}, None, saved["algo"])
        for key, value in hyper.items():
            if not _same_value(getattr(after, key), getattr(before, key)):
                raise ValueError(f"resume: --hyper {key}={value!r} differs from the saved run's "
                                 f"{key}={getattr(before, key)!r}; drop it or start a new run "
                                 "in another --out")
    for key, value in (("algo", algo), ("policy", policy)):
        if value is not None and value != saved[key]:
            raise ValueError(f"resume: --{key} {value} differs from the saved run's "
                             f"{saved[key]!r}")


def _same_value(a: Any, b: Any) -> bool:
    """Equal as the JSON config would hold them (tuples as lists, 4 == 4.0)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    return a == b and isinstance(a, bool) == isinstance(b, bool)


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


def _rounding_note(policy: nn.Module) -> str:
    """Say so in the status when a learned policy's orders are rounded to whole units."""
    whole = isinstance(policy, WholeUnitActions) and policy.integer_orders
    return "; whole-unit orders" if whole else ""


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
    settings = bench_settings(spec, seed, eval_episodes=eval_episodes, horizon=eval_horizon,
                              warmup=eval_warmup)
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
    eval_window(sim, eval_horizon, eval_warmup)  # a bad window is refused before training
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
    cell = prepare_cell(spec, sim, learned, settings, dev, log)
    log(f"[oprl] evaluating on {cell.trace.batch} episodes x {cell.trace.horizon} periods "
        f"(first {cell.warmup} not counted) ...")
    frame = score_cell(cell)
    frame.attrs["histories"] = histories
    frame.attrs["history"] = next(iter(histories.values()), [])
    if csv is not None:
        write_csv(Path(csv), frame[COLUMNS])
    return frame
