"""The fault-injection proxy itself: each mode does to a real HTTP server's traffic what it says."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.faults import FaultProxy, http_response


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"x" * 200_000 if self.path == "/big" else b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with FaultProxy(server.server_address[1]) as proxy:
        yield proxy
    server.shutdown()
    server.server_close()


def _get(proxy: FaultProxy, path: str = "/") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_pass_respond_and_heal(proxy: FaultProxy) -> None:
    assert _get(proxy) == (200, b"hello")
    proxy.set("respond", response=http_response(503, "SlowDown", b"slow down"))
    assert _get(proxy) == (503, b"slow down")
    proxy.set("pass")
    assert _get(proxy) == (200, b"hello")
    assert proxy.connections == 3 and proxy.faulted == 1


@pytest.mark.parametrize("mode", ["drop", "reset"])
def test_drop_and_reset_fail_the_request(proxy: FaultProxy, mode: str) -> None:
    proxy.set(mode)  # type: ignore[arg-type]
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        _get(proxy)


def test_a_mode_change_ends_open_connections(proxy: FaultProxy) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.request("GET", "/")
    assert conn.getresponse().read() == b"hello"  # a kept-alive connection
    proxy.set("reset")
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        conn.request("GET", "/")
        conn.getresponse().read()
    conn.close()


def test_delay_and_throttle_slow_the_traffic(proxy: FaultProxy) -> None:
    proxy.set("delay", delay=0.3)
    start = time.monotonic()
    assert _get(proxy) == (200, b"hello")
    assert time.monotonic() - start >= 0.3
    proxy.set("throttle", delay=0.1, chunk_bytes=64 * 1024)
    start = time.monotonic()
    status, body = _get(proxy, "/big")
    assert status == 200 and len(body) == 200_000
    assert time.monotonic() - start >= 0.3  # at least 4 chunks of 64 KB, 0.1 s each


def test_bad_modes_are_refused(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="mode"):
        proxy.set("explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="response"):
        proxy.set("respond")
