"""Fixtures: a real PostgreSQL for the whole session, and a clean database per test.

Where the server comes from, in order:
1. PGSEEK_TEST_DATABASE_URL or DATABASE_URL, when set: that server is used. Tests create
   and drop databases of their own there (named pgseek_test_*), never touching others.
2. Otherwise an ephemeral cluster of the session's own (scripts/cluster.sh in a temporary
   directory, on a free port), destroyed at the end.
A real PgBouncer in transaction pooling mode in front of that server (`bouncer`) is
started on first use (tests/pgbouncer.py).
(tests/test_docker.py runs the Docker image through testcontainers where a Docker engine
is reachable, and is skipped, with the reason, where none is.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest

import pgbouncer
from pgtest import (
    TEMPLATE_DB,
    Database,
    Server,
    ephemeral_cluster,
    run_migrate,
    with_dbname,
)


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    url = os.environ.get("PGSEEK_TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        with psycopg.connect(url, autocommit=True) as conn:
            cron_db = conn.execute("select current_setting('cron.database_name', true)").fetchone()
        yield Server(url, cron_db[0] if cron_db else None)
        return
    with ephemeral_cluster("pgseek-test-") as cluster:
        yield Server(cluster.url, "pgseek_test_cron", owned=True)


@pytest.fixture(scope="session")
def template_db(server: Server) -> Iterator[str]:
    """A database migrated to head once per session; tests get copies of it."""
    server.drop_database(TEMPLATE_DB)
    with server.connect() as conn:
        conn.execute(f"create database {TEMPLATE_DB}")
    result = run_migrate(with_dbname(server.url, TEMPLATE_DB), "upgrade")
    assert result.returncode == 0, result.stderr
    yield TEMPLATE_DB
    server.drop_database(TEMPLATE_DB)


@pytest.fixture
def db(server: Server, template_db: str) -> Iterator[Database]:
    name = server.create_database(template=template_db)
    try:
        yield Database(name, with_dbname(server.url, name))
    finally:
        server.drop_database(name)


@pytest.fixture
def conn(db: Database) -> Iterator[psycopg.Connection]:
    with db.connect() as connection:
        yield connection


@pytest.fixture
def empty_db(server: Server) -> Iterator[Database]:
    """A database with nothing of pgseek in it."""
    name = server.create_database()
    try:
        yield Database(name, with_dbname(server.url, name))
    finally:
        server.drop_database(name)


@pytest.fixture(scope="session")
def bouncer(server: Server) -> Iterator[pgbouncer.PgBouncer]:
    """A real PgBouncer in transaction pooling mode in front of the server, for the whole
    session (tests/pgbouncer.py); the tests using it are skipped where it is missing."""
    reason = pgbouncer.unavailable()
    if reason:
        pytest.skip(reason)
    running = pgbouncer.start(server.url, pgbouncer.binary())
    try:
        yield running
    finally:
        running.stop()
