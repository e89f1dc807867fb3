"""Run folders: ``config.json``, ``checkpoint.pt``, ``metrics.csv``; every write is atomic so a
killed run never leaves a half-written file, and ``--resume`` continues from the checkpoint.
A folder in use is locked, so a second process on it is refused instead of interleaving writes."""

from __future__ import annotations

import io
import json
import os
import pickle
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from filelock import FileLock, Timeout

CONFIG, CHECKPOINT, METRICS = "config.json", "checkpoint.pt", "metrics.csv"
LOCK, OWNER = ".oprl.lock", ".oprl.owner"


@contextmanager
def folder_lock(folder: str | Path, option: str = "out") -> Iterator[None]:
    """Hold ``folder`` for this process: a second oprl process on it gets a ValueError naming
    the holder. The lock is the operating system's (released when a killed process dies). A
    folder this call created and nothing else wrote into is removed again on the way out, so a
    refused command leaves nothing behind."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{option}: {folder} is a file, not a folder")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / LOCK)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        owner = _read_owner(folder)
        raise ValueError(f"{option}: {folder} is in use by another oprl process ({owner}); "
                         "wait for it to finish or choose another folder") from None
    try:
        (folder / OWNER).write_text(
            f"pid {os.getpid()} on {socket.gethostname()} since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
        yield
    finally:
        (folder / OWNER).unlink(missing_ok=True)
        lock.release()
        if created and {p.name for p in folder.iterdir()} <= {LOCK, OWNER}:
            (folder / LOCK).unlink(missing_ok=True)
            folder.rmdir()


def _read_owner(folder: Path) -> str:
    try:
        return (folder / OWNER).read_text().strip() or "unknown process"
    except OSError:
        return "unknown process"


def check_writable(path: str | Path, option: str) -> Path:
    """Refuse an output file that cannot be written (a folder, a read-only or missing parent)
    before any work starts, rather than after it."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option}: {path} is a folder; name a file")
    parent = path.parent
    while not parent.exists():  # the nearest existing ancestor decides
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{option}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"{option}: cannot write {path} (permission denied)")
    return path


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2, sort_keys=True, default=str)))


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda p: frame.to_csv(p, index=False))


class RunDir:
    """One training run's folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    def exists(self) -> bool:
        return self.config_path.exists()

    def create(self, config: dict[str, Any], *, resume: bool) -> dict[str, Any]:
        """Start a run, or check that ``config`` matches the one being resumed."""
        if self.exists():
            saved = self.config()
            if not resume:
                raise ValueError(
                    f"out: {self.path} already holds a run; pass --resume to continue it or "
                    f"choose another --out"
                )
            if saved["scenario"] != config["scenario"]:
                raise ValueError(
                    f"resume: {self.path} holds a run of {saved['scenario']!r}, not "
                    f"{config['scenario']!r}"
                )
            return saved
        if resume:
            raise ValueError(f"resume: {self.path} holds no run to resume")
        write_json(self.config_path, config)
        return config

    def config(self) -> dict[str, Any]:
        if not self.exists():
            raise ValueError(f"run: {self.path} is not a run folder (no {CONFIG})")
        return json.loads(self.config_path.read_text())

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        data = plain(state)  # refused here, before the old checkpoint is replaced
        atomic_write(self.path / CHECKPOINT, lambda p: torch.save(data, p))

    def load_checkpoint(self) -> dict[str, Any] | None:
        path = self.path / CHECKPOINT
        if not path.exists():
            return None
        return read_checkpoint(path)

    def save_metrics(self, history: list[dict[str, Any]]) -> None:
        write_csv(self.path / METRICS, pd.DataFrame(history))


# -- checkpoints: tensors in plain containers only ------------------------------------------
_SCALARS = (str, int, float, bool, type(None))


def plain(value: Any, where: str = "checkpoint") -> Any:
    """``value`` as tensors, numbers, strings and None in dicts (string keys), lists and
    tuples: what ``torch.load(weights_only=True)`` reads back. NumPy values become tensors or
    numbers; anything else is a ValueError naming its place (saving it would need pickle)."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if type(value) in _SCALARS:
        return value
    for kind in (bool, int, float, str):  # subclasses (numpy.float64 is a float) as the base
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise ValueError(f"{where}: key {key!r} is not a string or an integer")
            out[key] = plain(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        items = [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    module = type(value).__module__
    if module == "numpy":
        import numpy as np

        if isinstance(value, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(value))
        if isinstance(value, np.generic):
            return value.item()
    if isinstance(value, torch.Generator):
        return value.get_state()
    raise ValueError(f"{where}: a {type(value).__name__} cannot be checkpointed; only tensors, "
                     "numbers, strings, None, dicts, lists and tuples")


def dump_checkpoint(state: dict[str, Any], file: str | Path | io.BytesIO) -> None:
    """Save ``state`` (see `plain`) so that `read_checkpoint` loads it without pickle code."""
    torch.save(plain(state), file)


def read_checkpoint(file: str | Path | io.BytesIO) -> dict[str, Any]:
    """A checkpoint's tensors and plain values, read with ``weights_only=True``: a file that
    holds anything else (code a crafted pickle would run) is refused, never executed."""
    name = str(file) if isinstance(file, (str, Path)) else "checkpoint"
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, TypeError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        first = next((line.split("error:", 1)[-1].strip() for line in lines
                      if line.startswith("WeightsUnpickler error")),
                     lines[0] if lines else type(err).__name__)
        raise ValueError(f"checkpoint: {name} is not an oprl checkpoint of tensors and plain "
                         f"values; refused without running anything ({first.split('. ')[0][:160]})") from None
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint: {name} holds a {type(state).__name__}, not a dict")
    return state



def through_checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` saved and read back as a checkpoint file would be (exact resumes are tested
    through it: whatever a trainer keeps must survive ``weights_only=True``)."""
    buffer = io.BytesIO()
    dump_checkpoint(state, buffer)
    buffer.seek(0)
    return read_checkpoint(buffer)
