"""YAML as users write it: ``1e3`` and ``1e-3`` are numbers (YAML 1.2; PyYAML's YAML 1.1 reads
them as strings), and a syntax error is one line naming the place."""

from __future__ import annotations

import re
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    """SafeLoader (no Python objects) that also reads exponent floats without a dot."""


_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789"))


def load_yaml(text: str, where: str) -> Any:
    """Parse ``text``; a syntax error is a one-line ValueError naming ``where``, the line and
    the column."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        place = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
        problem = err.problem or err.context or "invalid YAML"
        raise ValueError(f"{where}: not valid YAML at{place} {problem}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{where}: not valid YAML ({' '.join(str(err).split())})") from None
