import pytest

from pgseek.embeddings import (
    EmbeddingConfigError,
    EmbeddingError,
    PermanentEmbeddingError,
    RetryableEmbeddingError,
    cached_provider,
    get_provider,
)
from pgseek.embeddings.local import LocalEmbedder
from pgseek.embeddings.openai import OpenAIEmbedder
from pgseek.embeddings.registry import CACHE_KEY

OPENAI_CONFIG = {
    "provider": "openai",
    "model": "text-embedding-3-small",
    "dimensions": 512,
    "base_url": "http://127.0.0.1:9/v1",
    "batch_size": 16,
    "timeout": 5,
    "max_retries": 1,
}


def test_error_classes_tell_retry_from_dead_letter():
    assert issubclass(RetryableEmbeddingError, EmbeddingError)
    assert issubclass(PermanentEmbeddingError, EmbeddingError)
    assert not issubclass(RetryableEmbeddingError, PermanentEmbeddingError)
    assert issubclass(EmbeddingConfigError, PermanentEmbeddingError)
    assert issubclass(EmbeddingConfigError, ValueError)
    assert RetryableEmbeddingError("busy", retry_after=3.0).retry_after == 3.0
    assert RetryableEmbeddingError("busy").retry_after is None


def test_builds_the_local_provider():
    provider = get_provider(
        {"provider": "local", "model": "all-MiniLM-L6-v2", "dimensions": 384, "batch_size": 8}
    )
    assert isinstance(provider, LocalEmbedder)
    assert provider.batch_size == 8
    assert len(provider.embed_one("hello")) == 384


def test_builds_the_openai_provider_with_its_options():
    provider = get_provider(OPENAI_CONFIG, api_key="sk-secret")
    assert isinstance(provider, OpenAIEmbedder)
    assert (provider.model, provider.dimensions, provider.batch_size) == (
        "text-embedding-3-small",
        512,
        16,
    )
    assert provider.base_url == "http://127.0.0.1:9/v1"
    assert (provider.timeout, provider.max_retries) == (5.0, 1)


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"provider": "cohere", "model": "m", "dimensions": 3}, "'cohere'"),
        ({"provider": "local", "model": "bge-small", "dimensions": 384}, "'bge-small'"),
        ({"provider": "local", "model": "all-MiniLM-L6-v2", "dimensions": 768}, "768"),
        ({"provider": "local", "model": "all-MiniLM-L6-v2", "dimensions": True}, "True"),
        ({"provider": "local", "model": ["x"], "dimensions": 384}, "['x']"),
        ({**OPENAI_CONFIG, "base_ur1": "http://x"}, "'base_ur1'"),
        ({"provider": "local", "model": "all-MiniLM-L6-v2", "dimensions": 384, "x": 1}, "'x'"),
        ({**OPENAI_CONFIG, "dimensions": 0}, "dimensions"),
        ({"model": "m", "dimensions": 3}, "provider"),
        ({"provider": "openai", "dimensions": 3}, "model"),
        ({"provider": "openai", "model": "m"}, "dimensions"),
    ],
)
def test_bad_config_raises_a_value_error_naming_the_bad_value(config, named):
    with pytest.raises(ValueError) as caught:
        get_provider(config)
    assert isinstance(caught.value, EmbeddingConfigError)
    assert named in str(caught.value)


def test_api_key_inside_the_config_is_refused_without_repeating_it():
    with pytest.raises(EmbeddingConfigError) as caught:
        get_provider({**OPENAI_CONFIG, "api_key": "sk-secret"})
    assert "sk-secret" not in str(caught.value)


def test_cached_provider_builds_each_configuration_once():
    cache: dict = {}
    first = cached_provider(cache, OPENAI_CONFIG, api_key="sk-one")
    assert cached_provider(cache, dict(reversed(OPENAI_CONFIG.items())), api_key="sk-one") is first
    assert cached_provider(cache, {**OPENAI_CONFIG, "batch_size": 8}, api_key="sk-one") is not first
    assert len(cache[CACHE_KEY]) == 2
    assert "sk-one" not in repr(cache)


def test_a_new_api_key_replaces_the_provider_of_its_configuration():
    cache: dict = {}
    first = cached_provider(cache, OPENAI_CONFIG, api_key="sk-one")
    second = cached_provider(cache, OPENAI_CONFIG, api_key="sk-two")
    assert second is not first
    assert [p for _, p in cache[CACHE_KEY].values()] == [second]
    assert "sk-two" not in repr(cache)


def test_providers_of_configurations_no_longer_live_are_dropped():
    """Each options change (the only live configuration) replaces the provider; one
    listed as live (the next model, during a model change) stays."""
    cache: dict = {}
    next_model = {**OPENAI_CONFIG, "model": "text-embedding-3-large"}
    kept = cached_provider(cache, next_model, live=[next_model])
    for batch_size in range(1, 6):
        config = {**OPENAI_CONFIG, "batch_size": batch_size}
        latest = cached_provider(cache, config, live=[config, next_model])
    providers = [p for _, p in cache[CACHE_KEY].values()]
    assert len(providers) == 2
    assert kept in providers and latest in providers
    cached_provider(cache, next_model, live=[next_model])  # the change was finished
    assert [p for _, p in cache[CACHE_KEY].values()] == [kept]
