"""Injection: SQL, tsquery, format() and header payloads through every text and JSONB
argument of the public functions, and through the configuration values that reach
dynamic SQL (index names, text search configurations, job names, provider settings).

Each call must leave a canary table and every pgseek table as they were (no statement
smuggled in ran), must not take the time a smuggled pg_sleep would, must fail, if it
fails, with a clean SQLSTATE (never 42601 syntax_error: that would mean the payload
became SQL text), and whatever it stores must be the payload, byte for byte.
"""

from __future__ import annotations

import json
import time

import psycopg
import pytest
from psycopg import errors
from psycopg.types.json import Jsonb

from openai_stub import OpenAIStub

CANARY_ROWS = 3
PAYLOADS = [
    "'); drop table public.canary; --",
    "'; delete from pgseek.documents; --",
    "x'; select pg_sleep(3); --",
    "' || (select pg_sleep(3)) || '",
    "1; select pg_sleep(3)",
    "$$; drop table public.canary; $$",
    "$q$ || pg_sleep(3) || $q$",
    '"; drop table public.canary; --',
    '"public"."canary"',
    "pgseek.documents",
    "%I%L%s%1$s%%",
    "%s'); drop table public.canary; --",
    "\\'; drop table public.canary; --",
    "E'\\x27'",
    "U&'\\0027'",
    "a' | 'b",
    "postgres' & !'vector",
    "!(a | b) <-> c:* & d:A",
    'english"; drop table public.canary; --',
    "pg_catalog.english'; drop table public.canary; --",
    "pgseek-purge'; drop table public.canary; --",
    "* * * * *'; drop table public.canary; --",
    "select pg_read_file('/etc/passwd')",
    "\r\nX-Injected: 1\r\n",
    "\u2019; drop table public.canary; --",  # a typographic quote, not a SQL one
]
JSON_PAYLOADS = [
    {"source": p} for p in PAYLOADS[:6]
] + [
    {PAYLOADS[0]: 1},
    {"a": {"b": [PAYLOADS[3], {"c": PAYLOADS[5]}]}},
    {"$ne": None, "source": {"$gt": ""}},
]  # fmt: skip
# A payload may be refused, but only as bad data: never as SQL syntax it became part of.
# 0A000: the job functions outside pg_cron's database (tested inside it below).
CLEAN_STATES = {"22023", "22P02", "42602", "42704", "54000", "22000", "38000", "0A000"}


@pytest.fixture
def target(conn):
    """A database with a canary table and a few documents."""
    conn.execute("create table public.canary (id integer)")
    conn.execute("insert into public.canary select generate_series(1, %s)", (CANARY_ROWS,))
    conn.execute("update pgseek.config set embedding_mode = 'off', embedding_dimensions = 3")
    conn.execute(
        "insert into pgseek.documents (content, metadata, embedding) values"
        " ('postgres vector search', '{\"source\": \"docs\"}', '[1, 0, 0]'),"
        " ('cron jobs and backups', '{\"source\": \"blog\"}', '[0, 1, 0]')"
    )
    return conn


def snapshot(conn) -> dict:
    """What an injected statement would change."""
    return {
        "canary": conn.execute("select count(*) from public.canary").fetchone()[0],
        "documents": conn.execute("select count(*) from pgseek.documents").fetchone()[0],
        "tables": conn.execute(
            "select count(*) from pg_class where relnamespace in"
            " ('pgseek'::regnamespace, 'public'::regnamespace)"
        ).fetchone()[0],
        "config": conn.execute(
            "select to_jsonb(c) - 'updated_at' from pgseek.config as c"
        ).fetchone()[0],
    }


def attempt(conn, sql: str, params) -> list | None:
    """Run one call; return its rows, or None after a clean refusal. Fails when the call
    took as long as an injected pg_sleep or failed with a syntax error."""
    started = time.monotonic()
    try:
        cursor = conn.execute(sql, params)
        rows = cursor.fetchall() if cursor.description else []
    except psycopg.Error as exc:
        assert exc.sqlstate in CLEAN_STATES, f"{exc.sqlstate}: {exc}"
        rows = None
    assert time.monotonic() - started < 2.5, "the call slept: a payload ran"
    return rows


TEXT_CALLS = [
    "select id from pgseek.hybrid_search(%(p)s, k => 5)",
    "select id from pgseek.hybrid_search(%(p)s, '[1,0,0]', mode => 'text')",
    "select id from pgseek.hybrid_search('postgres', '[1,0,0]', mode => %(p)s)",
    "select id from pgseek.hybrid_search('postgres', '[1,0,0]', language => %(p)s)",
    "select id from pgseek.hybrid_search(%(p)s, '[1,0,0]', language => 'simple', snippets => true)",
    "select id from pgseek.search_similar('[1,0,0]', metric => %(p)s)",
    "select * from pgseek.explain_search('[1,0,0]', metric => %(p)s)",
    "select pgseek.lexeme_query(%(p)s)",
    "select pgseek.any_term_query(%(p)s, 'simple')",
    "select * from pgseek.chunk_text(%(p)s)",
    "select pgseek.compute_embeddings(array[%(p)s], %(p)s)",
    "select pgseek.set_api_key(%(p)s, 'sk-x')",
    "select pgseek.job_id(%(p)s)",
    "select pgseek.pause_job(%(p)s)",
    "select pgseek.resume_job(%(p)s)",
    "select pgseek.unschedule_job(%(p)s)",
    "select pgseek.start_model_change(%(p)s, 'm', 8)",
    "select pgseek.start_model_change('local', %(p)s, 384)",
]


@pytest.mark.parametrize("call", TEXT_CALLS)
def test_text_payloads_are_data(target, call):
    before = snapshot(target)
    for payload in PAYLOADS:
        attempt(target, call, {"p": payload})
        assert snapshot(target) == before, payload


JSON_CALLS = [
    "select id from pgseek.search_similar('[1,0,0]', filter => %(j)s)",
    "select id from pgseek.hybrid_search('postgres', '[1,0,0]', filter => %(j)s)",
    "select * from pgseek.explain_search('[1,0,0]', filter => %(j)s)",
    "select pgseek.remove_retention(%(j)s)",
    "select pgseek.check_embedding_config(%(j)s)",
    "select pgseek.start_model_change('openai', 'm', 8, %(j)s)",
]


@pytest.mark.parametrize("call", JSON_CALLS)
def test_jsonb_payloads_are_data(target, call):
    before = snapshot(target)
    for payload in JSON_PAYLOADS:
        attempt(target, call, {"j": Jsonb(payload)})
        assert snapshot(target) == before, payload


def test_filters_match_payloads_literally(target):
    """A payload in metadata is found by a filter holding the same payload, and by
    nothing else: containment compares values, it never evaluates them."""
    for payload in PAYLOADS:
        target.execute(
            "insert into pgseek.documents (content, metadata, embedding)"
            " values ('payload row', %s, '[0, 0, 1]')",
            (Jsonb({"source": payload}),),
        )
    for payload in PAYLOADS:
        rows = target.execute(
            "select metadata->>'source' from pgseek.search_similar('[0,0,1]', k => 100,"
            " filter => %s)",
            (Jsonb({"source": payload}),),
        ).fetchall()
        assert rows == [(payload,)]


def test_stored_payloads_round_trip_byte_for_byte(target):
    before = snapshot(target)
    for payload in PAYLOADS:
        metadata = {"source": payload, payload: [payload]}
        source_id = target.execute(
            "select pgseek.ingest(%s, %s)", (payload + " some words", Jsonb(metadata))
        ).fetchone()[0]
        stored = target.execute(
            "select s.content, s.metadata, array_agg(d.metadata = s.metadata)"
            " from pgseek.sources as s join pgseek.documents as d on d.source_id = s.id"
            " where s.id = %s group by s.id",
            (source_id,),
        ).fetchone()
        assert stored[0] == payload + " some words"
        assert stored[1] == metadata and all(stored[2])
        policy = target.execute(
            "select pgseek.set_retention(%s, '1 day')", (Jsonb(metadata),)
        ).fetchone()[0]
        assert (
            target.execute(
                "select match from pgseek.retention_policies where id = %s", (policy,)
            ).fetchone()[0]
            == metadata
        )
        target.execute("select pgseek.set_api_key('openai', %s)", (payload,))
        assert (
            target.execute(
                "select api_key from pgseek.provider_secrets where provider = 'openai'"
            ).fetchone()[0]
            == payload
        )
    # No document is old enough for any policy: a purge with payload policies deletes none.
    assert target.execute("call pgseek.purge_expired()").fetchone()[0] == 0
    after = snapshot(target)
    assert after["canary"] == before["canary"] and after["tables"] == before["tables"]


@pytest.mark.parametrize("payload", ["a' | 'b", "a\\' | \\'b", "b' & 'b", "'b'", "a:* | b"])
def test_lexeme_query_matches_exactly_its_lexeme(target, payload):
    """The tsquery built from a lexeme is that lexeme alone: quotes and backslashes in it
    cannot close the quoted lexeme and add an operator."""
    matches_itself, matches_b, nodes = target.execute(
        "select array_to_tsvector(array[%(p)s]) @@ q, array_to_tsvector(array['b']) @@ q,"
        " numnode(q) from pgseek.lexeme_query(%(p)s) as q",
        {"p": payload},
    ).fetchone()
    assert (matches_itself, matches_b, nodes) == (True, False, 1)


@pytest.mark.parametrize(
    ("column", "payload"),
    [
        ("distance_metric", "cosine; drop table public.canary"),
        ("distance_metric", 'cosine" on public.canary; --'),
        ("vector_index", "hnsw using btree ((1)); drop table public.canary; --"),
        ("embedding_mode", "async'; drop table public.canary; --"),
    ],
)
def test_config_values_that_reach_dynamic_sql_are_constrained(target, column, payload):
    """Index names and DDL are built from config values: those columns only hold the
    known values, so no payload can reach vector_index_ddl() or finish_model_change()."""
    with pytest.raises(errors.CheckViolation):
        target.execute(f"update pgseek.config set {column} = %s", (payload,))
    statements = [r[0] for r in target.execute("select pgseek.vector_index_ddl()")]
    assert all("canary" not in s for s in statements)


def test_index_ddl_quotes_identifiers(target):
    """vector_index_ddl() names indexes with %I: its statements parse, and running them
    touches only pgseek's vector index."""
    target.execute("update pgseek.config set distance_metric = 'l2', hnsw_m = 8")
    before = snapshot(target)
    for (statement,) in target.execute("select pgseek.vector_index_ddl()").fetchall():
        assert statement.startswith(("create index concurrently", "drop index concurrently"))
        target.execute(statement)
    indexes = [
        r[0]
        for r in target.execute(
            "select indexname from pg_indexes where tablename = 'documents'"
            " and indexname like 'documents_embedding%'"
        )
    ]
    assert indexes == ["documents_embedding_3_hnsw_l2"]
    assert snapshot(target)["canary"] == before["canary"]


@pytest.fixture
def stub():
    server = OpenAIStub(dimensions=3)
    yield server
    server.close()


def test_provider_settings_cannot_inject_headers_or_request_fields(conn, stub):
    """The model name goes into the JSON body as a string, and an API key holding CR/LF
    is refused before any request: no header or field can be smuggled to the provider."""
    payload = '", "input": ["smuggled"], "x": "'
    conn.execute(
        "update pgseek.config set embedding_provider = 'openai', embedding_model = %s,"
        " embedding_dimensions = 3, embedding_options = %s",
        (payload, Jsonb({"base_url": stub.base_url, "timeout": 2})),
    )
    conn.execute("select pgseek.set_api_key('openai', 'sk-good', %s)", (stub.base_url,))
    conn.execute("insert into pgseek.documents (content) values ('one text')")
    assert conn.execute("select pgseek.process_embedding_queue()").fetchone()[0] == 1
    assert stub.requests[-1]["body"]["model"] == payload
    assert stub.requests[-1]["body"]["input"] == ["one text"]
    requests = len(stub.requests)
    conn.execute(
        "select pgseek.set_api_key('openai', %s, %s)", ("sk-x\r\nX-Injected: 1", stub.base_url)
    )
    with pytest.raises(errors.InvalidParameterValue, match="api_key must be printable ASCII"):
        conn.execute("select pgseek.embed('query text')")
    assert len(stub.requests) == requests  # refused before sending
    assert json.dumps(stub.requests).count("X-Injected") == 0


@pytest.fixture(scope="module")
def cron_conn(server, template_db):  # noqa: ARG001 (after it: pg_cron#362, test_cron_jobs)
    """The cron database (cron.database_name) of a cluster this session started, migrated."""
    if not server.owned:
        pytest.skip("runs only on the test session's own cluster (it migrates the cron database)")
    from pgtest import run_migrate, with_dbname

    result = run_migrate(with_dbname(server.url, server.cron_database), "upgrade")
    assert result.returncode == 0, result.stderr
    with server.connect(server.cron_database) as conn:
        # scheduled here, not left to the migration: an earlier module may have
        # unscheduled them, and a migration already at head does not schedule again
        conn.execute("select pgseek.schedule_jobs()")
        yield conn
        conn.execute("select cron.unschedule(jobid) from cron.job where jobname like 'pgseek-%'")


@pytest.mark.parametrize("function", ["job_id", "pause_job", "resume_job", "unschedule_job"])
def test_job_name_payloads_match_no_job(cron_conn, function):
    """Where pg_cron runs, a payload job name is compared, as a value, with job names."""
    jobs = cron_conn.execute("select jobid, jobname, schedule, command, active from cron.job")
    before = sorted(jobs.fetchall())
    assert before, "schedule_jobs() ran"
    for payload in PAYLOADS:
        with pytest.raises(errors.UndefinedObject, match="no pgseek job named"):
            cron_conn.execute(f"select pgseek.{function}(%s)", (payload,))
    after = cron_conn.execute("select jobid, jobname, schedule, command, active from cron.job")
    assert sorted(after.fetchall()) == before
