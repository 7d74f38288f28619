"""In-database embeddings: embed(), the queue and its worker, sync mode, failures,
dead letters, model changes and chunked ingest, against the real cluster."""

from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest
from psycopg import errors

from openai_stub import OpenAIStub, stub_vector

API_KEY = "sk-test-5ecret-never-print-me"


def floats(text: str) -> list[float]:
    return [float(x) for x in text.strip("[]").split(",")]


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (sum(x * x for x in a) ** 0.5 * sum(y * y for y in b) ** 0.5)


def status(conn) -> dict:
    cur = conn.execute("select * from pgseek.embedding_status")
    return dict(zip([c.name for c in cur.description], cur.fetchone(), strict=True))


def insert(conn, *texts: str, **columns) -> list:
    ids = []
    for text in texts:
        ids.append(
            conn.execute(
                "insert into pgseek.documents (content, metadata) values (%s, %s) returning id",
                (text, json.dumps(columns.get("metadata", {}))),
            ).fetchone()[0]
        )
    return ids


def queued(conn) -> list[tuple]:
    return conn.execute(
        "select document_id, target, attempts from pgseek.embedding_queue order by id"
    ).fetchall()


@pytest.fixture
def stub():
    server = OpenAIStub(dimensions=8)
    yield server
    server.close()


@pytest.fixture
def remote(conn, stub):
    """The database configured for the stub OpenAI-compatible server (8 dimensions)."""
    conn.execute(
        "update pgseek.config set embedding_provider = 'openai', embedding_model = 'stub-embed',"
        " embedding_dimensions = 8, embedding_options = %s",
        (json.dumps({"base_url": stub.base_url, "timeout": 1}),),
    )
    conn.execute("select pgseek.set_api_key('openai', %s, %s)", (API_KEY, stub.base_url))
    return conn


# --- the local model --------------------------------------------------------------


def test_embed_returns_a_normalized_384_dimension_vector(conn):
    vector = floats(
        conn.execute("select pgseek.embed('PostgreSQL is a database')::text").fetchone()[0]
    )
    assert len(vector) == 384
    assert abs(sum(x * x for x in vector) - 1.0) < 1e-3


def test_similar_texts_are_closer_than_unrelated_ones(conn):
    rows = conn.execute(
        "select v::text from unnest(pgseek.embed(array['a cat sits on the mat',"
        " 'a kitten rests on a rug', 'quarterly tax filing deadlines'])) as v"
    ).fetchall()
    cat, kitten, taxes = (floats(r[0]) for r in rows)
    assert cosine(cat, kitten) > cosine(cat, taxes) + 0.2


def test_query_embeddings_are_cached_by_model_and_text(conn):
    conn.execute("select pgseek.embed('cached query')")
    conn.execute("select pgseek.embed('cached query')")
    rows = conn.execute(
        "select model, count(*) from pgseek.query_embeddings group by model"
    ).fetchall()
    assert rows == [("local/all-MiniLM-L6-v2/384", 1)]


def cache_entries(conn) -> int:
    return conn.execute("select count(*) from pgseek.query_embeddings").fetchone()[0]


def test_a_stale_cache_entry_is_refreshed_in_autocommit(conn):
    conn.execute("select pgseek.embed('old query')")
    conn.execute("update pgseek.query_embeddings set last_used_at = now() - interval '2 hours'")
    conn.execute("select pgseek.embed('old query')")
    fresh = "select last_used_at > now() - interval '1 minute' from pgseek.query_embeddings"
    assert conn.execute(fresh).fetchall() == [(True,)]


def test_a_search_does_not_wait_for_another_transactions_cache_entry(conn, db):
    """A's transaction has searched a new text and stays open, holding its uncommitted
    cache entry; B's search of the same text neither waits for A (statement_timeout 3 s
    would cancel it) nor writes; A's entry is the one cached when A commits."""
    search = "select count(*) from pgseek.hybrid_search('a text nobody searched before')"
    with psycopg.connect(db.url) as a, db.connect() as b:  # a: psycopg's default, a transaction
        a.execute(search)
        b.execute("set statement_timeout = '3s'")
        b.execute(search)
        b.execute("select pgseek.embed('a text nobody searched before')")
        assert cache_entries(b) == 0
        a.commit()
    assert cache_entries(conn) == 1


def test_a_stale_entry_refreshed_by_an_open_transaction_does_not_block_a_search(conn, db):
    conn.execute("select pgseek.embed('an old query')")
    conn.execute("update pgseek.query_embeddings set last_used_at = now() - interval '2 hours'")
    with psycopg.connect(db.url) as a:
        a.execute("select pgseek.embed('an old query')")  # refreshes it: the row is locked
        conn.execute("set statement_timeout = '3s'")
        assert conn.execute("select pgseek.embed('an old query') is not null").fetchone()[0]
        a.commit()
    stale = "select last_used_at < now() - interval '1 hour' from pgseek.query_embeddings"
    assert conn.execute(stale).fetchall() == [(False,)]


def test_two_transactions_searching_two_texts_in_opposite_orders_do_not_deadlock(db):
    """A embeds 'first' then 'second', B 'second' then 'first', both in open transactions:
    each text's second search must neither wait for the other transaction's uncommitted
    entry nor end in a deadlock error."""
    with psycopg.connect(db.url) as a, psycopg.connect(db.url) as b:
        for c in (a, b):
            c.execute("set statement_timeout = '10s'")
        a.execute("select pgseek.embed('first text of two')")
        b.execute("select pgseek.embed('second text of two')")
        failures: list[BaseException] = []

        def a_second() -> None:
            try:
                a.execute("select pgseek.embed('second text of two')")
            except BaseException as exc:  # reported below
                failures.append(exc)

        thread = threading.Thread(target=a_second)
        thread.start()
        try:
            b.execute("select pgseek.embed('first text of two')")
        finally:
            thread.join()
        assert failures == []
        a.commit()
        b.commit()
        assert cache_entries(a) == 2


@pytest.mark.parametrize("isolation", ["repeatable read", "serializable"])
def test_a_search_in_a_snapshot_older_than_a_cache_entry_does_not_fail(conn, db, isolation):
    """B's snapshot is taken before A caches the text: B's search embeds it itself and
    writes nothing (an insert or refresh of a row its snapshot cannot see would be a
    serialization failure)."""
    with db.connect() as b:
        b.execute(f"begin isolation level {isolation}")
        b.execute("select count(*) from pgseek.documents")  # takes the snapshot
        expected = conn.execute("select pgseek.embed('a snapshot query')::text").fetchone()[0]
        got = b.execute("select pgseek.embed('a snapshot query')::text").fetchone()[0]
        b.execute("select pgseek.embed('another snapshot query')")
        b.execute("commit")
    assert cosine(floats(got), floats(expected)) > 0.9999
    assert cache_entries(conn) == 1


def test_embed_null_is_null_and_empty_is_an_error(conn):
    assert conn.execute("select pgseek.embed(null::text)").fetchone()[0] is None
    with pytest.raises(errors.InvalidParameterValue, match="query must not be empty"):
        conn.execute("select pgseek.embed('   ')")


def test_embed_array_keeps_order_and_nulls(conn):
    rows = conn.execute(
        "select v is null from unnest(pgseek.embed(array['one', null, 'three'])) as v"
    ).fetchall()
    assert [r[0] for r in rows] == [False, True, False]


def test_text_longer_than_the_model_window_is_embedded(conn):
    long_text = "word " * 5000 + "\x01\x07 control characters are fine"
    (doc_id,) = insert(conn, long_text)
    assert conn.execute("select pgseek.process_embedding_queue(10)").fetchone()[0] == 1
    dims = conn.execute(
        "select vector_dims(embedding) from pgseek.documents where id = %s", (doc_id,)
    ).fetchone()[0]
    assert dims == 384


def test_worker_embeds_queued_rows_with_the_local_model(conn):
    ids = insert(conn, "PostgreSQL stores rows in heap pages", "pgvector adds vector search")
    assert len(queued(conn)) == 2
    assert conn.execute("select pgseek.process_embedding_queue(64)").fetchone()[0] == 2
    assert queued(conn) == []
    s = status(conn)
    assert (s["embedded"], s["queued"], s["unaccounted"]) == (2, 0, 0)
    stored = conn.execute(
        "select embedding::text from pgseek.documents where id = %s", (ids[0],)
    ).fetchone()[0]
    direct = conn.execute(
        "select (pgseek.compute_embeddings(array['PostgreSQL stores rows in heap pages']))[1]::text"
    ).fetchone()[0]
    assert cosine(floats(stored), floats(direct)) > 0.9999


def test_sync_mode_embeds_in_the_writing_transaction(conn):
    conn.execute("update pgseek.config set embedding_mode = 'sync'")
    (doc_id,) = insert(conn, "embedded before the insert returns")
    assert queued(conn) == []
    assert conn.execute(
        "select embedding is not null from pgseek.documents where id = %s", (doc_id,)
    ).fetchone()[0]
    # new text with the vector cleared, or the vector alone cleared: embedded again
    for change in ("content = 'new text', embedding = null", "embedding = null"):
        conn.execute(f"update pgseek.documents set {change} where id = %s", (doc_id,))
        assert queued(conn) == []
        assert conn.execute(
            "select embedding is not null from pgseek.documents where id = %s", (doc_id,)
        ).fetchone()[0], change


def test_a_default_chunk_fits_the_local_models_window(conn):
    """Every word of a full default chunk reaches the model: dropping its last word
    changes the embedding (a chunk of 256 tokens lost its end to [CLS] and [SEP])."""
    distance = conn.execute(
        "with c as (select chunk from pgseek.chunk_text((select string_agg(w, ' ') from"
        " (select (array['apple', 'river', 'stone', 'cloud', 'green', 'music'])[1 + g % 6]"
        " as w from generate_series(1, 1000) as g) as x)) limit 1)"
        " select pgseek.embed(chunk) <=> pgseek.embed(regexp_replace(chunk, '\\s+\\S+$', ''))"
        " from c"
    ).fetchone()[0]
    assert distance > 1e-6


def test_chunked_ingest_stores_queues_and_cascades(conn):
    paragraph = (
        "PostgreSQL is an object-relational database. It has transactions. "
        "It supports extensions such as pgvector, which adds vector similarity search. "
    )
    source_id = conn.execute(
        'select pgseek.ingest(%s, \'{"source": "manual"}\', 64, 16)', (paragraph * 20,)
    ).fetchone()[0]
    chunks = conn.execute(
        "select chunk_index, metadata, length(content) from pgseek.documents"
        " where source_id = %s order by chunk_index",
        (source_id,),
    ).fetchall()
    # About 64 WordPiece tokens each: a few hundred characters, not a word or two.
    assert 8 <= len(chunks) <= 30
    assert all(150 <= c[2] <= 500 for c in chunks[:-1])
    assert [c[0] for c in chunks] == list(range(len(chunks)))
    assert all(c[1] == {"source": "manual"} for c in chunks)
    assert len(queued(conn)) == len(chunks)
    conn.execute("delete from pgseek.sources where id = %s", (source_id,))
    assert conn.execute("select count(*) from pgseek.documents").fetchone()[0] == 0
    assert queued(conn) == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("select pgseek.ingest('  ')", "content must not be empty"),
        ("select pgseek.ingest('text', '[1]')", "metadata must be a JSON object"),
        ("select * from pgseek.chunk_text('text', 4)", "chunk_tokens must be between 16 and 8192"),
        ("select * from pgseek.chunk_text('text', 64, 40)", "overlap_tokens must be between 0"),
        ("select pgseek.process_embedding_queue(0)", "max_rows must be between 1 and 10000"),
        ("call pgseek.run_embedding_worker(-1)", "max_seconds must be between 0 and 3600"),
        ("select pgseek.set_api_key('anthropic', 'k')", "provider must be 'openai'"),
        ("select pgseek.set_api_key('openai', '')", "api_key must not be empty"),
        (
            "select pgseek.set_api_key('openai', 'k', 'ftp://example.com')",
            "base_url must be an http\\(s\\) URL",
        ),
        (
            "select pgseek.set_api_key('openai', 'k', 'https://user:pw@example.com/v1')",
            "base_url must be an http\\(s\\) URL",
        ),
        ("select pgseek.start_model_change('nope', 'm', 8)", "unknown embedding provider 'nope'"),
        ("select pgseek.start_model_change('local', 'all-MiniLM-L6-v2', 5)", "has 384 dimensions"),
        ("select pgseek.start_model_change('local', 'bert-large', 1024)", "unknown local model"),
        ("select pgseek.start_model_change('openai', 'm', 0)", "dimensions must be between"),
        ("select pgseek.start_model_change('openai', 'm', 8, '[]')", "options must be a JSON"),
        ("select pgseek.compute_embeddings(array['x'], 'vectors')", "target must be"),
        (
            "select pgseek.start_model_change('openai', 'm', 8, '{\"model\": \"other\"}')",
            "options must not set provider, model or dimensions",
        ),
        (
            "select pgseek.start_model_change('openai', 'm', 8, '{\"dimensions\": 16}')",
            "options must not set provider, model or dimensions",
        ),
        ("select pgseek.embed(array[['a', 'b'], ['c', 'd']])", "one-dimensional"),
        ("select pgseek.embed(E'\\u200b\\u200b ')", "query must not be empty"),
        ("select pgseek.embed(array['x', E'\\u200b'])", "must not contain empty texts"),
        ("call pgseek.run_embedding_worker(1, 0)", "batch_size must be between 1 and 10000"),
        ("call pgseek.run_embedding_worker(1, null)", "batch_size must be between 1 and 10000"),
        (
            'update pgseek.config set embedding_options = \'{"model": "x"}\';'
            " select pgseek.embed('q')",
            "embedding_options must not set model",
        ),
    ],
)
def test_bad_arguments_raise_22023(conn, call, message):
    with pytest.raises(errors.InvalidParameterValue, match=message):
        conn.execute(call)


# --- the queue, with the stub server --------------------------------------------------


def test_remote_provider_embeds_and_sends_the_key(remote, stub):
    ids = insert(remote, "first", "second", "third")
    assert remote.execute("select pgseek.process_embedding_queue(64)").fetchone()[0] == 3
    assert stub.requests[0]["auth"] == f"Bearer {API_KEY}"
    assert stub.requests[0]["body"]["dimensions"] == 8
    stored = remote.execute(
        "select embedding::text from pgseek.documents where id = %s", (ids[1],)
    ).fetchone()[0]
    assert cosine(floats(stored), stub_vector("second", 8)) > 0.9999  # index order honoured


def test_the_key_goes_only_to_the_server_it_was_set_for(remote, stub):
    """A configuration naming another server (an admin may change it) gets no key: the
    request goes out without Authorization; the default OpenAI server is another one."""
    other = OpenAIStub(dimensions=8)
    try:
        remote.execute(
            "update pgseek.config set embedding_options = %s",
            (json.dumps({"base_url": other.base_url, "timeout": 1}),),
        )
        remote.execute("select pgseek.embed('to another server')")
        assert [r["auth"] for r in other.requests] == [None]
        remote.execute("select pgseek.set_api_key('openai', %s, %s)", (API_KEY, other.base_url))
        remote.execute("select pgseek.embed('set for it now')")
        assert other.requests[-1]["auth"] == f"Bearer {API_KEY}"
        remote.execute("select pgseek.set_api_key('openai', %s)", (API_KEY,))  # the default
        remote.execute("select pgseek.embed('the default server only')")
        assert other.requests[-1]["auth"] is None
    finally:
        other.close()
    assert all(r["auth"] == f"Bearer {API_KEY}" for r in stub.requests)


def test_metadata_update_does_not_reembed(remote):
    (doc_id,) = insert(remote, "stable text")
    remote.execute("select pgseek.process_embedding_queue(64)")
    remote.execute("update pgseek.documents set metadata = '{\"tag\": 1}' where id = %s", (doc_id,))
    remote.execute("update pgseek.documents set content = content where id = %s", (doc_id,))
    assert queued(remote) == []
    remote.execute("update pgseek.documents set content = 'new text' where id = %s", (doc_id,))
    assert [q[0] for q in queued(remote)] == [doc_id]


def test_client_supplied_vectors_skip_the_queue(remote):
    remote.execute(
        "insert into pgseek.documents (content, embedding) values ('imported', %s::vector)",
        (str(stub_vector("imported", 8)),),
    )
    assert queued(remote) == []


def test_a_cleared_vector_is_queued_again(remote):
    """New text with embedding set to NULL, or the vector alone cleared: queued, never
    unaccounted; new text with a vector of the client's: not queued."""
    vector = str(stub_vector("imported", 8))
    ids = [
        remote.execute(
            "insert into pgseek.documents (content, embedding) values (%s, %s::vector)"
            " returning id",
            (text, vector),
        ).fetchone()[0]
        for text in ("a", "b", "c")
    ]
    remote.execute(
        "update pgseek.documents set content = 'a2', embedding = null where id = %s", (ids[0],)
    )
    remote.execute("update pgseek.documents set embedding = null where id = %s", (ids[1],))
    remote.execute(
        "update pgseek.documents set content = 'c2', embedding = %s::vector where id = %s",
        (str(stub_vector("c2", 8)), ids[2]),
    )
    assert sorted(q[0] for q in queued(remote)) == sorted(ids[:2])
    assert status(remote)["unaccounted"] == 0
    assert remote.execute("select pgseek.process_embedding_queue(64)").fetchone()[0] == 2
    assert status(remote)["unaccounted"] == 0


def test_mode_off_queues_nothing(remote):
    remote.execute("update pgseek.config set embedding_mode = 'off'")
    insert(remote, "not embedded by pgseek")
    assert queued(remote) == []


def test_rows_written_while_off_are_queued_when_embedding_is_switched_back_on(conn):
    conn.execute("update pgseek.config set embedding_mode = 'off'")
    (doc,) = insert(conn, "written while off")
    assert queued(conn) == [] and status(conn)["unaccounted"] == 1
    conn.execute("update pgseek.config set embedding_mode = 'async'")
    assert [q[0] for q in queued(conn)] == [doc]
    conn.execute("update pgseek.config set embedding_mode = 'sync'")  # queued once only
    assert len(queued(conn)) == 1
    assert conn.execute("select pgseek.process_embedding_queue(64)").fetchone()[0] == 1
    assert status(conn)["unaccounted"] == 0


def test_an_edit_while_queued_embeds_the_latest_text_once(remote, stub):
    (doc_id,) = insert(remote, "draft")
    remote.execute("update pgseek.documents set content = 'final' where id = %s", (doc_id,))
    assert len(queued(remote)) == 2
    assert remote.execute("select pgseek.process_embedding_queue(64)").fetchone()[0] == 1
    assert queued(remote) == []
    assert [r["body"]["input"] for r in stub.requests] == [["final"]]


def test_rate_limit_retries_after_the_servers_delay(remote, stub):
    insert(remote, "a", "b")
    stub.mode = "rate_limit"
    assert remote.execute("select pgseek.process_embedding_queue(64)").fetchone()[0] == 0
    rows = remote.execute(
        "select attempts, last_error, extract(epoch from next_attempt_at - now())"
        " from pgseek.embedding_queue"
    ).fetchall()
    assert len(rows) == 2
    for attempts, error, delay in rows:
        assert attempts == 1
        assert "429" in error or "rate" in error.lower()
        assert API_KEY not in error
        assert 6 <= float(delay) <= 60  # Retry-After: 7 wins over the 30 s +-20% backoff
    # Not ready yet: nothing is taken, nothing is lost.
    assert remote.execute("select pgseek.process_embedding_queue(64)").fetchone()[0] == 0
    assert status(remote)["unaccounted"] == 0


@pytest.mark.parametrize("mode", ["error", "slow", "unauthorized", "malformed", "wrong_dimensions"])
def test_failures_end_in_the_dead_letter_table_with_the_reason(remote, stub, mode):
    remote.execute("update pgseek.config set queue_max_attempts = 1")
    ids = insert(remote, "one", "two")
    stub.mode = mode
    assert remote.execute("select pgseek.process_embedding_queue(64)").fetchone()[0] == 0
    failures = remote.execute(
        "select document_id, error from pgseek.embedding_failures order by document_id"
    ).fetchall()
    assert sorted(f[0] for f in failures) == sorted(ids)
    for _, error in failures:
        assert error and API_KEY not in error
    assert queued(remote) == []
    s = status(remote)
    assert (s["dead_letter"], s["unaccounted"], s["embedded"]) == (2, 0, 0)
    # Fixed provider: requeue and embed.
    stub.mode = "ok"
    assert remote.execute("select pgseek.requeue_failed()").fetchone()[0] == 2
    assert remote.execute("select pgseek.process_embedding_queue(64)").fetchone()[0] == 2
    assert status(remote)["embedded"] == 2


def test_wrong_dimensions_never_reach_the_table(remote, stub):
    stub.mode = "wrong_dimensions"
    (doc_id,) = insert(remote, "x")
    remote.execute("select pgseek.process_embedding_queue(64)")
    error = remote.execute("select error from pgseek.embedding_failures").fetchone()[0]
    assert "11 dimensions" in error and "8" in error
    assert (
        remote.execute(
            "select embedding from pgseek.documents where id = %s", (doc_id,)
        ).fetchone()[0]
        is None
    )


def test_retries_then_dead_letter_after_max_attempts(remote, stub):
    remote.execute(
        "update pgseek.config set queue_max_attempts = 3, queue_retry_delay = '1 ms',"
        " queue_retry_max_delay = '1 ms'"
    )
    insert(remote, "flaky")
    stub.mode = "error"
    for expected_attempts in (1, 2):
        remote.execute("select pgseek.process_embedding_queue(64)")
        remote.execute("select pg_sleep(0.01)")
        assert [q[2] for q in queued(remote)] == [expected_attempts]
    remote.execute("select pgseek.process_embedding_queue(64)")
    assert queued(remote) == []
    assert remote.execute("select attempts from pgseek.embedding_failures").fetchone()[0] == 3


def test_query_embedding_errors_have_sqlstate_38000(remote, stub):
    stub.mode = "error"
    with pytest.raises(errors.ExternalRoutineException) as exc:
        remote.execute("select pgseek.embed('anything')")
    assert API_KEY not in str(exc.value)


def test_two_workers_never_take_the_same_rows(remote, db, stub):
    insert(remote, *[f"text {i}" for i in range(40)])
    with db.connect() as first:
        first.autocommit = False
        taken_first = first.execute("select pgseek.process_embedding_queue(15)").fetchone()[0]
        # first has not committed: its entries stay locked and second skips them.
        taken_second = remote.execute("select pgseek.process_embedding_queue(100)").fetchone()[0]
        first.commit()
    assert (taken_first, taken_second) == (15, 25)
    assert len(stub.requests) == 2
    assert sum(len(r["body"]["input"]) for r in stub.requests) == 40
    assert status(remote)["embedded"] == 40


@pytest.mark.usefixtures("stub")
def test_a_worker_killed_mid_batch_loses_nothing(remote, db):
    insert(remote, *[f"doc {i}" for i in range(10)])
    victim = psycopg.connect(db.url)  # autocommit off: the batch stays uncommitted
    pid = victim.execute("select pg_backend_pid()").fetchone()[0]
    victim.execute("select pgseek.process_embedding_queue(64)")
    remote.execute("select pg_terminate_backend(%s)", (pid,))
    with pytest.raises(psycopg.OperationalError):
        victim.commit()
    victim.close()
    assert len(queued(remote)) == 10
    assert status(remote)["embedded"] == 0
    assert remote.execute("select pgseek.process_embedding_queue(64)").fetchone()[0] == 10
    assert status(remote)["unaccounted"] == 0


def test_writers_do_not_wait_for_a_worker(remote, db, stub):
    ids = insert(remote, "being embedded")
    stub.mode = "slow"  # the worker's request hangs until its 1 s timeout
    worker = threading.Thread(
        target=lambda: db.connect().execute("select pgseek.process_embedding_queue(64)")
    )
    worker.start()
    try:
        remote.execute("set statement_timeout = '500ms'")
        remote.execute("update pgseek.documents set content = 'edited' where id = %s", (ids[0],))
        insert(remote, "another")
    finally:
        worker.join()
    assert len(queued(remote)) >= 2


# --- changing models -------------------------------------------------------------------

# A test-only function: the distinct embedding providers this backend's GD holds,
# wherever they are kept in it.
COUNT_PROVIDERS = """
create function public.test_cached_providers() returns integer language plpython3u as $$
import sys
if "/usr/local/lib/pgseek/python" not in sys.path:
    sys.path.insert(0, "/usr/local/lib/pgseek/python")
from pgseek.embeddings.base import EmbeddingProvider
seen = set()
def walk(value, depth):
    if isinstance(value, EmbeddingProvider):
        seen.add(id(value))
    elif depth < 3 and isinstance(value, dict):
        for v in value.values():
            walk(v, depth + 1)
    elif depth < 3 and isinstance(value, (tuple, list)):
        for v in value:
            walk(v, depth + 1)
walk(GD, 0)
return len(seen)
$$
"""


def test_a_backend_keeps_one_provider_per_model_in_use(conn, db, stub):
    """A pooled backend outlives configuration changes: each change of the options (or
    of the next model's, during a model change) replaces the provider instead of loading
    one more model; cancelling the change drops the next model's provider."""
    with db.connect() as admin:
        admin.execute(COUNT_PROVIDERS)
        for batch_size in range(1, 5):
            admin.execute(
                "update pgseek.config set embedding_options = %s",
                (json.dumps({"batch_size": batch_size}),),
            )
            conn.execute("select pgseek.embed(%s)", (f"query {batch_size}",))
        assert conn.execute("select public.test_cached_providers()").fetchone()[0] == 1

        admin.execute("select pgseek.set_api_key('openai', %s, %s)", (API_KEY, stub.base_url))
        for timeout in (2, 3, 4):
            options = json.dumps({"base_url": stub.base_url, "timeout": timeout})
            if timeout == 2:
                admin.execute(
                    "select pgseek.start_model_change('openai', 'stub-embed', 8, %s)", (options,)
                )
            else:
                admin.execute("update pgseek.config set next_embedding_options = %s", (options,))
            insert(admin, f"document {timeout}")
            assert conn.execute("select pgseek.process_embedding_queue(64)").fetchone()[0] >= 1
            conn.execute("select pgseek.embed(%s)", (f"query during the change {timeout}",))
            # the local model (queries and worker alike) and the next model's worker
            assert conn.execute("select public.test_cached_providers()").fetchone()[0] == 2

        admin.execute("select pgseek.cancel_model_change()")
        conn.execute("select pgseek.embed('query after the change')")
        assert conn.execute("select public.test_cached_providers()").fetchone()[0] == 1


def test_model_change_reembeds_in_the_background_then_cuts_over(conn, db, stub):
    from pgtest import run_migrate

    ids = insert(conn, "alpha", "beta")
    conn.execute("select pgseek.process_embedding_queue(64)")
    conn.execute("select pgseek.set_api_key('openai', %s, %s)", (API_KEY, stub.base_url))
    options = json.dumps({"base_url": stub.base_url, "timeout": 2})
    assert (
        conn.execute(
            "select pgseek.start_model_change('openai', 'stub-embed', 8, %s)", (options,)
        ).fetchone()[0]
        == 2
    )
    with pytest.raises(errors.ObjectNotInPrerequisiteState, match="still queued"):
        conn.execute("select pgseek.finish_model_change()")
    # A document written during the change is embedded for both models.
    insert(conn, "gamma")
    conn.execute("select pgseek.process_embedding_queue(64)")
    rows = conn.execute(
        "select vector_dims(embedding), vector_dims(embedding_next) from pgseek.documents"
    ).fetchall()
    assert sorted(rows) == [(384, 8)] * 3
    with pytest.raises(errors.ObjectNotInPrerequisiteState, match=r"index .* is not built"):
        conn.execute("select pgseek.finish_model_change()")
    result = run_migrate(db.url, "vector-index")
    assert result.returncode == 0, result.stderr
    message = conn.execute("select pgseek.finish_model_change()").fetchone()[0]
    assert "stub-embed (8 dimensions)" in message
    config = conn.execute(
        "select embedding_provider, embedding_dimensions, next_embedding_model from pgseek.config"
    ).fetchone()
    assert config == ("openai", 8, None)
    stored = conn.execute(
        "select embedding::text from pgseek.documents where id = %s", (ids[0],)
    ).fetchone()[0]
    assert cosine(floats(stored), stub_vector("alpha", 8)) > 0.9999
    indexes = {
        r[0]
        for r in conn.execute(
            "select indexname from pg_indexes where tablename = 'documents' and indexname like"
            " 'documents_embedding%'"
        )
    }
    assert indexes == {"documents_embedding_8_hnsw_cosine"}
    # New rows now get the new model, and queries too.
    insert(conn, "delta")
    conn.execute("select pgseek.process_embedding_queue(64)")
    assert conn.execute("select vector_dims(pgseek.embed('q'))").fetchone()[0] == 8


def test_finish_model_change_moves_the_embedding_column_for_prepared_select_star(conn, db, stub):
    """What README's model-change section tells clients: finish_model_change() moves
    `embedding` to another position, so a statement prepared with `select *` (psycopg
    prepares after 5 executions) fails with 0A000 until it is prepared again (DEALLOCATE
    ALL, which psycopg notices, or a new connection); one naming its columns goes on."""
    from pgtest import run_migrate

    insert(conn, "alpha")
    conn.execute("select pgseek.process_embedding_queue(64)")
    conn.execute("select pgseek.set_api_key('openai', %s, %s)", (API_KEY, stub.base_url))
    options = json.dumps({"base_url": stub.base_url, "timeout": 2})
    conn.execute("select pgseek.start_model_change('openai', 'stub-embed', 8, %s)", (options,))
    conn.execute("select pgseek.process_embedding_queue(64)")
    assert run_migrate(db.url, "vector-index").returncode == 0
    star = "select * from pgseek.documents"
    named = "select id, content, embedding::text from pgseek.documents"
    with db.connect(prepare_threshold=0) as client:
        before = client.execute(star).fetchone()
        client.execute(named).fetchone()
        conn.execute("select pgseek.finish_model_change()")
        with pytest.raises(errors.FeatureNotSupported, match="must not change result type"):
            client.execute(star)
        assert len(floats(client.execute(named).fetchone()[2])) == 8
        client.execute("deallocate all")
        cur = client.execute(star)
        after = dict(zip([c.name for c in cur.description], cur.fetchone(), strict=True))
    assert len(floats(str(after["embedding"]))) == 8
    assert after["embedding_next"] is None
    assert after["content"] == "alpha" and len(before) == len(after)


def test_finish_waits_for_writers_and_drops_the_old_models_work(conn, db, stub):
    """A row written while finish_model_change() waits for its lock is seen by its
    checks (the change is refused, nothing is lost); once done, the old model's queue
    entries and dead letters go with its vectors."""
    from pgtest import run_migrate

    (alpha,) = insert(conn, "alpha")
    conn.execute("select pgseek.process_embedding_queue(64)")
    conn.execute("select pgseek.set_api_key('openai', %s, %s)", (API_KEY, stub.base_url))
    options = json.dumps({"base_url": stub.base_url, "timeout": 2})
    conn.execute("select pgseek.start_model_change('openai', 'stub-embed', 8, %s)", (options,))
    conn.execute("select pgseek.process_embedding_queue(64)")
    assert run_migrate(db.url, "vector-index").returncode == 0

    def late_writer() -> None:
        with db.connect() as w, w.transaction():
            w.execute("insert into pgseek.documents (content) values ('late')")
            time.sleep(1.5)

    writer = threading.Thread(target=late_writer)
    writer.start()
    time.sleep(0.5)
    try:
        with pytest.raises(errors.ObjectNotInPrerequisiteState, match="still queued"):
            conn.execute("select pgseek.finish_model_change()")
    finally:
        writer.join()
    conn.execute("select pgseek.process_embedding_queue(64)")
    hash_of_alpha = "select content_hash from pgseek.documents where id = %s"
    conn.execute(
        "insert into pgseek.embedding_queue (document_id, target, content_hash)"
        f" values (%s, 'embedding', ({hash_of_alpha}))",
        (alpha, alpha),
    )
    conn.execute(
        "insert into pgseek.embedding_dead_letter"
        " (document_id, target, content_hash, attempts, error, first_queued_at)"
        f" values (%s, 'embedding', ({hash_of_alpha}), 5, 'old model failed', now())",
        (alpha, alpha),
    )
    assert "stub-embed" in conn.execute("select pgseek.finish_model_change()").fetchone()[0]
    assert queued(conn) == []
    assert conn.execute("select count(*) from pgseek.embedding_dead_letter").fetchone()[0] == 0
    s = status(conn)
    assert (s["embedded"], s["unaccounted"]) == (2, 0)
    assert conn.execute("show lock_timeout").fetchone()[0] == "0"  # the caller's, kept


def test_a_failure_of_text_edited_meanwhile_leaves_no_dead_letter(remote, stub, db):
    """The provider refuses a request for text that is edited while it runs: the entry of
    the old text is only dropped (the edit queued the new text), so no stale dead letter
    outlives the new text's success."""
    (doc,) = insert(remote, "text one")
    stub.mode, stub.delay = "unauthorized", 0.8

    def edit() -> None:
        time.sleep(0.3)
        with db.connect() as w:
            w.execute("update pgseek.documents set content = 'text two' where id = %s", (doc,))

    editor = threading.Thread(target=edit)
    editor.start()
    try:
        remote.execute("select pgseek.process_embedding_queue(64)")
    finally:
        editor.join()
    stub.mode, stub.delay = "ok", 0.0
    remote.execute("select pgseek.process_embedding_queue(64)")
    s = status(remote)
    assert (s["embedded"], s["dead_letter"], s["unaccounted"]) == (1, 0, 0)


def test_model_change_can_be_cancelled(conn, stub):
    insert(conn, "alpha")
    options = json.dumps({"base_url": stub.base_url})
    conn.execute("select pgseek.start_model_change('openai', 'stub-embed', 8, %s)", (options,))
    with pytest.raises(errors.ObjectNotInPrerequisiteState, match="already in progress"):
        conn.execute("select pgseek.start_model_change('openai', 'other', 8, %s)", (options,))
    assert "cancelled" in conn.execute("select pgseek.cancel_model_change()").fetchone()[0]
    assert (
        conn.execute(
            "select count(*) from pgseek.embedding_queue where target = 'embedding_next'"
        ).fetchone()[0]
        == 0
    )
    with pytest.raises(errors.ObjectNotInPrerequisiteState, match="no model change"):
        conn.execute("select pgseek.finish_model_change()")
