"""Policy throughput: store-periods per second of inventory rollouts without gradients and of
HDPO training steps (rollout with autograd, backward, clipping, Adam), for the MLP and the GNN
policy at 1, 5 and 50 stores, next to the simulator alone under a base-stock policy and a
per-scenario pure-Python loop of the same dynamics.

    python benchmarks/policy_throughput.py [--stores 1 5 50] [--repeats 5] [--threads 1]
        [--device cpu|cuda|all] [--baseline /path/to/other/checkout] [--csv out.csv]

1 store is `one_store_lost`, 5 and 50 stores `one_warehouse` (lost sales). Rollouts use batch
1,024 x 100 periods (50 stores: 256 x 50), training steps the scenarios' HDPO batch (256 for
one store, 64 for networks) x 100 periods; traces are sampled outside the timed region.

Each code base (this checkout and, with ``--baseline``, another one, e.g. a `git worktree` of
an older commit) runs in its own worker process that imports that checkout's ``oprl``; the
workers are timed in alternation, ``--repeats`` times per case, so a shared machine's drifting
load hits both alike. Rates are medians of the repeats; ratios are medians of the paired
(same-repeat) ratios. Policies are untrained (fixed seed): throughput does not depend on the
weights.
"""

from __future__ import annotations

import argparse
import csv
import importlib.abc
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("simulators", "solvers", "policies")  # installed as oprl.<name>
ROLLOUT = {1: (1024, 100), 5: (1024, 100), 50: (256, 50)}  # stores -> (batch, periods)
TRAIN = {1: (256, 100), 5: (64, 100), 50: (64, 100)}
RUNNERS = {"rollout": ("mlp", "gnn", "base-stock", "python loop"), "train": ("mlp", "gnn")}


# -- worker side: one checkout's oprl, one case at a time --------------------------------------
class _CheckoutFinder(importlib.abc.MetaPathFinder):
    """Import ``oprl`` and ``oprl.{simulators,solvers,policies}`` from one checkout, ahead of
    whatever editable install the interpreter has (it maps those names to its own folders)."""

    def __init__(self, root: Path) -> None:
        self.paths = {"oprl": root / "oprl", **{f"oprl.{n}": root / n for n in SUBPACKAGES}}

    def find_spec(self, fullname, path=None, target=None):
        folder = self.paths.get(fullname)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(
            fullname, folder / "__init__.py", submodule_search_locations=[str(folder)])


def python_loop_episode(sim, levels: list[float], demand: list[list[float]]) -> float:
    """One lost-sales episode in plain Python, one scenario at a time: the loop that a batched
    simulator replaces. Edge e feeds location e (one store, or one warehouse and its stores);
    ``levels`` are base-stock levels on each location's inventory position. Total cost."""
    p = sim.params
    n = sim.network.n_nodes
    src = [s for s, _ in sim.network.edges]
    stores = sim.network.stores
    lead = [int(x) for x in p.lead_time]
    hold = [float(x) for x in p.holding]
    pen = [float(x) for x in p.penalty]
    onhand = [0.0] * n
    pipes = [[0.0] * max(lead[e], 1) for e in range(n)]
    total = 0.0
    for d in demand:
        orders = [max(levels[i] - onhand[i] - sum(pipes[i]), 0.0) for i in range(n)]
        wanted = sum(o for o, s in zip(orders, src) if s >= 0)
        ratio = min(1.0, max(onhand[0], 0.0) / wanted) if wanted > 0 else 1.0
        ship = [o if s < 0 else o * ratio for o, s in zip(orders, src)]
        if n > 1:
            onhand[0] -= sum(ship[1:])
        for e in range(n):
            if lead[e] == 0:
                onhand[e] += ship[e]
            else:
                pipes[e][lead[e] - 1] += ship[e]
        cost = 0.0
        for k, s in enumerate(stores):
            sales = min(max(onhand[s], 0.0), d[k])
            cost += pen[k] * (d[k] - sales)
            onhand[s] -= sales
        cost += sum(hold[i] * max(onhand[i], 0.0) for i in range(n))
        for e in range(n):
            onhand[e] += pipes[e][0]
            pipes[e] = pipes[e][1:] + [0.0]
        total += cost
    return total


class Worker:
    """Builds each case once (simulator, policy, trace) and times one run of it per request."""

    def __init__(self, device: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.cases: dict[str, tuple] = {}

    def _sim(self, stores: int):
        from oprl.simulators.inventory import one_store_lost, one_warehouse

        return one_store_lost() if stores == 1 else one_warehouse(n_stores=stores)

    def _policy(self, sim, runner: str):
        torch = self.torch
        torch.manual_seed(0)
        if runner == "mlp":
            from oprl.policies.inventory_mlp import InventoryMLP

            return InventoryMLP(sim).to(self.device)
        if runner == "gnn":
            from oprl.policies.inventory_gnn import InventoryGNN

            return InventoryGNN(sim, hidden=32, layers=2).to(self.device)
        from oprl.policies.inventory_heuristics import newsvendor_levels
        from oprl.simulators.inventory_rules import BaseStock

        return BaseStock(sim, newsvendor_levels(sim)).to(self.device)

    def _build(self, stores: int, mode: str, runner: str) -> tuple:
        sim = self._sim(stores)
        batch, periods = (ROLLOUT if mode == "rollout" else TRAIN)[stores]
        if runner == "python loop":
            episodes = 16 if stores < 50 else 4
            trace = sim.sample_trace(episodes, periods, seed=1)
            demand = [[list(map(float, row)) for row in ep] for ep in trace["demand"]]
            from oprl.policies.inventory_heuristics import newsvendor_levels

            levels = [float(x) for x in newsvendor_levels(sim)]
            self._check_loop(sim, levels, trace, demand)
            return sim, levels, demand, episodes * periods * stores
        policy = self._policy(sim, runner)
        trace = sim.sample_trace(batch, periods, seed=1, device=self.device)
        optimizer = self.torch.optim.Adam(policy.parameters(), lr=1e-3) if mode == "train" else None
        return sim, policy, trace, optimizer, batch * periods * stores

    def _check_loop(self, sim, levels, trace, demand) -> None:
        """The Python loop must cost what the batched simulator costs under the same rule."""
        torch = self.torch
        from oprl.core import rollout
        from oprl.simulators.inventory_rules import BaseStock

        with torch.no_grad():
            batched = -rollout(sim, BaseStock(sim, torch.tensor(levels)), trace).rewards.sum(1)
        looped = torch.tensor([python_loop_episode(sim, levels, d) for d in demand])
        if not torch.allclose(batched.double(), looped.double(), rtol=1e-4):
            raise RuntimeError(f"python loop disagrees with the simulator: {looped} vs {batched}")

    def run(self, stores: int, mode: str, runner: str) -> float:
        """Store-periods per second of one timed run (the case is built and warmed up once)."""
        key = f"{stores}/{mode}/{runner}"
        if key not in self.cases:
            self.cases[key] = self._build(stores, mode, runner)
            self._once(mode, runner, self.cases[key])
        case = self.cases[key]
        cuda = self.device.type == "cuda"
        if cuda:
            self.torch.cuda.synchronize()
        start = time.perf_counter()
        self._once(mode, runner, case)
        if cuda:
            self.torch.cuda.synchronize()
        return case[-1] / (time.perf_counter() - start)

    def _once(self, mode: str, runner: str, case: tuple) -> None:
        torch = self.torch
        from oprl.core import rollout

        if runner == "python loop":
            sim, levels, demand, _ = case
            for episode in demand:
                python_loop_episode(sim, levels, episode)
            return
        sim, policy, trace, optimizer, _ = case
        if mode == "rollout":
            policy.eval()
            with torch.no_grad():
                rollout(sim, policy, trace)
            return
        from oprl.algorithms.hdpo import episode_cost

        policy.train()
        loss = episode_cost(sim, rollout(sim, policy, trace).rewards, sim.params.warmup).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()


def worker_main(code: Path, threads: int, device: str) -> None:
    sys.meta_path.insert(0, _CheckoutFinder(code))
    import torch

    torch.set_num_threads(threads)
    import oprl
    import oprl.policies

    worker = Worker(device)
    print(json.dumps({"oprl": oprl.__file__, "policies": oprl.policies.__file__,
                      "torch": torch.__version__}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        try:
            print(json.dumps({"rate": worker.run(req["stores"], req["mode"], req["runner"])}),
                  flush=True)
        except Exception as err:  # reported, not fatal: one case may not exist in old code
            print(json.dumps({"error": f"{type(err).__name__}: {err}"}), flush=True)


# -- driver side --------------------------------------------------------------------------------
class Client:
    """A worker process for one checkout."""

    def __init__(self, name: str, code: Path, threads: int, device: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", "--code", str(code), "--threads", str(threads),
             "--device", device], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        hello = json.loads(self.proc.stdout.readline())
        if not hello["oprl"].startswith(str(code)) or not hello["policies"].startswith(str(code)):
            raise RuntimeError(f"{name}: imported {hello} instead of {code}")
        print(f"# {name}: oprl from {Path(hello['oprl']).parents[1]}, torch {hello['torch']}")

    def rate(self, stores: int, mode: str, runner: str) -> float:
        self.proc.stdin.write(json.dumps({"stores": stores, "mode": mode, "runner": runner}) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        if "error" in reply:
            print(f"# {self.name} {stores}/{mode}/{runner}: {reply['error']}")
            return float("nan")
        return reply["rate"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def measure(clients: list[Client], stores: int, mode: str, repeats: int) -> list[dict]:
    """Every runner of one (stores, mode) case in every checkout, ``repeats`` alternating rounds."""
    runners = RUNNERS[mode]
    rates: dict[tuple[str, str], list[float]] = {}
    for r in range(repeats):
        order = clients if r % 2 == 0 else clients[::-1]
        for runner in runners:
            for client in order:
                if runner == "python loop" and client is not clients[0]:
                    continue  # the loop does not use oprl's simulator: one measurement suffices
                rates.setdefault((client.name, runner), []).append(client.rate(stores, mode, runner))
    rows = []
    for (name, runner), values in rates.items():
        row = {"stores": stores, "mode": mode, "code": name, "runner": runner,
               "rate": statistics.median(values)}
        mine = rates.get((clients[0].name, runner))
        if name != clients[0].name and mine:
            row["this/baseline"] = statistics.median(a / b for a, b in zip(mine, values))
        mlp = rates.get((name, "mlp"))
        if runner != "mlp" and mlp:
            row["vs mlp"] = statistics.median(a / b for a, b in zip(values, mlp))
        rows.append(row)
    return rows


def print_table(rows: list[dict], device: str, threads: int) -> None:
    print(f"\n## store-periods per second, {device}, {threads} thread(s); medians of repeats")
    print(f"{'stores':>6} {'mode':<8} {'code':<9} {'runner':<12} {'rate':>10} {'vs mlp':>8} "
          f"{'this/baseline':>14}")
    for r in rows:
        vs = f"{r['vs mlp']:.2f}x" if "vs mlp" in r else ""
        ratio = f"{r['this/baseline']:.2f}x" if "this/baseline" in r else ""
        print(f"{r['stores']:>6} {r['mode']:<8} {r['code']:<9} {r['runner']:<12} "
              f"{r['rate']:>10.3g} {vs:>8} {ratio:>14}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stores", type=int, nargs="+", default=[1, 5, 50], choices=sorted(ROLLOUT))
    ap.add_argument("--modes", nargs="+", default=["rollout", "train"], choices=sorted(RUNNERS))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "all"])
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another checkout of oprl (e.g. a git worktree of an older commit)")
    ap.add_argument("--csv", type=Path, default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--code", type=Path, default=REPO, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker_main(args.code.resolve(), args.threads, args.device)
        return
    if args.repeats < 1 or args.threads < 1:
        ap.error("--repeats and --threads must be >= 1")
    import torch

    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            ap.error("--device cuda: no CUDA device is available")
        devices = ["cpu"]
    all_rows = []
    for device in devices:
        clients = [Client("this", REPO, args.threads, device)]
        if args.baseline is not None:
            clients.append(Client("baseline", args.baseline.resolve(), args.threads, device))
        try:
            rows = [row for stores in args.stores for mode in args.modes
                    for row in measure(clients, stores, mode, args.repeats)]
        finally:
            for client in clients:
                client.close()
        for row in rows:
            row["device"], row["threads"] = device, args.threads
        print_table(rows, device, args.threads)
        all_rows += rows
    if args.csv is not None:
        fields = ["device", "threads", "stores", "mode", "code", "runner", "rate", "vs mlp",
                  "this/baseline"]
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(all_rows)
        print(f"\nwrote {args.csv}")


if __name__ == "__main__":
    main()
