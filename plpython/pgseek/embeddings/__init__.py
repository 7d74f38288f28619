"""Embedding providers behind one interface, and the factory that builds them.

The local provider (numpy, onnxruntime) is imported only when it is asked for.
"""

from pgseek.embeddings.base import EmbeddingProvider
from pgseek.embeddings.errors import (
    EmbeddingConfigError,
    EmbeddingError,
    PermanentEmbeddingError,
    RetryableEmbeddingError,
)
from pgseek.embeddings.registry import LOCAL_MODELS, PROVIDERS, cached_provider, get_provider

__all__ = [
    "LOCAL_MODELS",
    "PROVIDERS",
    "EmbeddingConfigError",
    "EmbeddingError",
    "EmbeddingProvider",
    "PermanentEmbeddingError",
    "RetryableEmbeddingError",
    "cached_provider",
    "get_provider",
]
