"""Suite-wide setup: asyncio debug mode, the simulator and upstream fixtures, the log secret check."""

from __future__ import annotations

import os

# asyncio debug mode catches never-awaited coroutines and slow callbacks; gRPC's core reads its
# verbosity when it loads.
os.environ.setdefault("PYTHONASYNCIODEBUG", "1")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import logging
from collections.abc import AsyncIterator, Iterator

import pytest
from pydantic import SecretStr

from gateway.settings import Settings
from gateway.simulator.server import DataflowSimulator, SimulatorConfig
from gateway.upstream.channel import UpstreamClient
from gateway.upstream.token import StaticTokenProvider

SIM_TOKEN = "sim-token-5f0c2d9a-never-log-me"
SIM_TENANT = "7c1f9a52-0000-4000-8000-0000000000aa"

#: Every secret the suite uses; tests add the ones they mint. None may appear in a server log line.
SECRETS: set[str] = {SIM_TOKEN}


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


def settings_for(simulator: DataflowSimulator, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "upstream_target": simulator.target,
        "upstream_token": SecretStr(SIM_TOKEN),
        "upstream_tenant": SIM_TENANT,
        "upstream_method_path": simulator.config.method_path,
        "upstream_proto_module": simulator.config.proto_module,
        "default_project": "demo",
        # Relay tests run without client auth; tests/test_auth.py turns it on explicitly.
        "auth": "none",
        "allow_insecure_no_auth": True,
        "_env_file": None,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def upstream(simulator: DataflowSimulator) -> AsyncIterator[UpstreamClient]:
    settings = settings_for(simulator)
    assert settings.upstream_token is not None
    client = UpstreamClient(settings, StaticTokenProvider(settings.upstream_token))
    yield client
    await client.aclose()
