"""TLS through the standard ``ssl`` module, against a stand-in server that
records what the client sent (test_round4.py runs TLS against the real
broker): the client checks the certificate against
``ca``, and speaks frames inside the TLS stream. A certificate made with the
``openssl`` command; the test is skipped where it is missing."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading

import pytest

import courier
from courier import protocol as p

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")

HELLO_REPLY = {"version": 2, "server": "stand-in", "max_frame_bytes": 1048576, "max_payload_bytes": 1048064}


def make_cert(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def serve_once(server: socket.socket, context: ssl.SSLContext, seen: list) -> None:
    conn, _ = server.accept()
    try:
        tls = context.wrap_socket(conn, server_side=True)
    except (ssl.SSLError, OSError) as e:
        seen.append(e)
        conn.close()
        return
    buf = b""
    while True:
        chunk = tls.recv(65536)
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[:4], "big"):
            n = int.from_bytes(buf[:4], "big")
            request, buf = p.unpack(buf[4 : 4 + n]), buf[4 + n :]
            seen.append(request)
            body = HELLO_REPLY if request[0] == p.HELLO else {"uptime_ms": 1}
            tls.sendall(p.encode_frame([request[1], 0, body]))
    tls.close()


def start(tmp_path, seen):
    cert, key = make_cert(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    thread = threading.Thread(target=serve_once, args=(server, context, seen), daemon=True)
    thread.start()
    return server, thread, cert


def test_tls_with_a_ca_file(tmp_path):
    seen: list = []
    server, thread, cert = start(tmp_path, seen)
    addr = "127.0.0.1:%d" % server.getsockname()[1]
    with courier.Client(addr, tls=True, ca=str(cert), timeout=10) as c:
        assert c.server_info["server"] == "stand-in"
        assert c.stats() == {"uptime_ms": 1}
    thread.join(10)
    server.close()
    assert [r[0] for r in seen] == [p.HELLO, p.STATS]


def test_tls_refuses_an_unknown_certificate(tmp_path):
    seen: list = []
    server, thread, _ = start(tmp_path, seen)
    addr = "127.0.0.1:%d" % server.getsockname()[1]
    with pytest.raises(courier.ConnectionFailed):
        courier.Client(addr, tls=True, timeout=10)  # system roots only
    thread.join(10)
    server.close()
