"""The Docker pieces: the image (Dockerfile, docker/initdb-pgseek.sh), the PgBouncer image
(docker/pgbouncer/) and compose.yaml, which adds the Prometheus exporter.

Without a Docker engine (as on pgseek's own CI machine) the logic inside the images
still runs here for real: the image's init script migrates a database of the test
server and creates the exporter's role, and the PgBouncer image's entrypoint starts the
Debian pgbouncer with the image's settings in front of the test server. compose.yaml is
parsed and checked against the files it names. (The exporter service runs the queries
file that tests/test_metrics.py checks with the Debian exporter of the same version;
`make lint` runs hadolint over both Dockerfiles.) The tests that build and run the
images, through testcontainers, are skipped, with the reason, where no engine is
reachable.
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
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import pgbouncer
from pgtest import PYTHON, ROOT, Database, free_port

COMPOSE = ROOT / "compose.yaml"
DOCKERFILES = [ROOT / "Dockerfile", ROOT / "docker" / "pgbouncer" / "Dockerfile"]


def docker_engine_problem() -> str | None:
    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception as exc:  # any failure means: no usable engine here
        return f"no Docker engine reachable ({type(exc).__name__}: {str(exc)[:120]})"
    return None


ENGINE_PROBLEM = docker_engine_problem()
needs_docker = pytest.mark.skipif(ENGINE_PROBLEM is not None, reason=str(ENGINE_PROBLEM))


# --- files: compose.yaml and the Dockerfiles -------------------------------------------


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def copy_sources(dockerfile: Path) -> list[str]:
    """The source paths of the COPY instructions of a Dockerfile (continuations joined)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    sources = []
    for line in text.splitlines():
        match = re.match(r"\s*COPY\s+(?:--\S+\s+)*(.+)$", line)
        if match:
            *srcs, _dest = match.group(1).split()
            sources.extend(srcs)
    return sources


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_a_dockerfile_copies_exists(dockerfile):
    sources = copy_sources(dockerfile)
    assert sources
    for source in sources:
        assert (dockerfile.parent / source).exists(), source


def test_compose_services_build_from_and_mount_files_that_exist():
    services = compose()["services"]
    assert set(services) == {"pgseek", "pgbouncer", "exporter"}
    for name, service in services.items():
        if "build" in service:
            context = ROOT / service["build"]["context"]
            assert (context / service["build"].get("dockerfile", "Dockerfile")).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).is_file(), (name, source)
    assert (ROOT / services["pgseek"]["build"]["context"] / "Dockerfile").samefile(DOCKERFILES[0])
    assert (ROOT / services["pgbouncer"]["build"]["context"] / "Dockerfile").samefile(
        DOCKERFILES[1]
    )


def test_the_exporter_service_reads_pgseeks_queries_file_with_the_monitor_role():
    exporter = compose()["services"]["exporter"]
    mounts = dict(v.split(":")[:2] for v in exporter["volumes"])
    path = exporter["environment"]["PG_EXPORTER_EXTEND_QUERY_PATH"]
    assert mounts["./monitoring/postgres-exporter-queries.yaml"] == path
    # the role docker/initdb-pgseek.sh creates by default
    assert exporter["environment"]["DATA_SOURCE_USER"] == "pgseek_monitor"
    assert "pgseek_monitor" in (ROOT / "docker" / "initdb-pgseek.sh").read_text()
    # the version the tests run: Debian 12's prometheus-postgres-exporter
    assert exporter["image"].endswith(":v0.11.1")


def test_the_pgbouncer_service_forwards_to_the_pgseek_service():
    services = compose()["services"]
    env = services["pgbouncer"]["environment"]
    assert env["PGBOUNCER_UPSTREAM_HOST"] == "pgseek"
    assert services["pgbouncer"]["depends_on"]["pgseek"]["condition"] == "service_healthy"
    assert env["PGBOUNCER_PASSWORD"] == services["pgseek"]["environment"]["POSTGRES_PASSWORD"]


def test_the_image_preloads_pg_cron_and_collects_function_statistics():
    cmd = re.sub(r"\\\n", " ", DOCKERFILES[0].read_text())
    for setting in [
        "shared_preload_libraries=pg_cron",
        "cron.database_name=pgseek",
        "track_functions=pl",
    ]:
        assert f'"{setting}"' in cmd, setting


# --- the image's init script, run against the test server --------------------------------


@pytest.fixture
def monitor_name(server) -> Iterator[str]:
    name = f"pgseek_test_monitor_{uuid.uuid4().hex[:8]}"
    yield name
    with server.connect() as conn:
        if conn.execute("select from pg_roles where rolname = %s", (name,)).fetchone():
            conn.execute(f"drop owned by {name}")
            conn.execute(f"drop role {name}")


def url_of(db: Database) -> str:
    p = conninfo_to_dict(db.url)
    return (
        f"postgresql://{p['user']}:{p.get('password', '')}@{p.get('host', '127.0.0.1')}:"
        f"{p.get('port', 5432)}/{db.name}"
    )


def test_the_init_script_migrates_and_creates_the_monitoring_role(empty_db, monitor_name):
    password = uuid.uuid4().hex
    result = subprocess.run(
        ["sh", str(ROOT / "docker" / "initdb-pgseek.sh")],
        env={
            **os.environ,
            "PGSEEK_HOME": str(ROOT),
            "PGSEEK_PYTHON": PYTHON,
            "PGSEEK_DATABASE_URL": url_of(empty_db),
            "PGSEEK_MONITOR_USER": monitor_name,
            "PGSEEK_MONITOR_PASSWORD": password,
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    with empty_db.connect() as conn:
        assert conn.execute("select version_num from pgseek_meta.alembic_version").fetchone()
        assert conn.execute(
            "select pg_has_role(%s, 'pg_monitor', 'member')", (monitor_name,)
        ).fetchone()[0]
    monitor_url = make_conninfo(empty_db.url, user=monitor_name, password=password)
    with psycopg.connect(monitor_url, autocommit=True) as conn:
        assert conn.execute("select queue_depth from pgseek.metrics").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select content from pgseek.documents")


def test_the_init_script_without_a_monitor_password_creates_no_role(empty_db, monitor_name):
    env = {
        **os.environ,
        "PGSEEK_HOME": str(ROOT),
        "PGSEEK_PYTHON": PYTHON,
        "PGSEEK_DATABASE_URL": url_of(empty_db),
        "PGSEEK_MONITOR_USER": monitor_name,
    }
    env.pop("PGSEEK_MONITOR_PASSWORD", None)
    result = subprocess.run(
        ["sh", str(ROOT / "docker" / "initdb-pgseek.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    with empty_db.connect() as conn:
        assert conn.execute("select version_num from pgseek_meta.alembic_version").fetchone()
        assert not conn.execute(
            "select from pg_roles where rolname = %s", (monitor_name,)
        ).fetchone()


# --- the PgBouncer image's entrypoint and settings, run against the test server ---------


def ini_settings(path: Path) -> dict[str, str]:
    settings = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith((";", "[")):
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    return settings


@pytest.fixture
def image_pgbouncer(server) -> Iterator[tuple[int, subprocess.Popen, Path]]:
    """docker/pgbouncer/entrypoint.sh run as the postgres OS user (as in the image), with
    the image's settings file, in front of the test server."""
    reason = pgbouncer.unavailable()
    if reason:
        pytest.skip(reason)
    params = conninfo_to_dict(server.url)
    run_dir = Path(tempfile.mkdtemp(prefix="pgseek-image-pgbouncer-", dir="/tmp"))
    as_owner = {}
    if os.getuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(run_dir, owner.pw_uid, owner.pw_gid)
        as_owner = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
    port = free_port()
    log = open(run_dir / "stderr.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        ["sh", str(ROOT / "docker" / "pgbouncer" / "entrypoint.sh")],
        env={
            "PATH": os.environ["PATH"],
            "PGBOUNCER_USER": params["user"],
            "PGBOUNCER_PASSWORD": params.get("password", ""),
            "PGBOUNCER_UPSTREAM_HOST": params.get("host", "127.0.0.1"),
            "PGBOUNCER_UPSTREAM_PORT": str(params.get("port", 5432)),
            "PGBOUNCER_LISTEN_ADDR": "127.0.0.1",
            "PGBOUNCER_PORT": str(port),
            "PGBOUNCER_SETTINGS": str(ROOT / "docker" / "pgbouncer" / "pgbouncer.ini"),
            "PGBOUNCER_RUN_DIR": str(run_dir),
            "PGBOUNCER_BINARY": pgbouncer.binary(),
        },
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        cwd=run_dir,
        **as_owner,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, (run_dir / "stderr.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, (run_dir / "stderr.log").read_text()
                time.sleep(0.05)
        yield port, process, run_dir
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def test_the_pgbouncer_image_runs_pgseeks_settings_in_front_of_the_server(
    server, db, image_pgbouncer
):
    port, _, run_dir = image_pgbouncer
    params = conninfo_to_dict(server.url)
    via = make_conninfo(
        host="127.0.0.1",
        port=port,
        user=params["user"],
        password=params.get("password", ""),
        connect_timeout=10,
    )
    # the settings PgBouncer actually runs with are the image's
    with psycopg.connect(
        make_conninfo(via, dbname="pgbouncer"), autocommit=True, prepare_threshold=None
    ) as admin:
        cur = admin.execute("show config")
        running = {row[0]: row[1] for row in cur.fetchall()}
    wanted = ini_settings(ROOT / "docker" / "pgbouncer" / "pgbouncer.ini")
    for key in ["pool_mode", "default_pool_size", "max_client_conn", "server_reset_query"]:
        assert running[key] == wanted[key], key
    assert running["pool_mode"] == "transaction"
    assert running["ignore_startup_parameters"] == "extra_float_digits"
    # the auth file holds the password only for its owner
    assert (run_dir / "userlist.txt").stat().st_mode & 0o077 == 0
    # searches and writes work through it (every database name is forwarded)
    with psycopg.connect(
        make_conninfo(via, dbname=db.name), autocommit=True, prepare_threshold=None
    ) as conn:
        conn.execute(
            "insert into pgseek.documents (content, embedding) values"
            " ('through the image''s pgbouncer', %s::vector)",
            ("[" + ",".join(["0.05"] * 384) + "]",),
        )
        rows = conn.execute(
            "select content from pgseek.search_similar(%s::vector, 1)",
            ("[" + ",".join(["0.05"] * 384) + "]",),
        ).fetchall()
    assert rows == [("through the image's pgbouncer",)]


def test_the_pgbouncer_entrypoint_refuses_to_start_without_a_password(tmp_path):
    result = subprocess.run(
        ["sh", str(ROOT / "docker" / "pgbouncer" / "entrypoint.sh")],
        env={
            "PATH": os.environ["PATH"],
            "PGBOUNCER_USER": "postgres",
            "PGBOUNCER_RUN_DIR": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "PGBOUNCER_PASSWORD" in result.stderr
    assert not (tmp_path / "pgbouncer.ini").exists()


# --- with a Docker engine: the images themselves -------------------------------------------


@pytest.fixture(scope="module")
def container():
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.image import DockerImage
    from testcontainers.core.waiting_utils import wait_for_logs

    with (
        DockerImage(path=str(ROOT), tag="pgseek:test") as image,
        DockerContainer(str(image))
        .with_env("POSTGRES_PASSWORD", "test")
        .with_env("PGSEEK_MONITOR_PASSWORD", "monitor-test")
        .with_exposed_ports(5432) as c,
    ):
        # The entrypoint restarts the server after init: wait for the second start.
        wait_for_logs(c, r"(?s)ready to accept connections.*ready to accept connections", 180)
        yield c


@needs_docker
def test_image_has_the_extensions_and_the_migrated_schema(container):
    host = container.get_container_host_ip()
    port = container.get_exposed_port(5432)
    with psycopg.connect(f"postgresql://postgres:test@{host}:{port}/pgseek") as conn:
        extensions = {r[0] for r in conn.execute("select extname from pg_extension")}
        assert {"vector", "pg_cron", "plpython3u"} <= extensions
        assert conn.execute("select version_num from pgseek_meta.alembic_version").fetchone()
        assert conn.execute("select count(*) from pgseek.documents").fetchone()[0] == 0
        assert conn.execute("show track_functions").fetchone()[0] == "pl"
    with psycopg.connect(f"postgresql://pgseek_monitor:monitor-test@{host}:{port}/pgseek") as conn:
        assert conn.execute("select queue_depth from pgseek.metrics").fetchone() == (0,)


@needs_docker
def test_compose_serves_searches_through_pgbouncer_and_metrics():
    from testcontainers.compose import DockerCompose

    ports = {name: free_port() for name in ["SERVER", "PGBOUNCER", "EXPORTER"]}
    env = {f"PGSEEK_{name}_PORT": str(port) for name, port in ports.items()}
    env |= {"POSTGRES_PASSWORD": "test", "PGSEEK_MONITOR_PASSWORD": "monitor-test"}
    os.environ.update(env)  # docker compose reads the variables from the environment
    try:
        with DockerCompose(str(ROOT), compose_file_name="compose.yaml", build=True, wait=True):
            url = f"postgresql://postgres:test@127.0.0.1:{ports['PGBOUNCER']}/pgseek"
            with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
                conn.execute("insert into pgseek.documents (content) values ('compose')")
                assert conn.execute("select count(*) from pgseek.documents").fetchone() == (1,)
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(
                        f"http://127.0.0.1:{ports['EXPORTER']}/metrics", timeout=10
                    ) as r:
                        text = r.read().decode()
                    if re.search(r"^pg_up(\{.*\})? 1$", text, re.M) and re.search(
                        r"^pgseek_queue_depth\{", text, re.M
                    ):
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "the exporter never reported pgseek's metrics"
                time.sleep(2)
    finally:
        for name in env:
            os.environ.pop(name, None)
