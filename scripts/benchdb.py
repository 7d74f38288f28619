"""What the benchmark scripts (bench.py, evaluate.py) share: a database of their own on
DATABASE_URL's server, migrated to head with scripts/migrate.py, and a one-line
description of the machine for their reports."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent


def connect(url: str, **kwargs) -> psycopg.Connection:
    # prepare_threshold=None: no server-side prepared plans that a later SET cannot replan.
    try:
        return psycopg.connect(url, autocommit=True, prepare_threshold=None, **kwargs)
    except psycopg.OperationalError as e:
        sys.exit(f"{Path(sys.argv[0]).stem}: cannot connect to DATABASE_URL: {str(e).strip()}")


def database_url(server_url: str, dbname: str) -> str:
    """server_url naming another database. A URL, not a conninfo string: migrate.py's
    Alembic (SQLAlchemy) only takes URLs, so DATABASE_URL must be one."""
    parts = urlsplit(server_url)
    if parts.scheme not in ("postgres", "postgresql"):
        sys.exit(f"DATABASE_URL must be a postgresql:// URL, not {parts.scheme or 'conninfo'}")
    return urlunsplit(parts._replace(path=f"/{dbname}"))


def database_exists(server_url: str, dbname: str) -> bool:
    with connect(database_url(server_url, "postgres")) as conn:
        found = conn.execute("select 1 from pg_database where datname = %s", (dbname,))
        return found.fetchone() is not None


def create_database(server_url: str, dbname: str) -> str:
    """Drop dbname if it exists, create it, migrate it to head; returns its URL."""
    with connect(database_url(server_url, "postgres")) as conn:
        conn.execute(f"drop database if exists {dbname} with (force)")
        conn.execute(f"create database {dbname}")
    url = database_url(server_url, dbname)
    try:
        migrate(url)
    except MigrationFailed as error:
        sys.exit(str(error))
    return url


class MigrationFailed(Exception):
    pass


def migrate(url: str) -> None:
    """scripts/migrate.py upgrade on url: to head, re-applying changed sql/ objects."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "migrate.py"), "upgrade"],
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise MigrationFailed(
            f"migrating {urlsplit(url).path[1:]} failed:\n{result.stderr.strip()}"
        )


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem_gb:.0f} GiB RAM, {platform.platform()}"
