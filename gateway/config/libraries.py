"""The web stack's releases this gateway is built on, checked before the gateway imports them.

The gateway extends uvicorn's sans-I/O WebSocket protocol and its httptools protocol, and reads the
websockets library's handshake errors (``gateway/connections``, ``gateway/ws_protocol.py``). Older
releases either fail at import with a traceback (uvicorn before 0.35, websockets before 17) or start
and then fail per connection: on uvicorn 0.35-0.49 every session's first message met an AttributeError
(the fast path reads frames uvicorn keeps only since 0.50); on 0.50-0.52 the bound on queued pongs was
gone; before 0.55 a handshake websockets refuses was never answered. pip honours pyproject's floors;
this check is for an environment that did not (a lagging wheelhouse, ``--no-deps``, another package's
pin): one line naming the release, and the command exits 2."""

from __future__ import annotations

import itertools
from importlib import metadata

#: The oldest release of each library the gateway works with (pyproject's floors say the same).
FLOORS: dict[str, tuple[int, ...]] = {"uvicorn": (0, 55), "websockets": (17, 0)}


def release(version: str) -> tuple[int, ...]:
    """The leading numbers of ``version``: ``0.55.0`` -> (0, 55, 0), ``17.0rc1`` -> (17, 0)."""
    numbers = []
    for piece in version.split("."):
        digits = "".join(itertools.takewhile(str.isdigit, piece))
        if not digits:
            break
        numbers.append(int(digits))
        if digits != piece:
            break
    return tuple(numbers)


def library_problems() -> list[str]:
    """One line for each library older than its floor (or missing)."""
    problems = []
    for name, floor in FLOORS.items():
        needed = ".".join(map(str, floor))
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name} is not installed; the gateway needs {name} >= {needed} (pip install -e .)")
            continue
        if release(installed) < floor:
            upgrade = f"pip install -U '{name}>={needed}'"
            problems.append(f"{name} {installed} is installed; the gateway needs {name} >= {needed} ({upgrade})")
    return problems
