"""Fixtures: the real ``broker`` binary, started on 127.0.0.1 port 0.

The binary is ``$COURIER_BROKER`` if set (tests/python.rs passes cargo's
path), else ``target/debug/broker`` of the repository. Each broker runs
``--memory-only`` unless its flags name a ``--data-dir`` (a durable broker,
for the log's tests); the port is read from its startup line, "Server started
on HOST:PORT" (src/bin/broker.rs). Tests that need particular limits start
their own broker with :func:`start_broker`; the rest share one per module
and use topic names of their own.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

ROOT = Path(__file__).resolve().parents[3]
STARTUP = "Server started on "


def broker_binary() -> Path:
    path = Path(os.environ.get("COURIER_BROKER", ROOT / "target" / "debug" / "broker"))
    if not path.exists():
        pytest.exit(f"no broker binary at {path}: run `cargo build` or set COURIER_BROKER", 2)
    return path


class Broker:
    """A running broker process and its address.

    Its stdout is read byte by byte from the pipe (no buffered ``readline``
    behind ``select``, which could swallow the startup line along with the
    one before it); its log (stderr) goes to a temporary file, so a chatty
    broker never blocks on a full pipe and a failure can show the log."""

    def __init__(self, args: List[str], preexec: Optional[Callable[[], None]] = None) -> None:
        storage = [] if "--data-dir" in args else ["--memory-only"]
        command = [str(broker_binary()), "--addr", "127.0.0.1:0", *storage, *args]
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self.log, preexec_fn=preexec
        )
        self.addr = self._read_startup(deadline=time.monotonic() + 20)

    def _read_startup(self, deadline: float) -> str:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        out = b""
        while time.monotonic() < deadline:
            for line in out.decode(errors="replace").splitlines(keepends=True):
                if line.startswith(STARTUP) and line.endswith("\n"):
                    return line[len(STARTUP) :].strip()
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"broker exited before starting: {out!r} {self.stderr()}")
            out += chunk
        self.stop()
        raise RuntimeError(f"no startup line in time: {out!r} {self.stderr()}")

    def stderr(self) -> str:
        """The broker's log so far."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def terminate(self) -> None:
        """SIGTERM: the broker shuts down cleanly (SHUTTING_DOWN to clients)."""
        self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=20)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.log.close()


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    """One default broker shared by a module's tests."""
    b = Broker([])
    yield b
    b.stop()


@pytest.fixture
def start_broker() -> Iterator[Callable[..., Broker]]:
    """Starts brokers with the given flags (``preexec=`` runs in the child
    before the broker starts); all are stopped after the test."""
    started: List[Broker] = []

    def start(*args: str, preexec: Optional[Callable[[], None]] = None) -> Broker:
        b = Broker(list(args), preexec)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


_counter = [0]


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    """A topic name unique to the test."""
    _counter[0] += 1
    name = "".join(c if c.isalnum() else "_" for c in request.node.name)[:200]
    return f"{name}.{_counter[0]}"


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Polls ``condition`` until true, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)
