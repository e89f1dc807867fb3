"""The network-file parser: valid files give the spec they describe, every bad file is one error
naming the place in the file (docs/network-files.md)."""

from __future__ import annotations

import copy
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oprl.simulators.network_file import (
    NetworkFileError,
    load_network_file,
    parse_network,
    read_history,
    to_dict,
)


def chain() -> dict:
    """Supplier -> warehouse -> store, every optional field set once."""
    return {
        "name": "chain",
        "allocation": "priority",
        "horizon": {"type": "long_run", "warmup": 50, "periods": 100},
        "locations": [
            {"name": "mill", "kind": "supplier"},
            {"name": "dc", "kind": "warehouse", "holding_cost": 0.5, "initial_stock": 10},
            {"name": "shop", "kind": "store", "holding_cost": 1,
             "demand": {"distribution": "normal", "mean": 5, "std": 2},
             "selling_price": 12, "shortage": {"type": "lost_sales", "penalty": 9}},
        ],
        "links": [
            {"from": "mill", "to": "dc", "lead_time": 3, "unit_cost": 0.2,
             "transit_holding_cost": 0.1, "capacity": 20},
            {"from": "dc", "to": "shop", "lead_time": 0, "min_order": 2},
        ],
    }


def test_a_valid_file_gives_what_it_says():
    spec = parse_network(chain())
    assert [loc.name for loc in spec.locations] == ["mill", "dc", "shop"]
    shop = spec.location("shop")
    assert (shop.shortage, shop.penalty, shop.selling_price) == ("lost_sales", 9.0, 12.0)
    assert (shop.demand.distribution, shop.demand.mean, shop.demand.std) == ("normal", 5.0, 2.0)
    assert spec.links[0].capacity == 20.0 and spec.links[0].transit_holding_cost == 0.1
    assert spec.links[1].lead_time == 0 and spec.links[1].min_order == 2.0
    assert spec.allocation == "priority" and spec.horizon.warmup == 50
    assert spec.location("dc").initial_stock == 10.0


def test_defaults_and_round_trip():
    data = chain()
    del data["allocation"], data["horizon"]
    spec = parse_network(data)
    assert spec.allocation == "proportional" and spec.objective == "minimise_cost"
    assert spec.horizon.type == "long_run"
    assert parse_network(to_dict(spec)) == spec
    assert parse_network(json.loads(json.dumps(to_dict(spec)))) == spec


def _set(data: dict, path: str, value) -> dict:
    """``data`` with the field at ``path`` (``links[1].lead_time``) set; ``...`` deletes it."""
    data = copy.deepcopy(data)
    keys = [int(k) if k.isdigit() else k for k in re.findall(r"[^.\[\]]+", path)]
    target = data
    for k in keys[:-1]:
        target = target[k]
    if value is ...:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return data


BAD = [
    ("links[0].lead_time", 2.5, "links[0].lead_time: must be a whole number >= 0, got 2.5"),
    ("links[1].lead_time", -1, "links[1].lead_time: must be a whole number >= 0, got -1"),
    ("links[1].lead_time", "2", "links[1].lead_time: must be a whole number >= 0, got '2'"),
    ("links[0].lead_time", ..., "links[0].lead_time: required"),
    ("links[0].leadtime", 2, "links[0].leadtime: unknown key (did you mean 'lead_time'?)"),
    ("locations[1].holdng_cost", 1, "locations[1].holdng_cost: unknown key (did you mean 'holding_cost'?)"),
    ("locations[1].holding_cost", -0.5, "locations[1].holding_cost: must be a finite number >= 0"),
    ("locations[1].initial_stock", -3, "locations[1].initial_stock: must be a finite number >= 0"),
    ("locations[1].kind", "depot", "locations[1].kind: must be one of supplier, plant"),
    ("locations[2].name", "dc", "locations[2].name: 'dc' is used twice"),
    ("links[0].capacity", -1, "links[0].capacity: must be a finite number >= 0"),
    ("links[0].unit_cost", float("nan"), "links[0].unit_cost: must be a finite number >= 0"),
    ("links[0].to", "dcc", "links[0].to: unknown location 'dcc' (did you mean 'dc'?)"),
    ("links[1].from", "shop", "links[1].from: store 'shop' cannot ship"),
    ("links[0].to", "mill", "links[0].to: supplier 'mill' receives nothing"),
    ("locations[2].demand.distribution", "uniform", "locations[2].demand.distribution: must be one of poisson, normal"),
    ("locations[2].demand.std", ..., "locations[2].demand.std: required for a normal demand"),
    ("locations[2].demand", ..., "locations[2].demand: required"),
    ("locations[2].shortage.type", "lost", "locations[2].shortage.type: must be one of backlog, lost_sales"),
    ("locations[2].shortage.penalty", True, "locations[2].shortage.penalty: must be a number >= 0, got True"),
    ("allocation", "fifo", "allocation: must be one of proportional, priority"),
    ("objective", "min", "objective: must be one of minimise_cost, maximise_profit"),
    ("horizon.type", "forever", "horizon.type: must be one of long_run, finite"),
    ("horizon.periods", 0, "horizon.periods: must be a whole number >= 1"),
    ("demand", {"correlation": 1.0}, "demand.correlation: must lie in [-1, 1)"),
    ("demand", {"corelation": 0.1}, "demand.corelation: unknown key (did you mean 'correlation'?)"),
    ("colour", "red", "colour: unknown key"),
    ("locations", [], "locations: required"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD, ids=[b[0] + "=" + repr(b[1]) for b in BAD])
def test_a_bad_field_is_one_error_naming_its_place(path, value, message):
    with pytest.raises(NetworkFileError) as err:
        parse_network(_set(chain(), path, value))
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_a_plant_yield_outside_0_1_is_refused():
    data = chain()
    data["locations"][1] = {"name": "dc", "kind": "plant", "capacity": 5, "yield": 0}
    with pytest.raises(NetworkFileError, match=r"^locations\[1\]\.yield: must lie in \(0, 1\], got 0"):
        parse_network(data)
    data["locations"][1]["yield"] = 1.5
    with pytest.raises(NetworkFileError, match=r"got 1\.5"):
        parse_network(data)
    data["locations"][1]["yield"] = 0.9
    assert parse_network(data).location("dc").yield_ == 0.9


def test_a_cycle_names_the_link_that_closes_it():
    data = chain()
    data["locations"].insert(2, {"name": "hub", "kind": "warehouse"})
    data["links"] += [{"from": "dc", "to": "hub", "lead_time": 1},
                      {"from": "hub", "to": "dc", "lead_time": 1}]
    with pytest.raises(NetworkFileError, match=r"^links\[3\]: closes a cycle dc -> hub -> dc"):
        parse_network(data)


def test_a_store_no_supplier_reaches_is_refused():
    data = chain()
    data["locations"].append({"name": "far", "kind": "store", "shortage": {"penalty": 1},
                              "demand": {"distribution": "poisson", "mean": 1}})
    with pytest.raises(NetworkFileError, match=r"^locations\[3\]: no supplier reaches store 'far'"):
        parse_network(data)


def test_a_warehouse_that_ships_nowhere_is_refused():
    data = chain()
    data["locations"].insert(2, {"name": "dead_end", "kind": "warehouse"})
    data["links"].append({"from": "mill", "to": "dead_end", "lead_time": 1})
    with pytest.raises(NetworkFileError, match=r"^locations\[2\]: warehouse 'dead_end' ships to no"):
        parse_network(data)


def test_several_links_from_suppliers_to_one_location_are_allowed():
    data = chain()
    data["locations"].insert(1, {"name": "mill2", "kind": "supplier"})
    data["links"].append({"from": "mill2", "to": "dc", "lead_time": 1, "unit_cost": 0.1})
    assert len(parse_network(data).links) == 3
    data["links"].append({"from": "dc", "to": "shop", "lead_time": 2})
    with pytest.raises(NetworkFileError, match=r"^links\[3\]: duplicate of links\[1\]"):
        parse_network(data)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["links[0].lead_time", "links[1].unit_cost", "links[0].capacity",
                        "locations[1].holding_cost", "locations[2].initial_stock",
                        "locations[2].shortage.penalty", "locations[2].demand.mean",
                        "links[1].transit_holding_cost", "links[0].min_order"]),
       st.one_of(st.floats(max_value=-1e-6, allow_nan=False), st.just(float("inf")),
                 st.text(max_size=3), st.booleans(), st.none(), st.lists(st.integers(), max_size=2)))
def test_any_bad_number_names_its_field(path, value):
    if value is None and path.endswith(("capacity", "min_order")):
        return  # null means "none" for the optional limits
    with pytest.raises(NetworkFileError) as err:
        parse_network(_set(chain(), path, value))
    assert str(err.value).startswith(path + ": must be")


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_random_valid_networks_round_trip(data):
    """A random layered network (suppliers -> warehouses -> stores) parses, and writing it out
    and reading it back gives the same spec."""
    n_sup = data.draw(st.integers(1, 2))
    n_wh = data.draw(st.integers(0, 3))
    n_st = data.draw(st.integers(1, 4))
    num = st.floats(0, 20, allow_nan=False)
    locs = [{"name": f"s{i}", "kind": "supplier"} for i in range(n_sup)]
    locs += [{"name": f"w{i}", "kind": "warehouse", "holding_cost": data.draw(num)} for i in range(n_wh)]
    locs += [{"name": f"r{i}", "kind": "store", "holding_cost": data.draw(num),
              "demand": {"distribution": "poisson", "mean": data.draw(num)},
              "shortage": {"type": data.draw(st.sampled_from(["backlog", "lost_sales"])),
                           "penalty": data.draw(num)}} for i in range(n_st)]
    links = [{"from": f"s{data.draw(st.integers(0, n_sup - 1))}", "to": f"w{i}",
              "lead_time": data.draw(st.integers(0, 12))} for i in range(n_wh)]
    for i in range(n_st):
        feeders = [f"w{j}" for j in range(n_wh)] or ["s0"]
        links.append({"from": data.draw(st.sampled_from(feeders)), "to": f"r{i}",
                      "lead_time": data.draw(st.integers(0, 12)), "unit_cost": data.draw(num)})
    for i in range(n_wh):  # a warehouse no store draws from still ships to the first store
        if not any(link["from"] == f"w{i}" for link in links):
            links.append({"from": f"w{i}", "to": "r0", "lead_time": 1})
    for i in range(n_sup):  # so does an unused supplier (several suppliers may feed one place)
        if not any(link["from"] == f"s{i}" for link in links):
            links.append({"from": f"s{i}", "to": "w0" if n_wh else "r0", "lead_time": 2})
    spec = parse_network({"locations": locs, "links": links})
    assert len(spec.stores) == n_st
    assert parse_network(to_dict(spec)) == spec


# -- files ---------------------------------------------------------------------------------------


def _history_file(tmp_path, text: str):
    (tmp_path / "h.csv").write_text(text)
    data = chain()
    data["demand"] = {"history": "h.csv"}
    del data["locations"][2]["demand"]
    (tmp_path / "net.json").write_text(json.dumps(data))
    return tmp_path / "net.json"


def test_a_history_file_drives_the_stores(tmp_path):
    path = _history_file(tmp_path, "period,store,demand\n1,shop,4\n2,shop,0\n3,shop,7\n")
    spec = load_network_file(path)
    assert spec.history_demand == ((4.0, 0.0, 7.0),)


@pytest.mark.parametrize(("text", "message"), [
    ("period,store,demand\n1,other,4\n", "store 'other' is not a store of the network"),
    ("period,shop,demand\n1,shop,4\n", "needs columns (date or period), store, demand"),
    ("period,store,demand\n1,shop,4\n3,shop,5\n", "store 'shop': the periods have a gap after 1"),
    ("period,store,demand\n1,shop,4\n2,shop,lots\n", "row 3: demand must be a number >= 0, got 'lots'"),
    ("date,store,demand\n2024-01-01,shop,4\n2024-01-08,shop,1\n2024-01-22,shop,2\n",
     "store 'shop': the periods have a gap"),
])
def test_a_bad_history_file_is_refused(tmp_path, text, message):
    path = _history_file(tmp_path, text)
    with pytest.raises(NetworkFileError) as err:
        load_network_file(path)
    assert str(err.value).startswith("net.json: demand.history (h.csv): ")
    assert message in str(err.value)


def test_a_history_file_missing_a_store_is_refused(tmp_path):
    (tmp_path / "h.csv").write_text("period,store,demand\n1,a,4\n2,a,5\n")
    with pytest.raises(NetworkFileError, match="store 'b' has no demand rows"):
        read_history(tmp_path / "h.csv", ["a", "b"])


def test_bad_yaml_names_the_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("locations: [\n")
    with pytest.raises(NetworkFileError, match=r"^bad\.yaml: not valid YAML"):
        load_network_file(tmp_path / "bad.yaml")
