"""Helpers for tests against a real PostgreSQL (the fixtures are in conftest.py).

The cluster these talk to comes from the `server` fixture: PGSEEK_TEST_DATABASE_URL or
DATABASE_URL when set, else an ephemeral cluster of the session's own.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
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


def wait_for(predicate, timeout: float, interval: float = 1.0, meanwhile=None):
    """predicate()'s first true value within timeout seconds (else its last value);
    meanwhile(), when given, runs every 20 seconds of waiting."""
    start = last = time.monotonic()
    while time.monotonic() < start + timeout:
        value = predicate()
        if value:
            return value
        if meanwhile is not None and time.monotonic() - last > 20:
            meanwhile()
            last = time.monotonic()
        time.sleep(interval)
    return predicate()


def wait_for_pg_cron(conn: psycopg.Connection, predicate, timeout: float, interval: float = 1.0):
    """wait_for(), for a test that has just changed a job: pgseek.reload_jobs() every 20
    seconds meanwhile (pg_cron can miss a job change made while other tests' catalog
    changes reset its scheduler, citusdata/pg_cron#406)."""
    return wait_for(
        predicate, timeout, interval, meanwhile=lambda: conn.execute("select pgseek.reload_jobs()")
    )


@dataclass
class Server:
    """A PostgreSQL server the tests may create databases on (superuser URL)."""

    url: str
    cron_database: str | None
    owned: bool = False  # started by this test session: free to migrate its cron database

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


@dataclass
class EphemeralCluster:
    """A cluster of scripts/cluster.sh in a temporary directory: its home (data/ is the
    data directory), the environment cluster.sh needs for it, and its superuser URL."""

    home: Path
    env: dict[str, str]
    url: str


@contextmanager
def ephemeral_cluster(prefix: str) -> Iterator[EphemeralCluster]:
    """Starts a cluster of its own on a free port; destroys it and its files after."""
    home = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    home.chmod(0o755)  # the server runs as the postgres OS user when we are root
    env = start_ephemeral_cluster(home, free_port())
    cluster = str(ROOT / "scripts" / "cluster.sh")
    try:
        url = subprocess.run(
            [cluster, "url"], env=env, check=True, capture_output=True, text=True
        ).stdout.strip()
        yield EphemeralCluster(home, env, url)
    finally:
        subprocess.run([cluster, "destroy"], env=env, check=False)
        shutil.rmtree(home, ignore_errors=True)


@dataclass
class Database:
    """A clean database of the test's own, migrated to head."""

    name: str
    url: str

    def connect(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True, **kwargs)
