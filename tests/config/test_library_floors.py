"""The web stack's releases the gateway needs: pyproject says them, and a process that runs on older
ones (a lagging wheelhouse, ``pip install --no-deps``) stops with one line, not a traceback or a
gateway that fails per connection (uvicorn 0.35-0.49 ended every WebSocket session at its first
message; 0.50-0.52 dropped the pong bound; websockets before 17 failed at import)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from gateway.config.libraries import FLOORS, library_problems, release
from gateway.upload.parameters import media_type
from tests.support.cli_process import run_cli

ROOT = Path(__file__).resolve().parents[2]


def declared_floor(name: str) -> tuple[int, ...]:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in dependencies if re.match(rf"{name}(\[[^]]*\])?>=", d)]
    return release(spec.split(">=", 1)[1].split(",")[0])


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_pyproject_asks_for_the_releases_the_gateway_checks(name: str) -> None:
    assert declared_floor(name) == FLOORS[name]


def test_the_installed_releases_pass() -> None:
    assert library_problems() == []


@pytest.mark.parametrize(("version", "numbers"), [("0.55.0", (0, 55, 0)), ("17.0rc1", (17, 0)), ("1.2.post3", (1, 2))])
def test_a_release_is_its_leading_numbers(version: str, numbers: tuple[int, ...]) -> None:
    assert release(version) == numbers


@pytest.mark.parametrize(("name", "version"), [("uvicorn", "0.50.0"), ("websockets", "16.0")])
def test_an_older_library_stops_the_gateway_with_one_line(tmp_path: Path, name: str, version: str) -> None:
    """A distribution record earlier on the path reports the older release (the code imported is the
    installed one: what the check reads is the metadata, as pip's would)."""
    record = tmp_path / f"{name}-{version}.dist-info"
    record.mkdir()
    (record / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    result = run_cli(["serve"], {"PYTHONPATH": str(tmp_path)}, cwd=tmp_path, timeout_s=60)
    needed = ".".join(map(str, FLOORS[name]))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"{name} {version} is installed; the gateway needs {name} >= {needed} (pip install -U '{name}>={needed}')"
    ]


def test_a_media_type_is_read_in_lower_case_whatever_the_parser() -> None:
    """``audio/L16`` (RFC 3551's spelling, README's example) was 415 with python-multipart before 0.0.33,
    which kept the case the client sent."""
    assert media_type("audio/L16; Rate=8000") == ("audio/l16", {"rate": "8000"})


def without_trailing_zeros(version: str) -> tuple[int, ...]:
    numbers = release(version)
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers = numbers[:-1]
    return numbers


def test_the_floors_ci_installs_are_the_floors_pyproject_declares() -> None:
    """scripts/check_floors (CI) installs constraints/floors.txt and runs the suite's library tests on it: each
    runtime dependency pinned there at exactly the ``>=`` release pyproject.toml declares, none left out."""
    declared = {}
    for spec in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        named = re.fullmatch(r"([A-Za-z0-9_-]+)(?:\[[^]]*\])?>=([0-9.]+)(?:,.*)?", spec)
        assert named is not None, f"a runtime dependency without a floor: {spec}"
        declared[named[1].lower()] = without_trailing_zeros(named[2])
    lines = (ROOT / "constraints" / "floors.txt").read_text().splitlines()
    pinned = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    assert {name: without_trailing_zeros(version) for name, version in pinned.items()} == declared
    assert "bash scripts/check_floors" in (ROOT / ".ci" / "run").read_text()
