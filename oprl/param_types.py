"""Scenario parameters checked against their declared types before a simulator is built.

Every scenario parameter is annotated (a factory argument or a field of the simulator's
``Params``); `check_params` holds each given value to its annotation, so the class of mistake
"a value of the wrong kind is silently accepted" (``n_stores=2.5`` truncated to 2,
``warmup=true`` read as 1, ``eta=nan``) is one ValueError naming the parameter. Ranges are
each simulator's own checks (docs/errors.md).
"""

from __future__ import annotations

import inspect
import math
import numbers
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

# a list parameter longer than this is refused before any allocation (the largest catalogue
# of per-item values oprl simulates has a few thousand entries)
MAX_LIST = 100_000


def annotations(factory: Callable, params_type: type) -> dict[str, Any]:
    """The annotation of every scenario parameter: the factory's arguments and, through a
    ``**kw``, the fields of ``params_type`` (unresolvable annotations map to ``Any``)."""
    sig = inspect.signature(factory)
    hints = _hints(factory)
    out = {n: hints.get(n, Any) for n, p in sig.parameters.items()
           if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        field_hints = _hints(params_type)
        for f in fields(params_type):
            out.setdefault(f.name, field_hints.get(f.name, Any))
    return out


def _hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj)
    except Exception:  # noqa: BLE001  (a forward reference we cannot resolve: not checked)
        return {}


def check_params(values: Mapping[str, Any], hints: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with each one checked against (and normalised to) its annotation: whole
    floats become ints where an int is declared; anything else of the wrong kind is a
    ValueError naming the parameter and what is allowed."""
    return {name: check_value(name, value, hints.get(name, Any)) for name, value in values.items()}


def check_value(name: str, value: Any, hint: Any) -> Any:
    """``value`` if it is of kind ``hint`` (normalised), else a ValueError naming ``name``."""
    ok, out = _match(value, hint)
    if ok:
        return out
    raise ValueError(f"{name}: expected {describe(hint)}, got {_show(value)}")


def _match(value: Any, hint: Any) -> tuple[bool, Any]:
    if hint is Any or hint is inspect.Parameter.empty:
        return True, value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            ok, out = _match(value, arm)
            if ok:
                return True, out
        return False, None
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return _whole(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False, None
        return math.isfinite(float(value)), float(value)
    if hint is str:
        return isinstance(value, str), value
    if hint is Path:
        return isinstance(value, (str, Path)), value
    if origin in (tuple, list, Sequence, typing.Sequence) or hint in (tuple, list):
        return _sequence(value, origin or hint, args)
    return True, value  # tensors, dicts, data: the simulator checks them


def _whole(value: Any) -> tuple[bool, Any]:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False, None
    if isinstance(value, numbers.Integral):
        return True, int(value)
    v = float(value)
    return (math.isfinite(v) and v.is_integer()), (int(v) if math.isfinite(v) else None)


def _sequence(value: Any, origin: Any, args: tuple) -> tuple[bool, Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        return False, None
    if len(value) > MAX_LIST:
        return False, None
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            return False, None
        items = list(zip(value, args))
    else:
        item = args[0] if args else Any
        items = [(v, item) for v in value]
    out = []
    for v, arm in items:
        ok, got = _match(v, arm)
        if not ok:
            return False, None
        out.append(got)
    return True, type(value)(out)


def describe(hint: Any) -> str:
    """``hint`` in words: 'a whole number', 'a list of numbers or None', ..."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if hint is type(None):
        return "None (null)"
    words = {bool: "true or false", int: "a whole number", float: "a finite number",
             str: "a string", Path: "a file path"}
    if hint in words:
        return words[hint]
    if origin in (tuple, list, Sequence, typing.Sequence) or hint in (tuple, list):
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {len(args)} values ({', '.join(describe(a) for a in args)})"
        inner = describe(args[0]) if args else "values"
        return f"a list (at most {MAX_LIST:,} long) of {_plural(inner)}"
    return getattr(hint, "__name__", str(hint))


def _plural(words: str) -> str:
    for one, many in (("a whole number", "whole numbers"), ("a finite number", "finite numbers"),
                      ("a string", "strings"), ("true or false", "booleans")):
        words = words.replace(one, many)
    return words


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
