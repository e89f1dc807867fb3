"""Mutation testing: break the code on purpose and check that a test notices.

Each mutation is (file, exact old text, new text, tests to run). The script copies the
repository to a temporary folder, applies one mutation there (never to your checkout), runs
the named tests against the copy and prints "killed" (a test failed, good) or "survived" (no
test noticed: a hole in the tests). An old text that is not found exactly once is an error:
the code moved, so the pattern must be updated, never silently skipped.

    python benchmarks/mutations.py                    # the learner mutations below
    python benchmarks/mutations.py --only ospo        # those whose name contains "ospo"
    python benchmarks/mutations.py --operators oprl/evaluate.py --tests tests/test_engine.py
        # simple operator mutations (== -> !=, < -> <=, and -> or, ...) of one file, one at a
        # time, and the mutation score

The named tests first run once on the unmutated copy: a kill only means something if they
pass there. Exit status 1 when any mutation survives, a pattern is missing or the tests
fail without a mutation.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEARNING = "tests/test_learning.py"


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS = [
    Mutation("ospo advantage sign flipped", "oprl/algorithms/ospo.py",
             "return [normalise_within_step(r, c >= 0)",
             "return [-normalise_within_step(r, c >= 0)",
             (f"{LEARNING}::test_ospo_and_grpo_beat_their_start_and_the_per_step_assignment",)),
    Mutation("grpo advantage sign flipped", "oprl/algorithms/ospo.py",
             "out.append(normalise_within_step(g, choice >= 0))",
             "out.append(-normalise_within_step(g, choice >= 0))",
             (f"{LEARNING}::test_ospo_and_grpo_beat_their_start_and_the_per_step_assignment",)),
    Mutation("tscac/rcpo actor update is a no-op", "oprl/algorithms/constrained_ac.py",
             "    loss = torch.tensor(0.0)\n    for _ in range(iters):",
             "    loss = torch.tensor(0.0)\n    for _ in range(0):",
             (f"{LEARNING}::test_tscac_and_rcpo_meet_every_constraint_and_close_most_of_the_gap_to_the_lp",)),
    Mutation("hdpo never steps its optimizer", "oprl/algorithms/hdpo.py",
             "optimizer.step()", "pass",
             (f"{LEARNING}::test_hdpo_beats_the_best_constant_escapement_on_model1",)),
    Mutation("evaluate falls back to a failed reference", "oprl/evaluate.py",
             "pool = [r for r in references if usable_reference(r)]",
             "pool = [r for r in references if usable_reference(r)] or list(references)",
             ("tests/test_engine.py",)),
    Mutation("fishery DP called optimal by fiat", "solvers/fishery.py",
             '"optimal" if relative <= tolerance else "best_known"', '"optimal"',
             ("tests/test_fishery_solvers.py::test_dp_value_converges_under_grid_refinement",)),
]

# simple operator swaps for --operators (each occurrence is one mutation)
OPERATORS = [(" == ", " != "), (" != ", " == "), (" <= ", " < "), (" >= ", " > "),
             (" < ", " <= "), (" > ", " >= "), (" and ", " or "), (" or ", " and "),
             (" + ", " - "), (" - ", " + "), ("not ", ""), ("min(", "max("), ("max(", "min(")]


def copy_repo(dest: Path) -> None:
    """The working tree without the virtual environment, caches and runs."""
    ignore = shutil.ignore_patterns(".venv", ".git", "__pycache__", "runs", "*.egg-info",
                                    ".pytest_cache", ".ruff_cache")
    shutil.copytree(ROOT, dest, ignore=ignore, dirs_exist_ok=True)


def run_tests(repo: Path, tests: tuple[str, ...], timeout: float) -> bool:
    """Whether the tests pass in ``repo``. ``repo`` goes first on PYTHONPATH, with links
    oprl/simulators, oprl/solvers and oprl/policies to its top-level folders, so the copy's
    modules shadow the editable install of the checkout."""
    for sub in ("simulators", "solvers", "policies"):
        link = repo / "oprl" / sub
        if not link.exists():
            link.symlink_to(repo / sub, target_is_directory=True)
    env = {**os.environ, "PYTHONPATH": str(repo), "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p",
                               "no:cacheprovider", *tests], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False  # a hang counts as detected
    return proc.returncode == 0


def apply(repo: Path, file: str, old: str, new: str, occurrence: int | None = None) -> None:
    path = repo / file
    text = path.read_text()
    if occurrence is None:
        count = text.count(old)
        if count != 1:
            raise SystemExit(f"MISSING PATTERN: {file}: {old!r} found {count} times (need "
                             "exactly 1); update benchmarks/mutations.py")
        path.write_text(text.replace(old, new))
        return
    starts = [m.start() for m in re.finditer(re.escape(old), text)]
    i = starts[occurrence]
    path.write_text(text[:i] + new + text[i + len(old):])


def operator_mutations(file: str) -> list[tuple[str, str, int, int]]:
    """(old, new, occurrence, line) for every operator occurrence in code lines of ``file``."""
    out = []
    text = (ROOT / file).read_text()
    for old, new in OPERATORS:
        for k, m in enumerate(re.finditer(re.escape(old), text)):
            line_start = text.rfind("\n", 0, m.start()) + 1
            line = text[line_start:text.find("\n", m.start())].strip()
            if line.startswith("#") or line.startswith(('"', "'")):
                continue
            out.append((old, new, k, text.count("\n", 0, m.start()) + 1))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="mutations whose name contains this")
    parser.add_argument("--operators", help="a file to mutate operator by operator")
    parser.add_argument("--tests", nargs="+", default=["tests"],
                        help="tests for --operators (default: the whole suite)")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        copy_repo(base)
        if args.operators:
            cases = [(f"{args.operators}:{line} {old.strip()} -> {new.strip() or '(removed)'}",
                      args.operators, old, new, k, tuple(args.tests))
                     for old, new, k, line in operator_mutations(args.operators)]
        else:
            for m in MUTATIONS:  # every pattern must still be there before anything runs
                if (ROOT / m.file).read_text().count(m.old) != 1:
                    apply(base, m.file, m.old, m.new)
            cases = [(m.name, m.file, m.old, m.new, None, m.tests)
                     for m in MUTATIONS if args.only in m.name]
        for tests in dict.fromkeys(c[5] for c in cases):  # a kill only counts if they pass
            if not run_tests(base, tests, args.timeout):
                print(f"BASELINE FAILS: {' '.join(tests)} fail without any mutation")
                return 1
        killed = 0
        for name, file, old, new, k, tests in cases:
            work = Path(tmp) / "mutant"
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(base, work)
            apply(work, file, old, new, k)
            alive = run_tests(work, tests, args.timeout)
            killed += not alive
            print(f"{'survived' if alive else 'killed  '}  {name}", flush=True)
        total = len(cases)
        print(f"mutation score: {killed}/{total} killed"
              + (f" ({100 * killed / total:.0f} %)" if total else ""))
        return 0 if killed == total else 1


if __name__ == "__main__":
    sys.exit(main())
