"""Shipped data files and trip-record loading.

`dataset_path` finds a file the project ships in ``datasets/`` (the repository folder next to the
package for editable installs, else ``<sys.prefix>/share/oprl/datasets`` for wheels).
`load_trips` reads NYC TLC trip records (CSV or Parquet; columns PULocationID, DOLocationID,
tpep_pickup_datetime) and validates them with errors that name the cause.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

TRIP_COLUMNS = ("PULocationID", "DOLocationID", "tpep_pickup_datetime")


def dataset_path(name: str) -> Path:
    """Path of the shipped data file ``name`` (e.g. 'manhattan_zones.csv')."""
    candidates = [
        Path(__file__).resolve().parents[1] / "datasets" / name,
        Path(sys.prefix) / "share" / "oprl" / "datasets" / name,
    ]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"dataset: {name!r} not found in {', '.join(str(p.parent) for p in candidates)}"
    )


@dataclass(frozen=True)
class Trips:
    """Trip requests of one episode: minute offset from the episode start, origin and
    destination zone ids (TLC LocationIDs), in request order."""

    minute: list[int]
    origin: list[int]
    destination: list[int]
    start: pd.Timestamp


def read_table(path: Path, field: str,
               suffixes: tuple[str, ...] = (".csv", ".txt", ".parquet", ".pq")) -> pd.DataFrame:
    """A CSV or Parquet file (one of ``suffixes``) as a data frame. A missing file, another
    format or an unreadable one is a ValueError naming ``field`` or the file and why."""
    if not path.is_file():
        raise ValueError(f"{field}: {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        raise ValueError(f"{field}: {path.name!r} must be a .csv or .parquet file")
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path.name}: the file is empty (no header row)") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path.name}: not UTF-8 text (byte {err.start}); save it as a UTF-8 "
                         "CSV") from None
    except pd.errors.ParserError as err:
        raise ValueError(f"{path.name}: not a well-formed CSV ({' '.join(str(err).split())})") from None
    except (OSError, ValueError, TypeError) as err:  # pyarrow's errors subclass these
        if isinstance(err, OSError) and not str(err):
            raise
        raise ValueError(f"{path.name}: cannot read this file as {suffix[1:]} "
                         f"({' '.join(str(err).split())[:200]})") from None


def load_trips(
    path: str | Path,
    zone_ids: list[int],
    horizon: int,
    start: str | None = None,
) -> Trips:
    """Requests of ``path`` as one episode of ``horizon`` one-minute steps starting at ``start``
    (default: the minute of the first pickup). Every record must name known zones, be in time
    order and fall inside the episode; otherwise a ValueError names the row and the cause."""
    frame = read_table(Path(path), "trip_file", (".csv", ".gz", ".txt", ".parquet"))
    missing = [c for c in TRIP_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"trip_file: missing column(s) {missing}; need {list(TRIP_COLUMNS)}")
    if len(frame) == 0:
        raise ValueError("trip_file: no trip records")
    times = pd.to_datetime(frame["tpep_pickup_datetime"], errors="coerce")
    bad = times.isna()
    if bad.any():
        raise ValueError(f"trip_file: unreadable tpep_pickup_datetime in row {int(bad.idxmax())}")
    known = set(int(z) for z in zone_ids)
    for col in ("PULocationID", "DOLocationID"):
        ids = pd.to_numeric(frame[col], errors="coerce")
        unknown = ids.isna() | ~ids.isin(known)
        if unknown.any():
            row = int(unknown.idxmax())
            raise ValueError(f"trip_file: unknown zone id {frame[col].iloc[row]!r} in {col} at row "
                             f"{row}; allowed: the {len(known)} zones of the scenario")
    backwards = times.diff().dt.total_seconds() < 0
    if backwards.any():
        raise ValueError(f"trip_file: pickup times out of order at row {int(backwards.idxmax())}; "
                         "sort the records by tpep_pickup_datetime")
    origin = pd.Timestamp(start) if start is not None else times.iloc[0].floor("min")
    minute = ((times - origin).dt.total_seconds() // 60).astype(int)
    outside = (minute < 0) | (minute >= horizon)
    if outside.any():
        row = int(outside.idxmax())
        raise ValueError(f"trip_file: pickup at {times.iloc[row]} (row {row}) is outside the "
                         f"episode [{origin}, +{horizon} min)")
    return Trips(minute.tolist(), frame["PULocationID"].astype(int).tolist(),
                 frame["DOLocationID"].astype(int).tolist(), origin)
