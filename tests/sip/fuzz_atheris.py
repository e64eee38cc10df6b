"""Coverage-guided fuzzing of the SIP parser with atheris (optional; not collected by pytest).

    .venv/bin/pip install atheris
    .venv/bin/python tests/sip/fuzz_atheris.py -atheris_runs=200000 -max_len=4096 [corpus_dir]

Seeds are the RFC 4475/5118 torture messages, copied into a temporary corpus directory. Anything
but ParseError escaping parse_message, a property, check_request or the round trip is a crash: save
the input (atheris writes ``crash-*``) as tests/sip/fixtures/<name>.sip: pytest replays it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from conformance import load_torture_messages
    from test_message_fuzz import exercise


def test_one_input(data: bytes) -> None:
    exercise(data)


def main() -> None:
    seeds = Path(tempfile.mkdtemp(prefix="sip-fuzz-corpus-"))
    for name, data, _ in load_torture_messages():
        (seeds / name).write_bytes(data)
    argv = (
        [*sys.argv, str(seeds)] if len(sys.argv) < 2 or sys.argv[-1].startswith("-") else sys.argv
    )
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
