"""Baseline: a bare WebSocket receiver on the same uvicorn WebSocket implementation (receive, discard)."""

from __future__ import annotations

import sys
from typing import Any

import uvicorn

from gateway.settings import Settings


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass


if __name__ == "__main__":
    defaults = Settings(_env_file=None)
    uvicorn.run(
        app, host="127.0.0.1", port=int(sys.argv[1]), ws=defaults.ws_implementation, ws_per_message_deflate=False,
        ws_max_size=defaults.max_ws_message_bytes, log_level="warning", lifespan="on",
    )  # fmt: skip
