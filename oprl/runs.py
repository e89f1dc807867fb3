"""Run folders: ``config.json``, ``checkpoint.pt``, ``metrics.csv``; every write is atomic so a
killed run never leaves a half-written file, and ``--resume`` continues from the checkpoint."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

CONFIG, CHECKPOINT, METRICS = "config.json", "checkpoint.pt", "metrics.csv"


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
        atomic_write(self.path / CHECKPOINT, lambda p: torch.save(state, p))

    def load_checkpoint(self) -> dict[str, Any] | None:
        path = self.path / CHECKPOINT
        if not path.exists():
            return None
        return torch.load(path, map_location="cpu", weights_only=False)

    def save_metrics(self, history: list[dict[str, Any]]) -> None:
        write_csv(self.path / METRICS, pd.DataFrame(history))
