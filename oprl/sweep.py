"""Batch scenario analysis: one scenario over a grid and/or random sample of its parameters.

A spec (YAML or a dict) names a scenario, its settings, the policies, the solver references,
the evaluation traces and seeds; each *cell* (a setting with a seed) is scored exactly as
`oprl bench` scores one scenario. Cells differing only in per-sample parameters (lead times,
costs) share one batched rollout (``chunk`` at a time): same numbers, faster. Results are
appended to ``results.parquet`` atomically after every chunk, so a killed sweep resumes;
``backend='ray'`` sends one task per chunk to a Ray cluster and gives the same numbers. The
spec keys are listed in README.md ("The command line"); examples in examples/sweeps/.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import random
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from oprl import registry
from oprl.algorithms.loop import settings_class
from oprl.algorithms.settings import parse_settings
from oprl.core import Stackable, StackablePolicy, Trace, resolve_device
from oprl.evaluate import Entry, episode_scores
from oprl.runs import LOCK, OWNER, atomic_write, folder_lock, write_json
from oprl.scoring import CellSettings, PreparedCell, eval_window, prepare_cell, score_cell
from oprl.yaml_io import load_yaml

SPEC_KEYS = {
    "scenario", "name", "fixed", "grid", "sample", "heuristics", "solvers", "checkpoints",
    "train", "episodes", "horizon", "warmup", "tune_episodes", "tune_horizon", "seeds", "chunk",
}
# keys that do not change any number: a resumed sweep may change them
_FREE_KEYS = {"chunk", "name"}
RESULTS, MANIFEST = "results.parquet", "sweep.json"
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")


@dataclass(frozen=True)
class Cell:
    """One parameter setting with one seed; ``id`` is stable across runs of the same spec."""

    index: int
    params: dict[str, Any]
    seed: int

    @property
    def id(self) -> str:
        blob = json.dumps({"params": self.params, "seed": self.seed}, sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep; ``raw`` is the spec as given (what a Ray worker receives)."""

    scenario: str
    cells: tuple[Cell, ...]
    heuristics: tuple[str, ...] | None  # None: all
    solvers: tuple[str, ...] | None  # None: all; (): none
    checkpoints: tuple[str, ...]
    train: dict[str, Any] | None
    episodes: int
    horizon: int | None
    warmup: int | None
    tune_episodes: int
    tune_horizon: int
    chunk: int
    raw: dict[str, Any] = field(repr=False)

    @property
    def fingerprint(self) -> str:
        """Hash of everything that changes a number (not ``chunk``)."""
        content = {k: v for k, v in self.raw.items() if k not in _FREE_KEYS}
        blob = json.dumps(content, sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]


# -- reading and validating a spec ---------------------------------------------------------
def load_spec(source: str | Path | dict[str, Any]) -> SweepSpec:
    """Parse and validate a sweep spec (a YAML path or a dict); every mistake is a ValueError
    raised before any work starts."""
    raw = _read(source)
    unknown = sorted(set(raw) - SPEC_KEYS)
    if unknown:
        raise ValueError(f"spec: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(SPEC_KEYS))}")
    if "scenario" not in raw:
        raise ValueError("spec.scenario: required (see `oprl list`)")
    scenario = registry.get(str(raw["scenario"]))
    allowed = scenario.parameters()
    fixed = _mapping(raw.get("fixed"), "fixed")
    grid = _mapping(raw.get("grid"), "grid")
    sample = _mapping(raw.get("sample"), "sample")
    for section, names in (("fixed", fixed), ("grid", grid),
                           ("sample.params", _mapping(sample.get("params"), "sample.params"))):
        for name in names:
            if name not in allowed:
                raise ValueError(f"spec.{section}.{name}: unknown parameter of {scenario.name}; "
                                 f"allowed: {', '.join(allowed)}")
    settings = _settings(grid, sample)
    overlap = set(fixed) & {k for s in settings for k in s}
    if overlap:
        raise ValueError(f"spec.fixed.{sorted(overlap)[0]}: also swept; set it in one place")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ValueError(f"spec.seeds: a non-empty list of integers, got {seeds!r}")
    cells = tuple(
        Cell(i, {**fixed, **setting}, int(seed))
        for i, (setting, seed) in enumerate(itertools.product(settings, seeds))
    )
    if len({c.id for c in cells}) != len(cells):
        raise ValueError("spec: two cells have the same parameters and seed (duplicate values?)")
    train = raw.get("train")
    if train is not None:
        train = _train_options(scenario, _mapping(train, "train"))
    checkpoints = tuple(str(p) for p in raw.get("checkpoints") or [])
    for path in checkpoints:
        _check_checkpoint(path, scenario.name)
    spec = SweepSpec(
        scenario=scenario.name,
        cells=cells,
        heuristics=_names(raw.get("heuristics", "all"), "heuristics", scenario.heuristic_names),
        solvers=_names(raw.get("solvers", "all"), "solvers", scenario.reference_names),
        checkpoints=checkpoints,
        train=train,
        episodes=_positive(raw.get("episodes", 64), "episodes"),
        horizon=None if raw.get("horizon") is None else _positive(raw["horizon"], "horizon"),
        warmup=None if raw.get("warmup") is None else _nonnegative(raw["warmup"], "warmup"),
        tune_episodes=_positive(raw.get("tune_episodes", 32), "tune_episodes"),
        tune_horizon=_positive(raw.get("tune_horizon", 500), "tune_horizon"),
        chunk=_positive(raw.get("chunk", 16), "chunk"),
        raw=raw,
    )
    if spec.warmup is not None and spec.horizon is not None and spec.warmup >= spec.horizon:
        raise ValueError(f"spec.warmup: must be < horizon={spec.horizon}, got {spec.warmup}")
    return spec


def _read(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    if isinstance(source, dict):
        return json.loads(json.dumps(source, default=str))  # a plain, picklable copy
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"spec: no such file {str(path)!r}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"spec: {path} is not UTF-8 text (byte {err.start})") from None
    raw = load_yaml(text, f"spec {path}")
    if not isinstance(raw, dict):
        raise ValueError(f"spec: {path} must hold a mapping of keys, got {type(raw).__name__}")
    return raw


def _mapping(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"spec.{name}: must be a mapping, got {value!r}")
    return value


def _positive(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"spec.{name}: must be a positive integer, got {value!r}")
    return value


def _nonnegative(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"spec.{name}: must be a non-negative integer, got {value!r}")
    return value


def _settings(grid: dict[str, Any], sample: dict[str, Any]) -> list[dict[str, Any]]:
    """Grid points, each combined with every random draw (if a sample is given)."""
    for name, values in grid.items():
        if not isinstance(values, list):
            raise ValueError(f"spec.grid.{name}: must be a list of values, got {values!r}")
        if not values:
            raise ValueError(f"spec.grid.{name}: empty list; the grid would have no cells")
        for i, value in enumerate(values):
            if any(_same_value(value, other) for other in values[:i]):
                raise ValueError(f"spec.grid.{name}: {value!r} is listed twice "
                                 f"({values!r}); each cell would run twice")
    points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    draws = _draws(sample) if sample else [{}]
    settings = [{**p, **d} for p in points for d in draws]
    if not grid and not sample:
        raise ValueError("spec: empty grid; give `grid` and/or `sample` parameters to sweep")
    return settings


def _same_value(a: Any, b: Any) -> bool:
    """2 and 2.0 are one setting; True and 1 are not (a flag is not a count)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - incomparable values are different settings
        return False


def _draws(sample: dict[str, Any]) -> list[dict[str, Any]]:
    unknown = sorted(set(sample) - {"n", "seed", "params"})
    if unknown:
        raise ValueError(f"spec.sample.{unknown[0]}: unknown; allowed: n, seed, params")
    n = _positive(sample.get("n"), "sample.n")
    params = _mapping(sample.get("params"), "sample.params")
    if not params:
        raise ValueError("spec.sample.params: name at least one parameter to sample")
    rng = random.Random(int(sample.get("seed", 0)))
    for name, dist in params.items():
        if not isinstance(dist, dict) or len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
            raise ValueError(f"spec.sample.params.{name}: one of {{uniform: [lo, hi]}}, "
                             f"{{loguniform: [lo, hi]}}, {{randint: [lo, hi]}}, {{choice: [...]}}")
        kind, args = next(iter(dist.items()))
        if kind == "choice" and not (isinstance(args, list) and args):
            raise ValueError(f"spec.sample.params.{name}.choice: a non-empty list")
        if kind != "choice" and not (isinstance(args, list) and len(args) == 2
                                     and all(isinstance(a, (int, float)) for a in args)
                                     and args[0] <= args[1]):
            raise ValueError(f"spec.sample.params.{name}.{kind}: [lo, hi] with lo <= hi")
        if kind == "loguniform" and args[0] <= 0:
            raise ValueError(f"spec.sample.params.{name}.loguniform: lo must be > 0")
    draws = []
    for _ in range(n):
        draw = {}
        for name, dist in params.items():
            kind, args = next(iter(dist.items()))
            if kind == "uniform":
                draw[name] = rng.uniform(*args)
            elif kind == "loguniform":
                draw[name] = math.exp(rng.uniform(math.log(args[0]), math.log(args[1])))
            elif kind == "randint":
                draw[name] = rng.randint(int(args[0]), int(args[1]))
            else:
                draw[name] = rng.choice(args)
        draws.append(draw)
    return draws


def _names(value: Any, key: str, catalog: tuple[str, ...]) -> tuple[str, ...] | None:
    if value in ("all", None):
        return None
    if value in ("none", []):
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"spec.{key}: 'all', 'none' or a list of names, got {value!r}")
    if catalog:
        unknown = [v for v in value if v not in catalog]
        if unknown:
            raise ValueError(f"spec.{key}: unknown {unknown[0]!r}; known: {', '.join(catalog)}")
    return tuple(value)


def _train_options(scenario: registry.Scenario, train: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(train) - {"algo", "policy", "steps", "hyper"})
    if unknown:
        raise ValueError(f"spec.train.{unknown[0]}: unknown; allowed: algo, policy, steps, hyper")
    algo = str(train.get("algo", scenario.algorithm))
    policy = str(train.get("policy", scenario.policy))
    scenario.trainer(algo)  # unknown names are a ValueError here
    scenario.policy_builder(policy)
    steps = _positive(train.get("steps", 100), "train.steps")
    hyper = _mapping(train.get("hyper"), "train.hyper")
    try:  # checked against the trainer's settings before anything is written
        parse_settings(settings_class(scenario.trainer(algo)),
                       {**scenario.hyper(algo), **hyper, "steps": steps}, owner=algo)
    except ValueError as err:
        raise ValueError(f"spec.train.hyper: {err}") from None
    return {"algo": algo, "policy": policy, "steps": steps, "hyper": hyper}


def _check_checkpoint(path: str, scenario: str) -> None:
    from oprl.runs import RunDir

    run = RunDir(path)
    if not run.exists():
        raise ValueError(f"spec.checkpoints: {path!r} is not a run folder (no config.json)")
    trained_on = run.config()["scenario"]
    if trained_on != scenario:
        raise ValueError(f"spec.checkpoints: {path!r} was trained on {trained_on!r}, not {scenario!r}")


# -- grouping cells into batched rollouts ------------------------------------------------------
def groups(spec: SweepSpec) -> list[list[int]]:
    """Cell indices whose simulators can share one batch (all cells alone when the scenario
    cannot stack). Depends only on the spec, so resumed and chunked runs group alike."""
    scenario = registry.get(spec.scenario)
    sims = [scenario.build(**cell.params) for cell in spec.cells]  # bad values fail here
    if not sims or not isinstance(sims[0], Stackable):
        return [[c.index] for c in spec.cells]
    stack = type(sims[0]).stack
    out: list[list[int]] = []
    for cell, sim in zip(spec.cells, sims):
        for group in out:
            try:
                stack([sims[group[0]], sim], 1)
            except ValueError:
                continue
            group.append(cell.index)
            break
        else:
            out.append([cell.index])
    return out


def chunks(spec: SweepSpec, done: set[str],
           grouped: list[list[int]] | None = None) -> list[tuple[list[int], list[int]]]:
    """(group, cells to run) pairs: at most ``spec.chunk`` unfinished cells of one group."""
    out = []
    for group in groups(spec) if grouped is None else grouped:
        todo = [i for i in group if spec.cells[i].id not in done]
        out += [(group, todo[k:k + spec.chunk]) for k in range(0, len(todo), spec.chunk)]
    return out


class StackedPolicy(nn.Module):
    """Policy ``k`` acts on the ``k``-th block of ``episodes`` rows of every observation."""

    def __init__(self, policies: Sequence[Callable], episodes: int) -> None:
        super().__init__()
        self.policies = list(policies)
        self.episodes = episodes

    def forward(self, obs: dict[str, Tensor]) -> Tensor:
        e = self.episodes
        return torch.cat([
            policy({k: v[i * e:(i + 1) * e] for k, v in obs.items()})
            for i, policy in enumerate(self.policies)
        ])


def stack_policies(policies: Sequence[Callable], episodes: int) -> Callable:
    """One policy for the stacked batch: the policies' own ``stacked`` (per-sample
    parameters, one call per step) when they have it, else `StackedPolicy` (a call per block)."""
    kind = type(policies[0])
    if all(type(p) is kind for p in policies) and issubclass(kind, StackablePolicy):
        try:
            return kind.stacked(list(policies), episodes)
        except ValueError:
            pass
    return StackedPolicy(policies, episodes)


# -- running one chunk (in-process or on a Ray worker) -----------------------------------------
def run_chunk(raw: dict[str, Any], group: list[int], todo: list[int], device: str = "cpu",
              out: str | None = None) -> list[dict[str, Any]]:
    """Result rows of the cells ``todo`` (all of one stackable ``group``); a pure function of
    its arguments, so a Ray worker and the local process compute the same numbers."""
    from oprl.api import load_policy, train

    spec = load_spec(raw)
    scenario = registry.get(spec.scenario)
    dev = resolve_device(device)
    sims = [scenario.build(**spec.cells[i].params) for i in group]
    if isinstance(sims[0], Stackable):
        sims = type(sims[0]).align(sims)
    sim_of = dict(zip(group, sims))
    loaded = [load_policy(path, spec.scenario) for path in spec.checkpoints]
    prepared: list[tuple[Cell, PreparedCell]] = []
    for i in todo:
        cell, sim = spec.cells[i], sim_of[i]
        eval_window(sim, spec.horizon, spec.warmup)  # a bad window is refused before training
        learned: list[Entry] = []
        for path, (net, checkpoint) in zip(spec.checkpoints, loaded):
            cfg = checkpoint["config"]
            learned.append(Entry(f"{cfg['algo']}-{cfg['policy']} ({Path(path).name})",
                                 net.to(dev), "learned", "checkpoint", checkpoint["wall_s"]))
        if spec.train is not None:
            learned.append(_train_cell(train, spec, cell, out, device))
        settings = CellSettings(seed=cell.seed, eval_episodes=spec.episodes,
                                tune_episodes=spec.tune_episodes, tune_horizon=spec.tune_horizon,
                                horizon=spec.horizon, warmup=spec.warmup,
                                heuristics=spec.heuristics, solvers=spec.solvers)
        prepared.append((cell, prepare_cell(scenario, sim, learned, settings, dev)))
    cells = [p for _, p in prepared]
    precomputed = _batched_scores(scenario, cells) if len(cells) > 1 else [{}] * len(cells)
    rows: list[dict[str, Any]] = []
    for (cell, ready), pre in zip(prepared, precomputed):
        for record in score_cell(ready, pre).to_dict("records"):
            rows.append({"cell_id": cell.id, "cell_index": cell.index, "seed": cell.seed,
                         "params": json.dumps(cell.params, sort_keys=True, default=str),
                         **{f"param.{k}": v for k, v in cell.params.items() if _scalar(v)},
                         **record})
    return rows


def _train_cell(train: Callable, spec: SweepSpec, cell: Cell, out: str | None,
                device: str) -> Entry:
    """Train (or finish training) this cell's policy in ``out/runs/<cell id>``."""
    if out is None:
        raise ValueError("train: a sweep that trains per cell needs an output folder")
    options = spec.train
    run_dir = Path(out) / "runs" / cell.id
    outcome = train(spec.scenario, cell.params, algo=options["algo"], policy=options["policy"],
                    steps=options["steps"], device=device, out=run_dir,
                    resume=(run_dir / "config.json").exists(), seed=cell.seed, **options["hyper"])
    return Entry(f"{options['algo']}-{options['policy']}", outcome.policy, "learned",
                 f"trained {outcome.steps_done} steps, best at {outcome.best_step}",
                 outcome.wall_s)


def _batched_scores(scenario: registry.Scenario, cells: list[PreparedCell]) -> list[dict]:
    """Per-cell scores of every heuristic and solver policy present in all cells of the chunk,
    from one rollout of the stacked simulator per policy."""
    out: list[dict] = [{} for _ in cells]
    if not isinstance(cells[0].sim, Stackable):
        return out
    traces = [c.trace for c in cells]
    episodes, warmups = traces[0].batch, {c.warmup for c in cells}
    if len(warmups) != 1 or any(t.horizon != traces[0].horizon for t in traces):
        return out
    stacked = type(cells[0].sim).stack([c.sim for c in cells], episodes)
    big = Trace({k: torch.cat([t[k] for t in traces]) for k in traces[0].data}, traces[0].seed)
    per_cell = [c.policies() for c in cells]
    shared = [n for n in per_cell[0] if all(n in p for p in per_cell[1:])]
    for name in shared:
        policy = stack_policies([p[name] for p in per_cell], episodes)
        values, extras = episode_scores(stacked, policy, big, cells[0].warmup)
        for k in range(len(cells)):
            part = slice(k * episodes, (k + 1) * episodes)
            out[k][name] = (values[part], {m: v[part] for m, v in extras.items()})
    return out


def _scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool))


# -- results folder ----------------------------------------------------------------------------
class ResultsStore:
    """``sweep.json`` (which spec) and ``results.parquet`` (rows of finished cells)."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)

    def open(self, spec: SweepSpec) -> pd.DataFrame:
        """Claim the folder for ``spec`` and return the rows already there; a folder holding
        another spec's results or other files is refused, never overwritten."""
        manifest = self.out / MANIFEST
        if manifest.exists():
            saved = json.loads(manifest.read_text())
            if saved.get("fingerprint") != spec.fingerprint:
                raise ValueError(
                    f"out: {self.out} holds results of another sweep spec (scenario "
                    f"{saved.get('scenario')!r}, {saved.get('cells')} cells); use another --out")
        elif self.out.exists() and any(p.name not in (LOCK, OWNER) for p in self.out.iterdir()):
            raise ValueError(f"out: {self.out} is not empty and is not a sweep folder; "
                             "use another --out")
        else:
            write_json(manifest, {"fingerprint": spec.fingerprint, "scenario": spec.scenario,
                                  "cells": len(spec.cells), "spec": spec.raw})
        return self.load()

    def load(self) -> pd.DataFrame:
        """The finished cells' rows; a cell recorded twice (by an older oprl without the folder
        lock) counts once: its first record is kept."""
        path = self.out / RESULTS
        return first_record_per_cell(read_results(path)) if path.exists() else pd.DataFrame()

    def append(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        """Add the rows of cells not recorded yet and rewrite the file atomically: a kill
        leaves the old or the new file, and no cell is ever recorded twice."""
        old = self.load()
        new = pd.DataFrame(rows)
        if len(old) and len(new):
            new = new[~new["cell_id"].isin(set(old["cell_id"]))]
        frame = pd.concat([old, new], ignore_index=True) if len(old) else new
        atomic_write(self.out / RESULTS, lambda p: frame.to_parquet(p, index=False))
        return frame


def read_results(path: str | Path) -> pd.DataFrame:
    """A results file read in one go: its bytes first, then parsed. A running sweep replaces the
    file atomically, but a reader that opens the path twice (pyarrow's metadata, then its pages)
    could mix the old file and the new one."""
    return pd.read_parquet(io.BytesIO(Path(path).read_bytes()))


def first_record_per_cell(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of each cell's first recorded chunk (duplicated rows of a cell are dropped)."""
    if not len(frame) or "cell_id" not in frame:
        return frame
    key = [c for c in ("cell_id", "policy", "metric") if c in frame]
    return frame[~frame.duplicated(subset=key, keep="first")].reset_index(drop=True)


# -- backends ----------------------------------------------------------------------------------
def run_sweep(
    spec: SweepSpec | str | Path | dict[str, Any],
    out: str | Path,
    *,
    backend: str = "local",
    address: str | None = None,
    device: str = "cpu",
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Run (or resume) a sweep into ``out``; returns all its result rows."""
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    if backend not in ("local", "ray"):
        raise ValueError(f"backend: {backend!r}; allowed: local, ray")
    resolve_device(device)
    if address is not None and backend != "ray":
        raise ValueError("address: a Ray address needs --backend ray")
    ray = _connect_ray(address) if backend == "ray" else None
    with folder_lock(out):
        return _run_locked(spec, out, ray, backend, device, progress, log)


def _run_locked(spec: SweepSpec, out: str | Path, ray, backend: str, device: str,
                progress: bool, log: Callable[[str], None]) -> pd.DataFrame:
    grouped = groups(spec)  # builds every cell's simulator: bad values fail before any write
    store = ResultsStore(out)
    frame = store.open(spec)
    done = set(frame["cell_id"]) if len(frame) else set()
    todo = chunks(spec, done, grouped)
    remaining = sum(len(t) for _, t in todo)
    log(f"[oprl] sweep {spec.scenario}: {len(spec.cells)} cells, {len(done)} done, "
        f"{remaining} to run in {len(todo)} chunks ({backend})")
    bar = _bar(len(spec.cells), len(done), progress)
    if ray is None:
        for group, cells in todo:
            frame = store.append(run_chunk(spec.raw, group, cells, device, str(out)))
            _advance(bar, len(cells))
    else:
        task = ray.remote(num_cpus=1)(_ray_chunk)
        pending = {task.remote(spec.raw, g, c, device, str(Path(out).resolve())): len(c)
                   for g, c in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            frame = store.append(ray.get(ready[0]))
            _advance(bar, pending.pop(ready[0]))
    if bar is not None:
        bar.close()
    return frame


def _ray_chunk(raw, group, todo, device, out):
    torch.set_num_threads(1)  # one core per task, as Ray scheduled it
    return run_chunk(raw, group, todo, device, out)


def _connect_ray(address: str | None):
    """Import and start Ray (a local instance when ``address`` is None); an unreachable
    cluster is a ValueError before any work."""
    try:
        import ray
    except ImportError:
        raise ValueError("backend ray: the 'ray' package is not installed; "
                         "pip install 'oprl[ray]'") from None
    if address is not None:
        grpc_handshake(address)
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": False}
        ray.init(address=address, **kwargs)
    return ray


# an HTTP/2 client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS and its
# client server both are) answers with its own SETTINGS frame
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def grpc_handshake(address: str, timeout: float = 5.0) -> None:
    """ValueError unless ``address`` answers the HTTP/2 handshake every gRPC server (a Ray
    cluster's GCS or client port) answers, within ``timeout`` seconds in all: a port that is
    closed, silent or speaks another protocol is refused instead of retried forever."""
    host, port = _host_port(address)
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.sendall(_H2_PREFACE)
            reply = b""
            while len(reply) < 9:
                conn.settimeout(max(deadline - time.monotonic(), 0.01))
                chunk = conn.recv(9 - len(reply))
                if not chunk:
                    break
                reply += chunk
    except TimeoutError:
        raise ValueError(f"address: {address!r} did not answer a Ray (gRPC) handshake within "
                         f"{timeout:.0f} s; is it the Ray head's GCS port (6379) or client port "
                         "(10001)?") from None
    except OSError as err:
        raise ValueError(f"address: cannot reach a Ray cluster at {address!r} ({err})") from None
    if len(reply) < 9 or reply[3] != 4:  # frame type 4: SETTINGS
        raise ValueError(f"address: {address!r} is not a Ray cluster (it does not speak gRPC); "
                         "use the Ray head's GCS port (6379) or client port (10001)")


def _host_port(address: str) -> tuple[str, int]:
    rest = address.split("://", 1)[-1]
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"address: expected HOST:PORT or ray://HOST:PORT, got {address!r}")
    return host, int(port)


def _bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="cells", unit="cell")


def _advance(bar, n: int) -> None:
    if bar is not None:
        bar.update(n)
