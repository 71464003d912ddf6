"""The ``GATEWAY_*`` environment against the settings' fields: unknown names (with a "did you mean"
for typos) and validation problems, each as one line naming the variable, never its value."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

PREFIX = "GATEWAY_"
# Kubernetes injects <SERVICE>_SERVICE_HOST / _PORT_<n>_TCP… for a Service named "gateway".
_SERVICE_LINKS = re.compile(r"^GATEWAY_(SERVICE_(HOST|PORT)(_\w+)?|PORT_\d+_(TCP|UDP|SCTP)(_\w+)?)$")


def dotenv_names(env_file: object) -> list[str]:
    """The variable names a .env file sets (none when there is no such file)."""
    if not isinstance(env_file, str | Path) or not Path(env_file).is_file():
        return []
    return list(dotenv_values(env_file))


def variable_name(field: str) -> str:
    return PREFIX + field.upper()


def unknown_variables(names: Iterable[str], fields: Iterable[str]) -> list[str]:
    """One line per ``GATEWAY_*`` name in ``names`` that no field reads."""
    known = sorted(variable_name(f) for f in fields)
    problems = []
    for name in sorted(set(names)):
        upper = name.upper()
        if not upper.startswith(PREFIX) or upper in known or _SERVICE_LINKS.match(upper):
            continue
        guess = difflib.get_close_matches(upper, known, n=1, cutoff=0.75)
        hint = f"; did you mean {guess[0]}?" if guess else " (README lists every setting)"
        problems.append(f"{name}: unknown setting{hint}")
    return problems


def _where(loc: Sequence[Any], fields: Iterable[str]) -> str:
    if not loc or str(loc[0]) not in set(fields):
        return "settings"
    rest = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc[1:])
    return variable_name(str(loc[0])) + rest


def validation_problems(errors: Iterable[Mapping[str, Any]], fields: Iterable[str]) -> list[str]:
    """One line per pydantic error: the variable and the rule it breaks (pydantic's ``msg`` does not
    quote the input; ``input`` and ``ctx`` are left out as they may)."""
    names = list(fields)
    problems = []
    for err in errors:
        # The gateway's own rules say what is wrong in full: pydantic's "Value error, " before them says nothing.
        text = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        where = _where(err.get("loc", ()), names)
        # A rule across settings has no one field: its text begins with the variable it names first.
        problems.append(text if where == "settings" and text.startswith(PREFIX) else f"{where}: {text}")
    return problems


_FIELD_IN_PARSE_ERROR = re.compile(r'field "(\w+)"')


def parse_problem(message: str) -> str:
    """pydantic-settings' text for a value that is not JSON, as one line naming the variable."""
    field = _FIELD_IN_PARSE_ERROR.search(message)
    where = variable_name(field.group(1)) if field else "settings"
    return f"{where}: not valid JSON (a list or object is expected)"
