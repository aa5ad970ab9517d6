"""A real HTTP receiver for webhook tests and the bench: 127.0.0.1, an ephemeral port.

It records every request (headers, raw body, arrival time) and answers from a per-path script
of replies (status, delay), 200 once the script is used up.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgspec


@dataclass(frozen=True)
class Reply:
    status: int = 200
    delay: float = 0.0
    body: bytes = b"ok"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() on arrival

    @property
    def json(self) -> dict:
        return msgspec.json.decode(self.body)

    def header(self, name: str) -> str:
        return self.headers[name.lower()]


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    received: list[Received] = field(default_factory=list)
    scripts: dict[str, deque[Reply]] = field(default_factory=lambda: defaultdict(deque))
    flaky_until: float = 0.0  # time.monotonic() until which every other request gets a 503
    flaky_count: int = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real receivers do
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        state = self.server.state
        with state.lock:
            state.received.append(
                Received(
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    at=time.time(),
                )
            )
            script = state.scripts[self.path]
            reply = script.popleft() if script else Reply()
            if time.monotonic() < state.flaky_until:
                state.flaky_count += 1
                if state.flaky_count % 2:
                    reply = Reply(status=503, body=b"flaky")
        if reply.delay:
            time.sleep(reply.delay)
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:  # the sender gave up (timeout test)
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default listen backlog is 5: a sender opening its connection pool to
    # one host all at once would see SYNs dropped and retried a second later.
    request_queue_size = 128
    state: _State

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # senders that time out close the socket under us


class Receiver:
    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = _State()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._server.state.lock:
            self._server.state.received.clear()
            self._server.state.scripts.clear()

    def script(self, path: str, *replies: Reply) -> None:
        with self._server.state.lock:
            self._server.state.scripts[path].extend(replies)

    def fail_every_other_until(self, deadline: float) -> None:
        """Answer every other request with a 503 until time.monotonic() reaches `deadline`
        (alternating, so a subscription's failure streak never reaches its limit)."""
        with self._server.state.lock:
            self._server.state.flaky_until = deadline

    def requests(self, path: str | None = None) -> list[Received]:
        with self._server.state.lock:
            return [r for r in self._server.state.received if path is None or r.path == path]

    async def wait_for(
        self, count: int, path: str | None = None, timeout: float = 60.0
    ) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            received = self.requests(path)
            if len(received) >= count:
                return received
            await asyncio.sleep(0.05)
        raise AssertionError(f"receiver got {len(self.requests(path))} of {count} requests")
