"""Supply networks described in a file: a parser and validator (docs/network-files.md).

`parse_network` turns a plain dict (what YAML or JSON gives) into a frozen `NetworkSpec`, and
is pure; `load_network_file` reads the file and its demand-history file at the edge. Every
mistake is one `NetworkFileError` naming the place in the file, e.g.
``links[3].lead_time: must be a whole number >= 0, got 2.5``.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KINDS = ("supplier", "plant", "warehouse", "store")
ALLOCATIONS = ("proportional", "priority")
OBJECTIVES = ("minimise_cost", "maximise_profit")
HORIZONS = ("long_run", "finite")
SHORTAGES = ("backlog", "lost_sales")
DISTRIBUTIONS = ("poisson", "normal")

TOP_KEYS = ("name", "allocation", "objective", "horizon", "demand", "locations", "links")
LOCATION_KEYS = {
    "supplier": ("name", "kind"),
    "plant": ("name", "kind", "holding_cost", "initial_stock", "capacity", "production_cost",
              "yield"),
    "warehouse": ("name", "kind", "holding_cost", "initial_stock"),
    "store": ("name", "kind", "holding_cost", "initial_stock", "demand", "selling_price",
              "shortage"),
}
LINK_KEYS = ("from", "to", "lead_time", "unit_cost", "transit_holding_cost", "capacity",
             "min_order")
HORIZON_KEYS = ("type", "warmup", "periods")
DEMAND_KEYS = ("correlation", "history")
STORE_DEMAND_KEYS = ("distribution", "mean", "std")
SHORTAGE_KEYS = ("type", "penalty")


class NetworkFileError(ValueError):
    """A mistake in a network file; the message starts with the place in the file."""


@dataclass(frozen=True)
class StoreDemand:
    distribution: str  # 'poisson' | 'normal'
    mean: float
    std: float | None = None  # normal only


@dataclass(frozen=True)
class Location:
    name: str
    kind: str
    holding_cost: float = 0.0  # per unit on hand at the end of a period
    initial_stock: float = 0.0
    capacity: float | None = None  # plant: most units made per period
    production_cost: float = 0.0  # plant: per unit made
    yield_: float = 1.0  # plant: units made per unit of input material, in (0, 1]
    demand: StoreDemand | None = None  # store (absent when a history file drives demand)
    selling_price: float = 0.0  # store: per unit sold
    shortage: str = "backlog"  # store: 'backlog' | 'lost_sales'
    penalty: float = 0.0  # store: per unit-period backlogged, or per unit lost


@dataclass(frozen=True)
class Link:
    source: str
    target: str
    lead_time: int
    unit_cost: float = 0.0  # per unit shipped
    transit_holding_cost: float = 0.0  # per unit in transit per period
    capacity: float | None = None  # most units shipped per period
    min_order: float | None = None  # smallest positive order


@dataclass(frozen=True)
class Horizon:
    type: str = "long_run"  # 'long_run' | 'finite'
    warmup: int = 3000  # long run: periods not counted
    periods: int = 2000  # long run: periods counted; finite: the episode length T


@dataclass(frozen=True)
class NetworkSpec:
    """A validated network file. Locations and links keep the file's order (it is the priority
    order under ``allocation: priority``)."""

    locations: tuple[Location, ...]
    links: tuple[Link, ...]
    name: str = "network"
    allocation: str = "proportional"
    objective: str = "minimise_cost"
    horizon: Horizon = Horizon()
    correlation: float = 0.0
    history: str | None = None  # demand-history file, as written in the file
    history_demand: tuple[tuple[float, ...], ...] | None = None  # [store, period], when loaded

    @property
    def stores(self) -> list[Location]:
        return [loc for loc in self.locations if loc.kind == "store"]

    def location(self, name: str) -> Location:
        return next(loc for loc in self.locations if loc.name == name)


# -- small checks: each raises NetworkFileError naming the place ------------------------------


def _fail(where: str, message: str) -> NetworkFileError:
    return NetworkFileError(f"{where}: {message}")


def _mapping(value: Any, where: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise _fail(where, f"must be a mapping of keys to values, got {_show(value)}")
    return value


def _keys(value: Mapping, allowed: tuple[str, ...], where: str) -> None:
    for key in value:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _fail(_at(where, key), f"unknown key{hint}; allowed: {', '.join(allowed)}")


def _at(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _number(value: Any, where: str, *, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(where, f"must be a number >= {low:g}, got {_show(value)}")
    if not math.isfinite(value) or value < low:
        raise _fail(where, f"must be a finite number >= {low:g}, got {_show(value)}")
    return float(value)


def _whole(value: Any, where: str, *, low: int = 0) -> int:
    ok = (not isinstance(value, bool) and isinstance(value, (int, float))
          and math.isfinite(value) and value == int(value) and value >= low)
    if not ok:
        raise _fail(where, f"must be a whole number >= {low}, got {_show(value)}")
    return int(value)


def _choice(value: Any, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise _fail(where, f"must be one of {', '.join(allowed)}, got {_show(value)}")
    return value


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, f"must be a non-empty text, got {_show(value)}")
    return value


# -- sections -----------------------------------------------------------------------------------


def _store_demand(value: Any, where: str) -> StoreDemand:
    d = _mapping(value, where)
    _keys(d, STORE_DEMAND_KEYS, where)
    if "distribution" not in d:
        raise _fail(_at(where, "distribution"), f"required: one of {', '.join(DISTRIBUTIONS)}")
    dist = _choice(d["distribution"], DISTRIBUTIONS, _at(where, "distribution"))
    if "mean" not in d:
        raise _fail(_at(where, "mean"), "required: the mean demand per period")
    mean = _number(d["mean"], _at(where, "mean"))
    if dist == "poisson":
        if "std" in d:
            raise _fail(_at(where, "std"), "a Poisson demand has no std (its variance is its mean)")
        return StoreDemand(dist, mean)
    if "std" not in d:
        raise _fail(_at(where, "std"), "required for a normal demand")
    return StoreDemand(dist, mean, _number(d["std"], _at(where, "std")))


def _location(value: Any, where: str, history: bool) -> Location:
    loc = _mapping(value, where)
    if "kind" not in loc:
        raise _fail(_at(where, "kind"), f"required: one of {', '.join(KINDS)}")
    kind = _choice(loc["kind"], KINDS, _at(where, "kind"))
    _keys(loc, LOCATION_KEYS[kind], where)
    if "name" not in loc:
        raise _fail(_at(where, "name"), "required")
    out: dict[str, Any] = {"name": _name(loc["name"], _at(where, "name")), "kind": kind}
    for key in ("holding_cost", "initial_stock", "production_cost", "selling_price"):
        if key in loc:
            out[key] = _number(loc[key], _at(where, key))
    if "capacity" in loc:
        out["capacity"] = _number(loc["capacity"], _at(where, "capacity"))
    if "yield" in loc:
        y = loc["yield"]
        if isinstance(y, bool) or not isinstance(y, (int, float)) or not 0 < y <= 1:
            raise _fail(_at(where, "yield"), f"must lie in (0, 1], got {_show(y)}")
        out["yield_"] = float(y)
    if kind == "store":
        if history and "demand" in loc:
            raise _fail(_at(where, "demand"), "demand.history drives every store's demand; "
                        "drop the store's own demand")
        if not history:
            if "demand" not in loc:
                raise _fail(_at(where, "demand"), "required (or a file-level demand.history)")
            out["demand"] = _store_demand(loc["demand"], _at(where, "demand"))
        shortage = _mapping(loc.get("shortage", {}), _at(where, "shortage"))
        _keys(shortage, SHORTAGE_KEYS, _at(where, "shortage"))
        if "type" in shortage:
            out["shortage"] = _choice(shortage["type"], SHORTAGES, _at(where, "shortage.type"))
        if "penalty" in shortage:
            out["penalty"] = _number(shortage["penalty"], _at(where, "shortage.penalty"))
    return Location(**out)


def _link(value: Any, where: str, names: dict[str, Location]) -> Link:
    link = _mapping(value, where)
    _keys(link, LINK_KEYS, where)
    ends = []
    for key in ("from", "to"):
        if key not in link:
            raise _fail(_at(where, key), "required: a location name")
        end = link[key]
        if end not in names:
            close = difflib.get_close_matches(str(end), list(names), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _fail(_at(where, key), f"unknown location {_show(end)}{hint}")
        ends.append(end)
    src, dst = ends
    if names[src].kind == "store":
        raise _fail(_at(where, "from"), f"store {src!r} cannot ship to other locations")
    if names[dst].kind == "supplier":
        raise _fail(_at(where, "to"), f"supplier {dst!r} receives nothing (it has unlimited stock)")
    if src == dst:
        raise _fail(_at(where, "to"), f"a link from {src!r} to itself")
    if "lead_time" not in link:
        raise _fail(_at(where, "lead_time"), "required: a whole number of periods >= 0")
    out: dict[str, Any] = {"source": src, "target": dst,
                           "lead_time": _whole(link["lead_time"], _at(where, "lead_time"))}
    for key in ("unit_cost", "transit_holding_cost"):
        if key in link:
            out[key] = _number(link[key], _at(where, key))
    for key in ("capacity", "min_order"):
        if link.get(key) is not None:
            out[key] = _number(link[key], _at(where, key))
    return Link(**out)


def _horizon(value: Any) -> Horizon:
    h = _mapping(value, "horizon")
    _keys(h, HORIZON_KEYS, "horizon")
    kind = _choice(h.get("type", "long_run"), HORIZONS, "horizon.type")
    if kind == "finite":
        if "warmup" in h:
            raise _fail("horizon.warmup", "a finite horizon counts every period; drop warmup")
        if "periods" not in h:
            raise _fail("horizon.periods", "required for a finite horizon: the episode length")
        return Horizon("finite", 0, _whole(h["periods"], "horizon.periods", low=1))
    return Horizon("long_run", _whole(h.get("warmup", 3000), "horizon.warmup"),
                   _whole(h.get("periods", 2000), "horizon.periods", low=1))


def _check_graph(locations: tuple[Location, ...], links: tuple[Link, ...]) -> None:
    """No cycle, every location reached from a supplier, every non-store ships somewhere."""
    children: dict[str, list[tuple[int, str]]] = {loc.name: [] for loc in locations}
    for i, link in enumerate(links):
        children[link.source].append((i, link.target))
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for i, child in children[node]:
            if state.get(child) == 1:
                cycle = " -> ".join(path[path.index(child):] + [node, child]) \
                    if child in path else f"{node} -> {child}"
                raise _fail(f"links[{i}]", f"closes a cycle {cycle}; the network must be acyclic")
            if child not in state:
                visit(child, path + [node])
        state[node] = 2

    for loc in locations:
        if loc.name not in state:
            visit(loc.name, [])
    reached = {loc.name for loc in locations if loc.kind == "supplier"}
    stack = list(reached)
    while stack:
        for _, child in children[stack.pop()]:
            if child not in reached:
                reached.add(child)
                stack.append(child)
    for i, loc in enumerate(locations):
        if loc.name not in reached:
            raise _fail(f"locations[{i}]", f"no supplier reaches {loc.kind} {loc.name!r} "
                        "through the links")
        if loc.kind != "store" and not children[loc.name]:
            raise _fail(f"locations[{i}]", f"{loc.kind} {loc.name!r} ships to no location; "
                        "add a link from it")


def parse_network(data: Any) -> NetworkSpec:
    """Validate a network file's content (a dict) into a `NetworkSpec`."""
    top = _mapping(data, "file")
    _keys(top, TOP_KEYS, "")
    demand = _mapping(top.get("demand", {}), "demand")
    _keys(demand, DEMAND_KEYS, "demand")
    history = demand.get("history")
    if history is not None:
        history = _name(history, "demand.history")
    raw_locs = top.get("locations")
    if not isinstance(raw_locs, list) or not raw_locs:
        raise _fail("locations", "required: a list of locations")
    locations = tuple(_location(v, f"locations[{i}]", history is not None)
                      for i, v in enumerate(raw_locs))
    names: dict[str, Location] = {}
    for i, loc in enumerate(locations):
        if loc.name in names:
            raise _fail(f"locations[{i}].name", f"{loc.name!r} is used twice")
        names[loc.name] = loc
    if not any(loc.kind == "supplier" for loc in locations):
        raise _fail("locations", "at least one location of kind supplier is required")
    stores = [loc for loc in locations if loc.kind == "store"]
    if not stores:
        raise _fail("locations", "at least one location of kind store is required")
    raw_links = top.get("links")
    if not isinstance(raw_links, list) or not raw_links:
        raise _fail("links", "required: a list of links")
    links = tuple(_link(v, f"links[{i}]", names) for i, v in enumerate(raw_links))
    seen: dict[tuple[str, str], int] = {}
    for i, link in enumerate(links):
        key = (link.source, link.target)
        if key in seen and names[link.source].kind != "supplier":
            raise _fail(f"links[{i}]", f"duplicate of links[{seen[key]}] "
                        f"({link.source} -> {link.target})")
        seen.setdefault(key, i)
    _check_graph(locations, links)
    correlation = _correlation(demand.get("correlation", 0.0), len(stores))
    if correlation != 0.0 and history is not None:
        raise _fail("demand.correlation", "a demand history carries its own correlation; drop it")
    if correlation != 0.0 and any(s.demand.distribution != "normal" for s in stores):
        raise _fail("demand.correlation", "correlated demand needs normal demand at every store")
    return NetworkSpec(
        locations=locations, links=links,
        name=_name(top.get("name", "network"), "name"),
        allocation=_choice(top.get("allocation", "proportional"), ALLOCATIONS, "allocation"),
        objective=_choice(top.get("objective", "minimise_cost"), OBJECTIVES, "objective"),
        horizon=_horizon(top.get("horizon", {})), correlation=correlation, history=history,
    )


def _correlation(value: Any, n_stores: int) -> float:
    low = -1.0 / max(n_stores - 1, 1)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not low <= value < 1.0:
        raise _fail("demand.correlation", f"must lie in [{low:g}, 1) for {n_stores} store(s) "
                    f"(equicorrelation), got {_show(value)}")
    return float(value)


# -- at the edge: files -------------------------------------------------------------------------


def read_history(path: Path, stores: list[str], where: str = "demand.history") -> list[list[float]]:
    """Per-store demand ``[store][period]`` from a CSV with columns (date or period), store,
    demand; a store missing, a gap in the periods or a non-numeric demand is an error."""
    import pandas as pd

    place = f"{where} ({path.name})"
    if not path.exists():
        raise _fail(where, f"file {str(path)!r} does not exist")
    try:
        frame = pd.read_csv(path)
    except (ValueError, OSError) as err:
        raise _fail(place, f"not a readable CSV ({' '.join(str(err).split())})") from None
    cols = {str(c).strip().lower(): c for c in frame.columns}
    when = cols.get("period", cols.get("date"))
    if when is None or "store" not in cols or "demand" not in cols:
        raise _fail(place, f"needs columns (date or period), store, demand; got {list(frame.columns)}")
    demand = pd.to_numeric(frame[cols["demand"]], errors="coerce")
    bad = demand.isna() | (demand < 0)
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise _fail(place, f"row {row + 2}: demand must be a number >= 0, got "
                    f"{frame[cols['demand']].iloc[row]!r}")
    store_col = frame[cols["store"]].astype(str)
    unknown = sorted(set(store_col) - set(stores))
    if unknown:
        raise _fail(place, f"store {unknown[0]!r} is not a store of the network")
    if when == cols.get("date"):
        stamps = pd.to_datetime(frame[when], errors="coerce")
        if stamps.isna().any():
            row = int(stamps.isna().to_numpy().nonzero()[0][0])
            raise _fail(place, f"row {row + 2}: {frame[when].iloc[row]!r} is not a date")
    else:
        stamps = pd.to_numeric(frame[when], errors="coerce")
        if stamps.isna().any() or (stamps != stamps.round()).any():
            row = int((stamps.isna() | (stamps != stamps.round())).to_numpy().nonzero()[0][0])
            raise _fail(place, f"row {row + 2}: period {frame[when].iloc[row]!r} is not a whole number")
    table = pd.DataFrame({"store": store_col, "when": stamps, "demand": demand})
    if table.duplicated(["store", "when"]).any():
        row = int(table.duplicated(["store", "when"]).to_numpy().nonzero()[0][0])
        raise _fail(place, f"row {row + 2}: a second demand for store {store_col.iloc[row]!r} "
                    "in the same period")
    out = []
    periods = None
    for store in stores:
        rows = table[table["store"] == store].sort_values("when")
        if rows.empty:
            raise _fail(place, f"store {store!r} has no demand rows")
        steps = rows["when"].diff().dropna()
        expected = steps.iloc[0] if len(steps) else None
        if when != cols.get("date"):
            expected = 1
        if len(steps) and (steps != expected).any():
            gap = rows["when"].iloc[int((steps != expected).to_numpy().nonzero()[0][0])]
            raise _fail(place, f"store {store!r}: the periods have a gap after {gap}; "
                        "fill missing periods with 0")
        if periods is None:
            periods = list(rows["when"])
        elif list(rows["when"]) != periods:
            raise _fail(place, f"store {store!r} covers other periods than store {stores[0]!r}")
        out.append([float(x) for x in rows["demand"]])
    return out


def load_network_file(path: str | Path) -> NetworkSpec:
    """Read a YAML or JSON network file (and its demand history, relative to the file)."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise NetworkFileError(f"file: {str(path)!r} does not exist")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        raise NetworkFileError(f"{path.name}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}"
                               f" ({' '.join(str(err).split())})") from None
    try:
        spec = parse_network(data)
        if spec.history is not None:
            values = read_history(path.parent / spec.history, [s.name for s in spec.stores])
            spec = _with_history(spec, values)
    except NetworkFileError as err:
        raise NetworkFileError(f"{path.name}: {err}") from None
    return spec


def _with_history(spec: NetworkSpec, values: list[list[float]]) -> NetworkSpec:
    from dataclasses import replace

    return replace(spec, history_demand=tuple(tuple(row) for row in values))


def to_dict(spec: NetworkSpec) -> dict[str, Any]:
    """The file content of ``spec`` (defaults left out), so that ``parse_network(to_dict(s))``
    gives ``s`` back."""
    out: dict[str, Any] = {"name": spec.name}
    if spec.allocation != "proportional":
        out["allocation"] = spec.allocation
    if spec.objective != "minimise_cost":
        out["objective"] = spec.objective
    h = spec.horizon
    out["horizon"] = ({"type": "finite", "periods": h.periods} if h.type == "finite"
                      else {"type": "long_run", "warmup": h.warmup, "periods": h.periods})
    demand: dict[str, Any] = {}
    if spec.correlation:
        demand["correlation"] = spec.correlation
    if spec.history:
        demand["history"] = spec.history
    if demand:
        out["demand"] = demand
    out["locations"] = [_location_dict(loc) for loc in spec.locations]
    out["links"] = [_link_dict(link) for link in spec.links]
    return out


def _location_dict(loc: Location) -> dict[str, Any]:
    d: dict[str, Any] = {"name": loc.name, "kind": loc.kind}
    if loc.kind == "supplier":
        return d
    d["holding_cost"] = loc.holding_cost
    if loc.initial_stock:
        d["initial_stock"] = loc.initial_stock
    if loc.kind == "plant":
        if loc.capacity is not None:
            d["capacity"] = loc.capacity
        d["production_cost"] = loc.production_cost
        d["yield"] = loc.yield_
    if loc.kind == "store":
        if loc.demand is not None:
            d["demand"] = {"distribution": loc.demand.distribution, "mean": loc.demand.mean}
            if loc.demand.std is not None:
                d["demand"]["std"] = loc.demand.std
        if loc.selling_price:
            d["selling_price"] = loc.selling_price
        d["shortage"] = {"type": loc.shortage, "penalty": loc.penalty}
    return d


def _link_dict(link: Link) -> dict[str, Any]:
    d: dict[str, Any] = {"from": link.source, "to": link.target, "lead_time": link.lead_time}
    if link.unit_cost:
        d["unit_cost"] = link.unit_cost
    if link.transit_holding_cost:
        d["transit_holding_cost"] = link.transit_holding_cost
    if link.capacity is not None:
        d["capacity"] = link.capacity
    if link.min_order is not None:
        d["min_order"] = link.min_order
    return d
