"""The layout's rules, checked on the source: no import circle (type-only imports included), small
modules, a short top level, and the boundaries that keep each layer ignorant of the others."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "gateway"
SOURCES = sorted(p for p in GATEWAY.rglob("*.py") if "_proto" not in p.parts)


def _import_graph_module() -> object:
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_import_circle() -> None:
    graph_module = _import_graph_module()
    graph = graph_module.graph()  # type: ignore[attr-defined]
    assert len(graph) == len(SOURCES)
    assert any("gateway.relay.session" in targets for targets in graph.values())  # the scan sees imports
    assert graph_module.cycles(graph) == []  # type: ignore[attr-defined]


def test_the_circle_finder_finds_a_circle() -> None:
    cycles = _import_graph_module().cycles  # type: ignore[attr-defined]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_over_300_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in SOURCES if (n := len(p.read_text().splitlines())) > 300}
    assert long == {}


def test_at_most_12_modules_at_the_top() -> None:
    top = sorted(p.name for p in GATEWAY.glob("*.py"))
    assert len(top) <= 12, top


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("adapters", ("grpc", "google.protobuf", "gateway.upstream")),
        ("relay", ("grpc", "google.protobuf", "fastapi", "starlette", "gateway.upstream", "gateway.adapters")),
        ("audio", ("grpc", "google.protobuf", "fastapi")),
        ("dataflow", ("grpc", "google.protobuf", "fastapi", "starlette")),
        ("upload", ("grpc", "google.protobuf", "gateway.upstream")),
        ("routes", ("grpc", "google.protobuf")),
    ],
)
def test_layer_boundaries(package: str, forbidden: tuple[str, ...]) -> None:
    crossings = {
        str(path.relative_to(ROOT)): sorted(n for n in imported(path) if n.startswith(forbidden))
        for path in (GATEWAY / package).rglob("*.py")
    }
    assert {k: v for k, v in crossings.items() if v} == {}


def test_dialects_are_pure() -> None:
    """A dialect module does no I/O: no sockets, no asyncio, no session, no FastAPI."""
    for name in ("native", "dataflow_ws", "audiocodes", "audiohook", "audiohook_media"):
        names = imported(GATEWAY / "adapters" / f"{name}.py")
        assert not {n for n in names if n.startswith(("asyncio", "fastapi", "starlette", "gateway.relay.session"))}


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("gateway.relay.session", ("starlette", "fastapi", "grpc", "google.protobuf")),
        ("gateway.adapters.ws", ("grpc", "google.protobuf")),  # adapters/routes needs service_of: it loads gRPC
    ],
)
def test_layer_boundaries_at_run_time(module: str, forbidden: tuple[str, ...]) -> None:
    """What a layer loads through the modules it imports, not only what it names (the check above)."""
    code = f"import sys, {module}; print(' '.join(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert [m for m in loaded.stdout.split() if m in forbidden or m.startswith(tuple(f"{f}." for f in forbidden))] == []
