"""The core schema: extensions, pgseek.documents, its constraints and its indexes."""

from __future__ import annotations

import random

import psycopg
import pytest
from psycopg import errors

from pgtest import run_migrate


def vec(values) -> str:
    return "[" + ",".join(f"{v:.6f}" for v in values) + "]"


def random_unit_vectors(n: int, dims: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        v = [rng.gauss(0, 1) for _ in range(dims)]
        norm = sum(x * x for x in v) ** 0.5
        out.append(vec(x / norm for x in v))
    return out


def plan(conn: psycopg.Connection, sql: str, params=None) -> str:
    rows = conn.execute("explain (costs off) " + sql, params).fetchall()
    return "\n".join(r[0] for r in rows)


def test_extensions_are_installed(conn):
    versions = dict(conn.execute("select extname, extversion from pg_extension").fetchall())
    assert "plpython3u" in versions
    major, minor = (int(p) for p in versions["vector"].split(".")[:2])
    assert (major, minor) >= (0, 8)


def test_pg_cron_is_created_in_the_cron_database(server, template_db):
    if not server.cron_database:
        pytest.skip("pg_cron is not preloaded on this server")
    with server.connect(server.cron_database) as c:
        c.execute("create extension if not exists pg_cron")
        assert c.execute("select count(*) from pg_extension where extname = 'pg_cron'").fetchone()[
            0
        ]
    with server.connect(template_db) as c:
        # pgseek's database is not cron.database_name here: pgseek works without pg_cron.
        assert c.execute("select count(*) from pgseek.documents").fetchone()[0] == 0


def test_insert_fills_defaults(conn):
    row = conn.execute(
        "insert into pgseek.documents (content) values ('PostgreSQL stores vectors')"
        " returning id, metadata, created_at, updated_at, fts::text, embedding"
    ).fetchone()
    doc_id, metadata, created_at, updated_at, fts, embedding = row
    assert doc_id is not None
    assert metadata == {}
    assert created_at == updated_at
    assert "'vector'" in fts and "'postgresql'" in fts
    assert embedding is None


def test_update_touches_updated_at(conn):
    doc_id = conn.execute(
        "insert into pgseek.documents (content, created_at, updated_at)"
        " values ('x', now() - interval '1 day', now() - interval '1 day') returning id"
    ).fetchone()[0]
    conn.execute("update pgseek.documents set metadata = '{\"a\": 1}' where id = %s", (doc_id,))
    created, updated = conn.execute(
        "select created_at, updated_at from pgseek.documents where id = %s", (doc_id,)
    ).fetchone()
    assert updated > created


@pytest.mark.parametrize("content", ["", "   ", "\n\t  \n"])
def test_blank_content_is_rejected(conn, content):
    with pytest.raises(errors.CheckViolation, match="documents_content_not_blank"):
        conn.execute("insert into pgseek.documents (content) values (%s)", (content,))


def test_null_content_is_rejected(conn):
    with pytest.raises(errors.NotNullViolation, match="content"):
        conn.execute("insert into pgseek.documents (content) values (null)")


@pytest.mark.parametrize("metadata", ["[]", "1", '"text"', "null"])
def test_non_object_metadata_is_rejected(conn, metadata):
    with pytest.raises(errors.CheckViolation, match="documents_metadata_is_object"):
        conn.execute(
            "insert into pgseek.documents (content, metadata) values ('x', %s::jsonb)",
            (metadata,),
        )


def test_wrong_embedding_dimensions_are_rejected(conn):
    with pytest.raises(errors.DataException) as exc:
        conn.execute(
            "insert into pgseek.documents (content, embedding) values ('x', %s::vector)",
            (vec([0.1, 0.2, 0.3]),),
        )
    assert "embedding has 3 dimensions, but pgseek is configured for 384" in str(exc.value)
    assert exc.value.diag.sqlstate == "22000"
    assert exc.value.diag.column_name == "embedding"
    assert conn.execute("select count(*) from pgseek.documents").fetchone()[0] == 0


def test_nan_embedding_is_rejected(conn):
    with pytest.raises(errors.DataException, match="NaN"):
        conn.execute(
            "insert into pgseek.documents (content, embedding) values ('x', %s::vector)",
            ("[" + ",".join(["NaN"] * 384) + "]",),
        )


def test_384_and_1536_dimensions_are_both_possible(conn):
    conn.execute(
        "insert into pgseek.documents (content, embedding) values ('small', %s::vector)",
        (random_unit_vectors(1, 384)[0],),
    )
    conn.execute("update pgseek.config set embedding_dimensions = 1536")
    conn.execute(
        "insert into pgseek.documents (content, embedding) values ('large', %s::vector)",
        (random_unit_vectors(1, 1536)[0],),
    )
    dims = conn.execute(
        "select content, vector_dims(embedding) from pgseek.documents order by content"
    ).fetchall()
    # Changing models kept the existing row and its vector: nothing was dropped.
    assert dims == [("large", 1536), ("small", 384)]


@pytest.mark.parametrize(
    ("column", "value", "constraint"),
    [
        ("vector_index", "'diskann'", "config_vector_index_known"),
        ("distance_metric", "'hamming'", "config_distance_metric_known"),
        ("embedding_dimensions", "0", "config_embedding_dimensions_range"),
        ("hnsw_m", "1", "config_hnsw_m_range"),
        ("hnsw_ef_construction", "8", "config_hnsw_ef_construction_range"),
    ],
)
def test_bad_configuration_is_rejected(conn, column, value, constraint):
    with pytest.raises(errors.CheckViolation, match=constraint):
        conn.execute(f"update pgseek.config set {column} = {value}")


def test_config_has_exactly_one_row(conn):
    with pytest.raises(errors.UniqueViolation):
        conn.execute("insert into pgseek.config default values")


@pytest.fixture
def loaded(conn):
    """2,000 documents with random unit vectors (generated in SQL), and statistics.

    The HNSW index is rebuilt after the load: a bulk build is much faster than
    2,000 single inserts into the graph.
    """
    indexdef = conn.execute(
        "select indexdef from pg_indexes where indexname = 'documents_embedding_384_hnsw_cosine'"
    ).fetchone()[0]
    conn.execute("drop index pgseek.documents_embedding_384_hnsw_cosine")
    conn.execute(
        """
        insert into pgseek.documents (content, metadata, embedding)
        select format('document %s about %s', i, topic), jsonb_build_object('topic', topic),
            (select l2_normalize(array_agg(random() - 0.5)::vector)
             from generate_series(1, 384) where i >= 0)
        from generate_series(0, 1999) as i,
            lateral (select (array['postgres', 'vectors', 'search', 'cron'])[i % 4 + 1]) as t(topic)
        """
    )
    conn.execute(indexdef)
    conn.execute("analyze pgseek.documents")
    return conn


def test_vector_order_by_uses_the_hnsw_index(loaded):
    q = random_unit_vectors(1, 384, seed=99)[0]
    sql = (
        "select id from pgseek.documents where vector_dims(embedding) = 384"
        " order by embedding::vector(384) <=> %s::vector(384) limit 10"
    )
    assert "Index Scan using documents_embedding_384_hnsw_cosine" in plan(loaded, sql, (q,))
    assert len(loaded.execute(sql, (q,)).fetchall()) == 10


def test_full_text_query_uses_the_gin_index(loaded):
    sql = "select id from pgseek.documents where fts @@ websearch_to_tsquery('english', 'cron')"
    loaded.execute("set enable_seqscan = off")
    assert "documents_fts_idx" in plan(loaded, sql)
    assert len(loaded.execute(sql).fetchall()) == 500


def test_metadata_containment_uses_the_gin_index(loaded):
    sql = 'select id from pgseek.documents where metadata @> \'{"topic": "search"}\''
    loaded.execute("set enable_seqscan = off")
    assert "documents_metadata_idx" in plan(loaded, sql)
    assert len(loaded.execute(sql).fetchall()) == 500


def test_created_at_range_uses_the_btree_index(loaded):
    sql = "select id from pgseek.documents where created_at < now() - interval '30 days'"
    loaded.execute("set enable_seqscan = off")
    assert "documents_created_at_idx" in plan(loaded, sql)


def test_vector_index_ddl_is_empty_when_the_index_matches(conn):
    assert conn.execute("select pgseek.vector_index_ddl()").fetchall() == []


def test_ivfflat_is_installable_by_configuration(loaded, db):
    loaded.execute("update pgseek.config set vector_index = 'ivfflat', ivfflat_lists = 20")
    statements = [r[0] for r in loaded.execute("select pgseek.vector_index_ddl()")]
    assert statements == [
        "create index concurrently documents_embedding_384_ivfflat_cosine on pgseek.documents"
        " using ivfflat ((embedding::vector(384)) vector_cosine_ops) with (lists = 20)"
        " where vector_dims(embedding) = 384",
        "drop index concurrently if exists pgseek.documents_embedding_384_hnsw_cosine",
    ]
    result = run_migrate(db.url, "vector-index")
    assert result.returncode == 0, result.stderr
    q = random_unit_vectors(1, 384, seed=5)[0]
    sql = (
        "select id from pgseek.documents where vector_dims(embedding) = 384"
        " order by embedding::vector(384) <=> %s::vector(384) limit 10"
    )
    assert "Index Scan using documents_embedding_384_ivfflat_cosine" in plan(loaded, sql, (q,))
    assert loaded.execute("select pgseek.vector_index_ddl()").fetchall() == []


def test_ivfflat_lists_default_from_row_count(loaded):
    loaded.execute("update pgseek.config set vector_index = 'ivfflat'")
    statements = [r[0] for r in loaded.execute("select pgseek.vector_index_ddl()")]
    assert "with (lists = 2)" in statements[0]  # 2,000 rows / 1000


def test_l2_hnsw_for_1536_dimensions(conn):
    conn.execute(
        "update pgseek.config set embedding_dimensions = 1536, distance_metric = 'l2', hnsw_m = 24,"
        " hnsw_ef_construction = 100"
    )
    statements = [r[0] for r in conn.execute("select pgseek.vector_index_ddl()")]
    assert statements[0] == (
        "create index concurrently documents_embedding_1536_hnsw_l2 on pgseek.documents"
        " using hnsw ((embedding::vector(1536)) vector_l2_ops) with (m = 24, ef_construction = 100)"
        " where vector_dims(embedding) = 1536"
    )


def test_more_than_2000_dimensions_explains_the_limit(conn):
    conn.execute("update pgseek.config set embedding_dimensions = 3072")
    with pytest.raises(errors.FeatureNotSupported, match="at most 2000 dimensions"):
        conn.execute("select pgseek.vector_index_ddl()").fetchall()


def test_functions_pin_search_path(conn):
    """Functions whose bodies are parsed when they run pin search_path; SQL-standard
    bodies (RETURN, BEGIN ATOMIC) were parsed when created and must not: a SET clause
    would keep PostgreSQL from inlining them into the calling query."""
    unpinned = conn.execute(
        "select p.proname from pg_proc p where p.pronamespace = 'pgseek'::regnamespace"
        " and p.prokind = 'f' and p.prosqlbody is null"
        " and not exists (select from unnest(p.proconfig) c where c like 'search_path=%%')"
    ).fetchall()
    assert unpinned == []
    pinned_standard = conn.execute(
        "select p.proname from pg_proc p where p.pronamespace = 'pgseek'::regnamespace"
        " and p.prosqlbody is not null and p.proconfig is not null"
    ).fetchall()
    assert pinned_standard == []


def test_sql_standard_bodies_are_inlined_and_ignore_the_callers_path(conn):
    """pgseek.similarity, called once per candidate row, folds into the query, and a
    hostile search_path cannot redirect what the parsed bodies call."""
    plan = conn.execute(
        "explain (verbose, costs off) select pgseek.similarity(0.25::float8, 'cosine')"
    ).fetchall()
    assert "0.75" in plan[-1][0] and "similarity" not in plan[-1][0], plan
    conn.execute("create schema evil")
    conn.execute(
        "create function evil.ts_rank(tsvector, tsquery) returns real language sql return 1000"
    )
    conn.execute("set search_path = evil, pg_catalog")
    tf = conn.execute(
        "select pgseek.term_frequency(to_tsvector('simple', 'a b a'), 'a'::tsquery)"
    ).fetchone()[0]
    assert tf == 2


def test_trigger_works_with_a_hostile_search_path(conn):
    conn.execute("create schema evil")
    conn.execute("set search_path = evil")
    with pytest.raises(errors.DataException, match="configured for 384"):
        conn.execute(
            "insert into pgseek.documents (content, embedding) values ('x', '[1,2]'::public.vector)"
        )


def test_vectors_are_stored_inline(conn):
    """A 384-d vector with a passage and its tsvector (about 2.5 kB) stays in the heap
    row: without toast_tuple_target the vector (EXTERNAL storage) would go to TOAST and
    every exact scan would fetch it from there (migration 0009)."""
    conn.execute("update pgseek.config set embedding_mode = 'off'")
    conn.execute(
        "insert into pgseek.documents (content, embedding)"
        " select string_agg('passage' || i, ' '), array_fill(0.5, array[384])::vector"
        " from generate_series(1, 80) as i"
    )
    row_size = conn.execute("select pg_column_size(d.*) from pgseek.documents as d").fetchone()[0]
    assert row_size > 2100  # past the default TOAST threshold
    toast = conn.execute(
        "select reltoastrelid::regclass from pg_class where oid = 'pgseek.documents'::regclass"
    ).fetchone()[0]
    assert conn.execute(f"select count(*) from {toast}").fetchone()[0] == 0
