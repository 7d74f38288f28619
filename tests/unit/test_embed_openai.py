"""OpenAIEmbedder against a real HTTP server on 127.0.0.1 that speaks /v1/embeddings."""

import contextlib
import hashlib
import json
import logging
import random
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pgseek.embeddings import (
    EmbeddingConfigError,
    EmbeddingError,
    PermanentEmbeddingError,
    RetryableEmbeddingError,
)
from pgseek.embeddings.openai import OpenAIEmbedder

API_KEY = "sk-test-0123456789abcdefSECRET"
NATIVE_DIMENSIONS = 8


def expected_vector(text: str, dimensions: int) -> list[float]:
    """The vector the fake server returns for ``text``."""
    digest = hashlib.sha256(text.encode()).digest() * (dimensions // 32 + 1)
    return [byte / 255 for byte in digest[:dimensions]]


@dataclass
class Exchange:
    """What the handler received, and what the test can change about its answer."""

    handler: BaseHTTPRequestHandler
    body: dict
    dimensions: int

    def data(self) -> list[dict]:
        return [
            {"object": "embedding", "index": i, "embedding": expected_vector(text, self.dimensions)}
            for i, text in enumerate(self.body["input"])
        ]

    def reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.handler.send_response(status)
        self.handler.send_header("Content-Type", "application/json")
        self.handler.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.handler.send_header(name, value)
        self.handler.end_headers()
        self.handler.wfile.write(body)

    def reply_json(self, status: int, payload: object, **headers: str) -> None:
        self.reply(status, json.dumps(payload).encode(), headers)


Behaviour = Callable[[Exchange], None]


def ok(exchange: Exchange) -> None:
    exchange.reply_json(200, {"object": "list", "data": exchange.data(), "model": "fake"})


def status(code: int, message: str = "failure", **headers: str) -> Behaviour:
    return lambda exchange: exchange.reply_json(code, {"error": {"message": message}}, **headers)


def hang(seconds: float) -> Behaviour:
    def behaviour(exchange: Exchange) -> None:
        time.sleep(seconds)
        ok(exchange)

    return behaviour


def raw(body: bytes) -> Behaviour:
    return lambda exchange: exchange.reply(200, body)


def with_data(change: Callable[[list[dict]], object]) -> Behaviour:
    return lambda exchange: exchange.reply_json(200, {"data": change(exchange.data())})


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict


@dataclass
class FakeEmbeddingServer:
    """Answers POST /v1/embeddings; ``script`` holds the behaviours of the next requests."""

    url: str = ""
    script: list[Behaviour] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    def make_handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(Request(self.path, dict(self.headers), body))
                behaviour = server.script.pop(0) if server.script else ok
                exchange = Exchange(self, body, body.get("dimensions", NATIVE_DIMENSIONS))
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    behaviour(exchange)  # raises those when the client gave up waiting

            def log_message(self, *_args: object) -> None:
                pass

        return Handler


@pytest.fixture
def server() -> Iterator[FakeEmbeddingServer]:
    fake = FakeEmbeddingServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), fake.make_handler())
    httpd.daemon_threads = True
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield fake
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


class RecordedSleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_embedder(server: FakeEmbeddingServer, **options) -> tuple[OpenAIEmbedder, list]:
    sleeps = RecordedSleeps()
    settings = {"api_key": API_KEY, "base_url": server.url, "timeout": 2.0, "sleep": sleeps}
    embedder = OpenAIEmbedder("fake-embedding", options.pop("dimensions", 4), **settings | options)
    return embedder, sleeps


def test_embeds_texts_in_input_order(server):
    embedder, sleeps = make_embedder(server)
    texts = ["alpha", "beta", "gamma"]
    assert embedder.embed(texts) == [expected_vector(text, 4) for text in texts]
    assert embedder.embed_one("delta") == expected_vector("delta", 4)
    assert sleeps == []


def test_sends_model_input_dimensions_and_bearer_key(server):
    embedder, _ = make_embedder(server)
    embedder.embed(["alpha"])
    request = server.requests[0]
    assert request.path == "/v1/embeddings"
    assert request.body == {"model": "fake-embedding", "input": ["alpha"], "dimensions": 4}
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["Content-Type"] == "application/json"


def test_dimensions_are_not_sent_when_send_dimensions_is_false(server):
    embedder, _ = make_embedder(server, dimensions=NATIVE_DIMENSIONS, send_dimensions=False)
    assert embedder.embed(["alpha"]) == [expected_vector("alpha", NATIVE_DIMENSIONS)]
    assert "dimensions" not in server.requests[0].body


def test_no_authorization_header_without_a_key(server):
    embedder, _ = make_embedder(server, api_key=None)
    embedder.embed(["alpha"])
    assert "Authorization" not in server.requests[0].headers


def test_splits_input_into_batches(server):
    embedder, _ = make_embedder(server, batch_size=2)
    texts = [f"text {i}" for i in range(5)]
    assert embedder.embed(texts) == [expected_vector(text, 4) for text in texts]
    sent = [request.body["input"] for request in server.requests]
    assert sent == [texts[0:2], texts[2:4], texts[4:]]


def test_empty_input_sends_no_request(server):
    embedder, _ = make_embedder(server)
    assert embedder.embed([]) == []
    assert server.requests == []


def test_results_are_reordered_by_index(server):
    server.script = [with_data(lambda data: random.Random(7).sample(data, len(data)))]
    embedder, _ = make_embedder(server)
    texts = [f"text {i}" for i in range(10)]
    assert embedder.embed(texts) == [expected_vector(text, 4) for text in texts]


def test_rate_limit_waits_for_retry_after(server):
    server.script = [status(429, "slow down", **{"Retry-After": "7"})]
    embedder, sleeps = make_embedder(server)
    assert embedder.embed(["alpha"]) == [expected_vector("alpha", 4)]
    assert sleeps == [7.0]
    assert len(server.requests) == 2


def test_retry_after_ms_is_understood(server):
    server.script = [status(429, **{"retry-after-ms": "250"})]
    embedder, sleeps = make_embedder(server)
    embedder.embed(["alpha"])
    assert sleeps == [0.25]


def test_retry_after_is_capped(server):
    server.script = [status(429, **{"Retry-After": "3600"})]
    embedder, sleeps = make_embedder(server, max_retry_wait=5)
    embedder.embed(["alpha"])
    assert sleeps == [5.0]


def test_exhausted_rate_limit_reports_the_servers_retry_after(server):
    server.script = [status(429, **{"Retry-After": "90"})] * 3
    embedder, sleeps = make_embedder(server, max_retries=2, max_retry_wait=1)
    with pytest.raises(RetryableEmbeddingError, match="HTTP 429") as caught:
        embedder.embed(["alpha"])
    assert caught.value.retry_after == 90.0
    assert "gave up after 3 attempts" in str(caught.value)
    assert sleeps == [1.0, 1.0]


def test_server_errors_are_retried_with_exponential_backoff_and_jitter(server):
    server.script = [status(500), status(502), status(503)]
    embedder, sleeps = make_embedder(server, max_retries=3)
    assert embedder.embed(["alpha"]) == [expected_vector("alpha", 4)]
    assert len(server.requests) == 4
    for attempt, delay in enumerate(sleeps):
        ceiling = 0.5 * 2**attempt
        assert ceiling / 2 <= delay <= ceiling


def test_server_errors_fail_after_max_retries(server):
    server.script = [status(500, "database on fire")] * 3
    embedder, sleeps = make_embedder(server, max_retries=2)
    with pytest.raises(RetryableEmbeddingError, match="HTTP 500: database on fire") as caught:
        embedder.embed(["alpha"])
    assert "gave up after 3 attempts" in str(caught.value)
    assert caught.value.retry_after is None
    assert len(server.requests) == 3
    assert len(sleeps) == 2


def test_timeout_is_retried(server):
    server.script = [hang(1.0)]
    embedder, sleeps = make_embedder(server, timeout=0.2)
    assert embedder.embed(["alpha"]) == [expected_vector("alpha", 4)]
    assert len(sleeps) == 1


def test_timeouts_fail_after_max_retries(server):
    server.script = [hang(1.0), hang(1.0)]
    embedder, _ = make_embedder(server, timeout=0.2, max_retries=1)
    started = time.monotonic()
    with pytest.raises(RetryableEmbeddingError, match=r"did not answer within 0\.2s"):
        embedder.embed(["alpha"])
    assert time.monotonic() - started < 1.5
    assert len(server.requests) == 2


def test_unreachable_server_is_retryable():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    embedder = OpenAIEmbedder(
        "m", 4, base_url=f"http://127.0.0.1:{port}/v1", max_retries=1, sleep=lambda _: None
    )
    with pytest.raises(RetryableEmbeddingError, match="cannot reach"):
        embedder.embed(["alpha"])


@pytest.mark.parametrize("code", [400, 401, 403, 404, 422])
def test_client_errors_are_permanent_and_not_retried(server, code):
    server.script = [status(code, "you sent something wrong")]
    embedder, sleeps = make_embedder(server)
    with pytest.raises(PermanentEmbeddingError, match=f"HTTP {code}: you sent something wrong"):
        embedder.embed(["alpha"])
    assert len(server.requests) == 1
    assert sleeps == []


def test_redirects_are_not_followed(server):
    def redirect(exchange: Exchange) -> None:
        exchange.reply(307, b"", {"Location": server.url + "/embeddings"})

    server.script = [redirect]
    embedder, _ = make_embedder(server)
    with pytest.raises(PermanentEmbeddingError, match="HTTP 307"):
        embedder.embed(["alpha"])
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("behaviour", "problem"),
    [
        (raw(b"<html>Bad Gateway</html>"), "not JSON"),
        (raw(b'{"data": [{"index": 0, "embedding": [0.1, 0.2'), "not JSON"),
        (raw(b'{"object": "list"}'), "no 'data' list"),
        (raw(b"[]"), "no 'data' list"),
        (with_data(lambda data: data[:-1]), "2 embeddings for 3 inputs"),
        (with_data(lambda data: [*data, data[0]]), "4 embeddings for 3 inputs"),
        (with_data(lambda data: [{**d, "index": 0} for d in data]), "repeated index 0"),
        (with_data(lambda data: [{**d, "index": 5} for d in data]), "out-of-range"),
        (with_data(lambda data: [{"embedding": d["embedding"]} for d in data]), "index None"),
        (with_data(lambda data: [{**d, "embedding": "AAAA"} for d in data]), "not a list"),
        (with_data(lambda data: [{"index": d["index"]} for d in data]), "not a list"),
        (with_data(lambda data: [{**d, "embedding": [0.1] * 5} for d in data]), "5 dimensions"),
        (with_data(lambda data: [{**d, "embedding": ["1"] * 4} for d in data]), "non-number"),
        (with_data(lambda data: [{**d, "embedding": [True] * 4} for d in data]), "non-number"),
    ],
)
def test_malformed_responses_are_permanent_errors(server, behaviour, problem):
    server.script = [behaviour]
    embedder, sleeps = make_embedder(server)
    with pytest.raises(PermanentEmbeddingError, match="bad response") as caught:
        embedder.embed(["alpha", "beta", "gamma"])
    assert problem in str(caught.value)
    assert sleeps == []


def test_non_finite_numbers_are_rejected(server):
    server.script = [raw(b'{"data": [{"index": 0, "embedding": [NaN, 0, 0, 0]}]}')]
    embedder, _ = make_embedder(server)
    with pytest.raises(PermanentEmbeddingError, match="NaN or infinity"):
        embedder.embed(["alpha"])


def echo_key(code: int) -> Behaviour:
    """A careless server that repeats the Authorization header in its error message."""
    return lambda exchange: exchange.reply_json(
        code, {"error": {"message": f"bad key {exchange.handler.headers['Authorization']}"}}
    )


@pytest.mark.parametrize(
    "failure",
    [
        [echo_key(401)],
        [echo_key(500)] * 2,
        [echo_key(429)] * 2,
        [lambda exchange: exchange.reply(200, exchange.handler.headers["Authorization"].encode())],
        [with_data(lambda data: [{**d, "embedding": API_KEY} for d in data])],
        [hang(1.0)] * 2,
    ],
)
def test_api_key_never_appears_in_errors_or_logs(server, caplog, failure):
    server.script = list(failure)
    embedder, _ = make_embedder(server, timeout=0.2, max_retries=1)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(EmbeddingError) as caught:
        embedder.embed(["alpha"])
    error = caught.value
    rendered = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    for text in (str(error), repr(error), repr(error.args), rendered, caplog.text, repr(embedder)):
        assert API_KEY not in text
    assert API_KEY in server.requests[0].headers["Authorization"]  # it was sent


def test_retries_are_logged_without_the_key(server, caplog):
    server.script = [status(503, "busy")]
    embedder, _ = make_embedder(server)
    with caplog.at_level(logging.WARNING, logger="pgseek.embeddings.openai"):
        embedder.embed(["alpha"])
    assert "HTTP 503: busy; retry 1 of 3" in caplog.text
    assert API_KEY not in caplog.text


def test_repr_shows_the_settings_but_not_the_key(server):
    embedder, _ = make_embedder(server)
    assert repr(embedder) == (
        f"OpenAIEmbedder(model='fake-embedding', dimensions=4, base_url='{server.url}', "
        "send_dimensions=True, batch_size=128)"
    )


@pytest.mark.parametrize(
    "options",
    [
        {"base_url": "ftp://example.com"},
        {"base_url": "not a url"},
        {"batch_size": 0},
        {"batch_size": 5000},
        {"timeout": 0},
        {"max_retries": -1},
        {"max_retry_wait": "soon"},
        {"send_dimensions": "yes"},
    ],
)
def test_invalid_settings_raise_config_errors(options):
    with pytest.raises(EmbeddingConfigError):
        OpenAIEmbedder("m", 4, **options)


@pytest.mark.parametrize(
    ("options", "secret"),
    [
        ({"api_key": f"{API_KEY}\r\nX-Injected: 1"}, API_KEY),
        ({"api_key": f"{API_KEY}\u00e9"}, API_KEY),
        ({"base_url": "https://user:hunter2@example.com/v1"}, "hunter2"),
    ],
)
def test_unusable_secrets_are_refused_without_being_repeated(options, secret):
    with pytest.raises(EmbeddingConfigError) as caught:
        OpenAIEmbedder("m", 4, **options)
    assert secret not in str(caught.value)


@pytest.mark.parametrize(("model", "dimensions"), [("", 4), ("m", 0), ("m", True)])
def test_invalid_model_or_dimensions_raise_config_errors(model, dimensions):
    with pytest.raises(EmbeddingConfigError):
        OpenAIEmbedder(model, dimensions)


def test_rejects_anything_but_a_sequence_of_strings(server):
    embedder, _ = make_embedder(server)
    with pytest.raises(TypeError, match="sequence of str"):
        embedder.embed("alpha")
