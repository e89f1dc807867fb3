"""`inventory/network` end to end: a network file benchmarks like any scenario, a built-in
scenario written as a file (`oprl network`) gives the built-in's numbers with the same seeds,
and a bad file is one line and exit code 2 with nothing written."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from oprl import api
from oprl.cli import main
from oprl.simulators.network_file import load_network_file

EXAMPLES = Path(__file__).parent.parent / "examples" / "networks"
COMPARED = ["policy", "kind", "mean", "stderr", "reference", "reference_kind", "gap_pct", "status"]
TINY = {"train_steps": 2, "eval_episodes": 4, "eval_horizon": 80,
        "train_hyper": {"batch_size": 8}, "log": lambda m: None}


def _write(tmp_path: Path, scenario: str, sets: list[str]) -> Path:
    out = tmp_path / "net.yaml"
    with pytest.raises(SystemExit) as done:
        main(["network", scenario, *sum((["--set", s] for s in sets), []), "--out", str(out)])
    assert done.value.code == 0
    return out


@pytest.mark.parametrize(("scenario", "sets", "params"), [
    ("inventory/one_store_lost", ["lead_time=2"], {"lead_time": 2}),
    ("inventory/serial", [], {}),
    ("inventory/one_warehouse", ["n_stores=3"], {"n_stores": 3}),
    ("inventory/many_warehouses", ["n_warehouses=2", "n_stores=3"],
     {"n_warehouses": 2, "n_stores": 3}),
])
def test_a_builtin_written_as_a_file_benchmarks_the_same(tmp_path, scenario, sets, params):
    path = _write(tmp_path, scenario, sets)
    built_in = api.benchmark(scenario, params, policy="mlp", **TINY)
    from_file = api.benchmark("inventory/network", {"file": str(path)}, policy="mlp", **TINY)
    assert len(built_in) >= 4  # references, learned and heuristics all compared
    pd.testing.assert_frame_equal(from_file[COMPARED], built_in[COMPARED], check_exact=True)


def test_an_example_file_benchmarks_end_to_end():
    frame = api.benchmark("inventory/network", {"file": str(EXAMPLES / "two_suppliers.yaml")},
                          **TINY)
    kinds = set(frame["kind"])
    assert {"learned", "heuristic", "lower_bound"} <= kinds
    learned = frame[frame["kind"] == "learned"]["mean"].iloc[0]
    bound = frame[frame["kind"] == "lower_bound"]["mean"].max()
    assert learned >= bound  # a bound is a bound on the same traces


def test_every_example_file_is_valid():
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert files
    for path in files:
        assert load_network_file(path).stores


def test_a_bad_file_is_one_line_and_exit_code_2(tmp_path, capsys):
    data = yaml.safe_load((EXAMPLES / "serial.yaml").read_text())
    data["links"][1]["lead_time"] = 2.5
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    csv = tmp_path / "out.csv"
    with pytest.raises(SystemExit) as done:
        main(["bench", "inventory/network", "--set", f"file={bad}", "--csv", str(csv)])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "oprl: error: bad.yaml: links[1].lead_time: must be a whole number >= 0, got 2.5"
    assert not csv.exists()


def test_oprl_network_refuses_what_it_cannot_write(tmp_path, capsys):
    out = tmp_path / "t.yaml"
    with pytest.raises(SystemExit) as done:
        main(["network", "inventory/transshipment", "--out", str(out)])
    assert done.value.code == 2
    assert "transshipment" in capsys.readouterr().err
    assert not out.exists()
