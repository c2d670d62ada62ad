"""A small loopback HTTP proxy in front of an S3 server that injects faults on request, for the tests.

Rules match a method and a substring of the path (and of the query, e.g. "list-type" for LIST) and fire a number of
times: answer 503 SlowDown or 500, reset the connection, apply the request upstream and then drop the reply, delay
past the client's read timeout, or truncate the response body. Headers are forwarded unchanged (the Host header
is part of the SigV4 signature a real server checks).
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

ERROR_BODY = {
    503: b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request '
         b"rate.</Message></Error>",
    500: b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>We encountered an '
         b"internal error. Please try again.</Message></Error>",
}


@dataclass
class Rule:
    method: str
    match: str
    action: str  # "503", "500", "reset", "apply_then_drop", "delay", "truncate", "corrupt"
    times: int = 1
    delay: float = 0.0
    fired: int = 0


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rules: list[Rule] = []
        self.seen: list[tuple[str, str, str]] = []  # (method, path, what happened)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                return

            def _handle(self) -> None:
                body = self._read_body()
                rule = proxy._take(self.command, self.path)
                action = rule.action if rule else "pass"
                proxy.seen.append((self.command, self.path, action))
                if action in ("503", "500"):
                    payload = ERROR_BODY[int(action)]
                    self.send_response(int(action))
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if action == "reset":
                    self._reset()
                    return
                if action == "delay" and rule:
                    time.sleep(rule.delay)
                if action == "corrupt" and body:
                    body = bytes([body[0] ^ 0x20]) + body[1:]  # one flipped bit on the wire
                status, reason, headers, payload = proxy._forward(self.command, self.path, self.headers, body)
                if action == "apply_then_drop":
                    self._reset()
                    return
                self.send_response(status, reason)
                for name, value in headers:
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                upstream_length = dict((k.lower(), v) for k, v in headers).get("content-length", "0")
                self.send_header("Content-Length", upstream_length if self.command == "HEAD" else str(len(payload)))
                self.end_headers()
                if action == "truncate":
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    self._reset()
                    return
                self.wfile.write(payload)

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            break
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _reset(self) -> None:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FaultProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, method: str, match: str, action: str, times: int = 1, delay: float = 0.0) -> Rule:
        rule = Rule(method, match, action, times, delay)
        with self._lock:
            self.rules.append(rule)
        return rule

    def _take(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.method == method and rule.match in path and rule.fired < rule.times:
                    rule.fired += 1
                    return rule
        return None

    def _forward(self, method: str, path: str, headers: object, body: bytes
                 ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            forwarded = {k: v for k, v in headers.items()  # type: ignore[attr-defined]
                         if k.lower() not in ("transfer-encoding", "content-length", "connection")}
            if body or method in ("PUT", "POST"):
                forwarded["Content-Length"] = str(len(body))
            conn.request(method, path, body=body or None, headers=forwarded)
            response = conn.getresponse()
            payload = response.read() if method != "HEAD" else b""
            return response.status, response.reason, response.getheaders(), payload
        finally:
            conn.close()
