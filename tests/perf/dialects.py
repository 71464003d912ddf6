"""Telephony dialects' relay cost: the same 8 kHz DTMF audio through /v1/audiocodes (binary LINEAR16
frames) and /v1/twilio (base64 μ-law in JSON ``media`` messages), n sessions paced in real time,
the gateway's CPU per session-second of audio for each. Issue 17 asks Twilio's to be within 1.3x
AudioCodes': base64 JSON per 20 ms frame must not cost a multiple.

    python -m tests.perf.dialects --sessions 50 --seconds 10

The simulator and the gateway run as separate processes on loopback (tests/perf/procs.py); CPU comes
from the gateway's own accounting, from the first paced frame until every session is closed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.audio.convert import AudioConverter
from gateway.audio.format import AudioFormat
from gateway.runtime import run_fast
from tests.perf.audio import frames
from tests.perf.procs import Proc, cpu_seconds, start_gateway, start_simulator
from tests.perf.wsclient import LeanWebSocket, connect
from tests.support import telephony

FRAME_S = 0.02
RATE = 8000


def audiocodes_start(rate: int) -> str:
    return json.dumps({"type": "start", "language": "en-US", "format": "raw", "encoding": "LINEAR16",
                       "sampleRateHz": rate})  # fmt: skip


def _twilio_media(pcm: bytes) -> str:
    ulaw = AudioConverter(AudioFormat("pcm16", RATE, 1), AudioFormat("mulaw", RATE, 1)).convert(pcm)
    media = {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": base64.b64encode(ulaw).decode()}
    return json.dumps({"event": "media", "sequenceNumber": "2", "media": media, "streamSid": telephony.STREAM_SID})


class _Session:
    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.ended = asyncio.Event()
        self.texts = 0

    def on_message(self, opcode: int, payload: bytes, arrival_ns: int) -> None:
        kind = json.loads(payload).get("type")
        self.texts += 1
        if kind == "started":
            self.started.set()
        elif kind == "end":
            self.ended.set()


async def run_dialect(gateway: Proc, dialect: str, n: int, seconds: float, rate: int = RATE) -> dict[str, Any]:
    """n paced sessions of one dialect; Twilio's audio is always 8 kHz μ-law, AudioCodes' LINEAR16 at ``rate``."""
    url = f"ws://127.0.0.1:{gateway.port}/v1/{dialect}"
    sessions = [_Session() for _ in range(n)]
    sockets: list[LeanWebSocket] = list(await asyncio.gather(*(connect(url, s.on_message) for s in sessions)))
    for ws in sockets:
        if dialect == "twilio":
            ws.send_text(telephony.twilio_connected())
            ws.send_text(telephony.twilio_start())
        else:
            ws.send_text(audiocodes_start(rate))
    if dialect == "audiocodes":
        await asyncio.wait_for(asyncio.gather(*(s.started.wait() for s in sessions)), 60)
    else:
        await asyncio.sleep(1.0)  # Twilio is told nothing: give Data Flow's StartResponses time
    messages = [_twilio_media(f) for f in frames(RATE)] if dialect == "twilio" else frames(rate)
    ticks = int(seconds / FRAME_S)
    began, cpu = time.monotonic(), cpu_seconds(gateway.pid)
    for tick in range(ticks):
        message = messages[tick % len(messages)]
        for ws in sockets:
            ws.send_text(message) if isinstance(message, str) else ws.send_binary(message)
        await asyncio.sleep(max(0.0, began + (tick + 1) * FRAME_S - time.monotonic()))
    for ws in sockets:
        ws.send_text(telephony.twilio_stop() if dialect == "twilio" else '{"type":"stop"}')
    if dialect == "audiocodes":  # each recognition ends with `end`; the socket stays for the next one
        await asyncio.wait_for(asyncio.gather(*(s.ended.wait() for s in sessions)), 60)
        codes = [1000] * n
    else:  # the gateway closes Twilio's socket once Data Flow has finished
        codes = await asyncio.wait_for(asyncio.gather(*(ws.closed for ws in sockets)), 60)
    spent_s = cpu_seconds(gateway.pid) - cpu
    for ws in sockets:
        await ws.close()
    audio_s = n * ticks * FRAME_S
    return {
        "cpu_ms_per_session_s": round(spent_s * 1000 / audio_s, 4),
        "text_messages_back": sum(s.texts for s in sessions),
        "unclean_closes": sum(code != 1000 for code in codes),
    }


async def measure(gateway: Proc, n: int, seconds: float, rounds: int = 2) -> dict[str, Any]:
    """Both dialects, alternating (``rounds`` times each), so a busy moment on the machine hits both."""
    runs: dict[str, list[dict[str, Any]]] = {"audiocodes": [], "twilio": []}
    for _ in range(rounds):
        for dialect in runs:
            runs[dialect].append(await run_dialect(gateway, dialect, n, seconds))
    best = {d: min(r["cpu_ms_per_session_s"] for r in rs) for d, rs in runs.items()}
    return {
        "sessions": n,
        "seconds": seconds,
        "audiocodes_cpu_ms_per_session_s": best["audiocodes"],
        "twilio_cpu_ms_per_session_s": best["twilio"],
        "twilio_vs_audiocodes": round(best["twilio"] / best["audiocodes"], 2) if best["audiocodes"] else None,
        "twilio_text_messages_back": sum(r["text_messages_back"] for r in runs["twilio"]),
        "unclean_closes": sum(r["unclean_closes"] for rs in runs.values() for r in rs),
    }


async def _main(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    simulator = start_simulator(workdir)
    gateway = start_gateway(workdir, simulator)
    try:
        return await measure(gateway, args.sessions, args.seconds, args.rounds)
    finally:
        gateway.stop()
        simulator.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_fast(_main(args, Path(tmp)))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
