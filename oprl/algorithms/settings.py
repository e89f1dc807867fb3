"""Training settings as frozen dataclasses: names, types and ranges checked before a run starts.

Every algorithm declares its hyper-parameters as a subclass of `LoopSettings` (the fields the
training loop itself reads: ``steps``, ``eval_every``, ``patience``, ``min_improvement``) with
defaults, and checks its ranges in ``__post_init__`` through `require`. `parse_settings` turns
a loose mapping (a scenario's defaults, ``--hyper`` from the command line, a sweep's YAML) into
such an object: unknown names list the allowed ones, a string such as ``"1e3"`` is read as a
number, and a wrong type is a one-line ValueError naming the setting and the expected type.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

S = TypeVar("S", bound="LoopSettings")

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
               tuple: "a list"}


def require(ok: bool, name: str, allowed: str, value: Any) -> None:
    """ValueError ``"name: must be <allowed>, got <value>"`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{name}: must be {allowed}, got {value!r}")


@dataclass(frozen=True)
class LoopSettings:
    """What the training loop reads (`oprl.algorithms.loop.run_loop`).

    ``steps``: update steps; ``eval_every``: steps between dev evaluations (the last step is
    always evaluated); ``patience``: stop once ``patience`` dev evaluations in a row have not
    improved on the best dev value by more than ``min_improvement`` (relative), None: never."""

    steps: int = 100
    eval_every: int = 10
    patience: int | None = None
    min_improvement: float = 0.0

    def __post_init__(self) -> None:
        check_types(self)
        require(self.steps >= 0, "steps", "an integer >= 0", self.steps)
        require(self.eval_every >= 1, "eval_every", "an integer >= 1", self.eval_every)
        require(self.patience is None or self.patience >= 0, "patience",
                "an integer >= 0 or null", self.patience)
        require(0 <= self.min_improvement < 1, "min_improvement", "a number in [0, 1)",
                self.min_improvement)

    def replace(self: S, **changes: Any) -> S:
        """A copy with ``changes`` (parsed and checked like `parse_settings`)."""
        return parse_settings(type(self), {**dataclasses.asdict(self), **changes})


def setting_names(cls: type[LoopSettings]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def parse_settings(cls: type[S], values: Mapping[str, Any] | None = None, *,
                   owner: str = "") -> S:
    """``cls(**values)`` with names checked (a ValueError lists the allowed ones), numeric
    strings read as numbers and whole floats accepted as integers (``"1e3"`` -> 1000)."""
    values = dict(values or {})
    allowed = setting_names(cls)
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        who = f"{owner} has no setting" if owner else "unknown setting"
        raise ValueError(f"hyper: {who} {unknown[0]!r}; allowed: {', '.join(allowed)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _coerce(k, v, hints[k]) for k, v in values.items()})


def check_types(settings: LoopSettings) -> None:
    """ValueError naming the first field whose value does not have its declared type."""
    hints = typing.get_type_hints(type(settings))
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if not _matches(value, hints[f.name]):
            raise ValueError(f"{f.name}: expected {_describe(hints[f.name])}, got {value!r}")


def _options(hint: Any) -> tuple[Any, ...]:
    """The member types of ``X | Y`` / ``Optional[X]``, or ``(hint,)``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return typing.get_args(hint)
    return (hint,)


def _describe(hint: Any) -> str:
    names = []
    for option in _options(hint):
        base = typing.get_origin(option) or option
        names.append("null" if option is type(None) else _TYPE_NAMES.get(base, str(option)))
    return " or ".join(names)


def _matches(value: Any, hint: Any) -> bool:
    for option in _options(hint):
        base = typing.get_origin(option) or option
        if option is type(None) and value is None:
            return True
        if base is bool and isinstance(value, bool):
            return True
        if base is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if (base is float and isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value)):
            return True
        if base is str and isinstance(value, str):
            return True
        if base is tuple and isinstance(value, tuple):
            return True
    return False


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Loose input (YAML, the command line) to the declared type where that is unambiguous."""
    options = [typing.get_origin(o) or o for o in _options(hint)]
    if isinstance(value, str) and _NUMBER.match(value.strip()) and (int in options
                                                                     or float in options):
        value = float(value)
    if (int in options and float not in options and isinstance(value, float)
            and value.is_integer()):
        value = int(value)
    if tuple in options and isinstance(value, list):
        value = tuple(value)
    if not _matches(value, hint):
        raise ValueError(f"{name}: expected {_describe(hint)}, got {value!r}")
    return value
