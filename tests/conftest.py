"""Suite-wide test setup: asyncio debug mode, shared fixtures live in tests/fixtures.py."""

from __future__ import annotations

import os

# asyncio debug mode catches never-awaited coroutines and slow callbacks; set before any loop exists.
os.environ.setdefault("PYTHONASYNCIODEBUG", "1")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from gateway.settings import Settings
from gateway.simulator.server import DataflowSimulator, SimulatorConfig
from gateway.upstream.client import UpstreamClient
from gateway.upstream.token import StaticTokenProvider

SIM_TOKEN = "sim-token-5f0c2d9a-never-log-me"
SIM_TENANT = "7c1f9a52-0000-4000-8000-0000000000aa"


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
