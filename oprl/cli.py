"""The ``oprl`` command. Bad input is one line on stderr and exit code 2 (`--debug`: the
traceback too); output paths are checked before any work, so a mistake costs no training."""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Any

from oprl.yaml_io import load_yaml


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """``["lead_time=4", "holding=[1, 2]"]`` -> ``{"lead_time": 4, "holding": [1, 2]}``."""
    params: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set: expected KEY=VALUE, got {pair!r}")
        try:
            params[key.strip()] = load_yaml(raw, key.strip()) if raw.strip() else None
        except ValueError:  # not YAML: the string as typed (the parameter checks it)
            params[key.strip()] = raw
    return params


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="oprl", description=__doc__)
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list scenarios and their parameters")

    def common(q):
        q.add_argument("scenario")
        q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="scenario parameter (repeatable)")
        q.add_argument("--device", default="cpu", help="cpu, cuda or auto")
        q.add_argument("--seed", type=int, default=0)

    t = sub.add_parser("train", help="train a policy into a run folder")
    common(t)
    t.add_argument("--algo")
    t.add_argument("--policy", help="one of the scenario's policies (default: its own)")
    t.add_argument("--steps", type=int)
    t.add_argument("--out")
    t.add_argument("--resume", action="store_true")
    t.add_argument("--hyper", action="append", default=[], metavar="KEY=VALUE",
                   help="training setting, e.g. batch_size=128 (repeatable)")

    e = sub.add_parser("evaluate", help="score a run's policy against heuristics and solvers")
    e.add_argument("run_dir")
    e.add_argument("--device", default="cpu")
    e.add_argument("--episodes", type=int)
    e.add_argument("--csv")

    s = sub.add_parser("solve", help="run the scenario's reference solvers")
    common(s)
    s.add_argument("--episodes", type=int, default=16)

    b = sub.add_parser("bench", help="learned policy vs heuristics vs solvers on the same traces")
    common(b)
    b.add_argument("--train-steps", type=int)
    b.add_argument("--policy", help="one of the scenario's policies (default: its own)")
    b.add_argument("--algo", action="append", dest="algos", metavar="ALGO",
                   help="train with this algorithm (repeatable; default: the scenario's)")
    b.add_argument("--run", help="load the learned policy from this run folder")
    b.add_argument("--hyper", action="append", default=[], metavar="KEY=VALUE",
                   help="training setting, e.g. batch_size=128 (repeatable)")
    b.add_argument("--episodes", type=int, help="evaluation episodes (default: the scenario's)")
    b.add_argument("--horizon", type=int)
    b.add_argument("--csv")
    b.add_argument("--plot", help="write a PNG of each policy's cost against the reference")

    d = sub.add_parser("recommend", help="the next period's orders of a run's policy for a state")
    d.add_argument("run_dir")
    d.add_argument("--state", required=True, help="current state, JSON or CSV (docs/deploy.md)")
    d.add_argument("--out", help="also write the orders to this CSV file")

    x = sub.add_parser("export", help="write a run's policy with torch.export (runs with torch alone)")
    x.add_argument("run_dir")
    x.add_argument("--out", required=True, help="the .pt2 file to write")

    w = sub.add_parser("sweep", help="batch scenario analysis over a grid of parameters")
    w.add_argument("spec", help="sweep spec (YAML); see examples/sweeps/")
    w.add_argument("--backend", choices=["local", "ray"], default="local")
    w.add_argument("--address", help="Ray cluster address HOST:PORT (default: a local Ray)")
    w.add_argument("--device", default="cpu")
    w.add_argument("--out", help="results folder (default: sweeps/<spec file name>)")

    n = sub.add_parser("network", help="write a built-in inventory scenario as a network file")
    n.add_argument("scenario", help="e.g. inventory/one_warehouse")
    n.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="scenario parameter (repeatable)")
    n.add_argument("--out", help="file to write (default: standard output)")

    r = sub.add_parser("report", help="summary tables and plots of a sweep folder")
    r.add_argument("out")
    r.add_argument("--x", help="parameter across the heatmaps and curves")
    r.add_argument("--y", help="parameter down the heatmaps")
    r.add_argument("--metric", help="metric to summarise (default: the scenario's)")
    return p


def _list() -> None:
    from oprl.registry import SCENARIOS

    for name, spec in sorted(SCENARIOS.items()):
        print(f"{name:32s} {spec.description}")
        params = ", ".join(f"{k}={v!r}" for k, v in spec.parameters().items())
        print(f"{'':32s} params: {params}")


def _network(args: argparse.Namespace) -> None:
    """`oprl network SCENARIO`: the scenario as a network file (YAML), built before anything
    is written, so a bad scenario or parameter writes nothing."""
    import yaml

    from oprl.registry import get
    from oprl.simulators.inventory import InventorySimulator
    from oprl.simulators.inventory_network import spec_from_simulator
    from oprl.simulators.network_file import to_dict

    sim = get(args.scenario).build(**parse_sets(args.set))
    if not isinstance(sim, InventorySimulator):
        raise ValueError(f"scenario: {args.scenario!r} is not an inventory scenario")
    text = yaml.safe_dump(to_dict(spec_from_simulator(sim)), sort_keys=False,
                          default_flow_style=None, width=100)
    if args.out:
        from pathlib import Path

        Path(args.out).write_text(text)
    else:
        print(text, end="")


def _check_options(args: argparse.Namespace) -> None:
    """Combinations that would silently do something else, and unwritable outputs."""
    from oprl.runs import check_writable

    if getattr(args, "run", None) and (args.set or args.hyper or args.algos or args.policy
                                       or args.train_steps is not None):
        raise ValueError("--run: the run folder fixes the scenario's parameters and policy; "
                         "drop --set/--hyper/--algo/--policy/--train-steps (or drop --run)")
    if getattr(args, "address", None) and args.backend != "ray":
        raise ValueError("--address: a Ray cluster address needs --backend ray")
    for option in ("csv", "plot", "out"):
        if option == "out" and args.command != "network":
            continue
        if getattr(args, option, None):
            check_writable(args.__dict__[option], f"--{option}")
    for option in ("episodes", "horizon", "steps", "train_steps"):
        value = getattr(args, option, None)
        if value is not None and value < 1:
            raise ValueError(f"--{option.replace('_', '-')}: must be >= 1, got {value}")


def run(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _check_options(args)
    if args.command == "list":
        _list()
        return 0
    if args.command == "sweep":
        from pathlib import Path

        from oprl.sweep import run_sweep

        out = args.out or str(Path("sweeps") / Path(args.spec).stem)
        frame = run_sweep(args.spec, out, backend=args.backend, address=args.address,
                          device=args.device, progress=True,
                          log=lambda m: print(m, file=sys.stderr))
        print(f"{frame['cell_id'].nunique() if len(frame) else 0} cells in {out}; "
              f"summarise with: oprl report {out}")
        return 0
    if args.command == "network":
        _network(args)
        return 0
    if args.command == "report":
        from oprl.report import report

        print(report(args.out, x=args.x, y=args.y, metric=args.metric))
        return 0
    from oprl import api
    from oprl.evaluate import format_table

    if args.command == "train":
        hyper = parse_sets(args.hyper)
        steps = hyper.pop("steps", None) if args.steps is None else args.steps
        hyper.pop("steps", None)  # --steps wins over --hyper steps=...
        outcome = api.train(args.scenario, parse_sets(args.set), algo=args.algo,
                            policy=args.policy, steps=steps, device=args.device,
                            out=args.out, resume=args.resume, seed=args.seed, progress=True,
                            **hyper)
        last = outcome.history[-1]
        key = api.dev_key(outcome.history)
        print(f"run: {outcome.run_dir}  steps: {outcome.steps_done}  best {key.replace('_', ' ')} "
              f"{api.best_dev(outcome.history):.4f} at step {outcome.best_step}  "
              f"({last['wall_s']:.0f} s)")
        from oprl.plots import learning_curve

        learning_curve(outcome.history, outcome.run_dir / "learning_curve.png")
    elif args.command == "evaluate":
        from oprl.runs import RunDir

        config = RunDir(args.run_dir).config()
        frame = api.benchmark(config["scenario"], run=args.run_dir, device=args.device,
                              eval_episodes=args.episodes, csv=args.csv,
                              log=lambda m: print(m, file=sys.stderr))
        print(format_table(frame))
    elif args.command == "recommend":
        import pandas as pd

        from oprl.deploy import load_policy, read_state
        from oprl.runs import check_writable, write_csv

        orders = load_policy(args.run_dir).act(read_state(args.state))
        frame = pd.DataFrame({"link": list(orders), "order": list(orders.values())})
        print(frame.to_string(index=False))
        if args.out:
            write_csv(check_writable(args.out, "--out"), frame)
    elif args.command == "export":
        from oprl.export import export_policy
        from oprl.runs import check_writable

        print(export_policy(args.run_dir, check_writable(args.out, "--out")))
    elif args.command == "solve":
        results = api.solve(args.scenario, parse_sets(args.set), episodes=args.episodes,
                            device=args.device, seed=args.seed + api.EVAL_SEED)
        for r in results:
            print(f"{r.name:32s} {r.kind:12s} {r.objective:12.4f}  status: {r.status}  "
                  f"({r.wall_s:.2f} s)")
    elif args.command == "bench":
        frame = api.benchmark(args.scenario, parse_sets(args.set), train_steps=args.train_steps,
                              run=args.run, policy=args.policy, algos=args.algos,
                              device=args.device,
                              eval_episodes=args.episodes, eval_horizon=args.horizon,
                              seed=args.seed, csv=args.csv, progress=True,
                              train_hyper=parse_sets(args.hyper),
                              log=lambda m: print(m, file=sys.stderr))
        print(format_table(frame))
        if args.plot:
            from oprl.plots import benchmark_bars

            benchmark_bars(frame, args.plot)
    return 0


# expected failures: bad values and files, full disks, missing devices, memory, networks
EXPECTED = (ValueError, OSError, RuntimeError, MemoryError, KeyError, TypeError)


def describe(err: BaseException) -> str:
    """One line naming the field, file or option at fault."""
    if isinstance(err, OSError) and err.filename:
        return f"{err.filename}: {err.strerror or err}"
    if isinstance(err, MemoryError):
        return "out of memory: reduce the batch, the number of episodes or the problem size"
    if isinstance(err, KeyError):
        return f"missing entry {err.args[0]!r} (a file of another version or kind?)"
    text = " ".join(str(err).split()) or type(err).__name__
    return text if isinstance(err, ValueError) else f"{type(err).__name__}: {text}"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        code = run(argv)
    except KeyboardInterrupt:
        print("oprl: interrupted (a run or sweep resumes with the same command and --resume)",
              file=sys.stderr)
        code = 130
    except EXPECTED as err:
        if "--debug" in argv:
            traceback.print_exc()
        print(f"oprl: error: {describe(err)}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
