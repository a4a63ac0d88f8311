"""The examples run against a real broker and print what they promise."""

from __future__ import annotations

import ast
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


def test_original_api(start_broker):
    # Nothing but the original tool's names (see the script's docstring).
    out = run("original_api.py", start_broker().addr)
    assert out.splitlines() == ["greetings 0 Hello", "greetings 1 World"]


def test_original_api_uses_only_the_original_names():
    tree = ast.parse((EXAMPLES / "original_api.py").read_text())
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    original = {"Publisher", "Subscriber", "registerPublisher", "createTopic", "send",
                "deleteTopic", "registerSubscriber", "subscribe", "pull"}
    message = {"topic", "offset", "payload"}
    assert original <= used
    assert used - original - message <= {"argv", "decode"}  # sys.argv, bytes.decode
