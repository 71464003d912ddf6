"""Fault modes of the simulator, chosen per server (CLI flag) or per session (a Settings key).

A fault is written ``kind[:after_ms[:STATUS[:once]]]``; with ``once`` it strikes the first stream
of a given Start Settings only (a gateway that recovers opens the next with the same Settings):

- ``reject_start``          StartResponse with an API-level failure
- ``slow_start:MS``         StartResponse only after MS milliseconds
- ``abort:MS[:STATUS]``     end the RPC with a gRPC status (default UNAVAILABLE) MS ms after start
- ``stall:MS``              stop reading (and answering) MS ms after start; the stream stays open
- ``drop:MS``               reset the stream without a status MS ms after start, as a crash would

Per session, put the spec in ``Settings.SimulatorFault`` of the Start message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

import grpc

FaultKind = Literal["reject_start", "slow_start", "abort", "stall", "drop"]
SETTINGS_KEY = "SimulatorFault"


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    after_ms: int = 0
    status: str = "UNAVAILABLE"
    once: bool = False

    @property
    def status_code(self) -> grpc.StatusCode:
        return grpc.StatusCode[self.status]


def parse_fault(spec: str) -> Fault:
    parts = spec.strip().split(":")
    kind = parts[0].strip().lower().replace("-", "_")
    if kind not in get_args(FaultKind):
        raise ValueError(f"unknown fault {kind!r}; expected one of {', '.join(get_args(FaultKind))}")
    after = int(parts[1]) if len(parts) > 1 and parts[1] else 0
    status = parts[2].strip().upper() if len(parts) > 2 and parts[2] else "UNAVAILABLE"
    if status not in grpc.StatusCode.__members__ or status == "OK":
        raise ValueError(f"unknown gRPC status {status!r}")
    once = len(parts) > 3 and parts[3].strip().lower() == "once"
    return Fault(cast(FaultKind, kind), max(0, after), status, once)


def fault_from_settings(settings: Mapping[str, Any]) -> Fault | None:
    for key, value in settings.items():
        if key.replace("-", "").replace("_", "").lower() == SETTINGS_KEY.lower() and isinstance(value, str):
            try:
                return parse_fault(value)
            except ValueError:
                return None
    return None
