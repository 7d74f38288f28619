"""A real PgBouncer (the Debian package's /usr/sbin/pgbouncer) in transaction pooling
mode in front of the test server, for tests/test_pgbouncer.py and tests/test_clients.py.

Each instance has a directory of its own (pgbouncer.ini, userlist.txt, the log, the
pid file and the unix socket), listens on a free port on 127.0.0.1, and forwards every
database name to the same database on the test server (the `*` fallback entry), so the
per-test databases (`db` fixture) are reachable through it without reconfiguring.

Authentication: clients log in with SCRAM-SHA-256. The auth file holds the server's
SCRAM secret for the test user, copied from pg_authid, so PgBouncer logs into
PostgreSQL with the client's SCRAM keys and no plain-text password is written to disk;
when the secret cannot be read (not a superuser, or an md5 password) the password from
the server URL is used instead. PgBouncer refuses to run as root, like PostgreSQL:
under root it runs as the `postgres` OS user, the user the test cluster runs as.

PgBouncer before 1.21 does not track protocol-level prepared statements, so clients
must not create them: psycopg `prepare_threshold=None`, asyncpg
`statement_cache_size=0` (see client_options()).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgtest import free_port

# PGSEEK_PGBOUNCER: another pgbouncer executable to test with (e.g. a newer one from PGDG)
BINARY = os.environ.get("PGSEEK_PGBOUNCER", "/usr/sbin/pgbouncer")
DEFAULT_POOL_SIZE = 4
MAX_CLIENT_CONN = 200


def binary() -> str | None:
    """The pgbouncer executable, or None when it is not installed."""
    if os.access(BINARY, os.X_OK):
        return BINARY
    return None if "PGSEEK_PGBOUNCER" in os.environ else shutil.which("pgbouncer")


def unavailable() -> str | None:
    """Why no pgbouncer can be started here, or None when one can."""
    if binary() is None:
        return (
            f"pgbouncer not found at {BINARY} (the Debian package pgbouncer provides"
            " /usr/sbin/pgbouncer; scripts/install.sh installs it)"
        )
    if os.getuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "pgbouncer refuses to run as root and there is no 'postgres' OS user"
    return None


def version(executable: str) -> tuple[int, ...]:
    """pgbouncer --version: 'PgBouncer 1.18.0' -> (1, 18, 0)."""
    out = subprocess.run([executable, "--version"], capture_output=True, text=True, check=True)
    match = re.search(r"PgBouncer (\d+)\.(\d+)(?:\.(\d+))?", out.stdout)
    if not match:
        raise RuntimeError(f"cannot read the version from {out.stdout!r}")
    return tuple(int(x or 0) for x in match.groups())


def _quote(value: str) -> str:
    """A field of userlist.txt: double quotes, inner ones doubled."""
    return '"' + value.replace('"', '""') + '"'


@dataclass
class PgBouncer:
    """A running pgbouncer. url(dbname) is the conninfo a client uses to reach a
    database through it; admin() connects to its console (SHOW POOLS, ...)."""

    port: int
    user: str
    password: str
    directory: Path
    version: tuple[int, ...]
    pool_size: int
    process: subprocess.Popen = field(repr=False)

    def url(self, dbname: str) -> str:
        return make_conninfo(
            host="127.0.0.1",
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=dbname,
            connect_timeout=10,
        )

    def connect(self, dbname: str, **kwargs) -> psycopg.Connection:
        """A psycopg connection through pgbouncer: autocommit, no prepared statements."""
        kwargs.setdefault("autocommit", True)
        return psycopg.connect(self.url(dbname), prepare_threshold=None, **kwargs)

    def admin(self) -> psycopg.Connection:
        """The admin console (database 'pgbouncer'): simple-protocol SHOW commands."""
        return psycopg.connect(self.url("pgbouncer"), autocommit=True, prepare_threshold=None)

    def show(self, what: str) -> list[dict]:
        with self.admin() as conn:
            cur = conn.execute(f"show {what}")
            names = [c.name for c in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def log(self) -> str:
        """Its log file, and what it wrote to stderr (before the log file was open)."""
        parts = []
        for name in ["stderr.log", "pgbouncer.log"]:
            path = self.directory / name
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # safe shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.terminate()  # immediate shutdown
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def _auth_secret(server_url: str, user: str, password: str) -> str:
    """The SCRAM secret of the user from pg_authid when readable, else the password."""
    try:
        with psycopg.connect(server_url, autocommit=True) as conn:
            row = conn.execute(
                "select rolpassword from pg_catalog.pg_authid where rolname = %s", (user,)
            ).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        return password
    if row and row[0] and row[0].startswith("SCRAM-SHA-256$"):
        return row[0]
    return password


def start(
    server_url: str,
    executable: str,
    pool_size: int = DEFAULT_POOL_SIZE,
    max_client_conn: int = MAX_CLIENT_CONN,
) -> PgBouncer:
    """Starts pgbouncer in transaction pooling mode in front of the server of server_url
    and waits until it accepts logins."""
    params = conninfo_to_dict(server_url)
    user = params.get("user") or pwd.getpwuid(os.getuid()).pw_name
    password = params.get("password") or ""
    host = params.get("host") or "127.0.0.1"
    server_port = params.get("port") or "5432"
    secret = _auth_secret(server_url, user, password) if password else ""

    directory = Path(tempfile.mkdtemp(prefix="pgseek-pgbouncer-", dir="/tmp"))
    run_as = None
    if os.getuid() == 0:  # pgbouncer refuses root: run it as the cluster's OS user
        run_as = pwd.getpwnam("postgres")
    (directory / "run").mkdir()
    port = free_port()
    ini = directory / "pgbouncer.ini"
    ini.write_text(
        f"""\
;; Written by tests/pgbouncer.py for one test session.
[databases]
;; every database name goes to the database of the same name on the test server
* = host={host} port={server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir = {directory / "run"}
logfile = {directory / "pgbouncer.log"}
pidfile = {directory / "pgbouncer.pid"}
auth_type = {"scram-sha-256" if password else "trust"}
auth_file = {directory / "userlist.txt"}
admin_users = {user}
pool_mode = transaction
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = {max_client_conn}
;; reuse the most recently used server connection first (the default): a client
;; running transactions one after another gets the same server connection back
server_round_robin = 0
ignore_startup_parameters = extra_float_digits
server_check_delay = 30
query_wait_timeout = 60
log_connections = 0
log_disconnections = 0
"""
    )
    userlist = directory / "userlist.txt"
    userlist.write_text(f"{_quote(user)} {_quote(secret)}\n")
    userlist.chmod(0o600)
    if run_as is not None:
        directory.chmod(0o700)
        for path in [directory, directory / "run", ini, userlist]:
            os.chown(path, run_as.pw_uid, run_as.pw_gid)

    found_version = version(executable)
    # (errors before the log file is open, such as a bad setting, go to stderr)
    with open(directory / "stderr.log", "wb") as stderr:
        process = subprocess.Popen(
            [executable, str(ini)],
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            user=run_as.pw_uid if run_as else None,
            group=run_as.pw_gid if run_as else None,
            extra_groups=[] if run_as else None,
            cwd=directory,
        )
    bouncer = PgBouncer(
        port=port,
        user=user,
        password=password,
        directory=directory,
        version=found_version,
        pool_size=pool_size,
        process=process,
    )
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            log = bouncer.log()
            bouncer.stop()
            raise RuntimeError(f"pgbouncer exited with {process.returncode}:\n{log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
            bouncer.show("version")
            return bouncer
        except (OSError, psycopg.OperationalError):
            if time.monotonic() > deadline:
                log = bouncer.log()
                bouncer.stop()
                raise RuntimeError(f"pgbouncer did not accept logins in 20 s:\n{log}") from None
            time.sleep(0.05)


# What a transaction can observe of the session it runs in: the settings pgseek's
# functions change (SET LOCAL / set_config(..., true) in functions with SET clauses), all
# enable_* planner switches, and session-level objects: prepared statements, temporary
# tables, cursors, LISTEN channels, session advisory locks.
STATE_SQL = r"""
select
    pg_backend_pid() as pid,
    (select jsonb_object_agg(name, setting) from pg_settings
     where name like 'enable\_%' or name like 'hnsw.%' or name like 'ivfflat.%'
        or name in ('search_path', 'work_mem', 'statement_timeout', 'lock_timeout',
            'default_transaction_isolation', 'default_transaction_read_only', 'role',
            'session_authorization', 'jit', 'max_parallel_workers_per_gather')
    ) as settings,
    (select coalesce(jsonb_object_agg(name, setting), '{}') from pg_settings
     where source = 'session') as session_settings,
    (select count(*) from pg_prepared_statements) as prepared_statements,
    (select count(*) from pg_class where relnamespace = pg_my_temp_schema()) as temp_tables,
    (select count(*) from pg_cursors) as cursors,
    (select count(*) from pg_listening_channels()) as listen_channels,
    (select count(*) from pg_locks
     where pid = pg_backend_pid() and locktype = 'advisory') as advisory_locks
"""


# The parameters PgBouncer itself keeps per client: when a client's value (from its
# startup packet, e.g. asyncpg's client_encoding=utf8) differs from the server
# connection's, PgBouncer SETs it on the server before the client's transaction.
TRACKED_BY_PGBOUNCER = frozenset(
    {"client_encoding", "DateStyle", "TimeZone", "standard_conforming_strings", "application_name"}
)


def leftovers(state: dict, fresh: dict) -> dict:
    """What a server session carries that a fresh session (fresh, read directly) does
    not: changed settings, session-level SETs other than PgBouncer's own, and counts of
    prepared statements, temporary tables, cursors, LISTEN channels, advisory locks.
    Empty when the session is clean."""
    found = {}
    changed = {
        name: (value, fresh["settings"].get(name))
        for name, value in state["settings"].items()
        if fresh["settings"].get(name) != value
    }
    if changed:
        found["settings"] = changed
    session = {k: v for k, v in state["session_settings"].items() if k not in TRACKED_BY_PGBOUNCER}
    if session:
        found["session_settings"] = session
    for what in ["prepared_statements", "temp_tables", "cursors", "listen_channels"]:
        if state[what]:
            found[what] = state[what]
    if state["advisory_locks"]:
        found["advisory_locks"] = state["advisory_locks"]
    return found


def session_state(conn: psycopg.Connection) -> dict:
    """The state of conn's server session (see STATE_SQL); loads pgvector first, so its
    settings are listed whether or not this session has used a vector yet."""
    conn.execute("select '[1]'::vector")
    cur = conn.execute(STATE_SQL)
    return dict(zip([c.name for c in cur.description], cur.fetchone(), strict=True))


def server_states(bouncer: PgBouncer, dbname: str) -> list[dict]:
    """The session state of every server connection in the pool of dbname: pool_size
    clients each hold a transaction open at once, so each is given a server connection
    of its own, and each reads the state of that server's session."""
    conns = [bouncer.connect(dbname, autocommit=False) for _ in range(bouncer.pool_size)]
    try:
        return [session_state(conn) for conn in conns]
    finally:
        for conn in conns:
            conn.rollback()
            conn.close()
