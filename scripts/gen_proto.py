"""Regenerate the checked-in protobuf code from proto/*.proto with the pinned grpcio-tools.

Usage: python scripts/gen_proto.py [--check] [--proto FILE] [--out DIR]
Only message code (*_pb2.py + .pyi) is generated: the gateway calls the RPC by its method path
(a setting) and the simulator serves it through a generic handler, so no *_pb2_grpc.py is needed.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROTO = ROOT / "proto" / "dataflow.proto"
DEFAULT_OUT = ROOT / "gateway" / "upstream" / "_proto"


def generate(proto: Path, out: Path) -> None:
    from grpc_tools import protoc  # pinned in the test extra

    out.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{proto.parent}", f"--python_out={out}", f"--pyi_out={out}", str(proto)]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed for {proto}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--proto", type=Path, default=DEFAULT_PROTO)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true", help="fail if the checked-in code is stale")
    ns = parser.parse_args()
    if not ns.check:
        generate(ns.proto, ns.out)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(ns.proto, Path(tmp))
        stale = [p.name for p in Path(tmp).iterdir() if not filecmp.cmp(p, ns.out / p.name, shallow=False)]
    if stale:
        print(f"stale generated code: {', '.join(stale)}; run python scripts/gen_proto.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
