"""Monitoring: the real prometheus-postgres-exporter (the Debian package) started with
monitoring/postgres-exporter-queries.yaml against a test database, logging in as a role
that has nothing but pg_monitor; /metrics is read over HTTP after real activity
(embedding through a stub provider that then fails into dead letters, a queue left
waiting, a purge, searches) and every pgseek value is checked against the database.
The Grafana dashboard is checked to use only metrics the queries file defines.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from openai_stub import OpenAIStub, stub_vector
from pgtest import ROOT, Database, Server, free_port, run_migrate, wait_for_pg_cron, with_dbname

EXPORTER = os.environ.get("PGSEEK_POSTGRES_EXPORTER", "/usr/bin/prometheus-postgres-exporter")
QUERIES = ROOT / "monitoring" / "postgres-exporter-queries.yaml"
DASHBOARD = ROOT / "monitoring" / "grafana-dashboard.json"
ALERTS = ROOT / "monitoring" / "prometheus-alerts.yaml"


def defined_metrics() -> dict[str, str]:
    """Metric name -> usage (GAUGE, COUNTER) for every metric the queries file defines."""
    names = {}
    for namespace, group in yaml.safe_load(QUERIES.read_text()).items():
        for column in group["metrics"]:
            ((name, spec),) = column.items()
            if spec["usage"] != "LABEL":
                names[f"{namespace}_{name}"] = spec["usage"]
    return names


# --- the queries file and the dashboard, without a database --------------------------


def test_every_query_selects_exactly_the_columns_it_maps():
    for namespace, group in yaml.safe_load(QUERIES.read_text()).items():
        selected = re.match(r"select (.*?) from ", group["query"], re.S).group(1)
        columns = [c.strip() for c in selected.split(",")]
        mapped = [next(iter(m)) for m in group["metrics"]]
        assert columns == mapped, namespace
        assert group["master"] is True, namespace  # pgseek lives in one database


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            exprs.append(target["expr"])
    return exprs


def metric_names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (identifiers not followed by '(' and
    not inside braces or label lists)."""
    without_labels = re.sub(r"\{[^}]*\}", "", expr)
    without_grouping = re.sub(r"\b(by|without)\s*\([^)]*\)", "", without_labels)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_grouping)
    return {
        m.group(1)
        for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", without_ranges)
        if not re.fullmatch(r"\d+|e\d+|bool|on|ignoring|group_left|group_right|offset", m.group(1))
    }


def test_the_dashboard_uses_only_metrics_the_queries_file_defines():
    defined = defined_metrics()
    exprs = dashboard_expressions()
    assert exprs
    used = set().union(*(metric_names_in(e) for e in exprs))
    assert used <= set(defined), sorted(used - set(defined))
    # counters are read with rate() or increase(), gauges never are
    for expr in exprs:
        for name in metric_names_in(expr):
            in_rate = re.search(rf"(rate|increase)\(\s*{name}\b", expr) is not None
            assert in_rate == (defined[name] == "COUNTER"), (name, expr)
    # and every pgseek metric has a panel: nothing defined is left unused
    assert set(defined) <= used, sorted(set(defined) - used)


def test_the_alerts_use_defined_gauges_and_fire_on_nan_for_what_never_happened():
    """Every alert reads metrics the queries file defines (gauges: no counter compared
    raw). A gauge that is NaN until something first happens (a refresh, a purge, a job
    run) has a rule that fires on NaN (`x != x`): `x > t` alone is false on NaN, so it
    would stay silent exactly when the job never runs."""
    defined = defined_metrics()
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    assert rules and len({r["alert"] for r in rules}) == len(rules)
    for rule in rules:
        used = metric_names_in(rule["expr"])
        assert used and used <= set(defined), rule
        assert all(defined[name] == "GAUGE" for name in used), rule
        assert rule["annotations"]["summary"], rule
    nan_checked = {
        name
        for rule in rules
        for name in metric_names_in(rule["expr"])
        if re.fullmatch(rf"\s*{name}\s*!=\s*{name}\s*", rule["expr"]) and "for" in rule
    }
    assert nan_checked == {
        "pgseek_text_stats_age_seconds",
        "pgseek_purge_last_run_start_seconds",
        "pgseek_job_last_run_succeeded",
    }


def test_the_dashboard_is_importable_with_a_prometheus_data_source():
    dashboard = json.loads(DASHBOARD.read_text())
    assert [i["pluginId"] for i in dashboard["__inputs"]] == ["prometheus"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
    for variable in dashboard["templating"]["list"]:
        metric = re.fullmatch(r"label_values\((\w+), instance\)", variable["definition"])
        assert metric and metric.group(1) in defined_metrics(), variable


def test_the_metric_name_parser_finds_names_and_skips_functions_and_labels():
    expr = (
        'sum by (function_name) (rate(pgseek_function_seconds_total{function_name="x"}[5m]))'
        " / clamp_min(rate(pgseek_function_calls_total[5m]), 1e-9) > bool 0"
    )
    assert metric_names_in(expr) == {"pgseek_function_seconds_total", "pgseek_function_calls_total"}


# --- the real exporter ---------------------------------------------------------------


@dataclass
class Exporter:
    port: int
    process: subprocess.Popen
    directory: Path

    def scrape(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=30) as r:
            return r.read().decode()

    def log(self) -> str:
        return (self.directory / "exporter.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_exporter(dsn: str) -> Exporter:
    directory = Path(tempfile.mkdtemp(prefix="pgseek-exporter-", dir="/tmp"))
    port = free_port()
    with open(directory / "exporter.log", "wb") as log:
        process = subprocess.Popen(
            [
                EXPORTER,
                f"--web.listen-address=127.0.0.1:{port}",
                f"--extend.query-path={QUERIES}",
                "--log.level=warn",
            ],
            env={**os.environ, "DATA_SOURCE_NAME": dsn},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    exporter = Exporter(port, process, directory)
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            log_text = exporter.log()
            exporter.stop()
            raise RuntimeError(f"the exporter exited with {process.returncode}:\n{log_text}")
        try:
            exporter.scrape()
            return exporter
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                log_text = exporter.log()
                exporter.stop()
                raise RuntimeError(f"the exporter did not answer in 20 s:\n{log_text}") from None
            time.sleep(0.1)


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """Prometheus text format -> {(name, labels): value}."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        assert match, line
        name, labels, value = match.groups()
        pairs = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels or ""))
        samples[(name, pairs)] = float(value)
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    found = [v for (n, pairs), v in samples.items() if n == name and wanted <= set(pairs)]
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
    return found[0]


def exporter_unavailable() -> str | None:
    if not os.access(EXPORTER, os.X_OK):
        return (
            f"prometheus-postgres-exporter not found at {EXPORTER} (the Debian package"
            " prometheus-postgres-exporter; scripts/install.sh installs it)"
        )
    return None


@pytest.fixture
def monitor_role(server: Server) -> Iterator[tuple[str, str]]:
    """A login role with nothing but pg_monitor, as the exporter should run."""
    name, password = f"pgseek_test_monitor_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with server.connect() as conn:
        conn.execute(f"create role {name} login password '{password}' in role pg_monitor")
    try:
        yield name, password
    finally:
        with server.connect() as conn:
            conn.execute(f"drop owned by {name}")
            conn.execute(f"drop role {name}")


def exporter_dsn(db: Database, user: str, password: str) -> str:
    p = conninfo_to_dict(db.url)
    return (
        f"postgresql://{user}:{password}@{p.get('host', '127.0.0.1')}:{p.get('port', 5432)}"
        f"/{db.name}?sslmode=disable"
    )


@pytest.fixture
def stub():
    server = OpenAIStub(dimensions=8)
    yield server
    server.close()


def generate_activity(db: Database, stub: OpenAIStub) -> dict:
    """Embeds, fails, queues, purges and searches for real; returns what was done."""
    with db.connect() as conn:
        conn.execute(f"alter database {db.name} set track_functions = 'pl'")
        conn.execute(
            "update pgseek.config set embedding_provider = 'openai',"
            " embedding_model = 'stub-embed', embedding_dimensions = 8,"
            " embedding_options = %s",
            (json.dumps({"base_url": stub.base_url, "timeout": 2}),),
        )
        conn.execute("select pgseek.set_api_key('openai', 'sk-test-metrics', %s)", (stub.base_url,))

        def insert(texts, metadata=None, created_at="now()"):
            for text in texts:
                conn.execute(
                    "insert into pgseek.documents (content, metadata, created_at)"
                    f" values (%s, %s, {created_at})",
                    (text, json.dumps(metadata or {})),
                )

        insert([f"embedded document number {i} about monitoring" for i in range(3)])
        assert conn.execute("select pgseek.process_embedding_queue(64)").fetchone()[0] == 3
        stub.mode = "unauthorized"  # a permanent failure: straight to the dead letters
        insert(["this one fails", "and so does this one"])
        assert conn.execute("select pgseek.process_embedding_queue(64)").fetchone()[0] == 0
        # Retention: two expired documents are purged.
        conn.execute("select pgseek.set_retention('{\"kind\": \"old\"}', '1 day')")
        insert(["old note one", "old note two"], {"kind": "old"}, "now() - interval '3 days'")
        conn.execute("call pgseek.purge_expired()")
        # Four documents left waiting in the queue, the oldest queued 10 minutes ago.
        insert([f"waiting document {i}" for i in range(4)])
        conn.execute(
            "update pgseek.embedding_queue set queued_at = now() - interval '10 minutes'"
            " where id = (select min(id) from pgseek.embedding_queue)"
        )
        conn.execute("select pgseek.refresh_text_stats()")
    # Searches in a new session, which picks up track_functions = 'pl' from the database;
    # closing it sends its function statistics.
    vector = "[" + ",".join(str(x) for x in stub_vector("monitoring", 8)) + "]"
    with db.connect() as conn:
        for _ in range(3):
            conn.execute("select * from pgseek.search_similar(%s::vector, 5)", (vector,))
        for _ in range(2):
            conn.execute(
                "select * from pgseek.hybrid_search('monitoring', %s::vector, k => 5)", (vector,)
            )
    return {"search_similar": 3, "hybrid_search": 2}


def wait_for_function_stats(db: Database, calls: dict[str, int]) -> None:
    deadline = time.monotonic() + 15
    with db.connect() as conn:
        while True:
            conn.execute("select pg_stat_clear_snapshot()")
            rows = dict(
                conn.execute(
                    "select function_name, calls_total from pgseek.function_metrics"
                    " where function_name = any(%s)",
                    (list(calls),),
                ).fetchall()
            )
            if rows == calls:
                return
            assert time.monotonic() < deadline, f"function statistics: {rows}, wanted {calls}"
            time.sleep(0.2)


def one_row(conn: psycopg.Connection, sql: str) -> dict:
    cur = conn.execute(sql)
    return dict(zip([c.name for c in cur.description], cur.fetchone(), strict=True))


def same(found: float, expected) -> bool:
    if expected is None:
        return math.isnan(found)
    return math.isclose(found, float(expected), rel_tol=1e-6, abs_tol=1e-6)


@pytest.mark.skipif(exporter_unavailable() is not None, reason=str(exporter_unavailable()))
def test_the_exporter_serves_pgseek_metrics_that_match_the_database(db, stub, monitor_role):
    calls = generate_activity(db, stub)
    wait_for_function_stats(db, calls)
    exporter = start_exporter(exporter_dsn(db, *monitor_role))
    try:
        samples = parse(exporter.scrape())
        log = exporter.log()
    finally:
        exporter.stop()
    assert value(samples, "pg_up") == 1, log
    # every query of the file ran without an error, as the monitoring role
    assert value(samples, "pg_exporter_user_queries_load_error", filename=str(QUERIES)) == 0
    assert value(samples, "pg_exporter_last_scrape_error") == 0, log
    names = {name for name, _ in samples}
    assert {n for n in defined_metrics() if not n.startswith("pgseek_job_")} <= names

    with db.connect() as conn:
        metrics = one_row(conn, "select * from pgseek.metrics")
        # the activity above, as the database itself sees it
        assert metrics["queue_depth"] == 4
        assert metrics["dead_letters"] == 2
        assert metrics["embedded_last_hour"] == 3
        assert metrics["embedding_failures_last_hour"] == 2
        assert metrics["function_tracking"] == 1
        assert metrics["in_recovery"] == 0
        for column in [
            "queue_depth",
            "queue_ready",
            "queue_retrying",
            "dead_letters",
            "embedded_last_hour",
            "embedding_failures_last_hour",
            "embedding_seconds_last_hour",
            "query_cache_entries",
            "function_tracking",
            "in_recovery",
        ]:
            assert same(value(samples, f"pgseek_{column}"), metrics[column]), column
        # ages grow between the scrape and this query: within a few seconds
        age = value(samples, "pgseek_queue_oldest_age_seconds")
        assert 600 <= age <= float(metrics["queue_oldest_age_seconds"]) + 1e-6
        assert age > float(metrics["queue_oldest_age_seconds"]) - 30
        text_age = value(samples, "pgseek_text_stats_age_seconds")
        assert 0 <= text_age <= float(metrics["text_stats_age_seconds"]) + 1e-6

        documents = one_row(conn, "select * from pgseek.document_metrics")
        assert (documents["stored"], documents["embedded"]) == (9, 3)
        assert value(samples, "pgseek_documents_stored") == 9
        assert value(samples, "pgseek_documents_embedded") == 3
        assert math.isnan(value(samples, "pgseek_documents_embedded_next"))

        purge = one_row(conn, "select * from pgseek.purge_metrics")
        assert (purge["runs_logged"], purge["last_run_deleted"], purge["last_run_failed"]) == (
            1,
            2,
            0,
        )
        for column, expected in purge.items():
            assert same(value(samples, f"pgseek_purge_{column}"), expected), column

        for name, expected in calls.items():
            assert value(samples, "pgseek_function_calls_total", function_name=name) == expected
            seconds = value(samples, "pgseek_function_seconds_total", function_name=name)
            own = value(samples, "pgseek_function_self_seconds_total", function_name=name)
            assert 0 < own <= seconds < 60
        # (job_metrics_report, dead_purge_runs: the exporter's own calls, and this test's,
        # counted after its scrape)
        for name, total, self_total in conn.execute(
            "select function_name, seconds_total, self_seconds_total from pgseek.function_metrics"
            " where function_name not in ('job_metrics_report', 'dead_purge_runs')"
        ):
            assert same(value(samples, "pgseek_function_seconds_total", function_name=name), total)
            assert same(
                value(samples, "pgseek_function_self_seconds_total", function_name=name),
                self_total,
            )

        indexes = conn.execute(
            "select index_name, access_method, bytes from pgseek.index_metrics"
            " where table_name = 'documents'"
        ).fetchall()
        methods = {m for _, m, _ in indexes}
        assert {"hnsw", "gin", "btree"} <= methods
        for index, method, size in indexes:
            assert size > 0
            found = value(samples, "pgseek_index_bytes", index_name=index, access_method=method)
            assert found == size, index
        tables = dict(conn.execute("select table_name, bytes from pgseek.table_metrics"))
        assert value(samples, "pgseek_table_bytes", table_name="documents") == tables["documents"]

    # no pg_cron in a per-test database: no job series at all (not an error)
    assert not [n for n in names if n.startswith("pgseek_job_")]


def monitor_connect(db: Database, role: tuple[str, str]) -> psycopg.Connection:
    user, password = role
    p = conninfo_to_dict(db.url)
    return psycopg.connect(
        host=p.get("host"),
        port=p.get("port"),
        dbname=db.name,
        user=user,
        password=password,
        autocommit=True,
    )


def test_a_monitoring_role_reads_the_metrics_but_not_the_documents(db, monitor_role):
    with monitor_connect(db, monitor_role) as conn:
        for view in [
            "metrics",
            "document_metrics",
            "function_metrics",
            "index_metrics",
            "table_metrics",
            "purge_metrics",
            "job_metrics",
        ]:
            conn.execute(f"select * from pgseek.{view}").fetchall()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select content from pgseek.documents")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select api_key from pgseek.provider_secrets")


@pytest.fixture
def cron_database(server: Server, template_db: str) -> Iterator[Database]:  # noqa: ARG001
    """The cron database of the session's own cluster, migrated, with pgseek's jobs."""
    if not server.owned:
        pytest.skip("runs only on the test session's own cluster (it migrates the cron database)")
    url = with_dbname(server.url, server.cron_database)
    result = run_migrate(url, "upgrade")
    assert result.returncode == 0, result.stderr
    with server.connect(server.cron_database) as conn:
        conn.execute("select pgseek.schedule_jobs()")
    try:
        yield Database(server.cron_database, url)
    finally:
        with server.connect(server.cron_database) as conn:
            conn.execute(
                "select cron.unschedule(jobid) from cron.job where jobname like 'pgseek-%'"
            )


@pytest.mark.slow
@pytest.mark.skipif(exporter_unavailable() is not None, reason=str(exporter_unavailable()))
def test_job_metrics_follow_real_pg_cron_runs(cron_database, monitor_role):
    """pg_cron runs two of pgseek's jobs for real within a minute: one succeeds, one fails
    (its command is broken on purpose); the metrics say which, also to a monitoring role
    (pg_cron shows a role only its own jobs: the report is SECURITY DEFINER)."""
    with cron_database.connect() as conn:
        conn.execute("select pgseek.pause_job('pgseek-purge')")
        conn.execute(
            "select cron.alter_job(pgseek.job_id('pgseek-cron-history'), schedule => '* * * * *')"
        )
        conn.execute(
            "select cron.alter_job(pgseek.job_id('pgseek-text-stats'), schedule => '* * * * *',"
            " command => 'select pgseek.no_such_function()')"
        )
        finished = (
            "select count(distinct d.jobid) from cron.job_run_details as d"
            " join cron.job as j using (jobid)"
            " where j.jobname in ('pgseek-cron-history', 'pgseek-text-stats')"
            " and d.status in ('succeeded', 'failed')"
        )
        both = wait_for_pg_cron(conn, lambda: conn.execute(finished).fetchone()[0] == 2, 130)
        assert both, conn.execute("select * from pgseek.jobs()").fetchall()
        expected = {
            r[0]: r[1:]
            for r in conn.execute(
                "select j.jobname, j.active::int, (d.status = 'succeeded')::int,"
                " extract(epoch from d.start_time)::float8,"
                " extract(epoch from d.end_time - d.start_time)::float8"
                " from cron.job as j join lateral (select * from cron.job_run_details as x"
                "   where x.jobid = j.jobid and x.status in ('succeeded', 'failed')"
                "   order by x.runid desc limit 1) as d on true"
                " where j.jobname in ('pgseek-cron-history', 'pgseek-text-stats')"
            )
        }
    assert expected["pgseek-cron-history"][:2] == (1, 1)
    assert expected["pgseek-text-stats"][:2] == (1, 0)

    exporter = start_exporter(exporter_dsn(cron_database, *monitor_role))
    try:
        samples = parse(exporter.scrape())
    finally:
        exporter.stop()
    assert value(samples, "pgseek_job_active", job="pgseek-purge") == 0
    assert value(samples, "pgseek_job_active", job="pgseek-embedding-worker") == 1
    for job, (active, succeeded, start, duration) in expected.items():
        assert value(samples, "pgseek_job_active", job=job) == active
        assert value(samples, "pgseek_job_last_run_succeeded", job=job) == succeeded
        assert same(value(samples, "pgseek_job_last_run_start_seconds", job=job), start)
        assert same(value(samples, "pgseek_job_last_run_duration_seconds", job=job), duration)
    assert value(samples, "pgseek_job_failed_runs_last_day", job="pgseek-text-stats") >= 1
    assert value(samples, "pgseek_job_failed_runs_last_day", job="pgseek-cron-history") == 0


# --- purge_metrics: runs that never finished ----------------------------------------


PURGE_STATE = "select runs_logged, failed_runs_logged, last_run_failed from pgseek.purge_metrics"


def wait_until(check, what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_terminated_purge_counts_as_failed_before_the_next_run(db, monitor_role):
    """A purge whose session is terminated stays 'running' in purge_log until the next
    run marks it 'interrupted' (after inserting its own, newer row): the metrics count it
    as failed as soon as its session is gone, so that `last_run_failed == 1` fires."""
    with db.connect() as conn:
        conn.execute("select pgseek.set_retention('{\"kind\": \"old\"}', '1 day')")
        conn.execute(
            "insert into pgseek.documents (content, metadata, created_at)"
            " values ('old note', '{\"kind\": \"old\"}', now() - interval '3 days')"
        )
        conn.execute("call pgseek.purge_expired()")  # a finished run first
    monitor = monitor_connect(db, monitor_role)
    blocker = db.connect()
    purger = db.connect()
    purger_pid = purger.info.backend_pid
    errors: list[Exception] = []

    def purge() -> None:
        try:
            purger.execute("call pgseek.purge_expired()")
        except psycopg.Error as exc:
            errors.append(exc)

    thread = threading.Thread(target=purge)
    try:
        assert monitor.execute(PURGE_STATE).fetchone() == (1, 0, 0)
        # The purge waits for the documents while another session holds them locked.
        blocker.execute("begin")
        blocker.execute("lock table pgseek.documents in access exclusive mode")
        thread.start()
        waiting = "select wait_event_type = 'Lock' from pg_stat_activity where pid = %s"
        wait_until(
            lambda: blocker.execute(waiting, (purger_pid,)).fetchone() == (True,),
            "the purge never waited for the lock",
        )
        # running, alive: not a failure
        assert monitor.execute(PURGE_STATE).fetchone() == (2, 0, 0)
        with db.connect() as admin:
            admin.execute("select pg_terminate_backend(%s)", (purger_pid,))
        thread.join(timeout=30)
        assert errors and isinstance(errors[0], psycopg.OperationalError), errors
    finally:
        blocker.close()
        thread.join(timeout=30)
        purger.close()
    with db.connect() as conn:
        wait_until(
            lambda: (
                not conn.execute(
                    "select exists (select from pg_stat_activity where pid = %s)", (purger_pid,)
                ).fetchone()[0]
            ),
            "the terminated backend did not exit",
        )
        assert conn.execute(
            "select status, finished_at from pgseek.purge_log order by id desc limit 1"
        ).fetchone() == ("running", None)
    # the crashed run is the latest: failed, for the monitoring role too
    assert monitor.execute(PURGE_STATE).fetchone() == (2, 1, 1)
    # the next run marks it 'interrupted' and finishes: still one failed run logged
    with db.connect() as conn:
        conn.execute("call pgseek.purge_expired()")
    assert monitor.execute(PURGE_STATE).fetchone() == (3, 1, 0)
    monitor.close()


def test_a_run_whose_backend_went_on_counts_as_failed_and_a_live_one_does_not(db):
    """A run is alive while its backend is in the statement that started it
    (purge_run_alive): a 'running' row naming a backend that is idle now (an error
    escaped the run, the pooled connection went on) counts as failed at once; one naming
    a backend still in that statement does not. A row written before migration 0014 (no
    backend) is judged by its session advisory lock."""
    with db.connect() as conn, db.connect() as other:
        other_pid = other.info.backend_pid
        run_id = conn.execute(
            "insert into pgseek.purge_log (backend_pid, backend_query_start)"
            " values (%s, now() - interval '1 minute') returning id",
            (other_pid,),
        ).fetchone()[0]
        assert conn.execute(PURGE_STATE).fetchone() == (1, 1, 1)  # idle backend: gone
        # the same backend busy in the run's statement: alive
        started = threading.Event()

        def busy() -> None:
            started.set()
            other.execute("select pg_sleep(3)")

        thread = threading.Thread(target=busy)
        thread.start()
        started.wait()
        active = "select state = 'active', query_start from pg_stat_activity where pid = %s"
        wait_until(
            lambda: conn.execute(active, (other_pid,)).fetchone()[0],
            "the other session never became active",
        )
        query_start = conn.execute(active, (other_pid,)).fetchone()[1]
        conn.execute(
            "update pgseek.purge_log set backend_query_start = %s where id = %s",
            (query_start, run_id),
        )
        assert conn.execute(PURGE_STATE).fetchone() == (1, 0, 0)
        thread.join(timeout=30)
        assert conn.execute(PURGE_STATE).fetchone() == (1, 1, 1)  # the statement ended
        # a row from before migration 0014: alive while its lock is held
        conn.execute(
            "update pgseek.purge_log set backend_pid = null, backend_query_start = null"
            " where id = %s",
            (run_id,),
        )
        assert conn.execute(PURGE_STATE).fetchone() == (1, 1, 1)
        other.execute("select pg_advisory_lock(pgseek.purge_lock_key(%s))", (run_id,))
        assert conn.execute(PURGE_STATE).fetchone() == (1, 0, 0)


# --- metrics.function_tracking: what new sessions get --------------------------------


def test_function_tracking_reports_the_database_setting_to_an_old_session(db, monitor_role):
    """The exporter keeps its session: `alter database ... set track_functions = 'pl'`,
    as the dashboard advises, reaches new sessions (the searches) but not that one, so
    the gauge reports the database's setting, not the reading session's own value."""
    tracking = "select function_tracking from pgseek.metrics"
    old = monitor_connect(db, monitor_role)
    try:
        if old.execute("show track_functions").fetchone() != ("none",):
            pytest.skip("the server itself sets track_functions")
        assert old.execute(tracking).fetchone() == (0,)
        with db.connect() as conn:
            conn.execute(f"alter database {db.name} set track_functions = 'pl'")
        assert old.execute("show track_functions").fetchone() == ("none",)
        assert old.execute(tracking).fetchone() == (1,)
        # a session started meanwhile has 'pl' from the database: once the database's
        # setting is removed, it says 0 as well (the server's value, not its own)
        during = monitor_connect(db, monitor_role)
        try:
            assert during.execute("show track_functions").fetchone() == ("pl",)
            assert during.execute(tracking).fetchone() == (1,)
            with db.connect() as conn:
                conn.execute(f"alter database {db.name} reset track_functions")
            assert during.execute(tracking).fetchone() == (0,)
            assert old.execute(tracking).fetchone() == (0,)
        finally:
            during.close()
    finally:
        old.close()


# --- the cost of a scrape ------------------------------------------------------------


def test_no_uncached_query_scans_the_queue_or_the_documents(conn):
    """The queue and the documents grow to millions of rows (start_model_change queues
    every document): the queries the exporter runs every scrape read neither, those
    that do are cached (cache_seconds). The pgseek group reads pgseek.metrics without its
    queue_* columns, and the planner leaves the queue out."""
    conn.execute(
        "insert into pgseek.documents (content) select 'document ' || i"
        " from generate_series(1, 20) as i"
    )
    conn.execute("analyze pgseek.documents, pgseek.embedding_queue")
    groups = yaml.safe_load(QUERIES.read_text())
    uncached = {name: g["query"] for name, g in groups.items() if not g.get("cache_seconds")}
    assert {"pgseek", "pgseek_purge", "pgseek_job"} <= set(uncached)
    for name, query in uncached.items():
        plan = "\n".join(r[0] for r in conn.execute(f"explain {query}"))
        assert "embedding_queue" not in plan, (name, plan)
        assert not re.search(r"\bon documents\b", plan), (name, plan)
    assert {name for name, g in groups.items() if g.get("cache_seconds")} == {
        "pgseek_queue",
        "pgseek_documents",
    }
    # the whole view still has the queue's figures, for psql
    plan = "\n".join(r[0] for r in conn.execute("explain select * from pgseek.metrics"))
    assert "embedding_queue" in plan
    queue = one_row(conn, "select * from pgseek.queue_metrics")
    metrics = one_row(conn, "select * from pgseek.metrics")
    assert queue["depth"] == metrics["queue_depth"] == 20
    assert {f"queue_{k}": v for k, v in queue.items() if k != "oldest_age_seconds"} == {
        k: metrics[k] for k in ("queue_depth", "queue_ready", "queue_retrying")
    }


# --- what the queue gauges count ------------------------------------------------------


def test_queue_gauges_count_a_due_retry_as_ready_only_and_dead_letters_per_document(conn):
    """A retry that is due is ready, not waiting (the gauges do not overlap); a document
    dead-lettered for both models during a model change is one document."""
    ids = [
        r[0]
        for r in conn.execute(
            "insert into pgseek.documents (content) select 'document ' || i"
            " from generate_series(1, 5) as i returning id"
        )
    ]
    conn.execute("delete from pgseek.embedding_queue")
    for document, attempts, due in [
        (ids[0], 0, "now() - interval '1 minute'"),  # new
        (ids[1], 2, "now() - interval '1 minute'"),  # failed, its retry is due
        (ids[2], 1, "now() + interval '5 minutes'"),  # failed, waiting
    ]:
        conn.execute(
            "insert into pgseek.embedding_queue (document_id, content_hash, attempts,"
            f" next_attempt_at) values (%s, '\\x00', %s, {due})",
            (document, attempts),
        )
    for document, target in [
        (ids[3], "embedding"),
        (ids[3], "embedding_next"),
        (ids[4], "embedding_next"),
    ]:
        conn.execute(
            "insert into pgseek.embedding_dead_letter (document_id, target, content_hash,"
            " attempts, error, first_queued_at) values (%s, %s, '\\x00', 5, 'boom', now())",
            (document, target),
        )
    metrics = one_row(conn, "select * from pgseek.metrics")
    assert (metrics["queue_depth"], metrics["queue_ready"], metrics["queue_retrying"]) == (3, 2, 1)
    assert metrics["dead_letters"] == 2
