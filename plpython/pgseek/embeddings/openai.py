"""Client for OpenAI's ``POST {base_url}/embeddings`` and servers speaking it (vLLM, Ollama,
LiteLLM), on the standard library only.

The API key is sent in the Authorization header and nowhere else: it never appears
in an exception message, a log line or ``repr``.
"""

import http.client
import json
import logging
import math
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from email.message import Message
from typing import Any

from pgseek.embeddings.base import EmbeddingProvider
from pgseek.embeddings.errors import (
    EmbeddingConfigError,
    EmbeddingError,
    PermanentEmbeddingError,
    RetryableEmbeddingError,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: OpenAI accepts at most 2048 inputs per request.
MAX_BATCH_SIZE = 2048
#: Retried besides 5xx, as OpenAI's own SDK does.
_RETRYABLE_STATUSES = frozenset({408, 409, 429})
_BACKOFF_BASE_SECONDS = 0.5
_BACKOFF_MAX_SECONDS = 30.0
_ERROR_SNIPPET_CHARS = 300

logger = logging.getLogger(__name__)


def _require_int(name: str, value: object, minimum: int, maximum: int | None = None) -> None:
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bounds = f"between {minimum} and {maximum}" if maximum else f"at least {minimum}"
        raise EmbeddingConfigError(f"{name} must be an integer {bounds}, got {value!r}")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: following one would send the API key to another address."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


def _parse_retry_after(headers: Message | None) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (delta-seconds form only)."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


class OpenAIEmbedder(EmbeddingProvider):
    """Embeds through an OpenAI-compatible HTTP API, with retries for transient failures.

    ``dimensions`` is the vector size every response must have. It is also sent as
    the request's ``dimensions`` field unless ``send_dimensions`` is False (for
    models and servers that reject it, e.g. text-embedding-ada-002, most vLLM models).
    ``timeout`` is per attempt; up to ``max_retries`` retries follow the first attempt,
    each waiting ``Retry-After`` (capped at ``max_retry_wait``) or an exponential
    backoff with jitter.
    """

    provider = "openai"

    def __init__(
        self,
        model: str,
        dimensions: int,
        *,
        api_key: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        send_dimensions: bool = True,
        batch_size: int = 128,
        timeout: float = 30.0,
        max_retries: int = 3,
        max_retry_wait: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise EmbeddingConfigError(f"model must be a non-empty string, got {model!r}")
        _require_int("dimensions", dimensions, 1)
        _require_int("batch_size", batch_size, 1, MAX_BATCH_SIZE)
        _require_int("max_retries", max_retries, 0)
        for name, value in (("timeout", timeout), ("max_retry_wait", max_retry_wait)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise EmbeddingConfigError(f"{name} must be a positive number, got {value!r}")
        if not isinstance(send_dimensions, bool):
            raise EmbeddingConfigError(
                f"send_dimensions must be true or false, got {send_dimensions!r}"
            )
        url = urllib.parse.urlsplit(base_url) if isinstance(base_url, str) else None
        if url is not None and (url.username or url.password):  # not echoed: may be secret
            raise EmbeddingConfigError("base_url must not hold credentials; pass api_key")
        if url is None or url.scheme not in ("http", "https") or not url.hostname:
            raise EmbeddingConfigError(f"base_url must be an http(s) URL, got {base_url!r}")
        # Checked here: http.client's own error for a bad header value quotes the value.
        if api_key is not None and not (
            isinstance(api_key, str) and api_key.isascii() and api_key.isprintable()
        ):
            raise EmbeddingConfigError("api_key must be printable ASCII text")
        self.model = model
        self.dimensions = dimensions
        self.base_url = base_url.rstrip("/")
        self.send_dimensions = send_dimensions
        self.batch_size = batch_size
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.max_retry_wait = float(max_retry_wait)
        self._api_key = api_key or None
        self._sleep = sleep
        self._opener = urllib.request.build_opener(_NoRedirects())

    def __repr__(self) -> str:
        return (
            f"OpenAIEmbedder(model={self.model!r}, dimensions={self.dimensions}, "
            f"base_url={self.base_url!r}, send_dimensions={self.send_dimensions}, "
            f"batch_size={self.batch_size})"
        )

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed ``texts`` in batches of ``batch_size``; one vector per text, in input order."""
        if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
            raise TypeError("texts must be a sequence of str")
        texts = list(texts)
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            vectors.extend(self._embed_batch(texts[start : start + self.batch_size]))
        return vectors

    def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        body: dict[str, Any] = {"model": self.model, "input": texts}
        if self.send_dimensions:
            body["dimensions"] = self.dimensions
        payload = json.dumps(body).encode("utf-8")
        attempt = 0
        while True:
            try:
                return self._parse(self._post(payload), len(texts))
            except RetryableEmbeddingError as exc:
                if attempt == self.max_retries:
                    raise RetryableEmbeddingError(
                        f"{exc} (gave up after {attempt + 1} attempts)",
                        retry_after=exc.retry_after,
                    ) from exc
                delay = self._retry_delay(attempt, exc.retry_after)
                attempt += 1
                logger.warning(
                    "embedding request to %s failed: %s; retry %d of %d in %.2fs",
                    self.base_url,
                    exc,
                    attempt,
                    self.max_retries,
                    delay,
                )
                self._sleep(delay)

    def _retry_delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_wait)
        ceiling = min(_BACKOFF_MAX_SECONDS, _BACKOFF_BASE_SECONDS * 2**attempt)
        return min(ceiling / 2 + random.uniform(0, ceiling / 2), self.max_retry_wait)

    def _post(self, payload: bytes) -> bytes:
        """Send one request; return the 2xx body or raise a classified error."""
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "pgseek",
        }
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(
            f"{self.base_url}/embeddings", data=payload, headers=headers, method="POST"
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            # Not chained: everything useful is in the message, and the rest is the server's.
            raise self._http_error(exc) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise self._timeout_error() from exc
            raise RetryableEmbeddingError(
                self._redact(f"cannot reach {self.base_url}: {exc.reason}")
            ) from exc
        except TimeoutError as exc:
            raise self._timeout_error() from exc
        except (http.client.HTTPException, OSError) as exc:  # reset, refused, TLS
            raise RetryableEmbeddingError(
                self._redact(f"connection to {self.base_url} failed: {exc!r}")
            ) from exc

    def _timeout_error(self) -> RetryableEmbeddingError:
        return RetryableEmbeddingError(f"{self.base_url} did not answer within {self.timeout}s")

    def _http_error(self, exc: urllib.error.HTTPError) -> EmbeddingError:
        try:
            body = exc.read()
        except (OSError, http.client.HTTPException):
            body = b""
        message = self._redact(
            f"{self.base_url}/embeddings answered HTTP {exc.code}: {self._error_detail(body)}"
        )
        if exc.code in _RETRYABLE_STATUSES or exc.code >= 500:
            return RetryableEmbeddingError(message, retry_after=_parse_retry_after(exc.headers))
        return PermanentEmbeddingError(message)

    @staticmethod
    def _error_detail(body: bytes) -> str:
        """The server's ``error.message`` if it sent one, else the start of the body."""
        text = body.decode("utf-8", "replace")
        try:
            error = json.loads(text).get("error")
            detail = error.get("message") if isinstance(error, dict) else error
        except (ValueError, AttributeError):
            detail = None
        detail = detail if isinstance(detail, str) and detail else text
        return detail[:_ERROR_SNIPPET_CHARS] or "(empty body)"

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "[redacted]") if self._api_key else text

    def _parse(self, body: bytes, expected: int) -> list[list[float]]:
        """Validate a response body and return its vectors in input order."""
        try:
            response = json.loads(body)
        except ValueError as exc:
            snippet = body[:_ERROR_SNIPPET_CHARS].decode("utf-8", "replace")
            raise self._bad_response(f"body is not JSON: {snippet!r}") from exc
        data = response.get("data") if isinstance(response, dict) else None
        if not isinstance(data, list):
            raise self._bad_response("it has no 'data' list")
        if len(data) != expected:
            raise self._bad_response(f"{len(data)} embeddings for {expected} inputs")
        vectors: dict[int, list[float]] = {}
        for item in data:
            index = item.get("index") if isinstance(item, dict) else None
            if (
                not isinstance(index, int)
                or isinstance(index, bool)
                or not 0 <= index < expected
                or index in vectors
            ):
                raise self._bad_response(f"missing, out-of-range or repeated index {index!r}")
            vectors[index] = self._vector(item.get("embedding"), index)
        # expected distinct indexes in range(expected): every position is filled.
        return [vectors[index] for index in range(expected)]

    def _vector(self, embedding: object, index: int) -> list[float]:
        if not isinstance(embedding, list):
            raise self._bad_response(f"embedding {index} is not a list of numbers")
        if len(embedding) != self.dimensions:
            raise self._bad_response(
                f"embedding {index} has {len(embedding)} dimensions, expected {self.dimensions}"
            )
        if not all(type(value) in (float, int) for value in embedding):
            raise self._bad_response(f"embedding {index} holds a non-number")
        vector = [float(value) for value in embedding]
        if not all(math.isfinite(value) for value in vector):
            raise self._bad_response(f"embedding {index} holds NaN or infinity")
        return vector

    def _bad_response(self, problem: str) -> PermanentEmbeddingError:
        return PermanentEmbeddingError(
            self._redact(f"bad response from {self.base_url}/embeddings: {problem}")
        )
