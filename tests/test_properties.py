"""Bad input, property-based: every public SQL function called with random arguments.

Hypothesis draws text (unicode, control characters, huge strings, SQL and tsquery
syntax, stop words only), JSONB (nested, arrays, scalars, huge, wrong types), vectors
(wrong dimensions, NaN, infinity, zero, subnormal and huge values, malformed text) and
numbers (out of range, NULL, NaN) for each argument. Every call must either return a
well-shaped answer (columns, types, ordering, the k bound) or raise an error whose
SQLSTATE is on that function's allow-list; never an internal error (XX000), a crash
(the postmaster's start time must not change), a hang (statement_timeout) or a
wrong-shaped result.

PGSEEK_HYPOTHESIS_PROFILE=thorough (`make reliability`) runs ten times the examples.
The cases tried per function and their outcomes are written to
$PGSEEK_RELIABILITY_DIR/properties.json (default .build/reliability/).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import time
import unicodedata
import uuid
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from pgtest import ROOT, Database, with_dbname

PROFILE = os.environ.get("PGSEEK_HYPOTHESIS_PROFILE", "default")
SCALE = {"default": 1, "thorough": 10}[PROFILE]
REPORT_DIR = Path(os.environ.get("PGSEEK_RELIABILITY_DIR", ROOT / ".build" / "reliability"))
DIMS = 384  # the local model's: text-only calls embed in the database
DOCS = 300
STATEMENT_TIMEOUT = "30s"

settings.register_profile(
    "pgseek",
    deadline=None,  # a database round trip, sometimes with the model: no per-example deadline
    database=None,  # no .hypothesis/ in the work tree; failures print their reproducer
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


def examples(n: int) -> settings:
    return settings(settings.get_profile("pgseek"), max_examples=n * SCALE)


# --- what was tried ------------------------------------------------------------------

STATS: dict[str, Counter] = {}
MESSAGES: dict[str, Counter] = {}  # function -> "SQLSTATE: message" (digits masked)
STARTED = time.monotonic()


def record(function: str, outcome: str) -> None:
    STATS.setdefault(function, Counter())[outcome] += 1


@pytest.fixture(scope="module", autouse=True)
def write_report():
    yield
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    functions = {
        name: {
            "cases": sum(c.values()),
            "ok": c.get("ok", 0),
            "errors": {k: v for k, v in sorted(c.items()) if k != "ok"},
            "messages": dict(MESSAGES.get(name, Counter()).most_common(8)),
        }
        for name, c in sorted(STATS.items())
    }
    report = {
        "profile": PROFILE,
        "seconds": round(time.monotonic() - STARTED, 1),
        "cases": sum(f["cases"] for f in functions.values()),
        "functions": functions,
    }
    (REPORT_DIR / "properties.json").write_text(json.dumps(report, indent=2) + "\n")


# --- allow-lists: the SQLSTATEs a bad argument may raise -------------------------------

INVALID = {"22023"}  # invalid_parameter_value, pgseek's own checks naming the argument
# Casting the client's text to the argument's type (the caller's mistake, not pgseek's):
# invalid_text_representation, numeric_value_out_of_range, and pgvector's data_exception
# (NaN, infinity, no dimensions) and program_limit_exceeded (over 16,000 dimensions).
VECTOR_CAST = {"22P02", "22003", "22000", "54000"}
INT_CAST = {"22003"}
JSONB_CAST = {"22P05"}  # "unsupported Unicode escape sequence": \u0000 in a JSON string
# regconfig: "invalid name syntax", "text search configuration ... does not exist",
# 'schema "x" does not exist' (for a qualified name such as '0.0').
REGCONFIG_CAST = {"42602", "42704", "3F000"}
INTERVAL_CAST = {"22007", "22008", "22015", "22P02"}
# to_tsvector on a query text over 1 MB: "string is too long for tsvector".
TSVECTOR_LIMIT = {"54000"}


def short(value) -> str:
    """A failure message's view of the arguments (a vector or huge text is long)."""
    text = repr(value)
    return text if len(text) <= 600 else text[:600] + f"... ({len(text)} characters)"


class Session:
    """A connection plus the server's postmaster start time, checked after every call."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        conn.execute(f"set statement_timeout = '{STATEMENT_TIMEOUT}'")
        self.started = conn.execute("select pg_postmaster_start_time()").fetchone()[0]

    def call(self, function: str, sql: str, params, allowed: set[str]) -> list | None:
        """Rows, or None after an allowed error; fails on anything else."""
        try:
            try:
                cursor = self.conn.execute(sql, params)
                rows = cursor.fetchall() if cursor.description else []
            except psycopg.errors.QueryCanceled:
                record(function, "timeout")
                pytest.fail(f"{function} took over {STATEMENT_TIMEOUT}: {short(params)}")
            except psycopg.Error as exc:
                if self.conn.broken or exc.sqlstate is None:
                    record(function, "connection lost")
                    pytest.fail(f"{function} lost the connection ({exc}): {short(params)}")
                state = exc.sqlstate
                record(function, state)
                message = re.sub(r"\d+", "N", exc.diag.message_primary or "")[:90]
                MESSAGES.setdefault(function, Counter())[f"{state}: {message}"] += 1
                assert not state.startswith("XX"), f"{function}: internal error {exc}"
                assert state in allowed, f"{function}: SQLSTATE {state} not allowed: {exc}"
                assert exc.diag.message_primary, f"{function}: an error without a message"
                return None
            record(function, "ok")
            return rows
        finally:
            self.check_alive()

    def check_alive(self) -> None:
        started = self.conn.execute("select pg_postmaster_start_time()").fetchone()[0]
        assert started == self.started, "the server restarted: a backend crashed"


# --- the corpus ------------------------------------------------------------------------

WORDS = [
    "postgres", "vector", "search", "index", "query", "cron", "backup", "replica",
    "tenant", "hybrid", "keyword", "ranking", "the", "and", "of", "database", "rows",
]  # fmt: skip
SOURCES = ["docs", "blog", "manual", "forum"]


def unit_vector(rng: random.Random, dims: int = DIMS) -> list[float]:
    v = [rng.gauss(0, 1) for _ in range(dims)]
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / norm for x in v]


def vector_text(values: list[float]) -> str:
    return "[" + ",".join(repr(x) for x in values) + "]"


@pytest.fixture(scope="module")
def corpus(server, template_db):
    """DOCS documents with random unit vectors, words and metadata; a small
    exact_search_max_rows, so filtered searches take both the exact and the index path."""
    name = server.create_database(template=template_db)
    db = Database(name, with_dbname(server.url, name))
    rng = random.Random(8)
    with db.connect() as conn:
        conn.execute("update pgseek.config set exact_search_max_rows = 40")
        with conn.cursor() as cur:
            cur.executemany(
                "insert into pgseek.documents (content, metadata, embedding)"
                " values (%s, %s, %s::vector)",
                [
                    (
                        " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))),
                        Jsonb(
                            {
                                "source": SOURCES[i % 4],
                                "n": i,
                                "even": i % 2 == 0,
                                "tags": [rng.choice(WORDS) for _ in range(2)],
                                "nested": {"level": i % 3},
                            }
                        ),
                        vector_text(unit_vector(rng)),
                    )
                    for i in range(DOCS)
                ],
            )
        conn.execute("analyze pgseek.documents")
        conn.execute("select pgseek.refresh_text_stats()")
    yield db
    server.drop_database(name)


@pytest.fixture(scope="module")
def session(corpus):
    with corpus.connect() as conn:
        yield Session(conn)


@pytest.fixture
def scratch(db):
    """A database of the test's own (writes: ingest, retention, keys)."""
    with db.connect() as conn:
        yield Session(conn)


# --- strategies --------------------------------------------------------------------------

# Text PostgreSQL can hold: no NUL, no lone surrogates.
CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
CONTROL = st.characters(min_codepoint=1, max_codepoint=0x1F) | st.sampled_from(
    "\x7f\x85\xa0\u2028\u2029\u200b\u200d\ufeff\u3000"
)
SYNTAX = st.sampled_from(
    [
        "!", "&", "|", "(", ")", ":*", "<->", "<2>", "'", "''", '"', "\\", ";", "--",
        "/*", "*/", "%", "%I", "%L", "%s", "%1$s", "$1", "$$", ":", "*", "!!", "&&",
        "||", "'); drop table pgseek.documents; --", "null", "E'\\\\x'", "\\x00",
        "a:*", "!postgres", "postgres & !vector", "(search | index) <-> query",
    ]
)  # fmt: skip
STOP_WORDS = st.lists(
    st.sampled_from(["the", "a", "of", "and", "is", "to", "in", "it", "was"]), min_size=1
).map(" ".join)
MIXED = st.lists(SYNTAX | st.sampled_from(WORDS) | st.text(CHARS, max_size=8), max_size=12).map(
    " ".join
)
HUGE = st.builds(
    lambda unit, n: unit * n,
    st.sampled_from(["word ", "x", "é", "\U0001f984", "a-b ", "<-> ", "the "]),
    st.integers(1000, 50_000),
)
TEXT = st.one_of(
    st.text(CHARS, max_size=200),
    st.text(CONTROL, min_size=1, max_size=10),
    MIXED,
    STOP_WORDS,
    st.sampled_from(WORDS),
    st.sampled_from(["", " ", "\t\n", "\u00a0", "\x1c"]),
    HUGE,
)
OPTIONAL_TEXT = st.none() | TEXT

JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(CHARS, max_size=20)
    | st.sampled_from([*SOURCES, "\x00", "'; drop table x; --"])
)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(CHARS, max_size=8), inner),
    max_leaves=25,
)
MATCHING_FILTER = st.fixed_dictionaries(
    {},
    optional={
        "source": st.sampled_from(SOURCES),
        "even": st.booleans(),
        "n": st.integers(0, DOCS),
        "tags": st.lists(st.sampled_from(WORDS), max_size=2),
        "nested": st.fixed_dictionaries({"level": st.integers(0, 3)}),
    },
)
HUGE_JSON = st.integers(100, 5000).map(lambda n: {f"k{i}": [i, str(i)] for i in range(n)})
OBJECT = st.one_of(MATCHING_FILTER, st.dictionaries(st.text(CHARS, max_size=8), JSON, min_size=1))


def mostly(valid, bad):
    """Seven draws in eight from `valid`: a call with many arguments then often has
    all of them valid, and reaches the search itself rather than the first check."""
    return st.integers(0, 7).flatmap(lambda i: bad if i == 7 else valid)


INT = st.one_of(
    st.none(),
    st.integers(-5, 1100),
    st.sampled_from([0, 1, 1000, 1001, 10_000, 10_001, 32_768, 2**31 - 1, -(2**31)]),
    st.sampled_from([2**31, 2**63, -(2**63) - 1]),  # not an integer: 22003
)
FLOAT = st.one_of(st.none(), st.floats(), st.floats(-2, 2), st.sampled_from([0.0, 1.0, -0.0]))
K = mostly(st.integers(1, 50), INT)
OFFSET = mostly(st.sampled_from([0, 0, 0, 1, 5, 20]), INT)
OPTIONAL_INT = mostly(st.none() | st.integers(1, 1000), INT)
CANDIDATES = mostly(st.none() | st.integers(1, 400), INT)
RRF_K = mostly(st.integers(1, 200), INT)
FILTER = mostly(st.none() | MATCHING_FILTER, st.one_of(JSON, HUGE_JSON))
MIN_SIMILARITY = mostly(st.none() | st.none() | st.floats(-1, 1), FLOAT)
WEIGHT = mostly(
    st.sampled_from([0.3, 0.5, 0.7, 1.0]) | st.floats(0.001, 1),
    st.floats() | st.none() | st.just(0.0),  # both 0 is refused
)
MODES = ["convex", "rrf", "weighted", "dbsf", "vector", "text"]
MODE = mostly(st.sampled_from(MODES), OPTIONAL_TEXT)
METRIC = mostly(st.sampled_from(["cosine", "cosine", "l2", "inner_product"]), OPTIONAL_TEXT)
LANGUAGE = mostly(st.sampled_from(["english", "simple", "german", "pg_catalog.french"]), TEXT)


def make_vector(kind: str, seed: int, scale: float, dims: int) -> str | None:
    rng = random.Random(seed)
    if kind == "none":
        return None
    if kind == "malformed":
        return rng.choice(["[1,2", "abc", "[]", "[1,,2]", "{1,2}", "[1 2]", "", "[" + "1," * 3])
    if kind == "zero":
        return vector_text([0.0] * DIMS)
    if kind == "wrong dims":
        return vector_text(unit_vector(rng, dims))
    if kind == "too many dims":
        return vector_text([0.5] * 16_001)
    values = [x * scale for x in unit_vector(rng)]
    if kind == "non-finite":
        values[rng.randrange(DIMS)] = rng.choice([math.nan, math.inf, -math.inf])
    if kind == "one-hot":
        values = [0.0] * DIMS
        values[rng.randrange(DIMS)] = scale
    return vector_text(values)


VECTOR = st.builds(
    make_vector,
    kind=mostly(
        st.just("unit"),
        st.sampled_from(
            ["none", "malformed", "zero", "wrong dims", "too many dims", "non-finite", "one-hot"]
        ),
    ),
    seed=st.integers(0, 2**32),
    scale=mostly(
        st.sampled_from([1.0, 1e-10, 1e10]),  # norms the checks accept
        st.sampled_from([1e-20, 1e-40, 1e-45, 1e19, 1e30, 3e38]),  # norms they refuse
    ),
    dims=st.sampled_from([0, 1, 3, 383, 385, 1536]),
)


def jsonb(value):
    return None if value is None else Jsonb(value)


# --- search_similar --------------------------------------------------------------------

SIMILARITY_RANGE = {"cosine": (-1, 1), "l2": (0, 1), "inner_product": (-math.inf, math.inf)}


@examples(150)
@given(
    query=VECTOR, k=K, metric=METRIC, min_similarity=MIN_SIMILARITY, filter=FILTER,
    ef_search=OPTIONAL_INT, probes=OPTIONAL_INT, page_offset=OFFSET,
)  # fmt: skip
def test_search_similar_answers_or_refuses_cleanly(
    session, query, k, metric, min_similarity, filter, ef_search, probes, page_offset
):
    rows = session.call(
        "search_similar",
        "select s.id, s.content, s.metadata, s.similarity, s.distance, s.rank,"
        " s.metadata @> %(filter)s::jsonb"
        " from pgseek.search_similar(%(q)s::vector, %(k)s::integer, %(metric)s,"
        " %(min)s::float8, %(filter)s::jsonb, %(ef)s::integer, %(probes)s::integer,"
        " %(offset)s::integer) as s",
        {
            "q": query, "k": k, "metric": metric, "min": min_similarity,
            "filter": jsonb(filter), "ef": ef_search, "probes": probes, "offset": page_offset,
        },
        INVALID | VECTOR_CAST | INT_CAST | JSONB_CAST,
    )  # fmt: skip
    if rows is None:
        return
    assert len(rows) <= k
    assert len({r[0] for r in rows}) == len(rows)
    low, high = SIMILARITY_RANGE[metric]
    for i, (id_, content, metadata, similarity, distance, rank, contained) in enumerate(rows):
        assert isinstance(id_, uuid.UUID) and isinstance(content, str)
        assert isinstance(metadata, dict)
        assert rank == page_offset + i + 1
        assert math.isfinite(similarity) and math.isfinite(distance), rows[i]
        assert low - 1e-6 <= similarity <= high + 1e-6
        if min_similarity is not None:
            assert similarity >= min_similarity
        if filter is not None:
            assert contained
    distances = [r[4] for r in rows]
    assert distances == sorted(distances)


@examples(40)
@given(
    seed=st.integers(0, 2**32),
    scale=st.sampled_from([1e-17, 1e-10, 1e-3, 7.0, 1e10, 1e17]),
    k=st.integers(1, 20),
    filter=st.none() | MATCHING_FILTER,
)
def test_cosine_search_does_not_depend_on_the_query_norm(session, seed, scale, k, filter):
    """Cosine similarity is scale-invariant: a query vector scaled by any factor the
    norm check accepts finds the same documents with the same similarities."""
    unit = unit_vector(random.Random(seed))
    sql = (
        "select id, similarity from pgseek.search_similar(%s::vector, %s::integer,"
        " filter => %s::jsonb)"
    )
    expected = session.call("search_similar", sql, (vector_text(unit), k, jsonb(filter)), set())
    scaled = [x * scale for x in unit]
    rows = session.call("search_similar", sql, (vector_text(scaled), k, jsonb(filter)), set())
    assert [r[0] for r in rows] == [r[0] for r in expected]
    assert all(abs(a[1] - b[1]) < 1e-5 for a, b in zip(rows, expected, strict=True))


# --- hybrid_search ---------------------------------------------------------------------


@examples(150)
@given(
    text=OPTIONAL_TEXT, query=VECTOR, k=K, filter=FILTER, mode=MODE,
    vector_weight=WEIGHT, text_weight=WEIGHT, rrf_k=RRF_K, candidates=CANDIDATES,
    min_similarity=MIN_SIMILARITY, language=LANGUAGE, page_offset=OFFSET, snippets=st.booleans(),
    embed_in_database=st.integers(0, 3),
)  # fmt: skip
def test_hybrid_search_answers_or_refuses_cleanly(
    session, text, query, k, filter, mode, vector_weight, text_weight, rrf_k, candidates,
    min_similarity, language, page_offset, snippets, embed_in_database,
):  # fmt: skip
    if embed_in_database == 0 and text is not None and len(text) < 20_000:
        query = None  # about one call in four embeds its text with the model: sparingly
    rows = session.call(
        "hybrid_search",
        "select h.*, h.metadata @> %(filter)s::jsonb from pgseek.hybrid_search(%(text)s,"
        " %(q)s::vector, %(k)s::integer, %(filter)s::jsonb, %(mode)s, %(vw)s::float8,"
        " %(tw)s::float8, %(rrf_k)s::integer, %(candidates)s::integer, %(min)s::float8,"
        " %(language)s::regconfig, %(offset)s::integer, %(snippets)s) as h",
        {
            "text": text, "q": query, "k": k, "filter": jsonb(filter), "mode": mode,
            "vw": vector_weight, "tw": text_weight, "rrf_k": rrf_k, "candidates": candidates,
            "min": min_similarity, "language": language, "offset": page_offset,
            "snippets": snippets,
        },
        INVALID | VECTOR_CAST | INT_CAST | JSONB_CAST | REGCONFIG_CAST | TSVECTOR_LIMIT,
    )  # fmt: skip
    if rows is None:
        return
    assert len(rows) <= k
    assert len({r[0] for r in rows}) == len(rows)
    scores = [r[3] for r in rows]
    assert all(s is not None and math.isfinite(s) for s in scores), rows
    assert scores == sorted(scores, reverse=True)
    for id_, content, _metadata, score, vr, tr, vs, ts, snippet, contained in rows:
        assert isinstance(id_, uuid.UUID) and isinstance(content, str)
        assert vr is None or vr >= 1
        assert tr is None or tr >= 1
        assert vr is not None or tr is not None, "a row neither branch found"
        if mode in ("convex", "weighted", "dbsf"):
            assert -1e-9 <= score <= vector_weight + text_weight + 1e-9
        if mode == "rrf":
            assert 0 <= score <= (vector_weight + text_weight) / (rrf_k + 1) + 1e-12
        if mode == "text":
            assert vr is None and ts is not None and ts >= 0
        if mode == "vector":
            assert tr is None
        if vs is not None:
            assert math.isfinite(vs)
        if min_similarity is not None:
            assert vs is not None and vs >= min_similarity
        if filter is not None:
            assert contained
        if not snippets:
            assert snippet is None


# --- explain_search, check_recall ----------------------------------------------------------


@examples(60)
@given(query=VECTOR, k=K, metric=METRIC, filter=FILTER, ef_search=OPTIONAL_INT, probes=OPTIONAL_INT)
def test_explain_search_answers_or_refuses_cleanly(
    session, query, k, metric, filter, ef_search, probes
):
    rows = session.call(
        "explain_search",
        "select * from pgseek.explain_search(%(q)s::vector, %(k)s::integer, %(metric)s,"
        " %(filter)s::jsonb, %(ef)s::integer, %(probes)s::integer)",
        {
            "q": query, "k": k, "metric": metric, "filter": jsonb(filter),
            "ef": ef_search, "probes": probes,
        },
        INVALID | VECTOR_CAST | INT_CAST | JSONB_CAST,
    )  # fmt: skip
    if rows is None:
        return
    assert rows[0][0].startswith(("-- exact scan;", "-- index scan;"))
    assert any("Limit" in r[0] for r in rows[1:])


@examples(25)
@given(sample=mostly(st.integers(1, 30), INT), k=K)
def test_check_recall_answers_or_refuses_cleanly(session, sample, k):
    assume(sample is None or sample <= 100 or sample > 1000)  # each query runs two searches
    rows = session.call(
        "check_recall",
        "select * from pgseek.check_recall(%s::integer, %s::integer)",
        (sample, k),
        INVALID | INT_CAST,
    )
    if rows is None:
        return
    assert len(rows) == 1
    queries, neighbours, recall = rows[0]
    assert queries == min(sample, DOCS) and neighbours == k
    assert 0 <= recall <= 1


# --- embed, compute_embeddings --------------------------------------------------------------


def dims_of(vector_text_value: str) -> int:
    return vector_text_value.count(",") + 1


@examples(40)
@given(text=OPTIONAL_TEXT)
def test_embed_answers_or_refuses_cleanly(session, text):
    rows = session.call("embed", "select pgseek.embed(%s::text)::text", (text,), INVALID)
    if rows is None:  # blank: whitespace and invisible format characters only
        assert text is not None and all(
            c.isspace() or unicodedata.category(c) == "Cf" for c in text
        )
        return
    if text is None:
        assert rows == [(None,)]
    else:
        assert dims_of(rows[0][0]) == DIMS


@examples(25)
@given(texts=st.none() | st.lists(st.none() | TEXT.filter(lambda t: len(t) < 5000), max_size=5))
def test_embed_many_answers_or_refuses_cleanly(session, texts):
    rows = session.call(
        "embed[]", "select pgseek.embed(%s::text[])::text[]", (texts,), INVALID | VECTOR_CAST
    )
    if rows is None:
        return
    if texts is None:
        assert rows == [(None,)]
        return
    vectors = rows[0][0]
    assert len(vectors) == len(texts)
    for text, vector in zip(texts, vectors, strict=True):
        assert (vector is None) == (text is None)
        assert vector is None or dims_of(vector) == DIMS


@examples(15)
@given(
    texts=st.none() | st.lists(st.none() | TEXT.filter(lambda t: len(t) < 5000), max_size=3),
    target=st.sampled_from(["embedding", "embedding_next"]) | OPTIONAL_TEXT,
)
def test_compute_embeddings_answers_or_refuses_cleanly(session, texts, target):
    rows = session.call(
        "compute_embeddings",
        "select pgseek.compute_embeddings(%s::text[], %s)::text[]",
        (texts, target),
        INVALID,
    )
    if rows is None or texts is None or target is None:
        return
    assert len(rows[0][0]) == len(texts)


# --- chunk_text, ingest ------------------------------------------------------------------------

CHUNK_TOKENS = mostly(st.integers(16, 300), INT)


@examples(60)
@given(content=OPTIONAL_TEXT, chunk_tokens=CHUNK_TOKENS, overlap=mostly(st.integers(0, 8), INT))
def test_chunk_text_answers_or_refuses_cleanly(session, content, chunk_tokens, overlap):
    rows = session.call(
        "chunk_text",
        "select chunk_index, chunk, start_char, end_char, substr(%(c)s, start_char + 1,"
        " end_char - start_char) from pgseek.chunk_text(%(c)s, %(t)s::integer, %(o)s::integer)",
        {"c": content, "t": chunk_tokens, "o": overlap},
        INVALID | INT_CAST,
    )
    if rows is None:
        return
    assert [r[0] for r in rows] == list(range(len(rows)))
    for _, chunk, start, end, substring in rows:
        assert chunk and chunk == content[start:end] == substring
    assert [r[2] for r in rows] == sorted(r[2] for r in rows)


@examples(40)
@given(
    content=OPTIONAL_TEXT.filter(lambda t: t is None or len(t) < 20_000),
    metadata=st.none() | OBJECT | JSON,
    chunk_tokens=CHUNK_TOKENS,
    overlap=mostly(st.integers(0, 8), INT),
)
def test_ingest_stores_every_chunk_or_refuses_cleanly(
    scratch, content, metadata, chunk_tokens, overlap
):
    rows = scratch.call(
        "ingest",
        "select pgseek.ingest(%s, %s::jsonb, %s::integer, %s::integer)",
        (content, jsonb(metadata), chunk_tokens, overlap),
        INVALID | INT_CAST | JSONB_CAST,
    )
    if rows is None:
        return
    source_id = rows[0][0]
    chunks, metadatas, queued = scratch.conn.execute(
        "select count(*), count(distinct d.metadata),"
        " count(*) filter (where exists (select from pgseek.embedding_queue as q"
        " where q.document_id = d.id)) from pgseek.documents as d where d.source_id = %s",
        (source_id,),
    ).fetchone()
    assert chunks >= 1, f"ingest stored a source without documents: {content!r}"
    assert metadatas == 1 and queued == chunks
    refreshed = scratch.call("refresh_text_stats", "select pgseek.refresh_text_stats()", (), set())
    assert refreshed is not None and refreshed[0][0] >= 0


# --- retention, purge ---------------------------------------------------------------------------

INTERVAL = st.one_of(
    st.none(),
    st.sampled_from(["30 days", "1 second", "0", "-1 day", "1 microsecond", "1000000 years"]),
    st.sampled_from(["P1D", "infinity", "1 fortnight", "178000000 years", "2147483648 days"]),
    st.text(CHARS, max_size=12),
)


@examples(60)
@given(match=st.none() | OBJECT | JSON | st.just({}), keep=INTERVAL)
def test_set_and_remove_retention_round_trip_or_refuse_cleanly(scratch, match, keep):
    rows = scratch.call(
        "set_retention",
        "select pgseek.set_retention(%s::jsonb, %s::interval)",
        (jsonb(match), keep),
        INVALID | INTERVAL_CAST | JSONB_CAST,
    )
    if rows is None:
        return
    assert isinstance(rows[0][0], int)
    removed = scratch.call(
        "remove_retention", "select pgseek.remove_retention(%s::jsonb)", (jsonb(match),), set()
    )
    assert removed == [(True,)]


@examples(30)
@given(batch_size=INT, time_budget=INTERVAL)
def test_purge_expired_answers_or_refuses_cleanly(scratch, batch_size, time_budget):
    rows = scratch.call(
        "purge_expired",
        "call pgseek.purge_expired(null, %s::integer, %s::interval)",
        (batch_size, time_budget),
        INVALID | INT_CAST | INTERVAL_CAST,
    )
    if rows is not None:
        assert rows == [(0,)]


# --- the queue, keys, model changes ---------------------------------------------------------------


@examples(30)
@given(ids=st.none() | st.lists(st.none() | st.uuids(), max_size=5) | st.just(["not-a-uuid"]))
def test_requeue_failed_answers_or_refuses_cleanly(scratch, ids):
    rows = scratch.call(
        "requeue_failed",
        "select pgseek.requeue_failed(%s::text[]::uuid[])",
        ([None if i is None else str(i) for i in ids] if ids is not None else None,),
        {"22P02"},
    )
    assert rows is None or rows == [(0,)]


@examples(40)
@given(max_rows=INT)
def test_process_embedding_queue_answers_or_refuses_cleanly(scratch, max_rows):
    rows = scratch.call(
        "process_embedding_queue",
        "select pgseek.process_embedding_queue(%s::integer)",
        (max_rows,),
        INVALID | INT_CAST,
    )
    assert rows is None or rows == [(0,)]


@examples(20)
@given(
    max_seconds=st.one_of(
        st.none(), st.floats(-1e9, -1e-9), st.floats(3600.001, 1e300), st.floats(0, 0.2)
    )
    | st.sampled_from([math.nan, math.inf, -math.inf, 0.0]),
    batch_size=INT,
)
def test_run_embedding_worker_answers_or_refuses_cleanly(scratch, max_seconds, batch_size):
    rows = scratch.call(
        "run_embedding_worker",
        "call pgseek.run_embedding_worker(%s::float8, %s::integer)",
        (max_seconds, batch_size),
        INVALID | INT_CAST,
    )
    assert rows is None or rows == []


@examples(40)
@given(provider=mostly(st.just("openai"), OPTIONAL_TEXT), api_key=OPTIONAL_TEXT)
def test_set_api_key_stores_exactly_the_key_or_refuses_cleanly(scratch, provider, api_key):
    rows = scratch.call(
        "set_api_key", "select pgseek.set_api_key(%s, %s)", (provider, api_key), INVALID
    )
    if rows is None:
        return
    stored = scratch.conn.execute(
        "select api_key from pgseek.provider_secrets where provider = 'openai'"
    ).fetchone()[0]
    assert stored == api_key


@examples(40)
@given(
    provider=mostly(st.sampled_from(["local", "openai"]), OPTIONAL_TEXT),
    model=mostly(st.sampled_from(["all-MiniLM-L6-v2", "text-embedding-3-small"]), OPTIONAL_TEXT),
    dimensions=mostly(st.sampled_from([8, 384, 1536]), INT),
    options=mostly(
        st.sampled_from(
            [{}, {"batch_size": 8}, {"base_url": "http://127.0.0.1:9/v1", "timeout": 1}]
        ),
        st.none() | OBJECT | JSON,
    ),
)
def test_model_change_config_is_checked_or_refused_cleanly(
    scratch, provider, model, dimensions, options
):
    config = {"provider": provider, "model": model, "dimensions": dimensions}
    if isinstance(options, dict):
        config.update(options)
    scratch.call(
        "check_embedding_config",
        "select pgseek.check_embedding_config(%s::jsonb)",
        (jsonb(config if options is None or isinstance(options, dict) else options),),
        INVALID | JSONB_CAST,
    )
    rows = scratch.call(
        "start_model_change",
        "select pgseek.start_model_change(%s, %s, %s::integer, %s::jsonb)",
        (provider, model, dimensions, jsonb(options)),
        INVALID | INT_CAST | JSONB_CAST,
    )
    if rows is not None:
        assert rows == [(0,)]  # an empty database: nothing to re-embed
        cancelled = scratch.call(
            "cancel_model_change", "select pgseek.cancel_model_change()", (), set()
        )
        assert cancelled and "cancelled" in cancelled[0][0]


# --- jobs (in the cron database) ----------------------------------------------------------------

JOBS = ["pgseek-embedding-worker", "pgseek-text-stats", "pgseek-purge", "pgseek-cron-history"]


@pytest.fixture(scope="module")
def cron_session(server, template_db):  # noqa: ARG001 (after it: pg_cron#362)
    if not server.owned:
        pytest.skip("runs only on the test session's own cluster (it migrates the cron database)")
    from pgtest import run_migrate

    result = run_migrate(with_dbname(server.url, server.cron_database), "upgrade")
    assert result.returncode == 0, result.stderr
    with server.connect(server.cron_database) as conn:
        # scheduled here, not left to the migration: an earlier module may have
        # unscheduled them, and a migration already at head does not schedule again
        conn.execute("select pgseek.schedule_jobs()")
        yield Session(conn)
        conn.execute("select cron.unschedule(jobid) from cron.job where jobname like 'pgseek-%'")


@examples(40)
@given(
    name=st.integers(0, 1).flatmap(lambda i: st.sampled_from(JOBS) if i else OPTIONAL_TEXT),
    action=st.sampled_from(["pause", "resume"]),
)
def test_job_functions_act_on_pgseek_jobs_or_refuse_cleanly(cron_session, name, action):
    rows = cron_session.call(
        f"{action}_job",
        f"select pgseek.{action}_job(%s)",
        (name,),
        {"42704"},  # undefined_object: "no pgseek job named ..."
    )
    if rows is None:
        assert name not in JOBS
        return
    assert name in JOBS
    active = cron_session.conn.execute(
        "select active from pgseek.jobs() where job_name = %s", (name,)
    ).fetchone()[0]
    assert active == (action == "resume")
    cron_session.conn.execute("select pgseek.resume_job(%s)", (name,))


@examples(20)
@given(name=OPTIONAL_TEXT)
def test_unschedule_job_refuses_unknown_names_cleanly(cron_session, name):
    before = cron_session.conn.execute("select count(*) from cron.job").fetchone()[0]
    rows = cron_session.call(
        "unschedule_job", "select pgseek.unschedule_job(%s)", (name,), {"42704"}
    )
    assert rows is None, "a random name matched a job"
    assert cron_session.conn.execute("select count(*) from cron.job").fetchone()[0] == before


def test_schedule_jobs_is_idempotent(cron_session):
    first = cron_session.call("schedule_jobs", "select * from pgseek.schedule_jobs()", (), set())
    second = cron_session.call("schedule_jobs", "select * from pgseek.schedule_jobs()", (), set())
    assert first == second and {r[0] for r in first} == set(JOBS)


@pytest.mark.parametrize("function", ["pause_job", "resume_job", "unschedule_job", "job_id"])
def test_job_functions_explain_where_pg_cron_is_missing(scratch, function):
    """Outside pg_cron's database every job function raises 0A000 with the hint, not
    `schema "cron" does not exist` (3F000) from planning a call to cron.*."""
    with pytest.raises(psycopg.errors.FeatureNotSupported) as exc:
        scratch.conn.execute(f"select pgseek.{function}('pgseek-purge')")
    assert "pg_cron is not installed in database" in str(exc.value)
    assert "cron.schedule_in_database" in exc.value.diag.message_hint


def test_reload_jobs_explains_where_pg_cron_is_missing(scratch):
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="pg_cron is not installed"):
        scratch.conn.execute("select pgseek.reload_jobs()")
