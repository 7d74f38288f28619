"""Fixtures: a real PostgreSQL for the whole session, and a clean database per test.

Where the server comes from, in order:
1. PGSEEK_TEST_DATABASE_URL or DATABASE_URL, when set: that server is used. Tests create
   and drop databases of their own there (named pgseek_test_*), never touching others.
2. Otherwise an ephemeral cluster of the session's own (scripts/cluster.sh in a temporary
   directory, on a free port), destroyed at the end.
(tests/test_docker.py runs the Docker image through testcontainers where a Docker engine
is reachable, and is skipped, with the reason, where none is.)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TEMPLATE_DB = "pgseek_test_template"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_dbname(url: str, dbname: str) -> str:
    """The same server URL, for another database."""
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)


def as_url(conninfo: str) -> str:
    """A postgresql:// URL for a conninfo string (what DATABASE_URL consumers expect)."""
    p = conninfo_to_dict(conninfo)
    auth = p.get("user", "")
    if p.get("password"):
        auth += ":" + p["password"]
    return f"postgresql://{auth}@{p.get('host', '127.0.0.1')}:{p.get('port', 5432)}/{p['dbname']}"


def run_migrate(
    url: str, *args: str, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess:
    """Run scripts/migrate.py against a database; returns the finished process."""
    return subprocess.run(
        [PYTHON, str(ROOT / "scripts" / "migrate.py"), *args],
        env={**os.environ, "DATABASE_URL": as_url(url), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class Server:
    """A PostgreSQL server the tests may create databases on (superuser URL)."""

    url: str
    cron_database: str | None

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(with_dbname(self.url, dbname), autocommit=True)

    def create_database(self, template: str | None = None) -> str:
        name = f"pgseek_test_{uuid.uuid4().hex[:12]}"
        with self.connect() as conn:
            clause = f" template {template}" if template else ""
            conn.execute(f"create database {name}{clause}")
        return name

    def drop_database(self, name: str) -> None:
        with self.connect() as conn:
            conn.execute(f"drop database if exists {name} with (force)")


def start_ephemeral_cluster(home: Path, port: int) -> dict[str, str]:
    env = {
        **os.environ,
        "PGSEEK_HOME": str(home),
        "PGSEEK_PORT": str(port),
        "PGSEEK_DB": "pgseek_test_cron",
        "PGSEEK_SHARED_BUFFERS": "256MB",
        "PGSEEK_EFFECTIVE_CACHE_SIZE": "2GB",
    }
    subprocess.run([str(ROOT / "scripts" / "cluster.sh"), "up"], env=env, check=True)
    return env


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    url = os.environ.get("PGSEEK_TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        with psycopg.connect(url, autocommit=True) as conn:
            cron_db = conn.execute("select current_setting('cron.database_name', true)").fetchone()
        yield Server(url, cron_db[0] if cron_db else None)
        return
    home = Path(tempfile.mkdtemp(prefix="pgseek-test-", dir="/tmp"))
    home.chmod(0o755)  # the server runs as the postgres OS user when we are root
    env = start_ephemeral_cluster(home, free_port())
    try:
        url = subprocess.run(
            [str(ROOT / "scripts" / "cluster.sh"), "url"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        yield Server(url, "pgseek_test_cron")
    finally:
        subprocess.run([str(ROOT / "scripts" / "cluster.sh"), "destroy"], env=env, check=False)
        shutil.rmtree(home, ignore_errors=True)


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


@dataclass
class Database:
    """A clean database of the test's own, migrated to head."""

    name: str
    url: str

    def connect(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True, **kwargs)


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
