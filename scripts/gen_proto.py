"""Regenerate the checked-in protobuf code from proto/*.proto with the pinned grpcio-tools.

Usage: python scripts/gen_proto.py [--check] [--proto FILE ...] [--out DIR]
Only message code (*_pb2.py + .pyi) is generated: the gateway calls the RPC by its method path
(a setting) and the simulator serves it through a generic handler, so no *_pb2_grpc.py is needed.

Every .proto under proto/ is generated together (a vendor contract split over several files), with
protobuf's well-known types (``import "google/protobuf/timestamp.proto"``) on the include path. When
the output is a package of this repository (gateway/upstream/_proto), a generated module's import of
another one generated with it is made absolute (``from gateway.upstream._proto import x_pb2``):
protoc writes it top-level, which only works with the output directory itself on sys.path.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import sys
import tempfile
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
DEFAULT_OUT = ROOT / "gateway" / "upstream" / "_proto"
_IMPORT = re.compile(r"^(?:from ([\w.]+) )?import (\w+_pb2)( as \w+)?$", re.MULTILINE)


def generate(protos: list[Path], out: Path, root: Path | None = None, package: str | None = None) -> None:
    """``protos`` (under ``root``, their include root; else each file's folder) as *_pb2.py + .pyi in ``out``,
    importing each other from ``package`` (default: the one ``out`` is, if it is)."""
    from grpc_tools import protoc  # pinned in the test extra

    roots = [root] if root is not None else sorted({p.resolve().parent for p in protos})
    well_known = resources.files("grpc_tools") / "_proto"  # what `python -m grpc_tools.protoc` adds itself
    out.mkdir(parents=True, exist_ok=True)
    args = ["protoc", *(f"-I{r}" for r in roots), f"-I{well_known}", f"--python_out={out}", f"--pyi_out={out}"]
    if protoc.main([*args, *(str(p.resolve()) for p in protos)]) != 0:
        raise SystemExit(f"protoc failed for {', '.join(str(p) for p in protos)}")
    package = package or _package(out)
    if package is None:
        return
    names = {_module(p, roots) for p in protos}
    for generated in [*out.rglob("*_pb2.py"), *out.rglob("*_pb2.pyi")]:
        text = generated.read_text()
        fixed = _IMPORT.sub(lambda m: _absolute(m, names, package), text)
        if fixed != text:
            generated.write_text(fixed)


def _package(out: Path) -> str | None:
    """The dotted name ``out`` is imported by when it is a folder of this repository's code, else None."""
    try:
        relative = out.resolve().relative_to(ROOT)
    except ValueError:
        return None
    return ".".join(relative.parts) if relative.parts and relative.parts[0] == "gateway" else None


def _module(proto: Path, roots: list[Path]) -> str:
    """The dotted module protoc names for ``proto`` (its path under its include root, ``_pb2``)."""
    resolved = proto.resolve()
    root = next(r for r in roots if resolved.is_relative_to(r))
    return ".".join(resolved.relative_to(root).with_suffix("").parts) + "_pb2"


def _absolute(match: re.Match[str], names: set[str], package: str) -> str:
    parent, name, alias = match.group(1), match.group(2), match.group(3) or ""
    if (f"{parent}.{name}" if parent else name) not in names:
        return match.group(0)  # google.protobuf's and others': installed packages
    return f"from {package}{'.' + parent if parent else ''} import {name}{alias}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--proto", type=Path, action="append", help="a .proto to generate (default: proto/**.proto)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true", help="fail if the checked-in code is stale")
    ns = parser.parse_args()
    protos: list[Path] = ns.proto or sorted(PROTO_DIR.rglob("*.proto"))
    root = None if ns.proto else PROTO_DIR
    if not ns.check:
        generate(protos, ns.out, root)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(protos, fresh, root, _package(ns.out))
        generated = [p for p in fresh.rglob("*") if p.is_file()]
        stale = [
            str(p.relative_to(fresh))
            for p in generated
            if not (ns.out / p.relative_to(fresh)).is_file()
            or not filecmp.cmp(p, ns.out / p.relative_to(fresh), shallow=False)
        ]
    if stale:
        print(f"stale generated code: {', '.join(stale)}; run python scripts/gen_proto.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
