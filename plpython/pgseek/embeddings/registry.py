"""Build an embedding provider from a configuration dict (e.g. a row of pgseek's config)."""

import hashlib
import json
from collections.abc import Mapping, MutableMapping
from typing import Any

from pgseek.embeddings.base import EmbeddingProvider
from pgseek.embeddings.errors import EmbeddingConfigError

PROVIDERS = ("local", "openai")
#: Model names the local provider accepts, with their vector size.
LOCAL_MODELS = {"all-MiniLM-L6-v2": 384, "sentence-transformers/all-MiniLM-L6-v2": 384}
_LOCAL_OPTIONS = frozenset({"intra_op_threads", "batch_size"})
_OPENAI_OPTIONS = frozenset(
    {"base_url", "send_dimensions", "batch_size", "timeout", "max_retries", "max_retry_wait"}
)


def get_provider(config: Mapping[str, Any], *, api_key: str | None = None) -> EmbeddingProvider:
    """Create the provider ``config`` describes.

    ``config`` holds ``provider`` ('local' or 'openai'), ``model``, ``dimensions`` and
    that provider's options. The API key comes separately so that configuration can
    be stored and shown without it; the local provider ignores it.
    Raises :class:`EmbeddingConfigError` naming any unknown or invalid value.
    """
    options = dict(config)
    missing = [key for key in ("provider", "model", "dimensions") if key not in options]
    if missing:
        raise EmbeddingConfigError(f"embedding config is missing {', '.join(missing)}")
    if "api_key" in options:
        raise EmbeddingConfigError("pass the API key as api_key=..., not inside the config")
    provider = options.pop("provider")
    model = options.pop("model")
    dimensions = options.pop("dimensions")
    if provider == "local":
        _reject_unknown_options(provider, options, _LOCAL_OPTIONS)
        _check_local_model(model, dimensions)
        from pgseek.embeddings.local import LocalEmbedder  # loads numpy and onnxruntime

        return LocalEmbedder(**options)
    if provider == "openai":
        _reject_unknown_options(provider, options, _OPENAI_OPTIONS)
        from pgseek.embeddings.openai import OpenAIEmbedder

        return OpenAIEmbedder(model, dimensions, api_key=api_key, **options)
    raise EmbeddingConfigError(
        f"unknown embedding provider {provider!r}; expected one of {', '.join(PROVIDERS)}"
    )


def cached_provider(
    cache: MutableMapping[str, Any],
    config: Mapping[str, Any],
    *,
    api_key: str | None = None,
) -> EmbeddingProvider:
    """The provider for ``config`` from ``cache`` (PL/Python's ``GD``), created on first use.

    The cache key holds the configuration and a digest of the API key, never the key.
    """
    key_digest = hashlib.sha256(api_key.encode()).hexdigest()[:16] if api_key else ""
    cache_key = "pgseek.embedder:" + json.dumps(config, sort_keys=True, default=str) + key_digest
    provider = cache.get(cache_key)
    if provider is None:
        provider = get_provider(config, api_key=api_key)
        cache[cache_key] = provider
    return provider


def _reject_unknown_options(provider: str, options: Mapping[str, Any], known: frozenset) -> None:
    unknown = sorted(set(options) - known)
    if unknown:
        raise EmbeddingConfigError(
            f"unknown option {', '.join(map(repr, unknown))} for provider {provider!r}; "
            f"known options: {', '.join(sorted(known))}"
        )


def _check_local_model(model: object, dimensions: object) -> None:
    if not isinstance(model, str) or model not in LOCAL_MODELS:
        raise EmbeddingConfigError(
            f"unknown local model {model!r}; available: {', '.join(LOCAL_MODELS)}"
        )
    expected = LOCAL_MODELS[model]
    if dimensions != expected or isinstance(dimensions, bool):
        raise EmbeddingConfigError(
            f"local model {model!r} has {expected} dimensions, config says {dimensions!r}"
        )
