"""Run one parser's fuzz harness under atheris (libFuzzer), with coverage from the gateway's code only.

    python -m pip install -e ".[test]"
    python tests/fuzz/run.py <parser> [libFuzzer options]      e.g. -runs=200000 -max_len=4096

Parsers: native, dataflow_json, audiocodes, audiohook, containers, upload_body, upstream. The harness's seeds
are written to ``build/fuzz/<parser>/`` (the working corpus, kept between runs) before it starts;
crashes are written as ``build/fuzz/<parser>-crash-<sha1>``. A crash is any exception other than
the parser's declared error types, or a failed invariant; replay one with
``python tests/fuzz/run.py <parser> build/fuzz/<parser>-crash-<sha1>``.
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PARSERS = ("native", "dataflow_json", "audiocodes", "audiohook", "containers", "upload_body", "upstream")


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in PARSERS:
        raise SystemExit(f"usage: python tests/fuzz/run.py <{'|'.join(PARSERS)}> [libFuzzer options]")
    name, options = argv[1], argv[2:]
    sys.path.insert(0, str(ROOT))
    import atheris  # the `fuzz` extra; imported here so the harnesses stay importable without it

    logging.disable(logging.CRITICAL)  # malformed input is logged by design; the fuzzer needs quiet
    with atheris.instrument_imports(include=["gateway"]):
        harness = importlib.import_module(f"tests.fuzz.fuzz_{name}")
    corpus = ROOT / "build" / "fuzz" / name
    if not any(option.startswith("-artifact_prefix=") for option in options):
        options.append(f"-artifact_prefix={corpus.parent}/{name}-")
    if not any(not option.startswith("-") for option in options):  # no corpus or crash file given
        corpus.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(harness.seeds()):
            (corpus / f"seed-{i}").write_bytes(seed)
        options.append(str(corpus))
    atheris.Setup([argv[0], *options], harness.one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
