"""`oprl recommend` and `oprl export`: a run's orders from a state file, and the exported
program run in a fresh process that never imports oprl."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from oprl.api import train
from oprl.cli import run
from oprl.deploy import load_policy
from oprl.export import state_tensors

STATE = {"period": 3, "on_hand": {"store 0": 4.0}, "in_transit": {"supplier->store 0": [5.0, 1.0]},
         "recent_demand": {"store 0": [9.0, 4.0, 6.0]}}

FRESH = """
import sys, torch
program = torch.export.load(sys.argv[1])
inputs = torch.load(sys.argv[2])
print(program.module()(*inputs).tolist())
assert not any(name.startswith("oprl") for name in sys.modules), "oprl was imported"
"""


def test_recommend_and_export_match_act(tmp_path, capsys):
    train("inventory/one_store_lost", {"lead_time": 2, "demand_lags": 2}, steps=2,
          out=tmp_path / "run", batch_size=8, eval_every=1)
    policy = load_policy(tmp_path / "run")
    orders = policy.act(STATE)
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps(STATE))
    assert run(["recommend", str(tmp_path / "run"), "--state", str(state_file),
                "--out", str(tmp_path / "orders.csv")]) == 0
    written = (tmp_path / "orders.csv").read_text().splitlines()
    assert written == ["link,order", f"supplier->store 0,{orders['supplier->store 0']}"]
    assert "supplier->store 0" in capsys.readouterr().out
    csv_state = tmp_path / "state.csv"
    csv_state.write_text("field,name,value\nperiod,,3\non_hand,store 0,4\n"
                         "in_transit,supplier->store 0,5 1\nrecent_demand,store 0,9 4 6\n")
    assert run(["recommend", str(tmp_path / "run"), "--state", str(csv_state)]) == 0

    assert run(["export", str(tmp_path / "run"), "--out", str(tmp_path / "policy.pt2")]) == 0
    for state in (STATE, dict(STATE, on_hand={"store 0": 0.0})):
        torch.save(state_tensors(policy, state), tmp_path / "inputs.pt")
        out = subprocess.run([sys.executable, "-c", FRESH, str(tmp_path / "policy.pt2"),
                              str(tmp_path / "inputs.pt")], capture_output=True, text=True,
                             check=True).stdout
        assert json.loads(out) == [[policy.act(state)["supplier->store 0"]]]
