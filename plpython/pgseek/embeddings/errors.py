"""Errors raised by embedding providers, split by whether a retry can help."""


class EmbeddingError(Exception):
    """Base class for every embedding failure."""


class RetryableEmbeddingError(EmbeddingError):
    """A failure that may go away later: rate limit, timeout, 5xx, connection error.

    ``retry_after`` is the delay in seconds the caller should wait before trying
    again (the server's ``Retry-After`` when it sent one), or None if unknown.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentEmbeddingError(EmbeddingError):
    """A failure a retry will not fix: bad response, wrong dimensions, 4xx other than 429."""


class EmbeddingConfigError(PermanentEmbeddingError, ValueError):
    """An invalid provider configuration (unknown provider, model or option)."""
