"""Split long text into overlapping chunks that fit an embedding model's token window.

A chunk ends at the strongest boundary in the second half of its window: a paragraph
break, else a sentence end or line break, else a space. A run of characters with no
separator is cut by length. Offsets are character positions in the source text, so
``source[chunk.start_char:chunk.end_char] == chunk.text``; PostgreSQL's ``substr``
counts the same characters, from 1.
"""

import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from itertools import accumulate
from typing import NamedTuple

#: all-MiniLM-L6-v2 reads 256 tokens, two of them [CLS] and [SEP].
DEFAULT_CHUNK_TOKENS = 254
DEFAULT_OVERLAP_TOKENS = 32
#: A run of non-separator characters longer than this is cut into pieces.
MAX_WORD_CHARS = 100

TokenCounter = Callable[[str], int]


class Chunk(NamedTuple):
    """One piece of the source text: ``text == source[start_char:end_char]``."""

    chunk_index: int
    text: str
    start_char: int
    end_char: int


# Whitespace, control and zero-width characters: they separate words, and a chunk never
# starts or ends with one.
_SEPARATORS = r"\s\x00-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff"
# Full-width full stop, exclamation and question marks: Chinese and Japanese sentence
# ends, written without a following space.
_CJK_STOPS = "\u3002\uff01\uff1f"
_WORD = re.compile(rf"[^{_SEPARATORS}{_CJK_STOPS}]*[{_CJK_STOPS}]+|[^{_SEPARATORS}{_CJK_STOPS}]+")
# A sentence end, then any closing quotes or brackets.
_SENTENCE_END = re.compile(rf"[.!?\u2026{_CJK_STOPS}][\"'\u201d\u2019\u00bb)\]]*\Z")
_APPROXIMATE_TOKEN = re.compile(r"\w+|[^\w\s]")

# How good a place to end a chunk the gap after a word is.
_NO_BOUNDARY, _WORD_BOUNDARY, _SENTENCE_BOUNDARY, _PARAGRAPH_BOUNDARY = range(4)


def approximate_token_count(text: str) -> int:
    """A cheap token estimate: runs of word characters plus punctuation marks."""
    return len(_APPROXIMATE_TOKEN.findall(text))


def chunk_text(
    text: str,
    *,
    max_tokens: int = DEFAULT_CHUNK_TOKENS,
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
    count_tokens: TokenCounter | None = None,
) -> list[Chunk]:
    """Split ``text`` into chunks of at most ``max_tokens`` tokens.

    Consecutive chunks share up to ``overlap_tokens`` tokens, starting at a sentence
    when that keeps at least half of the overlap. ``count_tokens`` should be the
    embedding model's counter (e.g. ``LocalEmbedder.count_tokens``); without it,
    :func:`approximate_token_count` is used. Blank text gives no chunks, and no chunk
    is empty or starts or ends with whitespace. A chunk exceeds ``max_tokens`` only
    when a single character does.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if not 0 <= overlap_tokens <= max_tokens // 2:
        raise ValueError(
            f"overlap_tokens must be between 0 and max_tokens // 2, got {overlap_tokens}"
        )
    count = count_tokens or approximate_token_count
    spans, counts = _words(text, max_tokens, count)
    if not spans:
        return []
    strengths = [_boundary_after(text, spans[w], spans[w + 1][0]) for w in range(len(spans) - 1)]
    prefix = [0, *accumulate(counts)]  # prefix[w]: tokens before word w
    last_word = len(spans) - 1
    chunks: list[Chunk] = []
    first = 0
    while True:
        # The last word that fits; the first word always fits on its own.
        fits_up_to = max(first, bisect_right(prefix, prefix[first] + max_tokens) - 2)
        if fits_up_to == last_word:
            end_word = last_word
        else:
            end_word = _best_end(first, fits_up_to, prefix, strengths, max_tokens)
        # Token counts need not add up across words for every tokenizer: check the whole.
        while end_word > first and count(text[spans[first][0] : spans[end_word][1]]) > max_tokens:
            end_word -= 1
        start, end = spans[first][0], spans[end_word][1]
        chunks.append(Chunk(len(chunks), text[start:end], start, end))
        if end_word == last_word:
            return chunks
        first = _next_first(first, end_word, prefix, strengths, max_tokens, overlap_tokens)


def _words(
    text: str, max_tokens: int, count: TokenCounter
) -> tuple[list[tuple[int, int]], list[int]]:
    """Word spans and their token counts; words too long for a chunk are cut into pieces."""
    memo: dict[str, int] = {}

    def tokens(start: int, end: int) -> int:
        word = text[start:end]
        if word not in memo:
            memo[word] = count(word)
        return memo[word]

    spans: list[tuple[int, int]] = []
    for match in _WORD.finditer(text):
        start, end = match.span()
        if end - start <= MAX_WORD_CHARS and tokens(start, end) <= max_tokens:
            spans.append((start, end))
        else:
            spans.extend(_cut(text, start, end, lambda s, e: tokens(s, e) <= max_tokens))
    return spans, [tokens(*span) for span in spans]


def _cut(
    text: str, start: int, end: int, fits: Callable[[int, int], bool]
) -> Iterator[tuple[int, int]]:
    """Cut ``text[start:end]`` into pieces of at most MAX_WORD_CHARS characters that fit."""
    while start < end:
        stop = min(end, start + MAX_WORD_CHARS)
        if not fits(start, stop):  # binary search for the longest piece that fits
            shortest, longest = start + 1, stop - 1
            while shortest < longest:
                middle = (shortest + longest + 1) // 2
                if fits(start, middle):
                    shortest = middle
                else:
                    longest = middle - 1
            stop = shortest
        # Keep a combining mark with the character it modifies.
        while start + 1 < stop < end and unicodedata.combining(text[stop]):
            stop -= 1
        yield start, stop
        start = stop


def _boundary_after(text: str, word: tuple[int, int], next_start: int) -> int:
    gap = text[word[1] : next_start]
    if not gap:  # a cut inside a long word, or after a full-width stop
        return _SENTENCE_BOUNDARY if text[word[1] - 1] in _CJK_STOPS else _NO_BOUNDARY
    if gap.count("\n") >= 2:
        return _PARAGRAPH_BOUNDARY
    if "\n" in gap or _SENTENCE_END.search(text, word[0], word[1]):
        return _SENTENCE_BOUNDARY
    return _WORD_BOUNDARY


def _best_end(
    first: int, fits_up_to: int, prefix: list[int], strengths: list[int], max_tokens: int
) -> int:
    """The last word of a chunk: the strongest boundary, latest on ties, in the second half."""
    half = prefix[first] + max_tokens / 2
    words = range(first, fits_up_to + 1)
    second_half = [w for w in words if prefix[w + 1] >= half]
    return max(second_half or words, key=lambda w: (strengths[w], w))


def _next_first(
    first: int,
    end_word: int,
    prefix: list[int],
    strengths: list[int],
    max_tokens: int,
    overlap_tokens: int,
) -> int:
    """The first word of the next chunk: after ``first``, repeating up to the overlap."""
    if overlap_tokens == 0:
        return end_word + 1
    chunk_end = prefix[end_word + 1]
    start = max(first + 1, bisect_left(prefix, chunk_end - overlap_tokens))
    sentence_starts = (
        w
        for w in range(start, end_word + 1)
        if strengths[w - 1] >= _SENTENCE_BOUNDARY and chunk_end - prefix[w] >= overlap_tokens / 2
    )
    start = next(sentence_starts, start)
    # The word after this chunk has to fit beside the overlap.
    while start <= end_word and prefix[end_word + 2] - prefix[start] > max_tokens:
        start += 1
    return start
