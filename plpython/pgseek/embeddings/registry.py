"""Build an embedding provider from a configuration dict (e.g. a row of pgseek's config)."""

import hashlib
import json
from collections.abc import Iterable, Mapping, MutableMapping
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


#: The key of the providers' dict in the cache (``GD``): configuration -> (key digest, provider).
CACHE_KEY = "pgseek.embedders"


def config_key(config: Mapping[str, Any]) -> str:
    """A configuration as a cache key: the same for the same settings in any order."""
    return json.dumps(config, sort_keys=True, default=str)


def cached_provider(
    cache: MutableMapping[str, Any],
    config: Mapping[str, Any],
    *,
    api_key: str | None = None,
    live: Iterable[Mapping[str, Any]] | None = None,
) -> EmbeddingProvider:
    """The provider for ``config`` from ``cache`` (PL/Python's ``GD``), created on first use.

    One provider per configuration, rebuilt (not added) when the API key changes; the
    cache holds a digest of the key, never the key. ``live`` lists the configurations
    still in use (the current model's and, during a model change, the next model's):
    the providers of every other configuration are dropped, so a backend that outlives
    configuration changes (a pooled connection) does not keep one model per past
    configuration in memory.
    """
    providers = cache.setdefault(CACHE_KEY, {})
    key = config_key(config)
    if live is not None:
        keep = {config_key(c) for c in live} | {key}
        for old in [k for k in providers if k not in keep]:
            del providers[old]
    key_digest = hashlib.sha256(api_key.encode()).hexdigest()[:16] if api_key else ""
    entry = providers.get(key)
    if entry is None or entry[0] != key_digest:
        providers.pop(key, None)  # the old one goes before the new one loads
        providers[key] = (key_digest, get_provider(config, api_key=api_key))
    return providers[key][1]


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
