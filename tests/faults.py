"""Fault injection for the service tests: a TCP proxy on 127.0.0.1 in front of a test server (the S3
endpoint, ``mlflow server``) that passes, delays, throttles, drops, resets or answers connections on command.

Point the client at ``proxy.url`` instead of the server's; ``proxy.set(...)`` changes what happens next.
A change also ends the connections open at that moment (unless the new mode is ``pass``), so clients that
keep connections alive (boto3, requests) meet the fault on their next request instead of riding an old
connection through it. Everything stays on the loopback interface and stops with the proxy.

    with FaultProxy(server_port) as proxy:
        client = make_client(proxy.url)
        proxy.set("respond", response=http_response(503, "SlowDown"))  # an outage past the client's retries
        ...
        proxy.set("pass")  # healed
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from typing import Literal

Mode = Literal["pass", "delay", "throttle", "drop", "reset", "respond"]
_CHUNK = 64 * 1024


def http_response(status: int, reason: str, body: bytes = b"") -> bytes:
    """A complete HTTP/1.1 response that closes the connection: what ``respond`` mode sends."""
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n"
        "Content-Type: text/plain\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class FaultProxy:
    """A threaded TCP proxy to ``127.0.0.1:target_port`` whose behaviour is switched with ``set``.

    Modes: ``pass`` forwards; ``delay`` waits ``delay`` seconds before each forwarded chunk; ``throttle``
    forwards at most ``chunk_bytes`` per ``delay`` seconds in each direction; ``drop`` closes new
    connections at once; ``reset`` aborts them with a TCP reset; ``respond`` reads the request and answers
    ``response`` (an HTTP error, say) without reaching the server.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._mode: Mode = "pass"
        self._delay = 0.0
        self._chunk_bytes = _CHUNK
        self._response = b""
        self._open: set[socket.socket] = set()
        self._stopped = threading.Event()
        self.connections = 0  # accepted so far
        self.faulted = 0  # of which dropped, reset or answered by the proxy
        self._thread = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)

    # ---- control ------------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def set(
        self, mode: Mode, *, delay: float = 0.0, chunk_bytes: int = _CHUNK, response: bytes = b""
    ) -> None:
        """Switch to ``mode`` for what comes next; open connections are ended unless ``mode`` is ``pass``."""
        if mode not in ("pass", "delay", "throttle", "drop", "reset", "respond"):
            raise ValueError(f"Expected a FaultProxy mode, received {mode!r}.")
        if mode == "respond" and not response:
            raise ValueError("Expected response bytes with mode='respond', received none.")
        with self._lock:
            self._mode, self._delay, self._chunk_bytes, self._response = mode, delay, chunk_bytes, response
            open_now = list(self._open) if mode != "pass" else []
        for sock in open_now:
            _abort(sock)

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            open_now = list(self._open)
        for sock in open_now:
            _abort(sock)
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the proxy ----------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                readable, _, _ = select.select([self._listener], [], [], 0.2)
                if not readable:
                    continue
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(client,), name="fault-proxy-conn", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            mode, response = self._mode, self._response
        if mode in ("drop", "reset", "respond"):
            self.faulted += 1
            if mode == "respond":
                _read_request_head(client)
                with contextlib.suppress(OSError):
                    client.sendall(response)
            if mode == "reset":
                _abort(client)
            else:
                with contextlib.suppress(OSError):
                    client.close()
            return
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            _abort(client)
            return
        upstream.settimeout(None)
        with self._lock:
            self._open.update((client, upstream))
        try:
            self._pump(client, upstream)
        finally:
            with self._lock:
                self._open.difference_update((client, upstream))
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        while not self._stopped.is_set():
            try:
                readable, _, _ = select.select(list(peers), [], [], 0.2)
            except (OSError, ValueError):
                return
            for sock in readable:
                with self._lock:
                    mode, delay, chunk = self._mode, self._delay, self._chunk_bytes
                try:
                    data = sock.recv(chunk if mode == "throttle" else _CHUNK)
                except OSError:
                    return
                if not data:
                    return
                if mode in ("delay", "throttle") and delay > 0:
                    time.sleep(delay)
                try:
                    peers[sock].sendall(data)
                except OSError:
                    return


def _read_request_head(sock: socket.socket, limit: int = 1 << 20) -> None:
    """Read until the end of the request's headers (or what arrives within a second) before answering."""
    sock.settimeout(1.0)
    seen = b""
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in seen and len(seen) < limit:
            data = sock.recv(_CHUNK)
            if not data:
                break
            seen += data


def _abort(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashed server or a broken network does."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()
