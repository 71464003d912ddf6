"""Every WebSocket test runs twice: with the gateway's WebSocket fast path on and off (issue 18).

A test is a WebSocket test when it carries the ``ws`` marker (``pytestmark = pytest.mark.ws`` in its
module, or on the test). tests/conftest.py then parametrizes it, module-scoped, as ``[ws-fast]`` and
``[ws-queued]``: its module-scoped fixtures are built once per mode. The mode travels as
``GATEWAY_WS_FAST_PATH`` in the test process's environment, which every ``Settings(...)`` reads, and the
helpers that start gateway processes or containers (which start from a clean ``GATEWAY_*`` environment)
pass it on through :func:`process_env`.

Nothing may open a WebSocket unmarked: :func:`install_counters` counts every WebSocket upgrade an
in-process gateway accepts and every handshake a client of the suite starts (``websockets``' clients,
tests/support/raw_ws.py), and conftest fails an unmarked test that changed the count.
tests/system/test_ws_modes.py checks statically that every module using a WebSocket client is marked.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

ENV = "GATEWAY_WS_FAST_PATH"
MARKER = "ws"
FAST = "ws-fast"
QUEUED = "ws-queued"
#: The pytest ids of the two runs, in order, and the value of ``GATEWAY_WS_FAST_PATH`` in each.
MODES: dict[str, str] = {FAST: "true", QUEUED: "false"}


def process_env() -> dict[str, str]:
    """``GATEWAY_WS_FAST_PATH`` for a gateway process or container, as the running test's mode set it
    (empty outside WebSocket tests: the process keeps the default)."""
    value = os.environ.get(ENV)
    return {} if value is None else {ENV: value}


class _Counter:
    handshakes = 0


def handshakes() -> int:
    """WebSocket upgrades and client handshakes seen in this process so far."""
    return _Counter.handshakes


def count_handshake() -> None:
    _Counter.handshakes += 1


def _counting(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        count_handshake()
        return method(*args, **kwargs)

    wrapper.__dict__["ws_mode_counting"] = True
    return wrapper


def install_counters() -> None:
    """Wrap, once per process, the places every WebSocket of the suite passes: uvicorn's HTTP protocols
    hand an upgrade to the WebSocket implementation (whichever one a gateway runs), and ``websockets``'
    sans-I/O client protocol (its asyncio and sync clients, the browser aside, all build one)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from websockets.client import ClientProtocol

    targets: list[tuple[type, str]] = [
        (HttpToolsProtocol, "handle_websocket_upgrade"),
        (H11Protocol, "handle_websocket_upgrade"),
        (ClientProtocol, "__init__"),
    ]
    for cls, name in targets:
        method = cls.__dict__[name]
        if not getattr(method, "ws_mode_counting", False):
            setattr(cls, name, _counting(method))
