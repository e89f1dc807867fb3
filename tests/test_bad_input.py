"""Each class of bad input in docs/errors.md: refused with one line naming the field, file or
option, before any work and before anything is written; nothing executable is ever loaded."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from oprl.cli import main, parse_sets
from oprl.registry import make
from oprl.runs import dump_checkpoint, plain, read_checkpoint
from oprl.sweep import grpc_handshake, run_sweep

HOLD = """
import sys, time
from oprl.runs import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""
TRAIN = ["train", "inventory/one_store_backlog", "--set", "lead_time=1", "--steps", "1",
         "--hyper", "batch_size=8", "--hyper", "dev_windows=2"]


def run_cli(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def refused(capsys, *argv) -> str:
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    return err


# -- nothing executable is loaded ------------------------------------------------------------
class WritesAFile:
    """A pickle that, if unpickled with weights_only=False, would create ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_crafted_checkpoint_is_refused_in_one_line_and_runs_nothing(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({
        "scenario": "inventory/one_store_backlog", "params": {}, "algo": "hdpo",
        "policy": "mlp", "seed": 0, "policy_kwargs": {}, "hyper": {}, "steps": 1}))
    marker = tmp_path / "pwned"
    torch.save({"best_policy": WritesAFile(str(marker))}, run / "checkpoint.pt")
    err = refused(capsys, "evaluate", str(run), "--episodes", "2")
    assert "checkpoint" in err and "refused without running anything" in err
    assert not marker.exists()


def test_checkpoints_hold_tensors_and_plain_values_only():
    state = {"w": torch.ones(2), "rng": torch.Generator().manual_seed(3),
             "np": np.arange(3), "n": np.float64(1.5), "rows": [{"a": 1}], "t": (1, "x")}
    buffer = io.BytesIO()
    dump_checkpoint(state, buffer)
    buffer.seek(0)
    back = read_checkpoint(buffer)
    assert torch.equal(back["w"], torch.ones(2)) and back["n"] == 1.5
    assert torch.equal(back["np"], torch.arange(3)) and back["rows"] == [{"a": 1}]
    # a generator's state comes back as a tensor that restores the same stream
    gen = torch.Generator().set_state(back["rng"])
    assert torch.equal(torch.rand(2, generator=gen),
                       torch.rand(2, generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match=r"checkpoint.obj: a WritesAFile cannot be checkpointed"):
        plain({"obj": WritesAFile("x")})


# -- run folders: locked, and nothing written before every check has passed -------------------
def test_a_second_train_on_a_locked_run_folder_names_the_holder(capsys, tmp_path):
    folder = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        err = refused(capsys, *TRAIN, "--out", str(folder))
        assert "in use by another oprl process (pid" in err
        assert not (folder / "config.json").exists()
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("extra, message", [
    (["--device", "bogus"], "device: 'bogus' is not a device"),
    (["--set", "lead_time=2.5"], "lead_time: expected a whole number, got 2.5"),
    (["--set", "warmup=true"], "warmup: expected a whole number, got True"),
    (["--hyper", "lr=-1"], "lr"),
])
def test_train_checks_everything_before_writing_the_run(capsys, tmp_path, extra, message):
    out = tmp_path / "run"
    err = refused(capsys, *TRAIN, "--out", str(out), *extra)
    assert message in err
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_one_line(capsys, tmp_path):
    assert "no CUDA device" in refused(capsys, *TRAIN, "--out", str(tmp_path / "r"),
                                       "--device", "cuda")
    assert not (tmp_path / "r").exists()


def test_resume_refuses_values_that_differ_from_the_saved_run(capsys, tmp_path):
    out = str(tmp_path / "run")
    assert run_cli(capsys, *TRAIN, "--out", out)[0] == 0
    resume = ["train", "inventory/one_store_backlog", "--resume", "--out", out, "--steps", "1"]
    assert "--set lead_time=2 differs from the saved run's lead_time=1" in refused(
        capsys, *resume, "--set", "lead_time=2")
    assert "--hyper batch_size=16 differs" in refused(capsys, *resume, "--hyper",
                                                      "batch_size=16")
    # the same values (as the settings read them) are not a change
    code, _, err = run_cli(capsys, *resume, "--set", "lead_time=1", "--hyper", "batch_size=8e0")
    assert code == 0, err


def test_a_sweep_with_bad_training_settings_writes_nothing(tmp_path):
    spec = {"scenario": "inventory/one_store_backlog", "grid": {"lead_time": [1]},
            "episodes": 2, "horizon": 40, "warmup": 10, "train": {"steps": 1,
                                                                  "hyper": {"lr": "fast"}}}
    with pytest.raises(ValueError, match="spec.train.hyper: lr"):
        run_sweep(spec, tmp_path / "sw", log=lambda m: None)
    assert not (tmp_path / "sw").exists()


# -- a Ray address must answer a gRPC handshake in time -----------------------------------------
def _server(reply: bytes | None):
    """A local TCP server that answers every connection with ``reply`` (None: silence)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    conns = []

    def serve():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conns.append(conn)
            if reply is not None:
                conn.sendall(reply)
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return sock, f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("reply, message", [
    (b"SSH-2.0-OpenSSH_9.0\r\n", "not a Ray cluster"),
    (b"HTTP/1.1 400 Bad Request\r\n\r\n", "not a Ray cluster"),
    (None, "did not answer a Ray"),
])
def test_a_port_that_is_not_ray_is_refused_within_the_time_limit(reply, message):
    sock, address = _server(reply)
    try:
        with pytest.raises(ValueError, match=message):
            grpc_handshake(address, timeout=0.5)
    finally:
        sock.close()


def test_a_grpc_server_passes_the_handshake_and_a_closed_port_does_not():
    settings_frame = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
    sock, address = _server(settings_frame)
    try:
        grpc_handshake(address, timeout=2)
    finally:
        sock.close()
    unused = socket.socket()
    unused.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
    try:
        with pytest.raises(ValueError, match="cannot reach"):
            grpc_handshake(f"127.0.0.1:{unused.getsockname()[1]}", timeout=0.5)
    finally:
        unused.close()


# -- values silently accepted before --------------------------------------------------------------
@pytest.mark.parametrize("scenario, setting, name", [
    ("inventory/one_store_lost", "demand_lags=2.5", "demand_lags"),
    ("inventory/one_warehouse", "n_stores=2.5", "n_stores"),
    ("recsys/short_video", "n_items=20.5", "n_items"),
    ("inventory/one_store_backlog", "warmup=true", "warmup"),
    ("economy/one_step", "rate_step=0", "rate_step"),
    ("economy/one_step", "hours_step=0", "hours_step"),
    ("economy/one_step", "eta=-1", "eta"),
    ("inventory/one_store_lost", "penalty=0", "penalty"),
    ("inventory/one_store_lost", "holding=0", "holding"),
    ("inventory/one_store_lost", "mean=0", "mean"),
    ("inventory/one_store_backlog", "holding=0", "holding"),
    ("inventory/one_store_lost", "lead_time=10000", "lead_time"),
    ("inventory/one_warehouse", "n_stores=100000", "n_stores"),
    ("dispatch/manhattan", "requests=1e9", "requests"),
])
def test_silently_accepted_values_are_refused_before_training(capsys, scenario, setting, name):
    err = refused(capsys, "bench", scenario, "--set", setting, "--train-steps", "1")
    assert f"{name}" in err and "[oprl] training" not in err


def test_an_evaluation_shorter_than_the_lead_time_is_refused(capsys):
    err = refused(capsys, "bench", "inventory/one_store_lost", "--set", "lead_time=4",
                  "--horizon", "4", "--train-steps", "1")
    assert "horizon: an evaluation counting" in err and "lead time (4)" in err


def test_a_short_demand_file_with_a_long_lead_time_is_refused(capsys, tmp_path):
    path = tmp_path / "weeks.csv"
    path.write_text("product," + ",".join(map(str, range(60))) + "\n"
                    + "a," + ",".join(["5"] * 60) + "\n")
    err = refused(capsys, "solve", "inventory/real_data", "--set", f"path={path}",
                  "--set", "lead_time=100")
    assert "lead_time: 100 periods is not shorter" in err


# -- files and numbers: messages that name the file and the place -------------------------------
@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty"),
    (b"product,0,1\na,1,x\n", "demand 'x' for product 'a', period '1' is not a number"),
    (b"product,0,1\na,1,\xff\xfe\n", "not UTF-8 text"),
    (b"product,Product,period,demand\na,a,1,2\n", "column 'product' appears more than once"),
])
def test_demand_file_errors_name_the_file_and_the_place(capsys, tmp_path, content, message):
    path = tmp_path / "demand.csv"
    path.write_bytes(content)
    err = refused(capsys, "solve", "inventory/real_data", "--set", f"path={path}")
    assert "demand.csv" in err and message in err


def test_a_yaml_error_is_one_line_with_its_place(capsys, tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("scenario: inventory/serial\ngrid: {lead_time: [1, 2\nseeds: [0]\n")
    err = refused(capsys, "sweep", str(spec), "--out", str(tmp_path / "out"))
    assert "not valid YAML at line" in err


def test_exponent_numbers_are_numbers():
    assert parse_sets(["a=1e3", "b=-2.5e-3", "c=[1e1, 2]", "d=word"]) == {
        "a": 1000.0, "b": -0.0025, "c": [10.0, 2], "d": "word"}
    sim = make("inventory/transshipment", **parse_sets(["n_stores=1e1"]))
    assert len(sim.network.stores) == 10


def test_lost_sales_with_lead_time_zero_is_the_newsvendor_answer():
    """Lead time 0 (refused by the DP before) has a closed form; a second method: simulate
    every order-up-to level on one long trace and take the cheapest."""
    from oprl.core import rollout
    from oprl.simulators.inventory_rules import BaseStock
    from oprl.solvers.inventory import lost_sales_dp

    sim = make("inventory/one_store_lost", lead_time=0, penalty=4.0, holding=1.0, mean=3.0)
    ref = lost_sales_dp(sim)
    trace = sim.sample_trace(8, 4000, seed=1)
    costs = {s: float(sim.episode_metric(rollout(sim, BaseStock(sim, float(s)), trace).rewards,
                                         100).mean()) for s in range(9)}
    best = min(costs, key=costs.get)
    assert ref.details["level"] == best == 4  # the Poisson(3) 0.8-quantile
    assert ref.objective == pytest.approx(costs[best], rel=0.02)
