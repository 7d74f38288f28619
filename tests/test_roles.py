"""Roles: log in as a member of pgseek_reader, pgseek_writer and pgseek_admin (and as a
login with no pgseek role) and prove each can do its job and nothing more.

Every denial is PostgreSQL's own: SQLSTATE 42501 (insufficient_privilege) with the
object named in the message.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgtest import ROOT, as_url, ephemeral_cluster, run_migrate, with_dbname

ROLES = ("pgseek_reader", "pgseek_writer", "pgseek_admin")

# Routines no role is granted: called by pgseek itself (triggers, pg_cron's jobs as the
# installing role, other pgseek functions running as their owner) or by monitoring.
INTERNAL_ROUTINES = {
    "documents_check_embedding",
    "documents_touch_updated_at",
    "documents_embed_sync",
    "documents_queue_inserted",
    "documents_queue_updated",
    "documents_postings_changed",
    "documents_postings_truncated",
    "config_nearest_changed",
    "config_mode_changed",
    "write_nearest_indexed",
    "job_id",
    "one_shot_schedule",
    "advance_maintenance",
    "clean_cron_history",
    # pg_monitor's (sql/120-metrics.sql)
    "document_counts",
    "job_metrics_report",
    "dead_purge_runs",
}


@dataclass
class Login:
    """A LOGIN role made for one test, member of one pgseek role (or of none)."""

    name: str
    url: str

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True)


def login_url(url: str, user: str, password: str) -> str:
    params = conninfo_to_dict(url)
    params.update(user=user, password=password)
    return make_conninfo(**params)


@pytest.fixture
def make_login(server, db) -> Iterator[Callable[[str | None], Login]]:
    """Creates LOGIN roles (member of the given pgseek role) and drops them afterwards."""
    made: list[str] = []

    def make(member_of: str | None) -> Login:
        name = f"pgseek_test_{member_of or 'public'}_{secrets.token_hex(4)}"
        password = secrets.token_hex(12)
        with server.connect() as c:
            c.execute(f"create role {name} login password '{password}'")
            if member_of:
                c.execute(f"grant {member_of} to {name}")
        made.append(name)
        return Login(name, login_url(db.url, name, password))

    yield make
    with server.connect() as c:
        for name in made:
            c.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity where usename = %s",
                (name,),
            )
            c.execute(f"drop role if exists {name}")


def denied(conn: psycopg.Connection, sql: str, message: str, params=None) -> None:
    """Asserts that sql fails with 42501 and a message matching `message`."""
    with pytest.raises(errors.InsufficientPrivilege) as caught:
        conn.execute(sql, params)
    assert caught.value.sqlstate == "42501"
    assert re.search(message, str(caught.value)), str(caught.value)


@pytest.fixture
def corpus(conn) -> list[str]:
    """Three documents with embeddings from the local model."""
    texts = [
        "PostgreSQL vacuum reclaims storage occupied by dead tuples",
        "The HNSW index answers approximate nearest neighbour queries",
        "Bread is baked from flour, water, salt and yeast",
    ]
    conn.execute(
        "insert into pgseek.documents (content, metadata, embedding)"
        " select t, jsonb_build_object('n', n), pgseek.embed(t)"
        " from unnest(%s::text[]) with ordinality as u (t, n)",
        (texts,),
    )
    conn.execute("select pgseek.refresh_text_stats()")
    return texts


def test_roles_are_nologin_group_roles_in_a_chain(conn):
    rows = conn.execute(
        "select rolname, rolcanlogin, rolsuper, rolbypassrls from pg_roles"
        " where rolname like 'pgseek\\_%%' and rolname = any(%s) order by rolname",
        (list(ROLES),),
    ).fetchall()
    assert rows == [(r, False, False, False) for r in sorted(ROLES)]
    chain = conn.execute(
        "select pg_has_role('pgseek_admin', 'pgseek_writer', 'member'),"
        " pg_has_role('pgseek_writer', 'pgseek_reader', 'member'),"
        " pg_has_role('pgseek_reader', 'pgseek_writer', 'member')"
    ).fetchone()
    assert chain == (True, True, False)


def test_reader_searches_by_vector_and_by_text(make_login, corpus):
    with make_login("pgseek_reader").connect() as c:
        rows = c.execute(
            "select content, rank from pgseek.search_similar(pgseek.embed('dead tuples'), k => 2)"
        ).fetchall()
        assert rows[0] == (corpus[0], 1)
        # query_embedding NULL: embedded in the database, through the PL/Python model
        # and the query cache (a SECURITY DEFINER write the reader cannot do itself).
        hits = c.execute(
            "select content, vector_rank, text_rank"
            " from pgseek.hybrid_search('nearest neighbour index')"
        ).fetchall()
        assert hits[0][0] == corpus[1] and hits[0][1] == 1 and hits[0][2] == 1
        filtered = c.execute(
            "select content from pgseek.hybrid_search('flour', filter => '{\"n\": 3}')"
        ).fetchall()
        assert filtered == [(corpus[2],)]
        assert c.execute("select queries from pgseek.check_recall(2, 2)").fetchone()[0] == 2
        assert c.execute("select count(*) from pgseek.documents").fetchone()[0] == 3


@pytest.mark.usefixtures("corpus")
def test_reader_cannot_write_rows(make_login):
    with make_login("pgseek_reader").connect() as c:
        denied(c, "insert into pgseek.documents (content) values ('x')", "table documents")
        denied(c, "update pgseek.documents set content = 'x'", "table documents")
        denied(c, "delete from pgseek.documents", "table documents")
        denied(c, "select pgseek.ingest('some long text')", "function ingest")
        denied(c, "delete from pgseek.sources", "table sources")
        denied(c, "delete from pgseek.query_embeddings", "table query_embeddings")
        denied(c, "insert into pgseek.text_stats values ('x', 1)", "table text_stats")
        denied(c, "select pgseek.refresh_text_stats()", "function refresh_text_stats")


def test_reader_cannot_change_the_provider_or_its_url(make_login):
    with make_login("pgseek_reader").connect() as c:
        # The server-side request forgery a writable config would allow.
        denied(
            c,
            "update pgseek.config set embedding_provider = 'openai',"
            ' embedding_options = \'{"base_url": "http://169.254.169.254/"}\'',
            "table config",
        )
        denied(
            c,
            "select pgseek.start_model_change('openai', 'text-embedding-3-small', 1536,"
            ' \'{"base_url": "http://127.0.0.1:1/"}\')',
            "function start_model_change",
        )
        denied(c, "select pgseek.set_api_key('openai', 'sk-x')", "function set_api_key")
        denied(
            c,
            "select pgseek.compute_embeddings(array['x'])",
            "function compute_embeddings",
        )


@pytest.mark.parametrize("role", ROLES)
def test_no_role_can_read_the_api_key(conn, make_login, role):
    conn.execute("select pgseek.set_api_key('openai', 'sk-secret-key')")
    with make_login(role).connect() as c:
        denied(c, "select api_key from pgseek.provider_secrets", "table provider_secrets")
        denied(c, "select count(*) from pgseek.provider_secrets", "table provider_secrets")


def test_reader_and_writer_cannot_schedule_jobs_or_run_maintenance(make_login):
    for role in ("pgseek_reader", "pgseek_writer"):
        with make_login(role).connect() as c:
            denied(c, "select pgseek.schedule_jobs()", "function schedule_jobs")
            denied(c, "select pgseek.pause_job('pgseek-purge')", "function pause_job")
            denied(c, "select * from pgseek.jobs()", "function jobs")
            denied(c, "call pgseek.purge_expired()", "procedure purge_expired")
            denied(c, "select pgseek.set_retention('{\"a\": 1}')", "function set_retention")
            denied(c, "call pgseek.run_embedding_worker(0)", "procedure run_embedding_worker")
            denied(c, "select pgseek.process_embedding_queue()", "function process_embedding_queue")
            denied(c, "select * from pgseek.embedding_status", "view embedding_status")
            denied(c, "select pgseek.vector_index_ddl()", "function vector_index_ddl")
            denied(c, "select pgseek.explain_search(pgseek.embed('x'))", "function explain_search")
            denied(c, "select pgseek.set_tenants(true)", "function set_tenants")


@pytest.mark.usefixtures("corpus")
def test_writer_stores_documents_and_ingests(make_login):
    with make_login("pgseek_writer").connect() as c:
        doc = c.execute(
            "insert into pgseek.documents (content) values ('a writer''s note') returning id"
        ).fetchone()[0]
        c.execute("update pgseek.documents set metadata = '{\"k\": 1}' where id = %s", (doc,))
        c.execute("update pgseek.documents set content = 'edited note' where id = %s", (doc,))
        source = c.execute(
            "select pgseek.ingest(repeat('A paragraph about retrieval. ', 400), '{\"book\": 1}')"
        ).fetchone()[0]
        chunks = c.execute(
            "select count(*) from pgseek.documents where source_id = %s", (source,)
        ).fetchone()[0]
        assert chunks > 1
        # Writers search too (they are readers).
        assert c.execute("select count(*) from pgseek.hybrid_search('bread')").fetchone()[0] >= 1
        c.execute("delete from pgseek.sources where id = %s", (source,))
        c.execute("delete from pgseek.documents where id = %s", (doc,))
        # The queue triggers ran as their owner: the writer itself cannot see the queue.
        denied(c, "select * from pgseek.embedding_queue", "table embedding_queue")
        denied(c, "select * from pgseek.embedding_dead_letter", "table embedding_dead_letter")
        denied(
            c,
            "insert into pgseek.embedding_queue (document_id, content_hash)"
            " values (gen_random_uuid(), '\\x00')",
            "table embedding_queue",
        )


def test_writes_by_a_writer_are_queued_for_embedding(conn, make_login):
    with make_login("pgseek_writer").connect() as c:
        doc = c.execute(
            "insert into pgseek.documents (content) values ('queue me') returning id"
        ).fetchone()[0]
    queued = conn.execute(
        "select count(*) from pgseek.embedding_queue where document_id = %s", (doc,)
    ).fetchone()[0]
    assert queued == 1


def test_sync_mode_embeds_a_writers_rows(conn, make_login):
    conn.execute("update pgseek.config set embedding_mode = 'sync'")
    with make_login("pgseek_writer").connect() as c:
        doc = c.execute(
            "insert into pgseek.documents (content) values ('embedded at once') returning id"
        ).fetchone()[0]
        embedded = c.execute(
            "select embedding is not null from pgseek.documents where id = %s", (doc,)
        ).fetchone()[0]
    assert embedded


def test_writer_cannot_configure(make_login):
    with make_login("pgseek_writer").connect() as c:
        denied(c, "update pgseek.config set ef_search = 200", "table config")
        denied(c, "select pgseek.set_api_key('openai', 'sk-x')", "function set_api_key")
        denied(c, "select pgseek.finish_model_change()", "function finish_model_change")
        denied(
            c,
            "insert into pgseek.retention_policies (match, keep) values ('{\"a\": 1}', '1 day')",
            "table retention_policies",
        )
        denied(c, "select pgseek.requeue_failed()", "function requeue_failed")


@pytest.mark.usefixtures("corpus")
def test_admin_configures_and_operates(conn, make_login):
    with make_login("pgseek_admin").connect() as c:
        c.execute("update pgseek.config set ef_search = 120")
        c.execute("select pgseek.set_api_key('openai', 'sk-admin-key')")
        policy = c.execute("select pgseek.set_retention('{\"n\": 3}', '1 day')").fetchone()[0]
        assert policy is not None
        conn.execute("update pgseek.documents set created_at = now() - interval '2 days'")
        deleted = c.execute("call pgseek.purge_expired()").fetchone()[0]
        assert deleted == 1
        assert c.execute("select status from pgseek.purge_log").fetchone()[0] == "finished"
        assert c.execute("select pgseek.remove_retention('{\"n\": 3}')").fetchone()[0] is True
        assert c.execute("select pgseek.refresh_text_stats()").fetchone()[0] > 0
        status = c.execute("select documents, queued from pgseek.embedding_status").fetchone()
        assert status == (2, 0)
        c.execute("select pgseek.requeue_failed()")
        assert c.execute("select pgseek.vector_index_ddl()").fetchall() == []
        plan = [r[0] for r in c.execute("select pgseek.explain_search(pgseek.embed('vacuum'))")]
        assert plan[0].startswith("-- ")
        queued = c.execute(
            "select pgseek.start_model_change('local', 'all-MiniLM-L6-v2', 384,"
            " '{\"batch_size\": 16}')"
        ).fetchone()[0]
        assert queued == 2
        assert (
            c.execute("select pgseek.cancel_model_change()").fetchone()[0].startswith("cancelled")
        )
    stored = conn.execute("select api_key from pgseek.provider_secrets").fetchone()[0]
    assert stored == "sk-admin-key"


@pytest.mark.usefixtures("corpus")
def test_admin_finishes_a_model_change_it_does_not_own_the_table_for(conn, make_login):
    conn.execute("update pgseek.config set vector_index = 'none'")
    with make_login("pgseek_admin").connect() as c:
        c.execute(
            "select pgseek.start_model_change('local', 'all-MiniLM-L6-v2', 384,"
            " '{\"batch_size\": 16}')"
        )
        c.execute("select pgseek.process_embedding_queue(100)")
        summary = c.execute("select pgseek.finish_model_change()").fetchone()[0]
        assert summary.startswith("now embedding with local")


@pytest.fixture(scope="module")
def cron_db(server, template_db) -> str:  # noqa: ARG001 (after it: pg_cron#362)
    if not server.owned:
        pytest.skip("runs only on the test session's own cluster (it migrates the cron database)")
    result = run_migrate(with_dbname(server.url, server.cron_database), "upgrade")
    assert result.returncode == 0, result.stderr
    return server.cron_database


def test_admin_schedules_pauses_and_resumes_jobs_that_run_as_the_owner(server, cron_db):
    password = secrets.token_hex(12)
    name = f"pgseek_test_admin_{secrets.token_hex(4)}"
    with server.connect() as c:
        c.execute(f"create role {name} login password '{password}' in role pgseek_admin")
    try:
        url = login_url(with_dbname(server.url, cron_db), name, password)
        with psycopg.connect(url, autocommit=True) as c:
            jobs = c.execute("select job_name from pgseek.schedule_jobs()").fetchall()
            assert ("pgseek-embedding-worker",) in jobs
            c.execute("select pgseek.pause_job('pgseek-text-stats')")
            active = "select active from pgseek.jobs() where job_name = 'pgseek-text-stats'"
            assert c.execute(active).fetchone()[0] is False
            c.execute("select pgseek.resume_job('pgseek-text-stats')")
            assert c.execute(active).fetchone()[0] is True
            assert c.execute("select pgseek.reload_jobs()").fetchone()[0] is True
            assert c.execute(active).fetchone()[0] is True
            # Only pgseek's own jobs: not another job of this database.
            with server.connect(cron_db) as owner:
                owner.execute("select cron.schedule('someone-elses-job', '0 0 1 1 *', 'select 1')")
            try:
                with pytest.raises(errors.UndefinedObject, match="no pgseek job named"):
                    c.execute("select pgseek.pause_job('someone-elses-job')")
            finally:
                with server.connect(cron_db) as owner:
                    owner.execute("select cron.unschedule('someone-elses-job')")
            # pg_cron itself stays closed to the admin.
            denied(c, "select cron.schedule('x', '* * * * *', 'select 1')", "schema cron")
        with server.connect(cron_db) as owner:
            owners = owner.execute(
                "select distinct username from cron.job where jobname like 'pgseek-%'"
            ).fetchall()
            assert owners == [(conninfo_to_dict(server.url)["user"],)]
    finally:
        with server.connect() as c:
            c.execute(f"drop role {name}")


def test_admin_cannot_read_or_bypass_the_key_table(make_login):
    with make_login("pgseek_admin").connect() as c:
        denied(c, "select * from pgseek.provider_secrets", "table provider_secrets")
        denied(c, "delete from pgseek.provider_secrets", "table provider_secrets")


def test_admin_reads_and_prunes_the_query_cache_but_cannot_plant_vectors(make_login):
    """Every tenant's searches read the query-embedding cache: only embed() writes it."""
    with make_login("pgseek_admin").connect() as c:
        c.execute("select pgseek.embed('cached by the admin')")
        assert c.execute("select count(*) from pgseek.query_embeddings").fetchone()[0] == 1
        denied(
            c,
            "insert into pgseek.query_embeddings (model, text_hash, embedding)"
            " values ('m', '\\x01', '[1,2]')",
            "table query_embeddings",
        )
        denied(c, "update pgseek.query_embeddings set embedding = embedding", "table")
        assert c.execute("delete from pgseek.query_embeddings").rowcount == 1


@pytest.mark.usefixtures("corpus")
def test_a_login_without_a_pgseek_role_gets_nothing(make_login):
    with make_login(None).connect() as c:
        for sql in (
            "select * from pgseek.documents",
            "select * from pgseek.hybrid_search('vacuum')",
            "select pgseek.embed('vacuum')",
            "select * from pgseek.config",
            "call pgseek.purge_expired()",
        ):
            denied(c, sql, "schema pgseek")


def test_public_has_no_privilege_on_any_pgseek_object(conn):
    public_grants = conn.execute(
        """
        select p.oid::regprocedure::text from pg_proc as p, aclexplode(p.proacl) as a
        where p.pronamespace = 'pgseek'::regnamespace and a.grantee = 0
        union all
        select c.oid::regclass::text from pg_class as c, aclexplode(c.relacl) as a
        where c.relnamespace = 'pgseek'::regnamespace and a.grantee = 0
        union all
        select n.nspname from pg_namespace as n, aclexplode(n.nspacl) as a
        where n.nspname = 'pgseek' and a.grantee = 0
        """
    ).fetchall()
    assert public_grants == []
    # A NULL ACL means the built-in default, which for a function is EXECUTE to PUBLIC.
    defaults = conn.execute(
        "select p.oid::regprocedure::text from pg_proc p"
        " where p.pronamespace = 'pgseek'::regnamespace and p.proacl is null"
    ).fetchall()
    assert defaults == []


def test_every_routine_is_granted_to_a_role_or_known_internal(conn):
    rows = conn.execute(
        """
        select p.proname, array_remove(array_agg(distinct r.rolname::text), null)
        from pg_proc as p
        left join lateral aclexplode(p.proacl) as a on true
        left join pg_roles as r on a.grantee = r.oid and r.rolname like 'pgseek\\_%%'
        where p.pronamespace = 'pgseek'::regnamespace
        group by p.proname
        """
    ).fetchall()
    ungranted = {name for name, roles in rows if not roles}
    assert ungranted == INTERNAL_ROUTINES & {name for name, _ in rows}


def test_security_definer_functions_pin_search_path_and_say_why(conn):
    rows = conn.execute(
        "select p.proname, p.proconfig from pg_proc p"
        " where p.pronamespace = 'pgseek'::regnamespace and p.prosecdef order by 1"
    ).fetchall()
    assert {r[0] for r in rows} >= {
        "embed",
        "compute_embeddings",
        "process_embedding_queue",
        "set_api_key",
        "documents_queue_inserted",
        "documents_queue_updated",
        "finish_model_change",
        "schedule_jobs",
        "schedule_purge_maintenance",
    }
    sources = "\n".join(p.read_text() for p in sorted((ROOT / "sql").glob("*.sql")))
    for name, config in rows:
        path = next(c for c in config or [] if c.startswith("search_path="))
        schemas = [s.strip() for s in path.removeprefix("search_path=").split(",")]
        assert schemas[0] == "pg_catalog" and schemas[-1] == "pg_temp", (name, schemas)
        # The reason: "SECURITY DEFINER" in the comment above the function, or in the
        # file's header that covers it by name.
        header = re.search(
            rf"((?:--[^\n]*\n)+)create or replace function pgseek\.{name}\(", sources
        )
        file_of = next(
            p.read_text()
            for p in (ROOT / "sql").glob("*.sql")
            if f"function pgseek.{name}(" in p.read_text()
        )
        file_header = re.match(r"((?:--[^\n]*\n)+)", file_of).group(1)
        assert (header and "SECURITY DEFINER" in header.group(1)) or (
            "SECURITY DEFINER" in file_header
            and (name in file_header or "embedding functions" in file_header)
        ), name


def test_a_future_routine_is_not_executable_by_public(empty_db, tmp_path):
    """What a later sql/ file creates gets no PUBLIC grant (985 runs after it)."""
    shutil.copytree(
        ROOT / "migrations", tmp_path / "migrations", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(ROOT / "sql", tmp_path / "sql")
    (tmp_path / "sql" / "500-extra.sql").write_text(
        "create or replace function pgseek.extra() returns int language sql"
        " immutable as $$ select 1 $$;\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "alembic",
            "-c",
            str(tmp_path / "migrations" / "alembic.ini"),
            "upgrade",
            "head",
        ],
        env={**os.environ, "DATABASE_URL": as_url(empty_db.url)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    with empty_db.connect() as c:
        acl = c.execute(
            "select proacl is not null,"
            " exists (select from aclexplode(proacl) as a where a.grantee = 0)"
            " from pg_proc where proname = 'extra'"
        ).fetchone()
    assert acl == (True, False)  # not the default (PUBLIC may execute), no PUBLIC entry


def dump_privileges(url: str) -> list[str]:
    with psycopg.connect(url) as c:
        return [
            r[0]
            for r in c.execute(
                """
                select format('%s %s %s', c.oid::regclass, a.grantee::regrole, a.privilege_type)
                from pg_class c, aclexplode(c.relacl) a
                where c.relnamespace = 'pgseek'::regnamespace and a.grantee <> c.relowner
                union all
                select format('%s %s %s', p.oid::regprocedure, a.grantee::regrole, a.privilege_type)
                from pg_proc p, aclexplode(p.proacl) a
                where p.pronamespace = 'pgseek'::regnamespace and a.grantee <> p.proowner
                union all
                select format('schema %s %s', a.grantee::regrole, a.privilege_type)
                from pg_namespace n, aclexplode(n.nspacl) a
                where n.nspname = 'pgseek' and a.grantee <> n.nspowner
                order by 1
                """
            )
        ]


def test_downgrade_takes_the_grants_and_keeps_roles_other_databases_use(empty_db):
    assert run_migrate(empty_db.url, "upgrade").returncode == 0
    granted = dump_privileges(empty_db.url)
    assert any("pgseek_reader" in g for g in granted)
    result = run_migrate(empty_db.url, "downgrade", "0006")
    assert result.returncode == 0, result.stderr
    # The test session's template database still grants to them: they stay (with a
    # NOTICE naming it), but this database grants them nothing any more.
    assert not [g for g in dump_privileges(empty_db.url) if "pgseek_" in g.split()[1]]
    with empty_db.connect() as c:
        assert (
            c.execute(
                "select count(*) from pg_roles where rolname = any(%s)", (list(ROLES),)
            ).fetchone()[0]
            == 3
        )
    assert run_migrate(empty_db.url, "upgrade").returncode == 0
    assert dump_privileges(empty_db.url) == granted


def test_downgrade_keeps_roles_granted_to_logins(server, empty_db, make_login):
    """Dropping a role would silently take it from its members."""
    assert run_migrate(empty_db.url, "upgrade").returncode == 0
    member = make_login("pgseek_reader")
    with server.connect() as c:
        granted_to = c.execute(
            "select pg_has_role(%s, 'pgseek_reader', 'member')", (member.name,)
        ).fetchone()[0]
    assert granted_to
    result = run_migrate(empty_db.url, "downgrade", "0006")
    assert result.returncode == 0, result.stderr
    with server.connect() as c:
        still = c.execute(
            "select pg_has_role(%s, 'pgseek_reader', 'member')", (member.name,)
        ).fetchone()[0]
    assert still


@pytest.mark.slow
def test_downgrade_drops_the_roles_only_when_nothing_else_uses_them():
    """On a server of its own (roles are server-wide): kept while a login is a member,
    dropped once nothing uses them, created again by the next upgrade."""
    with ephemeral_cluster("pgseek-roles-") as cluster:
        url = cluster.url

        def roles() -> int:
            with psycopg.connect(url) as c:
                return c.execute(
                    "select count(*) from pg_roles where rolname = any(%s)", (list(ROLES),)
                ).fetchone()[0]

        assert run_migrate(url, "upgrade").returncode == 0
        assert roles() == 3
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("create role app_user login in role pgseek_reader")
        assert run_migrate(url, "downgrade", "0006").returncode == 0
        assert roles() == 3  # app_user keeps its membership
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("drop role app_user")
        assert run_migrate(url, "upgrade").returncode == 0
        result = run_migrate(url, "downgrade", "0006")
        assert result.returncode == 0, result.stderr
        assert roles() == 0
        assert run_migrate(url, "upgrade").returncode == 0
        assert roles() == 3


def test_pgspot_check_flags_an_unpinned_security_definer_function(tmp_path):
    """`make lint` runs scripts/pgspot_check.py: it must fail on the real thing."""
    bad = tmp_path / "bad.sql"
    bad.write_text(
        "create or replace function pgseek.leak() returns text language plpgsql\n"
        "security definer as $$ begin return 'x'; end $$;\n"
    )
    good = tmp_path / "good.sql"
    good.write_text(
        "create or replace function pgseek.fine() returns text language plpgsql\n"
        "security definer set search_path = pg_catalog, pgseek, pg_temp\n"
        "as $$ begin return 'x' || 'y'; end $$;\n"
    )
    script = str(ROOT / "scripts" / "pgspot_check.py")
    flagged = subprocess.run([sys.executable, script, str(bad)], capture_output=True, text=True)
    assert flagged.returncode == 1 and "PS003" in flagged.stdout, flagged.stdout
    clean = subprocess.run([sys.executable, script, str(good)], capture_output=True, text=True)
    assert clean.returncode == 0, clean.stdout
