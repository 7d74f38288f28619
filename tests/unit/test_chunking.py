import re
from itertools import pairwise

import pytest

from pgseek.chunking import (
    DEFAULT_CHUNK_TOKENS,
    MAX_WORD_CHARS,
    Chunk,
    approximate_token_count,
    chunk_text,
)

SENTENCE = "PostgreSQL stores the vectors next to the rows they describe."


def paragraph(number: int, sentences: int) -> str:
    return " ".join(f"Paragraph {number} sentence {i} is about search." for i in range(sentences))


def assert_well_formed(source: str, chunks: list[Chunk], max_tokens: int, count=None) -> None:
    count = count or approximate_token_count
    assert [chunk.chunk_index for chunk in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.text
        assert source[chunk.start_char : chunk.end_char] == chunk.text
        assert chunk.text == chunk.text.strip()
        assert count(chunk.text) <= max_tokens
    starts = [chunk.start_char for chunk in chunks]
    assert starts == sorted(set(starts))


def assert_covers_every_word(source: str, chunks: list[Chunk]) -> None:
    for word in re.finditer(r"\S+", source):
        assert any(c.start_char <= word.start() and word.end() <= c.end_char for c in chunks), word


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t", "\x00\x07\x1b", "\u200b\ufeff"])
def test_blank_text_gives_no_chunks(text):
    assert chunk_text(text) == []


def test_short_text_is_one_chunk_without_surrounding_whitespace():
    source = f"\n  {SENTENCE}  \n"
    assert chunk_text(source) == [Chunk(0, SENTENCE, 3, 3 + len(SENTENCE))]


def test_chunks_fit_the_budget_and_cover_the_text():
    source = "\n\n".join(paragraph(p, 12) for p in range(10))
    chunks = chunk_text(source, max_tokens=60, overlap_tokens=10)
    assert len(chunks) > 5
    assert_well_formed(source, chunks, 60)
    assert_covers_every_word(source, chunks)


def test_chunks_end_at_paragraph_breaks_when_paragraphs_fit():
    paragraphs = [paragraph(p, 3) for p in range(8)]  # ~30 tokens each
    source = "\n\n".join(paragraphs)
    chunks = chunk_text(source, max_tokens=70, overlap_tokens=0)
    assert len(chunks) > 1
    for chunk in chunks:
        assert chunk.text.endswith("search.")
        assert source[chunk.end_char : chunk.end_char + 2] in ("\n\n", "")


def test_chunks_end_at_sentence_ends_inside_a_long_paragraph():
    source = paragraph(1, 40)
    chunks = chunk_text(source, max_tokens=50, overlap_tokens=8)
    assert len(chunks) > 3
    assert_well_formed(source, chunks, 50)
    assert all(chunk.text.endswith(".") for chunk in chunks)


def test_consecutive_chunks_overlap_by_at_most_the_overlap():
    source = paragraph(1, 40)
    chunks = chunk_text(source, max_tokens=50, overlap_tokens=8)
    for previous, current in pairwise(chunks):
        assert current.start_char < previous.end_char  # they do overlap
        shared = source[current.start_char : previous.end_char]
        assert 0 < approximate_token_count(shared) <= 8


def test_zero_overlap_gives_disjoint_chunks_in_order():
    source = paragraph(1, 40)
    chunks = chunk_text(source, max_tokens=50, overlap_tokens=0)
    for previous, current in pairwise(chunks):
        assert current.start_char > previous.end_char
        assert not source[previous.end_char : current.start_char].strip()
    assert_covers_every_word(source, chunks)


def test_text_without_sentence_ends_splits_between_words():
    source = " ".join(f"word{i}" for i in range(1000))
    chunks = chunk_text(source, max_tokens=40, overlap_tokens=5)
    assert_well_formed(source, chunks, 40)
    assert_covers_every_word(source, chunks)
    assert all(re.fullmatch(r"word\d+( word\d+)*", chunk.text) for chunk in chunks)


def test_a_very_long_word_is_cut_by_length():
    source = "start " + "x" * 1050 + " end"
    chunks = chunk_text(source, max_tokens=3, overlap_tokens=0)
    assert_well_formed(source, chunks, 3)
    # Nothing lost, nothing repeated.
    assert "".join(chunk.text.replace(" ", "") for chunk in chunks) == source.replace(" ", "")
    assert max(len(chunk.text) for chunk in chunks) <= 3 * MAX_WORD_CHARS


def test_a_word_with_more_tokens_than_the_budget_is_cut_to_fit():
    source = "-" * 90  # 90 punctuation tokens, no separator
    chunks = chunk_text(source, max_tokens=20, overlap_tokens=0)
    assert [len(chunk.text) for chunk in chunks] == [20, 20, 20, 20, 10]


def test_a_long_word_is_not_cut_between_a_letter_and_its_accent():
    source = "a" + "e\u0301" * 80  # "é" written as e + combining acute accent

    def one_per_piece(_text: str) -> int:
        return 1

    chunks = chunk_text(source, max_tokens=1, overlap_tokens=0, count_tokens=one_per_piece)
    assert [(chunk.start_char, chunk.end_char) for chunk in chunks] == [(0, 99), (99, 161)]
    assert "".join(chunk.text for chunk in chunks) == source


def test_control_and_zero_width_characters_never_start_or_end_a_chunk():
    source = "\x00\x07alpha\x1bbeta \u200bgamma.\x0c\n\ndelta\ufeff epsilon\x7f"
    chunks = chunk_text(source, max_tokens=3, overlap_tokens=0)
    assert_well_formed(source, chunks, 3)
    for chunk in chunks:
        assert chunk.text[0].isalnum() and chunk.text[-1] in "abcdefghijklmnopqrstuvwxyz."


def test_chinese_text_splits_at_full_width_sentence_ends():
    source = "\u4eca\u5929\u5929\u6c14\u5f88\u597d\u3002" * 30  # 今天天气很好。
    chunks = chunk_text(source, max_tokens=10, overlap_tokens=0)
    assert len(chunks) > 1
    assert all(chunk.text.endswith("\u3002") for chunk in chunks)
    assert "".join(chunk.text for chunk in chunks) == source


def test_uses_the_given_token_counter():
    def characters(text: str) -> int:
        return len(text)

    source = paragraph(1, 20)
    chunks = chunk_text(source, max_tokens=100, overlap_tokens=20, count_tokens=characters)
    assert_well_formed(source, chunks, 100, characters)
    assert max(len(chunk.text) for chunk in chunks) > 60


def test_a_chunk_is_shrunk_when_the_counter_is_not_additive():
    def whole_text_costs_more(text: str) -> int:
        return approximate_token_count(text) + (5 if " " in text else 0)

    source = paragraph(1, 20)
    chunks = chunk_text(source, max_tokens=40, overlap_tokens=5, count_tokens=whole_text_costs_more)
    assert_well_formed(source, chunks, 40, whole_text_costs_more)
    assert_covers_every_word(source, chunks)


def test_the_real_tokenizer_keeps_every_chunk_inside_the_model_window(local_embedder):
    source = "\n\n".join(paragraph(p, 25) for p in range(12))
    chunks = chunk_text(source, count_tokens=local_embedder.count_tokens)
    assert len(chunks) > 3
    assert_well_formed(source, chunks, DEFAULT_CHUNK_TOKENS, local_embedder.count_tokens)
    assert_covers_every_word(source, chunks)
    # With [CLS] and [SEP] each chunk still fits the 256-token window.
    assert all(local_embedder.count_tokens(c.text) + 2 <= 256 for c in chunks)


def test_a_large_document_is_chunked_to_its_end(local_embedder):
    source = "\n\n".join(paragraph(p, 30) for p in range(800))  # ~1 MB
    chunks = chunk_text(source, count_tokens=local_embedder.count_tokens)
    assert len(source) > 900_000
    assert_covers_every_word(source[: chunks[9].end_char], chunks[:10])
    assert chunks[-1].end_char == len(source)


@pytest.mark.parametrize(("max_tokens", "overlap_tokens"), [(0, 0), (10, -1), (10, 6), (254, 128)])
def test_rejects_impossible_sizes(max_tokens, overlap_tokens):
    with pytest.raises(ValueError):
        chunk_text("some text", max_tokens=max_tokens, overlap_tokens=overlap_tokens)
