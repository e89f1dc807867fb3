"""Locked folders, results that never hold a cell twice, and the CLI's error boundary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from oprl.cli import main
from oprl.report import load_results, report
from oprl.runs import folder_lock
from oprl.sweep import ResultsStore, load_spec, run_sweep

SPEC = {
    "scenario": "inventory/one_store_backlog",
    "grid": {"lead_time": [1, 2], "penalty": [4]},
    "episodes": 4, "horizon": 60, "warmup": 20, "tune_episodes": 4, "tune_horizon": 60,
    "seeds": [0], "chunk": 2,
}
HOLD = """
import sys, time
from oprl.runs import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def run_cli(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


@pytest.fixture
def held(tmp_path):
    """A second process holding ``tmp_path / 'held'``, as a running sweep or training would."""
    folder = tmp_path / "held"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    yield folder
    proc.kill()
    proc.wait()


def test_a_second_process_on_a_locked_sweep_folder_is_refused_naming_the_holder(held):
    with pytest.raises(ValueError, match=r"in use by another oprl process \(pid \d+"):
        run_sweep(SPEC, held, log=lambda m: None)
    assert not (held / "results.parquet").exists() and not (held / "sweep.json").exists()


def test_the_lock_dies_with_its_process(tmp_path):
    folder = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    proc.kill()
    proc.wait()
    with folder_lock(folder):  # a killed holder does not block a resume
        pass


def test_a_refused_command_leaves_no_folder_behind(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(ValueError, match="lead_time"):
        run_sweep({**SPEC, "grid": {"lead_time": [-1]}}, out, log=lambda m: None)
    assert not out.exists()


def test_a_cell_is_never_recorded_twice(tmp_path):
    out = tmp_path / "sweep"
    frame = run_sweep(SPEC, out, log=lambda m: None)
    cells = frame["cell_id"].nunique()
    store = ResultsStore(out)
    again = store.append(frame.to_dict("records"))  # a second writer with the same cells
    assert len(again) == len(frame)
    # a file written twice by an older oprl: read and reported once
    doubled = pd.concat([frame, frame], ignore_index=True)
    doubled.to_parquet(out / "results.parquet", index=False)
    assert len(load_results(out)) == len(frame)
    assert f"{cells} cells" in report(out)


def test_duplicate_grid_values_are_refused():
    with pytest.raises(ValueError, match=r"spec.grid.lead_time: 2.0 is listed twice"):
        load_spec({**SPEC, "grid": {"lead_time": [2, 2.0]}})
    load_spec({**SPEC, "grid": {"lead_time": [1, 2]}})  # distinct values pass


@pytest.mark.parametrize("argv, message", [
    (["bench", "inventory/one_store_lost", "--run", "x", "--set", "lead_time=2"], "--run:"),
    (["bench", "inventory/one_store_lost", "--episodes", "0"], "--episodes: must be >= 1"),
    (["bench", "inventory/one_store_lost", "--train-steps", "0"], "--train-steps: must be >= 1"),
    (["sweep", "spec.yaml", "--address", "127.0.0.1:1"], "--backend ray"),
])
def test_option_mistakes_are_one_line_before_any_work(capsys, argv, message):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_an_unwritable_csv_is_refused_before_training(capsys, tmp_path, monkeypatch):
    from oprl import api

    def no_training(*args, **kwargs):
        raise AssertionError("training started before the output was checked")

    monkeypatch.setattr(api, "train", no_training)
    code, _, err = run_cli(capsys, "bench", "inventory/one_store_lost", "--csv", str(tmp_path))
    assert code == 2 and "--csv:" in err and "is a folder" in err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(capsys, "bench", "inventory/one_store_lost",
                           "--plot", str(blocker / "p.png"))
    assert code == 2 and "--plot:" in err


def test_report_refuses_an_unknown_metric_and_a_broken_file(capsys, tmp_path):
    out = tmp_path / "sweep"
    run_sweep(SPEC, out, log=lambda m: None)
    code, _, err = run_cli(capsys, "report", str(out), "--metric", "bogus")
    assert code == 2 and "--metric: 'bogus' is not in this sweep" in err
    Path(out / "results.parquet").write_bytes(b"PAR1 truncated")
    code, _, err = run_cli(capsys, "report", str(out))
    assert code == 2 and "not a readable results file" in err


def test_an_os_error_is_one_line_and_debug_shows_the_traceback(capsys, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("scenario: inventory/one_store_backlog\ngrid: {lead_time: [1]}\n")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    code, _, err = run_cli(capsys, "sweep", str(spec), "--out", str(blocker))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "is a file" in err
    code, _, err = run_cli(capsys, "--debug", "sweep", str(spec), "--out", str(blocker))
    assert code == 2 and "Traceback" in err
