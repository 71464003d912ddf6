"""The AsyncAPI document: valid YAML, internally consistent, served by the app, and complete — every
message type the WebSocket adapters handle is documented on its channel."""

from __future__ import annotations

import ast
import inspect
from importlib import resources
from typing import Any

import httpx
import yaml

from gateway.adapters import messages, native
from gateway.simulator.server import DataflowSimulator
from tests.support.harness import running_gateway
from tests.support.settings import settings_for


def load() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(resources.files("gateway").joinpath("asyncapi.yaml").read_text("utf-8"))
    return doc


def resolve(doc: dict[str, Any], node: Any) -> Any:
    """Follow local ``$ref``s (``#/a/b``) until a real node."""
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = doc
        for part in ref[2:].split("/"):
            assert part in node, f"dangling $ref {ref}"
            node = node[part]
    return node


def walk_refs(doc: dict[str, Any], node: Any) -> None:
    if isinstance(node, dict):
        if "$ref" in node:
            resolve(doc, node)
        for value in node.values():
            walk_refs(doc, value)
    elif isinstance(node, list):
        for value in node:
            walk_refs(doc, value)


def payload_const(doc: dict[str, Any], message: Any, key: str) -> str | None:
    payload = resolve(doc, resolve(doc, message).get("payload", {}))
    parts = [resolve(doc, p) for p in payload.get("allOf", [payload])]
    for part in parts:
        const = part.get("properties", {}).get(key, {}).get("const")
        if const is not None:
            return str(const)
    return None


def channel_types(doc: dict[str, Any], channel: str, action: str, key: str = "type") -> set[str]:
    """Message types on ``channel`` for operations with ``action`` (receive: client -> gateway)."""
    found: set[str] = set()
    for operation in doc["operations"].values():
        if operation["action"] == action and resolve(doc, operation["channel"]) is doc["channels"][channel]:
            for message in operation["messages"]:
                const = payload_const(doc, message, key)
                if const is not None:
                    found.add(const)
    return found


def native_types() -> tuple[set[str], set[str]]:
    """(client types the native dialect compares ``kind`` with, server types it or the native vocabulary
    writes as ``"type"``)."""
    tree = ast.parse(inspect.getsource(native) + "\n" + inspect.getsource(messages))
    client, server = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "kind":
            client |= {c.value for c in node.comparators if isinstance(c, ast.Constant) and isinstance(c.value, str)}
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "type" and isinstance(value, ast.Constant):
                    server.add(value.value)
    return client, server


def test_document_is_asyncapi_3_and_every_ref_resolves() -> None:
    doc = load()
    assert doc["asyncapi"] == "3.0.0"
    walk_refs(doc, doc)
    for name, operation in doc["operations"].items():
        assert operation["action"] in ("send", "receive"), name
        channel = resolve(doc, operation["channel"])
        for message in operation["messages"]:  # an operation's messages must belong to its channel
            assert message["$ref"].startswith("#/channels/"), name
            assert any(resolve(doc, m) is resolve(doc, message) for m in channel["messages"].values()), name


def test_every_native_message_type_is_documented() -> None:
    client, server = native_types()
    assert {"start", "finalize", "stop", "update", "event", "ping"} <= client  # the AST scan works
    assert {"started", "event", "ack", "error", "closed", "pong", "response"} <= server
    doc = load()
    assert doc["channels"]["stream"]["address"] == "/v1/stream"
    assert client <= channel_types(doc, "stream", "receive")
    assert server <= channel_types(doc, "stream", "send")


def test_legacy_dialects_are_documented() -> None:
    doc = load()
    addresses = {c["address"] for c in doc["channels"].values()}
    assert {"/project-runner", "/project-runner/{project}", "/v1/audiocodes"} <= addresses
    assert channel_types(doc, "audiocodes", "receive") == {"start", "stop"}
    assert channel_types(doc, "audiocodes", "send") == {"started", "hypothesis", "recognition", "end", "error"}
    for channel in ("projectRunner", "projectRunnerForProject"):
        assert channel_types(doc, channel, "receive", "MessageName") == {"Start", "Update", "Finalize", "Stop"}


async def test_the_app_serves_the_document(simulator: DataflowSimulator) -> None:
    async with running_gateway(settings_for(simulator)) as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
        response = await http.get("/asyncapi.yaml")
    assert response.status_code == 200
    assert yaml.safe_load(response.text) == load()
