"""pgseek from the common Python clients, each directly and through PgBouncer in
transaction pooling mode: psycopg 3 (sync and async, vectors adapted by pgvector-python's
register_vector / register_vector_async), asyncpg (pgvector.asyncpg) and SQLAlchemy 2 (a
mapped class with pgvector's Vector type, select() over func.pgseek.hybrid_search and a
text() query). Each loads documents in bulk with COPY (or the ORM's executemany) and
executemany, then calls search_similar() and hybrid_search().

The clients supply their own 16-dimension vectors (pgseek.config.embedding_dimensions =
16): rows that arrive with an embedding skip the embedding queue, so no model runs.
Through PgBouncer (before 1.21) no client may create prepared statements: psycopg
prepare_threshold=None, asyncpg statement_cache_size=0; after each test every server
connection of the pool is checked for leftovers.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import numpy as np
import psycopg
import pytest
from pgvector.asyncpg import register_vector as register_vector_asyncpg
from pgvector.psycopg import register_vector, register_vector_async
from pgvector.sqlalchemy import Vector
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import (
    Float,
    Integer,
    Text,
    Uuid,
    bindparam,
    column,
    create_engine,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import URL
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import NullPool

from pgbouncer import PgBouncer, leftovers, server_states, session_state
from pgtest import Database

DIMS = 16
TOPICS = ["postgres", "vectors", "pooling", "python"]
ROWS = 40
HALF = ROWS // 2  # loaded with COPY; the rest with executemany
TARGET = 13  # the document the query vector is drawn near; its topic is "vectors"
CONCURRENT = 30  # concurrent searches from the async clients


def documents() -> list[tuple[str, dict, np.ndarray]]:
    """ROWS documents: content naming a topic, metadata, a seeded random unit vector."""
    rng = np.random.default_rng(42)
    vectors = rng.normal(size=(ROWS, DIMS)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        (
            f"document {i} about {TOPICS[i % len(TOPICS)]}",
            {"i": i, "topic": TOPICS[i % len(TOPICS)]},
            vectors[i],
        )
        for i in range(ROWS)
    ]


DOCS = documents()
QUERY = DOCS[TARGET][2] + np.random.default_rng(7).normal(scale=0.02, size=DIMS).astype(np.float32)
QUERY /= np.linalg.norm(QUERY)
QUERY_TEXT = TOPICS[TARGET % len(TOPICS)]
FILTER = {"topic": "pooling"}


@dataclass
class Route:
    """How a client reaches the test database: directly, or through PgBouncer with the
    options transaction pooling needs."""

    name: str
    db: Database
    conninfo: str
    bouncer: PgBouncer | None = None
    params: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.params = conninfo_to_dict(self.conninfo)

    @property
    def pooled(self) -> bool:
        return self.bouncer is not None

    @property
    def psycopg_options(self) -> dict[str, Any]:
        return {"prepare_threshold": None} if self.pooled else {}

    @property
    def asyncpg_options(self) -> dict[str, Any]:
        options = {
            "host": self.params["host"],
            "port": int(self.params["port"]),
            "user": self.params["user"],
            "password": self.params.get("password"),
            "database": self.params["dbname"],
        }
        if self.pooled:
            options["statement_cache_size"] = 0
        return options

    @property
    def sqlalchemy_url(self) -> URL:
        return URL.create(
            "postgresql+psycopg",
            username=self.params["user"],
            password=self.params.get("password"),
            host=self.params["host"],
            port=int(self.params["port"]),
            database=self.params["dbname"],
        )

    def assert_servers_clean(self) -> None:
        """Through PgBouncer: every server connection of the pool has the settings of
        a fresh session and no prepared statements, temporary tables, cursors, LISTEN
        channels or advisory locks."""
        if self.bouncer is None:
            return
        with self.db.connect() as direct:
            fresh = session_state(direct)
        states = server_states(self.bouncer, self.db.name)
        assert [leftovers(state, fresh) for state in states] == [{}] * len(states)


@pytest.fixture(params=["direct", "pgbouncer"])
def route(request, db: Database) -> Route:
    with db.connect() as conn:
        conn.execute("update pgseek.config set embedding_dimensions = %s", (DIMS,))
    if request.param == "direct":
        return Route("direct", db, db.url)
    bouncer: PgBouncer = request.getfixturevalue("bouncer")
    return Route("pgbouncer", db, bouncer.url(db.name), bouncer)


def check_stored(route: Route) -> None:
    """All rows arrived with their vectors; none was queued for the embedding model."""
    with route.db.connect() as conn:
        register_vector(conn)
        assert conn.execute(
            "select count(*), count(embedding) from pgseek.documents"
        ).fetchone() == (ROWS, ROWS)
        assert conn.execute("select count(*) from pgseek.embedding_queue").fetchone()[0] == 0
        stored = conn.execute(
            "select embedding from pgseek.documents where metadata @> %s", (Jsonb({"i": TARGET}),)
        ).fetchone()[0]
    assert np.allclose(stored.to_numpy(), DOCS[TARGET][2])


def check_similar(rows: list) -> None:
    """search_similar(QUERY, 5) rows as (content, similarity, rank)."""
    assert [r[2] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0][0] == DOCS[TARGET][0]
    assert rows[0][1] > 0.99
    assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)


def check_hybrid(rows: list) -> None:
    """hybrid_search(QUERY_TEXT, QUERY, k => 5) rows as (content, score, vector_rank)."""
    assert len(rows) == 5
    assert rows[0][0] == DOCS[TARGET][0] and rows[0][2] == 1
    assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)


def check_filtered(rows: list) -> None:
    """search_similar(QUERY, 5, filter => FILTER) rows as (metadata,)."""
    assert len(rows) == 5
    assert all(r[0]["topic"] == "pooling" for r in rows)


SIMILAR_SQL = "select content, similarity, rank from pgseek.search_similar(%s, 5)"
HYBRID_SQL = "select content, score, vector_rank from pgseek.hybrid_search(%s, %s, k => 5)"
FILTERED_SQL = "select metadata from pgseek.search_similar(%s, 5, filter => %s)"
FLOOR_SQL = "select content from pgseek.search_similar(%s, 10, min_similarity => %s)"
COPY_SQL = "copy pgseek.documents (content, metadata, embedding) from stdin with (format binary)"
INSERT_SQL = "insert into pgseek.documents (content, metadata, embedding) values (%s, %s, %s)"


# --- psycopg 3 ------------------------------------------------------------------------


def test_psycopg(route: Route):
    with psycopg.connect(route.conninfo, autocommit=True, **route.psycopg_options) as conn:
        register_vector(conn)  # numpy arrays in, pgvector.Vector out
        with conn.cursor() as cur:
            with cur.copy(COPY_SQL) as copy:
                copy.set_types(["text", "jsonb", "vector"])
                for content, metadata, embedding in DOCS[:HALF]:
                    copy.write_row((content, metadata, embedding))
            cur.executemany(INSERT_SQL, [(c, Jsonb(m), e) for c, m, e in DOCS[HALF:]])
        conn.execute("select pgseek.refresh_text_stats()")
        check_similar(conn.execute(SIMILAR_SQL, (QUERY,)).fetchall())
        check_hybrid(conn.execute(HYBRID_SQL, (QUERY_TEXT, QUERY)).fetchall())
        check_filtered(conn.execute(FILTERED_SQL, (QUERY, Jsonb(FILTER))).fetchall())
        floor = conn.execute(FLOOR_SQL, (QUERY, 0.9)).fetchall()
        assert floor == [(DOCS[TARGET][0],)]
        with conn.transaction():  # several calls in one transaction
            ids = [r[0] for r in conn.execute("select id from pgseek.search_similar(%s)", (QUERY,))]
            conn.execute("delete from pgseek.documents where id = %s", (ids[0],))
            assert conn.execute(SIMILAR_SQL, (QUERY,)).fetchone()[0] != DOCS[TARGET][0]
            raise psycopg.Rollback
    check_stored(route)
    route.assert_servers_clean()


def test_psycopg_async(route: Route):
    async def main() -> list:
        options = {"autocommit": True, **route.psycopg_options}
        async with await psycopg.AsyncConnection.connect(route.conninfo, **options) as conn:
            await register_vector_async(conn)
            cur = conn.cursor()
            async with cur.copy(COPY_SQL) as copy:
                copy.set_types(["text", "jsonb", "vector"])
                for content, metadata, embedding in DOCS[:HALF]:
                    await copy.write_row((content, metadata, embedding))
            await cur.executemany(INSERT_SQL, [(c, Jsonb(m), e) for c, m, e in DOCS[HALF:]])
            await conn.execute("select pgseek.refresh_text_stats()")
            check_similar(await (await conn.execute(SIMILAR_SQL, (QUERY,))).fetchall())
            check_hybrid(await (await conn.execute(HYBRID_SQL, (QUERY_TEXT, QUERY))).fetchall())
            check_filtered(
                await (await conn.execute(FILTERED_SQL, (QUERY, Jsonb(FILTER)))).fetchall()
            )
        # many concurrent searches from a client-side pool (through PgBouncer: 10 client
        # connections sharing its 4 server connections)
        async with AsyncConnectionPool(
            route.conninfo, min_size=10, max_size=10, kwargs=options,
            configure=register_vector_async, open=False,
        ) as pool:  # fmt: skip
            await pool.open(wait=True)

            async def search(i: int) -> list:
                async with pool.connection() as c:
                    sql = HYBRID_SQL if i % 2 else SIMILAR_SQL
                    args = (QUERY_TEXT, QUERY) if i % 2 else (QUERY,)
                    return await (await c.execute(sql, args)).fetchall()

            return await asyncio.gather(*(search(i) for i in range(CONCURRENT)))

    results = asyncio.run(main())
    for i, rows in enumerate(results):
        (check_hybrid if i % 2 else check_similar)(rows)
    check_stored(route)
    route.assert_servers_clean()


# --- asyncpg --------------------------------------------------------------------------


def test_asyncpg(route: Route):
    async def main() -> list:
        conn = await asyncpg.connect(**route.asyncpg_options)
        try:
            await register_vector_asyncpg(conn)  # numpy arrays in and out, binary
            await conn.copy_records_to_table(
                "documents",
                schema_name="pgseek",
                columns=["content", "metadata", "embedding"],
                records=[(c, json.dumps(m), e) for c, m, e in DOCS[:HALF]],
            )
            await conn.executemany(
                "insert into pgseek.documents (content, metadata, embedding) values ($1, $2, $3)",
                [(c, json.dumps(m), e) for c, m, e in DOCS[HALF:]],
            )
            await conn.execute("select pgseek.refresh_text_stats()")
            check_similar(
                await conn.fetch(
                    "select content, similarity, rank from pgseek.search_similar($1, 5)", QUERY
                )
            )
            check_hybrid(
                await conn.fetch(
                    "select content, score, vector_rank from pgseek.hybrid_search($1, $2, k => 5)",
                    QUERY_TEXT,
                    QUERY,
                )
            )
            filtered = await conn.fetch(
                "select metadata from pgseek.search_similar($1, 5, filter => $2::jsonb)",
                QUERY,
                json.dumps(FILTER),
            )
            check_filtered([(json.loads(r["metadata"]),) for r in filtered])
            async with conn.transaction():
                top = await conn.fetchval("select id from pgseek.search_similar($1, 1)", QUERY)
                assert isinstance(top, uuid.UUID)
        finally:
            await conn.close()
        # concurrent searches from asyncpg's own pool
        async with asyncpg.create_pool(
            min_size=10, max_size=10, init=register_vector_asyncpg, **route.asyncpg_options
        ) as pool:

            async def search(i: int) -> list:
                if i % 2:
                    return await pool.fetch(
                        "select content, score, vector_rank"
                        " from pgseek.hybrid_search($1, $2, k => 5)",
                        QUERY_TEXT,
                        QUERY,
                    )
                return await pool.fetch(
                    "select content, similarity, rank from pgseek.search_similar($1, 5)", QUERY
                )

            return await asyncio.gather(*(search(i) for i in range(CONCURRENT)))

    results = asyncio.run(main())
    for i, rows in enumerate(results):
        (check_hybrid if i % 2 else check_similar)([tuple(r) for r in rows])
    check_stored(route)
    route.assert_servers_clean()


# --- SQLAlchemy 2 ---------------------------------------------------------------------


class Base(DeclarativeBase):
    pass


class Document(Base):
    """pgseek.documents as an ORM class (the columns a client writes and reads; fts,
    created_at and updated_at are the database's)."""

    __tablename__ = "documents"
    __table_args__ = {"schema": "pgseek"}  # noqa: RUF012 (SQLAlchemy's declarative API)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=func.gen_random_uuid())
    content: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict] = mapped_column("metadata", JSONB, server_default=text("'{}'"))
    embedding: Mapped[list[float] | None] = mapped_column(Vector(DIMS))


def test_sqlalchemy(route: Route):
    # Through PgBouncer: no prepared statements, and no second pool on the client side
    # (NullPool: PgBouncer is the pool).
    engine = create_engine(
        route.sqlalchemy_url,
        connect_args=route.psycopg_options,
        **({"poolclass": NullPool} if route.pooled else {}),
    )
    try:
        with Session(engine) as session:
            # executemany through the ORM's bulk insert, and one object added
            session.execute(
                insert(Document),
                [{"content": c, "meta": m, "embedding": e} for c, m, e in DOCS[:-1]],
            )
            last = Document(content=DOCS[-1][0], meta=DOCS[-1][1], embedding=DOCS[-1][2])
            session.add(last)
            session.commit()
            assert isinstance(last.id, uuid.UUID)
            session.execute(select(func.pgseek.refresh_text_stats())).scalar_one()
            session.commit()

            query = bindparam("query_embedding", QUERY, type_=Vector(DIMS))
            # select() over the set-returning function, joined to the mapped class
            hits = func.pgseek.hybrid_search(QUERY_TEXT, query, 5).table_valued(
                column("id", Uuid),
                column("score", Float),
                column("vector_rank", Integer),
                name="hits",
            )
            rows = session.execute(
                select(Document, hits.c.score, hits.c.vector_rank)
                .join(hits, hits.c.id == Document.id)
                .order_by(hits.c.score.desc(), hits.c.id)
            ).all()
            check_hybrid([(doc.content, score, vr) for doc, score, vr in rows])
            assert isinstance(rows[0][0].embedding, list)  # pgvector 0.5: a list of floats
            assert np.allclose(rows[0][0].embedding, DOCS[TARGET][2])

            similar = func.pgseek.search_similar(query, 5).table_valued(
                column("content", Text), column("similarity", Float), column("rank", Integer)
            )
            check_similar(
                session.execute(
                    select(similar.c.content, similar.c.similarity, similar.c.rank)
                ).all()
            )

            # a text() query with named arguments
            filtered = session.execute(
                text(
                    "select metadata from pgseek.search_similar(:query_embedding, 5,"
                    " filter => cast(:filter as jsonb))"
                ).bindparams(bindparam("query_embedding", type_=Vector(DIMS))),
                {"query_embedding": QUERY, "filter": json.dumps(FILTER)},
            ).all()
            check_filtered(filtered)

            # pgvector's operators on the mapped column: an exact nearest-neighbour query
            nearest = session.scalars(
                select(Document).order_by(Document.embedding.cosine_distance(QUERY)).limit(1)
            ).one()
            assert nearest.content == DOCS[TARGET][0]
    finally:
        engine.dispose()
    check_stored(route)
    route.assert_servers_clean()
