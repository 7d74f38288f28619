"""Versioned migrations: round trip, lock, edit guards, no-transaction sections, --sql."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict

import checksums
from pgtest import ROOT, as_url, run_migrate
from sqlfile import Section, check_section, check_sections, split_sections

REVISIONS = [m.name.split("_")[0] for m in checksums.revision_modules()]
HEAD = REVISIONS[-1]
PG_DUMP = f"/usr/lib/postgresql/{os.environ.get('PGSEEK_PG_MAJOR', '15')}/bin/pg_dump"


def schema_dump(url: str) -> str:
    """pgseek's catalog, as pg_dump prints it (the pgseek and pgseek_meta schemas)."""
    out = subprocess.run(
        [PG_DUMP, "--schema-only", "--no-owner", "-n", "pgseek", "-n", "pgseek_meta", as_url(url)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # \restrict lines carry a random key per dump (pg_dump 15.14+); version lines vary too.
    volatile = ("-- Dumped", "\\restrict", "\\unrestrict")
    return "\n".join(line for line in out.splitlines() if not line.startswith(volatile))


def revision(url: str) -> str | None:
    with psycopg.connect(url) as c:
        exists = c.execute("select to_regclass('pgseek_meta.alembic_version')").fetchone()[0]
        if not exists:
            return None
        row = c.execute("select version_num from pgseek_meta.alembic_version").fetchone()
        return row[0] if row else None


def test_upgrade_downgrade_upgrade_leaves_an_identical_schema(empty_db):
    assert run_migrate(empty_db.url, "upgrade").returncode == 0
    first = schema_dump(empty_db.url)
    assert "CREATE TABLE pgseek.documents" in first
    assert revision(empty_db.url) == HEAD

    result = run_migrate(empty_db.url, "downgrade", "base")
    assert result.returncode == 0, result.stderr
    assert revision(empty_db.url) is None
    with empty_db.connect() as c:
        assert c.execute("select to_regnamespace('pgseek')").fetchone()[0] is None

    assert run_migrate(empty_db.url, "upgrade").returncode == 0
    assert schema_dump(empty_db.url) == first


def test_each_revision_downgrades_one_step_at_a_time(empty_db):
    assert run_migrate(empty_db.url, "upgrade").returncode == 0
    modules = checksums.revision_modules()
    older = [m.name.split("_")[0] for m in reversed(modules)][1:]
    for expected in [*older, None]:
        result = run_migrate(empty_db.url, "downgrade")
        assert result.returncode == 0, result.stderr
        assert revision(empty_db.url) == expected


def test_rollback_of_the_vector_index_and_back(empty_db):
    assert run_migrate(empty_db.url, "upgrade").returncode == 0
    assert run_migrate(empty_db.url, "downgrade", "0001").returncode == 0
    with empty_db.connect() as c:
        assert (
            c.execute(
                "select to_regclass('pgseek.documents_embedding_384_hnsw_cosine')"
            ).fetchone()[0]
            is None
        )
        # Below head the repeatable objects are forgotten, so reaching head re-applies them.
        applied = c.execute("select count(*) from pgseek_meta.repeatable_objects").fetchone()
        assert applied[0] == 0
    result = run_migrate(empty_db.url, "upgrade")
    assert result.returncode == 0
    assert "applied sql/" in result.stderr


def test_migrate_twice_is_a_no_op(empty_db):
    assert run_migrate(empty_db.url, "upgrade").returncode == 0
    second = run_migrate(empty_db.url, "upgrade")
    assert second.returncode == 0
    assert "Running upgrade" not in second.stderr
    assert "applied sql/" not in second.stderr


def test_changed_repeatable_objects_are_reapplied(empty_db, tmp_path):
    copy = copy_migrations(tmp_path)
    assert alembic(copy, empty_db.url, "upgrade", "head").returncode == 0
    sql_file = copy.parent / "sql" / "010-documents.sql"
    sql_file.write_text(
        sql_file.read_text()
        + "\ncomment on function pgseek.documents_touch_updated_at() is 'changed';\n"
    )
    result = alembic(copy, empty_db.url, "upgrade", "head")
    assert result.returncode == 0, result.stderr
    assert "changed: 010-documents.sql" in result.stderr
    with empty_db.connect() as c:
        comment = c.execute(
            "select obj_description('pgseek.documents_touch_updated_at'::regproc)"
        ).fetchone()[0]
    assert comment == "changed"


def test_concurrent_migrations_do_not_interleave(empty_db):
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "migrate.py"), "upgrade"],
            env={**os.environ, "DATABASE_URL": as_url(empty_db.url)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    # Exactly one of them ran the revisions; the others found the database at head.
    ran = [err for _, err in outputs if "Running upgrade  -> 0001" in err]
    assert len(ran) == 1
    assert revision(empty_db.url) == HEAD


def hold_migration_lock(url: str) -> psycopg.Connection:
    conn = psycopg.connect(url, autocommit=True, application_name="test-lock-holder")
    conn.execute("select pg_advisory_lock(hashtextextended('pgseek.migrate', 0))")
    return conn


def test_a_second_migrator_fails_clearly_when_the_lock_is_held(empty_db):
    holder = hold_migration_lock(empty_db.url)
    try:
        started = time.monotonic()
        result = run_migrate(empty_db.url, "upgrade", PGSEEK_MIGRATE_LOCK_TIMEOUT="2")
        assert result.returncode != 0
        assert time.monotonic() - started < 30
        assert "another migration is running" in result.stderr
        assert "test-lock-holder" in result.stderr
        assert revision(empty_db.url) is None
    finally:
        holder.close()


def test_a_second_migrator_waits_for_the_lock(empty_db):
    holder = hold_migration_lock(empty_db.url)
    threading.Timer(2.0, holder.close).start()
    result = run_migrate(empty_db.url, "upgrade", PGSEEK_MIGRATE_LOCK_TIMEOUT="60")
    assert result.returncode == 0, result.stderr
    assert "waiting for another migration" in result.stderr
    assert revision(empty_db.url) == HEAD


def test_released_migrations_match_frozen_txt():
    assert checksums.frozen_mismatches() == []
    assert set(checksums.read_frozen()) <= {m.name for m in checksums.revision_modules()}


def test_frozen_txt_detects_an_edit(tmp_path, monkeypatch):
    copy = copy_migrations(tmp_path)
    monkeypatch.setattr(checksums, "VERSIONS", copy / "versions")
    monkeypatch.setattr(checksums, "FROZEN", copy / "frozen.txt")
    checksums.freeze()
    assert checksums.frozen_mismatches() == []
    target = copy / "versions" / "0001_core_schema.upgrade.sql"
    target.write_text(target.read_text() + "\n-- an innocent-looking comment\n")
    assert checksums.frozen_mismatches() == [
        "0001_core_schema.py: edited after release (checksum differs from frozen.txt)"
    ]


def copy_migrations(tmp_path: Path) -> Path:
    """A private copy of migrations/ and sql/ that a test may edit."""
    shutil.copytree(
        ROOT / "migrations", tmp_path / "migrations", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(ROOT / "sql", tmp_path / "sql")
    return tmp_path / "migrations"


def alembic(migrations: Path, url: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(migrations / "alembic.ini"), *args],
        env={**os.environ, "DATABASE_URL": as_url(url), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_editing_an_applied_migration_stops_the_next_run(empty_db, tmp_path):
    copy = copy_migrations(tmp_path)
    assert alembic(copy, empty_db.url, "upgrade", "head").returncode == 0
    target = copy / "versions" / "0001_core_schema.upgrade.sql"
    target.write_text(target.read_text().replace("'{}'", "'{\"edited\": true}'"))
    result = alembic(copy, empty_db.url, "upgrade", "head")
    assert result.returncode != 0
    assert "revision 0001 (0001_core_schema.py) was edited after it was applied" in result.stderr


def write_revision(
    copy: Path, number: str, down: str, upgrade_sql: str, downgrade_sql: str
) -> None:
    module = (copy / "versions" / "0002_vector_index.py").read_text()
    module = module.replace('revision = "0002"', f'revision = "{number}"')
    module = module.replace('down_revision = "0001"', f'down_revision = "{down}"')
    assert f'down_revision = "{down}"' in module
    (copy / "versions" / f"{number}_test.py").write_text(module)
    (copy / "versions" / f"{number}_test.upgrade.sql").write_text(upgrade_sql)
    (copy / "versions" / f"{number}_test.downgrade.sql").write_text(downgrade_sql)


# A revision with a no-transaction section between two transactional ones.
MIXED_REVISION = (
    "create table pgseek.t (x int);\n"
    "--! no-transaction\n"
    "drop index concurrently if exists pgseek.t_x_idx;\n"
    "create index concurrently t_x_idx on pgseek.t (x);\n"
    "--! transaction\n"
    "insert into pgseek.t values (1);\n"
)


def test_no_transaction_section_runs_create_index_concurrently(empty_db, tmp_path):
    copy = copy_migrations(tmp_path)
    write_revision(
        copy,
        "0900",
        HEAD,
        MIXED_REVISION,
        "drop table pgseek.t;\n",
    )
    result = alembic(copy, empty_db.url, "upgrade", "head")
    assert result.returncode == 0, result.stderr
    with empty_db.connect() as c:
        valid = c.execute(
            "select indisvalid from pg_index where indexrelid = 'pgseek.t_x_idx'::regclass"
        ).fetchone()[0]
        assert valid is True
        assert c.execute("select count(*) from pgseek.t").fetchone()[0] == 1
    assert alembic(copy, empty_db.url, "downgrade", HEAD).returncode == 0


def test_a_failing_revision_rolls_back_completely(empty_db, tmp_path):
    copy = copy_migrations(tmp_path)
    write_revision(
        copy,
        "0900",
        HEAD,
        "create table pgseek.half_done (x int);\nselect 1 / 0;\n",
        "drop table pgseek.half_done;\n",
    )
    result = alembic(copy, empty_db.url, "upgrade", "head")
    assert result.returncode != 0
    assert "migrate: revision 0900 (upgrade) failed: division by zero\n" in result.stderr
    assert "Traceback" not in result.stderr
    assert revision(empty_db.url) == HEAD
    with empty_db.connect() as c:
        assert c.execute("select to_regclass('pgseek.half_done')").fetchone()[0] is None


def test_migrate_sql_prints_the_sql_without_a_database():
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "migrate.py"), "sql"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "create table pgseek.documents" in out
    compact = re.sub(r"\n+", "\n", out)
    assert "COMMIT;\n-- outside a transaction:\ndrop index concurrently" in compact
    assert "-- repeatable object file sql/990-search-path.sql" in out
    assert out.index("create table pgseek.documents") < out.index("create index concurrently")


@pytest.mark.parametrize("verb", ["upgrade", "downgrade", "status"])
def test_an_unreachable_server_is_one_clear_line_not_a_traceback(verb):
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        url = f"postgresql://postgres@127.0.0.1:{s.getsockname()[1]}/pgseek"
        result = run_migrate(url, verb, timeout=60)
    assert result.returncode == 1
    assert "migrate: cannot connect to DATABASE_URL:" in result.stderr
    assert "Connection refused" in result.stderr and "make db-up" in result.stderr
    assert "Traceback" not in result.stderr


def test_status_reports_pending_revisions(empty_db):
    result = run_migrate(empty_db.url, "status")
    assert result.returncode == 0, result.stderr
    assert "database revision: base" in result.stdout
    assert f"pending:           {', '.join(REVISIONS)}" in result.stdout


def test_split_sections():
    sections = split_sections(
        "create table a (x int);\n"
        "--! no-transaction\n"
        "drop index concurrently if exists a_x;\n"
        "create index concurrently a_x on a (x); -- comment\n"
        "--! transaction\n"
        "insert into a values (1);\n"
    )
    assert [s.in_transaction for s in sections] == [True, False, True]
    assert sections[1].statements() == [
        "drop index concurrently if exists a_x;",
        "create index concurrently a_x on a (x);",
    ]


def test_dollar_quotes_are_refused_outside_a_transaction():
    with pytest.raises(ValueError, match="dollar-quoted"):
        Section("do $$ begin end $$;", in_transaction=False).statements()


def test_a_downgrade_keeps_documents_and_writes_still_work(empty_db):
    assert run_migrate(empty_db.url, "upgrade").returncode == 0
    with empty_db.connect() as c:
        c.execute("insert into pgseek.documents (content) values ('written at head')")
    assert run_migrate(empty_db.url, "downgrade", "0002").returncode == 0
    with empty_db.connect() as c:
        # No stale trigger of head's code survives below head: writes keep working.
        c.execute("insert into pgseek.documents (content) values ('written below head')")
        assert c.execute("select count(*) from pgseek.documents").fetchone()[0] == 2
    result = run_migrate(empty_db.url, "upgrade")
    assert result.returncode == 0, result.stderr
    with empty_db.connect() as c:
        queued = c.execute(
            "select d.content from pgseek.embedding_queue as q"
            " join pgseek.documents as d on d.id = q.document_id order by 1"
        ).fetchall()
        assert queued == [("written at head",), ("written below head",)]
        assert c.execute("select unaccounted from pgseek.embedding_status").fetchone()[0] == 0


def test_a_changed_signature_leaves_no_stale_overload(empty_db, tmp_path):
    copy = copy_migrations(tmp_path)
    assert alembic(copy, empty_db.url, "upgrade", "head").returncode == 0
    search = copy.parent / "sql" / "100-search.sql"
    old = "check_recall(sample integer default 20, k integer default 10)"
    assert old in search.read_text()
    search.write_text(
        search.read_text().replace(
            old,
            "check_recall(sample integer default 20, k integer default 10, spare int default 0)",
        )
    )
    result = alembic(copy, empty_db.url, "upgrade", "head")
    assert result.returncode == 0, result.stderr
    with empty_db.connect() as c:
        signatures = c.execute(
            "select oid::regprocedure::text from pg_proc where proname = 'check_recall'"
        ).fetchall()
        pinned = c.execute(
            "select proconfig from pg_proc where proname = 'check_recall'"
        ).fetchone()
    assert signatures == [("pgseek.check_recall(integer,integer,integer)",)]
    assert any(setting.startswith("search_path=") for setting in pinned[0])


def test_a_changed_result_type_is_recreated(empty_db, tmp_path):
    """Also when a SQL-standard body (which PostgreSQL records as a dependency) calls
    the changed function and was created after it: the drop goes in dependency order."""
    copy = copy_migrations(tmp_path)
    search = copy.parent / "sql" / "100-search.sql"
    search.write_text(
        search.read_text()
        + "\ncreate or replace function pgseek.sample_recall() returns double precision"
        + "\nlanguage sql stable return (select r.recall from pgseek.check_recall(1, 1) as r);\n"
    )
    assert alembic(copy, empty_db.url, "upgrade", "head").returncode == 0
    search.write_text(
        search.read_text().replace(
            "returns table (queries integer, neighbours integer, recall double precision)",
            "returns table (queries integer, neighbours integer, recall numeric)",
        )
    )
    result = alembic(copy, empty_db.url, "upgrade", "head")
    assert result.returncode == 0, result.stderr
    assert "a result type changed; re-creating sql/ objects" in result.stderr
    with empty_db.connect() as c:
        result_type = c.execute(
            "select pg_get_function_result('pgseek.check_recall'::regproc)"
        ).fetchone()[0]
        triggers = c.execute(
            "select count(*) from pg_trigger where tgrelid = 'pgseek.documents'::regclass"
            " and not tgisinternal"
        ).fetchone()[0]
    assert "recall numeric" in result_type
    # every trigger sql/ creates on documents is back
    assert triggers == sum(
        f.read_text().count("create or replace trigger documents_")
        for f in (copy.parent / "sql").glob("*.sql")
    )


def test_a_key_stored_before_0013_stays_bound_to_the_configured_server(empty_db):
    """0013 binds API keys to a server: a key stored before it goes on being sent to the
    base_url configured when it ran (and to no other later)."""
    result = run_migrate(empty_db.url, "upgrade", "0012")
    assert result.returncode == 0, result.stderr
    with empty_db.connect() as c:
        c.execute(
            "update pgseek.config set embedding_provider = 'openai',"
            """ embedding_options = '{"base_url": "http://10.0.0.7:8000/v1/"}'"""
        )
        c.execute("insert into pgseek.provider_secrets (provider, api_key) values ('openai', 'k')")
    result = run_migrate(empty_db.url, "upgrade")
    assert result.returncode == 0, result.stderr
    with empty_db.connect() as c:
        bound = c.execute("select base_url from pgseek.provider_secrets").fetchone()[0]
    assert bound == "http://10.0.0.7:8000/v1"


def repeatable_state(url: str) -> tuple[int, int, int]:
    """How many of sql/'s routines, views and files (pgseek_meta) a database has."""
    with psycopg.connect(url) as c:
        return c.execute(
            "select (select count(*) from pg_proc where pronamespace = 'pgseek'::regnamespace),"
            " (select count(*) from pg_class where relnamespace = 'pgseek'::regnamespace"
            "  and relkind = 'v'),"
            " (select count(*) from pgseek_meta.repeatable_objects)"
        ).fetchone()


@pytest.mark.parametrize("target", ["0099", HEAD])
def test_a_rollback_with_nothing_to_do_touches_nothing(db, target):
    """An unknown target fails, and the current revision is nothing to do: either way
    sql/'s objects stay (they used to be dropped, and committed, before the target was
    even resolved)."""
    before = repeatable_state(db.url)
    assert before[0] > 20 and before[1] > 5 and before[2] > 10
    result = run_migrate(db.url, "downgrade", target)
    if target == "0099":
        assert result.returncode != 0
        assert "migrate: Can't locate revision identified by '0099'" in result.stderr
        assert "Traceback" not in result.stderr
    else:
        assert result.returncode == 0, result.stderr
    assert "applied sql/" not in result.stderr  # not dropped, so not re-created either
    assert revision(db.url) == HEAD
    assert repeatable_state(db.url) == before


def test_a_failing_downgrade_leaves_sql_objects_in_place(empty_db, tmp_path):
    copy = copy_migrations(tmp_path)
    # its downgrade divides by zero until a table named allow_downgrade exists
    write_revision(
        copy,
        "0900",
        HEAD,
        "select 1;\n",
        "select 1 / (select count(*)::int from pg_class where relname = 'allow_downgrade');\n",
    )
    assert alembic(copy, empty_db.url, "upgrade", "head").returncode == 0
    before = repeatable_state(empty_db.url)
    result = alembic(copy, empty_db.url, "downgrade", "-1")
    assert result.returncode != 0
    assert "division by zero" in result.stderr
    assert revision(empty_db.url) == "0900"
    assert repeatable_state(empty_db.url) == before
    # and a downgrade that works still removes them, in its own transaction
    with empty_db.connect() as c:
        c.execute("create table public.allow_downgrade ()")
    assert alembic(copy, empty_db.url, "downgrade", "-1").returncode == 0
    assert revision(empty_db.url) == HEAD
    routines, views, files = repeatable_state(empty_db.url)
    assert (views, files) == (0, 0)
    assert routines < 5  # those columns use (current_tenant()...) belong to migrations


def test_status_warns_when_head_lacks_sql_objects(db):
    result = run_migrate(db.url, "status")
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stdout
    with db.connect() as c:
        c.execute("delete from pgseek_meta.repeatable_objects")
    result = run_migrate(db.url, "status")
    assert result.returncode == 0, result.stderr
    assert "sql/ objects:      0 files applied" in result.stdout
    assert "WARNING: at head, but" in result.stdout and "run 'make migrate'" in result.stdout


def test_0008_interrupted_after_its_transactional_part_resumes(empty_db):
    """0008 creates tenant_roles (committed when its no-transaction section starts),
    then builds an index concurrently, which waits for older snapshots: with one held
    open it fails on lock_timeout (5 s). The next run skips the committed part (it used
    to fail on DuplicateTable forever) and rebuilds the index."""
    assert run_migrate(empty_db.url, "upgrade", "0007").returncode == 0
    blocker = empty_db.connect()
    try:
        blocker.execute("begin isolation level repeatable read")
        blocker.execute("select count(*) from pg_class")  # takes the snapshot
        result = run_migrate(empty_db.url, "upgrade")
        assert result.returncode != 0
        assert "lock timeout" in result.stderr
        assert revision(empty_db.url) == "0007"
        with empty_db.connect() as c:
            assert c.execute("select to_regclass('pgseek.tenant_roles')").fetchone()[0]
        # a rollback now would undo 0007 under a half-applied 0008: refused
        refused = run_migrate(empty_db.url, "downgrade")
        assert refused.returncode != 0
        assert "0008_tenants's upgrade stopped after part of it committed" in refused.stderr
        assert revision(empty_db.url) == "0007"
    finally:
        blocker.close()
    result = run_migrate(empty_db.url, "upgrade")
    assert result.returncode == 0, result.stderr
    assert "resuming after them" in result.stderr
    assert revision(empty_db.url) == HEAD
    with empty_db.connect() as c:
        assert c.execute(
            "select indisvalid from pg_index"
            " where indexrelid = 'pgseek.documents_tenant_idx'::regclass"
        ).fetchone() == (True,)
        assert c.execute("select count(*) from pgseek_meta.revision_progress").fetchone() == (0,)


def test_a_revision_resumes_when_its_last_transactional_part_fails(empty_db, tmp_path):
    """The transactional section after a no-transaction one fails: the re-run starts at
    the no-transaction section (safe to repeat), not at the table already created."""
    copy = copy_migrations(tmp_path)
    write_revision(
        copy,
        "0900",
        HEAD,
        MIXED_REVISION
        + "select 1 / (select count(*)::int from pg_class where relname = 'allow_0900');\n",
        "drop table pgseek.t;\n",
    )
    result = alembic(copy, empty_db.url, "upgrade", "head")
    assert result.returncode != 0 and "division by zero" in result.stderr
    assert revision(empty_db.url) == HEAD
    with empty_db.connect() as c:
        c.execute("create table public.allow_0900 ()")
    result = alembic(copy, empty_db.url, "upgrade", "head")
    assert result.returncode == 0, result.stderr
    assert revision(empty_db.url) == "0900"
    with empty_db.connect() as c:
        assert c.execute("select count(*) from pgseek.t").fetchone() == (1,)


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ("create index concurrently i on t (x);\n", "without a `drop index concurrently"),
        (
            "drop index concurrently if exists j;\ncreate index concurrently i on t (x);\n",
            "without a `drop index concurrently",
        ),
        ("create table t (x int);\n", "not safe to run again"),
        ("drop index concurrently i;\n", "not safe to run again"),
        (
            "set lock_timeout = '5s';\ndrop index concurrently if exists s.i;\n"
            "-- a comment\ncreate unique index concurrently if not exists i on s.t (x);\n"
            "reset lock_timeout;\n",
            None,
        ),
    ],
)
def test_no_transaction_sections_must_be_safe_to_repeat(section, problem):
    problems = check_section(Section(section, in_transaction=False))
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0]


def test_every_revision_is_safe_to_repeat_outside_transactions():
    files = sorted(checksums.VERSIONS.glob("*.sql"))
    assert len(files) >= 26
    assert [p for f in files for p in check_sections(f)] == []


def routine_settings(url: str) -> list[tuple[str, list[str] | None]]:
    with psycopg.connect(url) as c:
        return c.execute(
            "select p.oid::regprocedure::text, p.proconfig from pg_proc as p"
            " where p.pronamespace = 'pgseek'::regnamespace order by 1"
        ).fetchall()


def test_migrate_sql_applied_with_psql_equals_make_migrate(db, empty_db):
    """The review output, applied as it is with psql, pins search_path on the same
    functions as `make migrate` (sql/ used to be printed without a transaction, so
    990-search-path.sql, which pins what the current transaction created, pinned almost
    nothing) and records what it applied: migrating afterwards has nothing to do."""
    sql = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "migrate.py"), "sql"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    psql = Path(PG_DUMP).with_name("psql")
    applied = subprocess.run(
        [str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", as_url(empty_db.url)],
        input=sql,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert applied.returncode == 0, applied.stderr
    wanted = routine_settings(db.url)
    assert sum(1 for _, config in wanted if config) > 25
    assert routine_settings(empty_db.url) == wanted
    result = run_migrate(empty_db.url, "upgrade")
    assert result.returncode == 0, result.stderr
    assert "Running upgrade" not in result.stderr
    assert "applied sql/" not in result.stderr


TRICKY_PASSWORD = "pa$word\"q`b'x"


def make(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-s", "-C", str(ROOT), *args],
        env={k: v for k, v in {**os.environ, **env}.items() if k != "MAKEFLAGS"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("via", ["environment", "command line"])
def test_make_passes_database_url_untouched(empty_db, via):
    """A password with `$`, `"`, a backquote and `'` reaches the migrator as it is
    (make used to expand `$w` and the shell to choke on the quotes)."""
    role = f"pgseek_test_{empty_db.name[-12:]}"
    with empty_db.connect() as c:
        c.execute(f"create role {role} login password {pgsql.quote(TRICKY_PASSWORD)}")
    try:
        params = conninfo_to_dict(empty_db.url)
        url = (
            f"postgresql://{role}:{TRICKY_PASSWORD}@{params['host']}:{params['port']}"
            f"/{params['dbname']}"
        )
        if via == "environment":
            printed = make("db-url", env={"DATABASE_URL": url})
            status = make("migrate-status", env={"DATABASE_URL": url})
        else:
            printed = make("db-url", f"DATABASE_URL={url}", env={})
            status = make("migrate-status", f"DATABASE_URL={url}", env={})
        assert printed.stdout == url + "\n", printed.stderr
        assert status.returncode == 0, status.stderr
        assert "database revision: base" in status.stdout
    finally:
        with empty_db.connect() as c:
            c.execute(f"drop role {role}")


def test_a_multi_host_url_is_read_by_libpq(empty_db):
    """libpq tries the hosts in order: the first refuses, the second is the server (the
    migrator used to parse the URL with SQLAlchemy, which cannot)."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        params = conninfo_to_dict(empty_db.url)
        url = (
            f"postgresql://{params['user']}:{params['password']}@127.0.0.1:{s.getsockname()[1]},"
            f"{params['host']}:{params['port']}/{params['dbname']}"
        )
        result = run_migrate(empty_db.url, "upgrade", "0001", DATABASE_URL=url)
    assert result.returncode == 0, result.stderr
    assert revision(empty_db.url) == "0001"


def test_a_view_removed_from_sql_is_dropped_with_its_function(empty_db, tmp_path):
    """A view (and a view on it) and the function it uses leave sql/ together: the views
    are dropped as stale before the function (migrating used to fail: "cannot drop
    function ... because other objects depend on it")."""
    copy = copy_migrations(tmp_path)
    extra = copy.parent / "sql" / "500-extra.sql"
    extra.write_text(
        "create or replace function pgseek.extra_answer() returns integer\n"
        "language sql immutable parallel safe return 42;\n"
        "create or replace view pgseek.extra_view as select pgseek.extra_answer() as a;\n"
        "create or replace view pgseek.extra_view_2 as select a from pgseek.extra_view;\n"
    )
    assert alembic(copy, empty_db.url, "upgrade", "head").returncode == 0
    with empty_db.connect() as c:
        assert c.execute("select a from pgseek.extra_view_2").fetchone() == (42,)
    extra.unlink()
    result = alembic(copy, empty_db.url, "upgrade", "head")
    assert result.returncode == 0, result.stderr
    with empty_db.connect() as c:
        assert c.execute(
            "select to_regclass('pgseek.extra_view'), to_regclass('pgseek.extra_view_2'),"
            " to_regprocedure('pgseek.extra_answer()')"
        ).fetchone() == (None, None, None)
        # the views sql/ still creates are all there
        views = c.execute(
            "select count(*) from pg_class where relnamespace = 'pgseek'::regnamespace"
            " and relkind = 'v'"
        ).fetchone()[0]
    assert views == sum(
        f.read_text().count("create or replace view") for f in (ROOT / "sql").glob("*.sql")
    )


def test_a_database_statement_timeout_does_not_cancel_migrating(empty_db):
    """The database's statement_timeout (1 ms: anything would be cancelled) is not the
    migrator's: the revisions (create index concurrently included), sql/ and
    `make vector-index` run without one."""

    def unlimited():
        return empty_db.connect(options="-c statement_timeout=0")

    with unlimited() as c:
        c.execute(f"alter database {empty_db.name} set statement_timeout = '1ms'")
    result = run_migrate(empty_db.url, "upgrade")
    assert result.returncode == 0, result.stderr
    with unlimited() as c:
        c.execute("update pgseek.config set distance_metric = 'l2'")
        assert "create index concurrently" in str(
            c.execute("select pgseek.vector_index_ddl()").fetchall()
        )
    result = run_migrate(empty_db.url, "vector-index")
    assert result.returncode == 0, result.stderr
    with unlimited() as c:
        assert c.execute("select pgseek.vector_index_ddl()").fetchall() == []
        assert c.execute(
            "select to_regclass('pgseek.documents_embedding_384_hnsw_l2') is not null"
        ).fetchone() == (True,)
        assert c.execute("select version_num from pgseek_meta.alembic_version").fetchone() == (
            HEAD,
        )
        assert c.execute(
            "select bool_and(indisvalid) from pg_index"
            " where indrelid = 'pgseek.documents'::regclass"
        ).fetchone() == (True,)


def test_a_read_only_database_is_one_line(db):
    with db.connect() as c:
        c.execute(f"alter database {db.name} set default_transaction_read_only = on")
    result = run_migrate(db.url, "upgrade")
    assert result.returncode == 1
    assert result.stderr.startswith("migrate: the database is read-only")
    assert result.stderr.count("\n") == 1, result.stderr


def test_sql_needs_a_superuser_said_up_front(db):
    """sql/ re-creates PL/Python (untrusted) functions on every apply: a role that may
    do everything else but is no superuser is told so before anything runs."""
    role = f"pgseek_test_{db.name[-12:]}"
    with db.connect() as c:
        c.execute(f"create role {role} login password 'pw'")
        c.execute(f"grant create on database {db.name} to {role}")
        c.execute(f"grant usage, create on schema pgseek_meta to {role}")
        c.execute(f"grant all on all tables in schema pgseek_meta to {role}")
        c.execute("delete from pgseek_meta.repeatable_objects")
    before = repeatable_state(db.url)
    try:
        params = conninfo_to_dict(db.url)
        url = f"postgresql://{role}:pw@{params['host']}:{params['port']}/{db.name}"
        result = run_migrate(db.url, "upgrade", DATABASE_URL=url)
        assert result.returncode == 1
        assert result.stderr.splitlines()[-1] + "\n" == (
            "migrate: sql/ must be applied and it creates PL/Python functions (plpython3u is"
            f" untrusted), which needs a superuser; {role} is not: migrate as a superuser\n"
        )
        assert "Traceback" not in result.stderr
        assert repeatable_state(db.url) == before
    finally:
        with db.connect() as c:
            c.execute(f"drop owned by {role}")
            c.execute(f"drop role {role}")
