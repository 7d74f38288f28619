"""A small HTTP server that speaks the OpenAI `/v1/embeddings` protocol, for tests.

It answers on 127.0.0.1 (reachable from the PostgreSQL backends under test) with
deterministic unit vectors, and can be told to fail the way real servers do.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def stub_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for a text."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = [digest[i % len(digest)] - 127.5 + i for i in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in raw))
    return [x / norm for x in raw]


class OpenAIStub:
    """Modes: 'ok', 'rate_limit' (429 + Retry-After), 'error' (500), 'slow' (sleeps past
    any sane timeout), 'malformed' (not JSON), 'wrong_dimensions', 'unauthorized' (401);
    `delay` seconds are slept before any answer."""

    def __init__(self, dimensions: int = 8):
        self.dimensions = dimensions
        self.mode = "ok"
        self.retry_after = 7
        self.delay = 0.0
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(
                    {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
                )
                stub.respond(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def respond(self, handler: BaseHTTPRequestHandler, body: dict) -> None:
        mode = self.mode
        time.sleep(self.delay)
        if mode == "slow":
            time.sleep(5)
        if mode == "rate_limit":
            return self.send(
                handler,
                429,
                b'{"error": {"message": "Rate limit reached"}}',
                {"Retry-After": str(self.retry_after)},
            )
        if mode == "error":
            return self.send(handler, 500, b'{"error": {"message": "internal error"}}')
        if mode == "unauthorized":
            return self.send(handler, 401, b'{"error": {"message": "Incorrect API key"}}')
        if mode == "malformed":
            return self.send(handler, 200, b"<html>definitely not json")
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dims = self.dimensions + (3 if mode == "wrong_dimensions" else 0)
        data = [
            {"object": "embedding", "index": i, "embedding": stub_vector(t, dims)}
            for i, t in reversed(list(enumerate(texts)))  # out of order, as servers may
        ]
        payload = {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": 1, "total_tokens": 1},
        }
        return self.send(handler, 200, json.dumps(payload).encode())

    @staticmethod
    def send(handler, status: int, payload: bytes, headers: dict | None = None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        with contextlib.suppress(BrokenPipeError):  # the client gave up (timeout tests)
            handler.wfile.write(payload)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
