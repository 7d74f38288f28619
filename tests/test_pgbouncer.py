"""pgseek through a real PgBouncer in transaction pooling mode (tests/pgbouncer.py): many
client connections sharing a pool of 4 server connections insert documents (embedded by
the queue worker with the local model), search with a given vector and with the query
embedded in the database, and leave no session state behind on the server connections.
The last tests show why clients must not use prepared statements through PgBouncer
before 1.21 (psycopg prepare_threshold=None, asyncpg statement_cache_size=0).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable

import asyncpg
import psycopg
import pytest
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict

from pgbouncer import PgBouncer, leftovers, server_states, session_state
from pgtest import Database, with_dbname

CLIENTS = 20

# One document per client about a topic of its own, plus two notes; four of the topics
# are queried below.
TOPICS = [
    "Cats are small domesticated mammals that purr and sleep in the sun",
    "PostgreSQL schedules nightly maintenance jobs with the pg_cron extension",
    "HNSW is a graph index for approximate nearest neighbour vector search",
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, France",
    "Bread dough rises because yeast ferments the sugars in the flour",
    "Jupiter is the largest planet in the solar system",
    "A violin has four strings tuned in perfect fifths",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar",
    "The marathon is a long-distance running race of 42 kilometres",
    "Volcanoes erupt when magma rises through the crust of the earth",
    "Bees pollinate flowers while they collect nectar",
    "Chess openings such as the Sicilian Defence begin the game",
    "Coffee beans are the roasted seeds of the Coffea plant",
    "Glaciers carve valleys as they slowly move downhill",
    "The stock market index fell after the central bank raised interest rates",
    "Penguins are flightless birds of the southern hemisphere",
    "A compiler translates source code into machine instructions",
    "Tomatoes grow best in warm weather with plenty of sunshine",
    "The Great Wall of China stretches for thousands of kilometres",
    "Honey never spoils when it is stored in a sealed jar",
]
assert len(TOPICS) == CLIENTS
# query text -> the start of the document it must find first
QUERIES = {
    "a pet kitten": "Cats are",
    "cron scheduler for database maintenance": "PostgreSQL schedules",
    "famous landmark in paris": "The Eiffel Tower",
    "baking bread with yeast": "Bread dough",
}


def run_clients(count: int, work: Callable[[int, psycopg.Connection], None], url: str) -> None:
    """Runs work(i, conn) in `count` threads, each with a psycopg connection of its own to
    url (through PgBouncer: prepare_threshold=None), all connected before any works.
    Re-raises the first failure."""
    barrier = threading.Barrier(count, timeout=60)
    failures: list[BaseException] = []

    def client(i: int) -> None:
        try:
            with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
                barrier.wait()
                work(i, conn)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not any(t.is_alive() for t in threads), "a client thread hung"
    if failures:
        raise failures[0]


class Load:
    """What the concurrent load through PgBouncer saw."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.server_pids: set[int] = set()
        self.embedded = 0
        self.peak_clients = 0

    def saw(self, pid: int) -> None:
        with self.lock:
            self.server_pids.add(pid)


@pytest.fixture(scope="module")
def pooled(server, template_db, bouncer: PgBouncer):
    """A database loaded through PgBouncer by CLIENTS concurrent clients: each inserts
    its documents (queued for embedding by the insert trigger), then runs the embedding
    worker, pgseek.process_embedding_queue(), until the queue is empty; the local model
    embeds them in the server connections of the pool. Yields (database, load)."""
    name = server.create_database(template=template_db)
    db = Database(name, with_dbname(server.url, name))
    load = Load()
    url = bouncer.url(name)

    def insert_and_embed(i: int, conn: psycopg.Connection) -> None:
        # every client is connected now (run_clients waits for all): count them as
        # PgBouncer does, linked to a server connection or idle (active) plus waiting
        pool = next(p for p in bouncer.show("pools") if p["database"] == name)
        with load.lock:
            load.peak_clients = max(load.peak_clients, pool["cl_active"] + pool["cl_waiting"])
        rows = [
            (TOPICS[i], {"client": i, "kind": "topic"}),
            (f"Note {i}a: connection pooling keeps server connections warm", {"client": i}),
            (f"Note {i}b: transaction pooling hands out a server per transaction", {"client": i}),
        ]
        with conn.cursor() as cur:
            cur.executemany(
                "insert into pgseek.documents (content, metadata) values (%s, %s)",
                [(content, json.dumps(meta)) for content, meta in rows],
            )
        while True:
            pid, embedded = conn.execute(
                "select pg_backend_pid(), pgseek.process_embedding_queue(4)"
            ).fetchone()
            load.saw(pid)
            if embedded == 0:
                break
            with load.lock:
                load.embedded += embedded

    try:
        run_clients(CLIENTS, insert_and_embed, url)
        with bouncer.connect(name) as conn:
            conn.execute("select pgseek.refresh_text_stats()")
        yield db, load
    finally:
        server.drop_database(name)


@pytest.fixture(scope="module")
def query_vectors(pooled, bouncer: PgBouncer) -> dict[str, str]:
    """The embedding of each query, computed in the database, as vector text."""
    db, _ = pooled
    with bouncer.connect(db.name) as conn:
        return {
            q: conn.execute("select pgseek.embed(%s)::text", (q,)).fetchone()[0] for q in QUERIES
        }


def test_many_clients_insert_and_embed_through_transaction_pooling(pooled, bouncer):
    db, load = pooled
    assert load.peak_clients == CLIENTS  # (the admin console is a pool of its own)
    assert load.embedded == 3 * CLIENTS
    assert 1 <= len(load.server_pids) <= bouncer.pool_size
    with db.connect() as conn:
        counts = conn.execute(
            "select count(*), count(embedding), count(*) filter (where vector_dims(embedding)"
            " = 384) from pgseek.documents"
        ).fetchone()
        assert counts == (3 * CLIENTS, 3 * CLIENTS, 3 * CLIENTS)
        assert conn.execute("select count(*) from pgseek.embedding_queue").fetchone()[0] == 0
        assert conn.execute("select count(*) from pgseek.embedding_dead_letter").fetchone()[0] == 0


def test_many_clients_search_through_transaction_pooling(pooled, bouncer, query_vectors):
    """Every client searches with a given vector (search_similar, hybrid_search) and
    with the query text alone (embedded in the database: a text of its own, so the
    cache does not answer), while 20 clients share 4 server connections."""
    db, _ = pooled
    pids: set[int] = set()
    lock = threading.Lock()
    queries = list(QUERIES.items())

    def search(i: int, conn: psycopg.Connection) -> None:
        query, expected = queries[i % len(queries)]
        vector = query_vectors[query]
        for _ in range(3):
            rows = conn.execute(
                "select pg_backend_pid(), content, rank from pgseek.search_similar(%s::vector, 3)",
                (vector,),
            ).fetchall()
            assert rows[0][1].startswith(expected) and rows[0][2] == 1
            hybrid = conn.execute(
                "select pg_backend_pid(), content, vector_rank from pgseek.hybrid_search(%s,"
                " %s::vector, k => 3)",
                (query, vector),
            ).fetchall()
            assert hybrid[0][1].startswith(expected)
            in_database = conn.execute(
                "select pg_backend_pid(), content, vector_rank from pgseek.hybrid_search(%s,"
                " k => 3)",
                (f"{query} (asked by client {i})",),
            ).fetchall()
            assert in_database[0][1].startswith(expected)
            filtered = conn.execute(
                "select pg_backend_pid(), metadata from pgseek.search_similar(%s::vector, 5,"
                " filter => %s)",
                (vector, json.dumps({"client": i})),
            ).fetchall()
            assert [r[1]["client"] for r in filtered] == [i, i, i]
            with lock:
                pids.update(r[0] for r in rows + hybrid + in_database + filtered)

    run_clients(CLIENTS, search, bouncer.url(db.name))
    assert 1 <= len(pids) <= bouncer.pool_size
    with db.connect() as conn:
        cached = conn.execute(
            "select count(*) from pgseek.query_embeddings where model like 'local/%%'"
        ).fetchone()[0]
    assert cached >= CLIENTS + len(QUERIES)


def test_no_session_state_survives_a_pgseek_call(pooled, bouncer, query_vectors):
    """After every kind of pgseek call, from many clients, in autocommit and in explicit
    transactions, each server connection of the pool shows a new transaction the same
    settings as a fresh session (hnsw.*, ivfflat.*, enable_*, search_path, ...), and no
    prepared statements, temporary tables, cursors, LISTEN channels or advisory locks."""
    db, _ = pooled
    used: set[int] = set()
    lock = threading.Lock()
    vector = query_vectors["a pet kitten"]

    def calls(i: int, conn: psycopg.Connection) -> None:
        statements = [
            ("select pg_backend_pid() from pgseek.search_similar(%s::vector, 5)", (vector,)),
            (
                "select pg_backend_pid() from pgseek.search_similar(%s::vector, 5,"
                " ef_search => 123, probes => 7, min_similarity => 0.1)",
                (vector,),
            ),
            (  # a selective filter: the exact path (enable_indexscan off inside)
                "select pg_backend_pid() from pgseek.search_similar(%s::vector, 5, filter => %s)",
                (vector, json.dumps({"client": i})),
            ),
            (
                "select pg_backend_pid() from pgseek.hybrid_search('pooling', %s::vector,"
                " mode => 'rrf', snippets => true)",
                (vector,),
            ),
            ("select pg_backend_pid() from pgseek.hybrid_search(%s)", (f"kitten {i}",)),
            ("select pg_backend_pid(), pgseek.embed(%s)", (f"query {i}",)),
            ("select pg_backend_pid(), pgseek.process_embedding_queue()", None),
            ("select pg_backend_pid(), pgseek.refresh_text_stats()", None),
        ]
        # (Never wait for a lock while holding a transaction open: the clients holding
        # all the pool's server connections would wait for one that waits for a server.)
        pids = [conn.execute(sql, params).fetchone()[0] for sql, params in statements]
        with conn.transaction():  # several calls in one explicit transaction
            pids += [conn.execute(sql, params).fetchone()[0] for sql, params in statements[:5]]
        with lock:
            used.update(pids)

    run_clients(CLIENTS, calls, bouncer.url(db.name))

    with db.connect() as direct:
        fresh = session_state(direct)
    states = server_states(bouncer, db.name)
    checked = {s["pid"] for s in states}
    assert len(checked) == bouncer.pool_size
    assert used <= checked, "every server connection that ran a pgseek call was checked"
    assert {s["settings"]["hnsw.ef_search"] for s in states} == {"40"}
    assert [leftovers(state, fresh) for state in states] == [{}] * len(states)


def test_a_search_does_not_hold_a_server_connection_waiting_for_a_cache_entry(db, bouncer):
    """A client's open transaction has searched a new text (psycopg's default: not
    autocommit), holding its uncommitted query-cache entry and a server connection; the
    pool's other server connections serve clients searching the same text meanwhile,
    each within its statement_timeout, instead of waiting for A's transaction."""
    search = "select count(*) from pgseek.hybrid_search('a question asked through the pool')"
    with bouncer.connect(db.name, autocommit=False) as a:
        a.execute(search)

        def search_again(_: int, conn: psycopg.Connection) -> None:
            with conn.transaction():
                conn.execute("set local statement_timeout = '5s'")
                conn.execute(search)

        run_clients(bouncer.pool_size - 1, search_again, bouncer.url(db.name))
        a.commit()
    with db.connect() as direct:
        assert direct.execute("select count(*) from pgseek.query_embeddings").fetchone()[0] == 1


def test_the_check_sees_session_state_that_a_plain_set_leaves(db, bouncer):
    """The control: a session-level SET through transaction pooling stays on the server
    connection and the next client's transaction there sees it (PgBouncer runs no
    server_reset_query in transaction mode), which is why pgseek never uses one."""
    with bouncer.connect(db.name) as first:
        pid = first.execute("select pg_backend_pid()").fetchone()[0]
        first.execute("set hnsw.ef_search = 17")
    with bouncer.connect(db.name) as second:  # server connections are reused LIFO
        state = session_state(second)
    assert state["pid"] == pid
    with db.connect() as direct:
        fresh = session_state(direct)
    assert leftovers(state, fresh) == {
        "settings": {"hnsw.ef_search": ("17", "40")},
        "session_settings": {"hnsw.ef_search": "17"},
    }


def test_psycopg_must_not_prepare_through_pgbouncer_before_1_21(db, bouncer):
    """PgBouncer before 1.21 does not track protocol-level prepared statements: a
    statement psycopg prepares (prepare_threshold, 5 executions by default) stays on one
    server connection, where the next client sees it, and the client's next execution,
    given another server connection, fails. Hence prepare_threshold=None."""
    if bouncer.version >= (1, 21):
        pytest.skip(f"PgBouncer {bouncer.version} can track prepared statements")
    sql = "select pg_backend_pid(), count(*) from pgseek.documents"
    with psycopg.connect(bouncer.url(db.name), autocommit=True, prepare_threshold=0) as eager:
        # prepared as _pg3_0 on the server connection it was given
        pid = eager.execute(sql).fetchone()[0]
        with bouncer.connect(db.name, autocommit=False) as other:
            state = session_state(other)  # holds that server connection: LIFO gives it
            assert state["pid"] == pid
            assert state["prepared_statements"] == 1  # what the next client sees there
            with pytest.raises(errors.InvalidSqlStatementName, match="does not exist"):
                eager.execute(sql)
            other.rollback()


def test_asyncpg_must_not_cache_statements_through_pgbouncer_before_1_21(db, bouncer):
    """asyncpg prepares every query as a named statement and caches it per connection
    (statement_cache_size, 100 by default): through transaction pooling the next run
    of a query goes to whichever server connection is free, where that statement does
    not exist. Hence statement_cache_size=0 (tests/test_clients.py runs asyncpg so)."""
    if bouncer.version >= (1, 21):
        pytest.skip(f"PgBouncer {bouncer.version} can track prepared statements")
    params = conninfo_to_dict(bouncer.url(db.name))
    options = {
        "host": params["host"],
        "port": int(params["port"]),
        "user": params["user"],
        "password": params["password"],
        "database": params["dbname"],
    }

    async def main() -> None:
        conn = await asyncpg.connect(**options)  # the default statement cache
        try:
            sql = "select pg_backend_pid(), count(*) from pgseek.documents"
            pid = (await conn.fetchrow(sql))[0]
            with bouncer.connect(db.name, autocommit=False) as other:
                state = session_state(other)  # holds that server connection
                assert state["pid"] == pid
                assert state["prepared_statements"] == 1
                with pytest.raises(
                    asyncpg.InvalidSQLStatementNameError,
                    match=r"__asyncpg_stmt_\w+__\" does not exist",
                ):
                    await conn.fetchrow(sql)
                other.rollback()
        finally:
            await conn.close()

    asyncio.run(main())
