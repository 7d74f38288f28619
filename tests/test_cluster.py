"""The embedded cluster through the Make targets a newcomer uses, in a private directory."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgtest import ROOT, ephemeral_cluster, free_port


class Make:
    """make in the checkout for the cluster in HOME; PORT None leaves PGSEEK_PORT unset."""

    def __init__(self, home: Path, port: int | None, **env: str):
        self.home = home
        self.port = port
        unset = ("DATABASE_URL", "PGSEEK_PORT", "PGSEEK_DB")
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in unset},
            "PGSEEK_HOME": str(home),
            "PGSEEK_SHARED_BUFFERS": "128MB",
            **({"PGSEEK_PORT": str(port)} if port is not None else {}),
            **env,
        }

    def __call__(
        self, *targets: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["make", "-s", "-C", str(ROOT), *targets],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            input=input,
        )
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result


@pytest.fixture(scope="module")
def make() -> Iterator[Make]:
    home = Path(tempfile.mkdtemp(prefix="pgseek-cluster-test-", dir="/tmp"))
    home.chmod(0o755)
    m = Make(home / "cluster", free_port())
    try:
        yield m
    finally:
        m("db-down", check=False)
        shutil.rmtree(home, ignore_errors=True)


def test_db_up_creates_and_starts_the_cluster(make):
    result = make("db-up")
    assert "creating a new cluster" in result.stderr
    assert f"running on 127.0.0.1:{make.port}" in result.stderr
    assert "running" in make("db-status").stdout


def test_db_up_again_is_a_no_op(make):
    result = make("db-up")
    assert "already running" in result.stderr
    assert "creating" not in result.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("capsh"), reason="needs root, capsh")
def test_db_status_sees_the_server_without_cap_sys_ptrace(make):
    # Docker's default capabilities lack CAP_SYS_PTRACE, without which root cannot read
    # /proc/<pid>/cwd of the postgres user's processes.
    result = subprocess.run(
        ["capsh", "--drop=cap_sys_ptrace", "--", "-c", f"make -s -C {ROOT} db-status"],
        env=make.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert f"running: 127.0.0.1:{make.port}" in result.stdout, result.stdout + result.stderr


def test_db_url_connects_with_the_documented_settings(make):
    url = make("db-url").stdout.strip()
    assert url.startswith("postgresql://postgres:") and url.endswith(
        f"@127.0.0.1:{make.port}/pgseek"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        settings = dict(
            conn.execute(
                "select name, setting from pg_settings where name in ('listen_addresses', 'port',"
                " 'shared_preload_libraries', 'cron.database_name', 'shared_buffers',"
                " 'maintenance_work_mem', 'work_mem')"
            ).fetchall()
        )
        # pg_cron's launcher starts once the database it names exists; give it a moment.
        deadline = time.monotonic() + 30
        while True:
            launcher = conn.execute(
                "select count(*) from pg_stat_activity where backend_type = 'pg_cron launcher'"
            ).fetchone()[0]
            if launcher or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert settings["listen_addresses"] == "127.0.0.1"
    assert settings["port"] == str(make.port)
    assert "pg_cron" in settings["shared_preload_libraries"]
    assert settings["cron.database_name"] == "pgseek"
    assert int(settings["shared_buffers"]) * 8 == 128 * 1024  # 8kB pages: the override
    assert int(settings["maintenance_work_mem"]) >= 64 * 1024  # kB
    assert launcher == 1


def test_password_is_required_over_tcp(make):
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(f"postgresql://postgres:wrong@127.0.0.1:{make.port}/pgseek").close()


def test_migrate_rollback_migrate_and_the_extensions(make):
    make("migrate")
    make("rollback")
    make("migrate")
    assert "pending:           none" in make("migrate-status").stdout
    url = make("db-url").stdout.strip()
    dx = subprocess.run(
        ["psql", url, "-c", r"\dx"], capture_output=True, text=True, check=True
    ).stdout
    assert "pg_cron" in dx and "plpython3u" in dx
    assert any(
        line.split("|")[0].strip() == "vector" and "0.8." in line for line in dx.splitlines()
    )


def test_db_down_stops_it(make):
    assert "stopped" in make("db-down").stderr
    status = make("db-status", check=False)
    assert status.returncode != 0 and "stopped" in status.stdout
    assert "not running" in make("db-down").stderr


def write_pidfile(make: Make, pid: int) -> None:
    """A postmaster.pid naming PID in the stopped cluster, as a crash leaves one."""
    pidfile = make.home / "data" / "postmaster.pid"
    subprocess.run(
        ["runuser", "-u", "postgres", "--", "sh", "-c", f"echo {pid} > {pidfile}"]
        if os.geteuid() == 0
        else ["sh", "-c", f"echo {pid} > {pidfile}"],
        check=True,
    )


def assert_stopped(make: Make) -> None:
    status = make("db-status", check=False)
    assert status.returncode != 0 and "stopped" in status.stdout, status.stdout


def test_a_stale_pid_file_is_cleared_with_a_message(make):
    # A pid that does not exist: pid_max is at most 2^22.
    write_pidfile(make, 4194305)
    result = make("db-up")
    assert "removing a stale postmaster.pid (pid 4194305 is not running)" in result.stderr
    assert "running on" in result.stderr
    make("db-down")


def test_a_pid_file_naming_a_reused_pid_is_cleared(make):
    # After a reboot the pid may belong to any process: here one of ours (root's, when the
    # tests run as root, which the server's postgres user cannot signal).
    other = subprocess.Popen(["sleep", "120"])
    try:
        write_pidfile(make, other.pid)
        assert_stopped(make)
        result = make("db-up")
        assert (
            f"removing a stale postmaster.pid (pid {other.pid} is another process now"
            in result.stderr
        )
        assert "running on" in result.stderr
        assert other.poll() is None  # left alone
    finally:
        other.kill()
        other.wait()
    make("db-down")


def test_a_pid_file_naming_another_clusters_postmaster_is_not_taken_for_ours(make):
    with ephemeral_cluster("pgseek-cluster-other-") as other:
        other_pid = int((other.home / "data" / "postmaster.pid").read_text().split()[0])
        write_pidfile(make, other_pid)
        assert_stopped(make)
        assert "not running" in make("db-down").stderr  # and the other cluster lives on:
        psycopg.connect(other.url).close()
        result = make("db-up")
        assert "removing a stale postmaster.pid" in result.stderr
        assert f"running on 127.0.0.1:{make.port}" in result.stderr
        assert "running" in make("db-status").stdout
        psycopg.connect(make("db-url").stdout.strip()).close()
        psycopg.connect(other.url).close()
    make("db-down")


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A directory the server's postgres user can reach, removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="pgseek-cluster-test-", dir="/tmp"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_the_port_and_database_of_db_up_are_remembered(private_dir):
    port = free_port()
    started = Make(private_dir / "cluster", port, PGSEEK_DB="remembered")
    plain = Make(private_dir / "cluster", None)  # a later shell without the variables
    try:
        started("db-up")
        url = plain("db-url").stdout.strip()
        assert url.endswith(f"@127.0.0.1:{port}/remembered"), url
        assert f"running: 127.0.0.1:{port} database remembered" in plain("db-status").stdout
        psql = plain("psql", input="select current_database() || ':' || inet_server_port()")
        assert f"remembered:{port}" in psql.stdout, psql.stdout + psql.stderr
        # Asking for another port while it runs: the running cluster's, with a warning.
        elsewhere = Make(private_dir / "cluster", free_port())
        status = elsewhere("db-status")
        assert f"runs on port {port}: using it, not PGSEEK_PORT={elsewhere.port}" in status.stderr
        assert f"running: 127.0.0.1:{port}" in status.stdout
        assert "already running" in elsewhere("db-up").stderr
        # Stopped and started again without the variables: the same port and database.
        plain("db-down")
        assert f"running on 127.0.0.1:{port}, database remembered" in plain("db-up").stderr
    finally:
        plain("db-down", check=False)


def test_a_checkout_too_deep_for_a_socket_path_still_starts(private_dir):
    # <dir>/run/.s.PGSQL.<port> would exceed the 107 bytes a socket path can hold.
    home = private_dir / ("d" * 90) / "cluster"
    deep = Make(home, free_port())
    cluster = [str(ROOT / "scripts" / "cluster.sh")]
    short = Path("/tmp") / f"pgseek-{hashlib.sha256(str(home / 'data').encode()).hexdigest()[:12]}"
    try:
        result = deep("db-up")
        assert f"running on 127.0.0.1:{deep.port}" in result.stderr
        assert (short / f".s.PGSQL.{deep.port}").is_socket()
        info = short.stat()
        assert info.st_mode & 0o777 == 0o700
        owner = (
            int(subprocess.check_output(["id", "-u", "postgres"]))
            if os.geteuid() == 0
            else os.geteuid()
        )
        assert info.st_uid == owner
        psycopg.connect(deep("db-url").stdout.strip()).close()
        deep("migrate")  # psql over the socket (creating the database) worked too
    finally:
        subprocess.run([*cluster, "destroy"], env=deep.env, capture_output=True)
    assert not short.exists() and not home.exists()


def test_a_port_in_use_is_reported(make):
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", make.port))
        other.listen()
        result = make("db-up", check=False)
    assert result.returncode != 0
    assert f"port {make.port} on 127.0.0.1 is in use by another process" in result.stderr
    assert "PGSEEK_PORT" in result.stderr


def test_migrate_without_a_cluster_says_what_to_do(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PGSEEK_HOME"] = str(tmp_path / "none")
    result = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "migrate"], env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "make db-up" in result.stderr
