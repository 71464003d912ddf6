"""Suite-wide setup and every shared fixture: asyncio debug mode, the log secret check, the simulator,
the upstream client, the gateways (``gateway_factory``, ``gw``) and the two WebSocket modes every test
marked ``ws`` runs in (tests/support/ws_mode.py). Helpers live in tests/support/."""

from __future__ import annotations

import os

# asyncio debug mode catches never-awaited coroutines and slow callbacks; gRPC's core reads its
# verbosity when it loads.
os.environ.setdefault("PYTHONASYNCIODEBUG", "1")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from gateway.simulator.server import DataflowSimulator, SimulatorConfig
from gateway.upstream.channel import UpstreamClient
from gateway.upstream.token import StaticTokenProvider
from tests.support import ws_mode
from tests.support.harness import GatewayFactory, RunningGateway, gateway_factory_for
from tests.support.settings import SECRETS, SIM_TENANT, SIM_TOKEN, settings_for


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{ws_mode.MARKER}: opens a WebSocket to a gateway; runs as [{ws_mode.FAST}] and [{ws_mode.QUEUED}] "
        "(GATEWAY_WS_FAST_PATH=false)",
    )
    ws_mode.install_counters()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A ``ws`` test runs once per WebSocket mode. Module-scoped, so that pytest runs a module's tests
    mode by mode and builds its module-scoped fixtures (gateways, containers) once per mode."""
    if metafunc.definition.get_closest_marker(ws_mode.MARKER) is not None:
        modes = list(ws_mode.MODES)
        metafunc.parametrize("ws_mode_env", modes, ids=modes, indirect=True, scope="module")


@pytest.fixture(scope="module", autouse=True)
def ws_mode_env(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """``GATEWAY_WS_FAST_PATH`` for the module's current mode (None: not a WebSocket test, the default).
    Autouse and module-scoped: set before any other fixture of the module builds a gateway."""
    mode: str | None = getattr(request, "param", None)
    if mode is None:
        yield None
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ws_mode.ENV, ws_mode.MODES[mode])
        yield mode


@pytest.fixture(autouse=True)
def only_ws_tests_open_websockets(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that opens a WebSocket without the ``ws`` marker would silently run in one mode only.
    With WS_MODE_UNUSED_REPORT=<file>, marked tests that saw no handshake are listed there (to unmark)."""
    marked = request.node.get_closest_marker(ws_mode.MARKER) is not None
    before = ws_mode.handshakes()
    yield
    if marked and ws_mode.handshakes() == before and (report := os.environ.get("WS_MODE_UNUSED_REPORT")):
        with open(report, "a") as lines:  # a marked test that opened none here (a process or browser may have)
            lines.write(f"{request.node.nodeid}\n")
    if not marked and ws_mode.handshakes() != before:
        pytest.fail(
            f"{request.node.nodeid} opened a WebSocket but is not marked {ws_mode.MARKER!r}: add "
            f"pytest.mark.{ws_mode.MARKER} (module pytestmark or the test) so it runs in both WebSocket modes"
        )


class _ServerLogLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("gateway", "uvicorn")):
            self.lines.append(f"{record.getMessage()} {record.__dict__}")


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_server_log() -> Iterator[None]:
    """Collects every gateway/uvicorn log record of the whole run and checks it for secrets."""
    collector = _ServerLogLines()
    root = logging.getLogger()
    root.addHandler(collector)
    yield
    root.removeHandler(collector)
    leaked = sorted(secret[:6] + "…" for secret in SECRETS if any(secret in line for line in collector.lines))
    assert not leaked, f"secrets appeared in server logs: {leaked}"


@pytest.fixture
def sim_config() -> SimulatorConfig:
    """Override in a test module to change the simulator (dialect, faults, projects)."""
    return SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT)


@pytest.fixture
async def simulator(sim_config: SimulatorConfig) -> AsyncIterator[DataflowSimulator]:
    sim = DataflowSimulator(sim_config)
    await sim.start()
    yield sim
    await sim.stop(None)


@pytest.fixture
async def upstream(simulator: DataflowSimulator) -> AsyncIterator[UpstreamClient]:
    settings = settings_for(simulator)
    assert settings.upstream_token is not None
    client = UpstreamClient(settings, StaticTokenProvider(settings.upstream_token))
    yield client
    await client.aclose()


@pytest.fixture
def gateway_factory(simulator: DataflowSimulator) -> GatewayFactory:
    """``gateway_factory(**setting_overrides)``: an async context manager running a gateway in front of
    this test's simulator."""
    return gateway_factory_for(simulator)


@pytest.fixture
def gw_settings() -> dict[str, Any]:
    """Setting overrides of ``gw``: override this fixture in a test module to change its gateway."""
    return {}


@pytest.fixture
def gw_teardown() -> Callable[[], Awaitable[None]] | None:
    """Awaited once ``gw``'s gateway has stopped: override it in a test module to check what must be gone."""
    return None


@pytest.fixture
async def gw(
    gateway_factory: GatewayFactory,
    gw_settings: dict[str, Any],
    gw_teardown: Callable[[], Awaitable[None]] | None,
    request: pytest.FixtureRequest,
) -> AsyncIterator[RunningGateway]:
    """A gateway with ``gw_settings``; a test may add overrides with
    ``@pytest.mark.parametrize("gw", [{...}], indirect=True)``."""
    overrides: dict[str, Any] = {**gw_settings, **getattr(request, "param", {})}
    async with gateway_factory(**overrides) as running:
        yield running
    if gw_teardown is not None:
        await gw_teardown()
