"""The examples run against a real broker and print what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(name: str, addr: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), addr], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_walkthrough(start_broker):
    out = run("walkthrough.py", start_broker().addr)
    assert out.splitlines() == ["news #0: Hello", "news #1: World"]


def test_fanout(start_broker):
    out = run("fanout.py", start_broker().addr).splitlines()
    assert out == [f"subscriber {n} got 10: message 0 .. message 9" for n in (1, 2, 3)]
