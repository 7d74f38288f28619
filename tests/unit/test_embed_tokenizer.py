import pytest
from tokenizers import Tokenizer

from pgseek.embeddings import EmbeddingConfigError
from pgseek.embeddings.tokenizer import default_tokenizer_path, load_token_counter, load_tokenizer


def test_the_shipped_tokenizer_file_pads_and_truncates_to_128():
    # Why load_tokenizer exists: tokenizer.json as shipped counts every text as 128.
    raw = Tokenizer.from_file(str(default_tokenizer_path()))
    assert len(raw.encode("hello").ids) == 128
    assert len(raw.encode("word " * 300).ids) == 128


def test_load_tokenizer_removes_the_padding_and_truncates_only_when_asked():
    assert load_tokenizer().encode("hello").tokens == ["[CLS]", "hello", "[SEP]"]
    assert len(load_tokenizer().encode("word " * 300).ids) == 302
    assert len(load_tokenizer(truncate_at=256).encode("word " * 300).ids) == 256


def test_token_counter_counts_wordpieces_without_special_tokens():
    count_tokens = load_token_counter()
    assert count_tokens("") == 0
    assert count_tokens("hello") == 1
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("word " * 1000) == 1000


def test_token_counter_agrees_with_the_local_embedder(local_embedder):
    count_tokens = load_token_counter()
    for text in ("hello", "PostgreSQL's pgvector: HNSW & IVFFlat!", "ünïcödé 東京 🚀"):
        assert count_tokens(text) == local_embedder.count_tokens(text)


def test_missing_tokenizer_file_is_a_config_error():
    with pytest.raises(EmbeddingConfigError, match="does not exist"):
        load_token_counter("/nonexistent/tokenizer.json")
