"""Searches on a read replica: a hot standby built from the test cluster with
pg_basebackup over loopback (streaming replication), serving search_similar() and
hybrid_search() with the same results as the primary, without writing anything (the
query-embedding cache is skipped there), while pg_cron jobs run on the primary only and
pgseek's job functions say so when called on the standby.

The standby copies the whole cluster, so it is built only from the session's own
ephemeral cluster (the `server` fixture), never from a server given by URL.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgtest import Database, Server, free_port, run_migrate, with_dbname

PG_MAJOR = os.environ.get("PGSEEK_PG_MAJOR", "15")
BIN = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")

DOCUMENTS = [
    ("Cats are small domesticated mammals that purr and sleep in the sun", "animals"),
    ("Dogs are loyal companions that like to fetch sticks in the park", "animals"),
    ("PostgreSQL streams its write-ahead log to hot standby replicas", "databases"),
    ("A read replica answers queries while the primary takes the writes", "databases"),
    ("HNSW is a graph index for approximate nearest neighbour vector search", "databases"),
    ("Bread dough rises because yeast ferments the sugars in the flour", "food"),
    ("Coffee beans are the roasted seeds of the Coffea plant", "food"),
    ("The Eiffel Tower is a wrought-iron lattice tower in Paris, France", "places"),
]


@dataclass
class Standby:
    """A running hot standby of the test cluster: url(dbname) reaches a database on it."""

    url_params: dict
    directory: Path
    data: Path
    log: Path

    def url(self, dbname: str) -> str:
        return make_conninfo(**{**self.url_params, "dbname": dbname})

    def connect(self, dbname: str) -> psycopg.Connection:
        return psycopg.connect(self.url(dbname), autocommit=True)


def run_as_postgres() -> dict:
    """subprocess arguments that run a server binary as the postgres OS user under root
    (initdb, pg_basebackup's copy and postgres refuse root or must own the files)."""
    if os.getuid() != 0:
        return {}
    owner = pwd.getpwnam("postgres")
    return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}


def start_standby(server: Server) -> Standby:
    """pg_basebackup from the server over TCP (replication connection, WAL streamed
    during the copy, -R writes primary_conninfo and standby.signal), then start it on a
    free port with a socket directory of its own."""
    params = conninfo_to_dict(server.url)
    directory = Path(tempfile.mkdtemp(prefix="pgseek-standby-", dir="/tmp"))
    as_owner = run_as_postgres()
    if as_owner:
        os.chown(directory, as_owner["user"], as_owner["group"])
    data, run, log = directory / "data", directory / "run", directory / "standby.log"
    source = make_conninfo(
        host=params.get("host", "127.0.0.1"),
        port=params.get("port", "5432"),
        user=params["user"],
        password=params.get("password", ""),
        application_name="pgseek_test_standby",
    )
    subprocess.run(
        [
            str(BIN / "pg_basebackup"),
            "-d",
            source,
            "-D",
            str(data),
            "-X",
            "stream",
            "-R",
            "-c",
            "fast",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        timeout=300,
        **as_owner,
    )
    port = free_port()
    # postgresql.auto.conf is read last: these override the primary's copied settings.
    subprocess.run(["mkdir", "-p", str(run)], check=True, **as_owner)
    with open(data / "postgresql.auto.conf", "a") as conf:
        conf.write(
            f"\n# tests/test_replica.py: this standby's own address\nport = {port}\n"
            f"unix_socket_directories = '{run}'\nhot_standby = on\n"
        )
    result = subprocess.run(
        [str(BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "120", "start"],
        capture_output=True,
        text=True,
        **as_owner,
    )
    if result.returncode != 0:
        text = log.read_text(errors="replace") if log.exists() else ""
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError(f"the standby did not start: {result.stderr}\n{text[-3000:]}")
    url_params = {**params, "host": "127.0.0.1", "port": str(port)}
    return Standby(url_params=url_params, directory=directory, data=data, log=log)


def stop_standby(standby: Standby) -> None:
    subprocess.run(
        [str(BIN / "pg_ctl"), "-D", str(standby.data), "-m", "immediate", "-w", "stop"],
        capture_output=True,
        check=False,
        **run_as_postgres(),
    )
    shutil.rmtree(standby.directory, ignore_errors=True)


@pytest.fixture(scope="module")
def standby(server: Server) -> Iterator[Standby]:
    if not server.owned:
        pytest.skip(
            "builds a standby with pg_basebackup, which copies the whole cluster: runs only"
            " on the test session's own ephemeral cluster, not on a server given by URL"
        )
    running = start_standby(server)
    try:
        yield running
    finally:
        stop_standby(running)


def wait_for_replay(server: Server, standby: Standby, timeout: float = 60) -> None:
    """Waits until the standby has replayed everything the primary has written so far."""
    with server.connect() as primary:
        target = primary.execute("select pg_current_wal_lsn()").fetchone()[0]
    deadline = time.monotonic() + timeout
    with standby.connect("postgres") as conn:
        while True:
            caught_up = conn.execute(
                "select pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)
            ).fetchone()[0]
            if caught_up:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the standby did not replay up to {target} in {timeout} s")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def corpus(server: Server, template_db: str, standby: Standby) -> Iterator[Database]:
    """A database with embedded documents (the local model, by the queue worker) and
    fresh keyword statistics, created on the primary and replayed by the standby."""
    name = server.create_database(template=template_db)
    db = Database(name, with_dbname(server.url, name))
    with db.connect() as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "insert into pgseek.documents (content, metadata) values (%s, %s)",
                [(text, json.dumps({"topic": topic})) for text, topic in DOCUMENTS],
            )
        assert conn.execute("select pgseek.process_embedding_queue(64)").fetchone()[0] == len(
            DOCUMENTS
        )
        conn.execute("select pgseek.refresh_text_stats()")
    wait_for_replay(server, standby)
    try:
        yield db
    finally:
        server.drop_database(name)


def test_the_standby_is_a_streaming_hot_standby(server, standby):
    with standby.connect("postgres") as conn:
        assert conn.execute("select pg_is_in_recovery()").fetchone()[0] is True
        assert conn.execute("show transaction_read_only").fetchone()[0] == "on"
    with server.connect() as primary:
        rows = primary.execute(
            "select state from pg_stat_replication where application_name = 'pgseek_test_standby'"
        ).fetchall()
    assert rows == [("streaming",)]


SIMILAR = "select id, similarity from pgseek.search_similar(%s::vector, 5) order by rank"
SIMILAR_FILTERED = (
    "select id, similarity from pgseek.search_similar(%s::vector, 5,"
    ' filter => \'{"topic": "databases"}\') order by rank'
)
HYBRID = (
    "select id, score, vector_rank, text_rank from pgseek.hybrid_search(%s, %s::vector, k => 5)"
)
HYBRID_IN_DATABASE = (
    "select id, score, vector_rank, text_rank from pgseek.hybrid_search(%s, k => 5)"
)


def query_vector(conn: psycopg.Connection, text: str) -> str:
    return conn.execute("select pgseek.embed(%s)::text", (text,)).fetchone()[0]


def rounded(rows: list[tuple]) -> list[tuple]:
    return [tuple(round(v, 9) if isinstance(v, float) else v for v in row) for row in rows]


def test_search_similar_on_the_standby_returns_the_primarys_rows(corpus, standby):
    with corpus.connect() as primary, standby.connect(corpus.name) as replica:
        vector = query_vector(primary, "which server answers read queries")
        for sql in [SIMILAR, SIMILAR_FILTERED]:
            on_primary = rounded(primary.execute(sql, (vector,)).fetchall())
            on_replica = rounded(replica.execute(sql, (vector,)).fetchall())
            assert on_replica == on_primary
            assert len(on_primary) >= 3  # (the filtered search has 3 matching rows)


def test_hybrid_search_on_the_standby_returns_the_primarys_rows(corpus, standby):
    question = "replica of a postgresql primary"
    with corpus.connect() as primary, standby.connect(corpus.name) as replica:
        vector = query_vector(primary, question)
        on_primary = rounded(primary.execute(HYBRID, (question, vector)).fetchall())
        on_replica = rounded(replica.execute(HYBRID, (question, vector)).fetchall())
        assert on_replica == on_primary
        assert on_primary[0][2:] == (1, 1)  # found by both branches, ranked first


def test_hybrid_search_embeds_the_query_on_the_standby_without_caching_it(server, corpus, standby):
    """query_embedding NULL: the standby runs the model itself; it cannot write the
    query cache, so it skips it and still answers, with the primary's results."""
    question = "a pet that purrs"
    with corpus.connect() as primary, standby.connect(corpus.name) as replica:
        cached_before = primary.execute("select count(*) from pgseek.query_embeddings").fetchone()
        on_replica = rounded(replica.execute(HYBRID_IN_DATABASE, (question,)).fetchall())
        assert replica.execute("select count(*) from pgseek.query_embeddings").fetchone() == (
            cached_before
        )
        on_primary = rounded(primary.execute(HYBRID_IN_DATABASE, (question,)).fetchall())
        # the primary caches the query (it can write); the results are the same
        assert (
            primary.execute("select count(*) from pgseek.query_embeddings").fetchone()[0]
            == cached_before[0] + 1
        )
    assert on_replica == on_primary
    assert on_replica[0][0] == first_id(corpus, "Cats are")
    # A second call on the standby still embeds (no cache there) and still answers.
    with standby.connect(corpus.name) as replica:
        assert rounded(replica.execute(HYBRID_IN_DATABASE, (question,)).fetchall()) == on_primary
    # ... and the cache entry the primary wrote reaches the standby, which then uses it.
    wait_for_replay(server, standby)
    with standby.connect(corpus.name) as replica:
        assert replica.execute("select count(*) from pgseek.query_embeddings").fetchone()[0] == (
            cached_before[0] + 1
        )
        assert rounded(replica.execute(HYBRID_IN_DATABASE, (question,)).fetchall()) == on_primary


def first_id(db: Database, content_start: str):
    with db.connect() as conn:
        return conn.execute(
            "select id from pgseek.documents where starts_with(content, %s)", (content_start,)
        ).fetchone()[0]


def test_searches_in_a_read_only_transaction_on_the_primary_write_nothing(corpus):
    """The same degradation on the primary: default_transaction_read_only (as some
    poolers and read-only roles set it) does not break searches or embed()."""
    question = "lattice tower landmark in france"
    with corpus.connect() as conn:
        before = conn.execute("select count(*) from pgseek.query_embeddings").fetchone()[0]
        conn.execute("set default_transaction_read_only = on")
        rows = conn.execute(HYBRID_IN_DATABASE, (question,)).fetchall()
        assert rows[0][0] == first_id(corpus, "The Eiffel Tower")
        assert conn.execute("select pgseek.embed(array['one', 'two'])").fetchone()[0]
        conn.execute("set default_transaction_read_only = off")
        after = conn.execute("select count(*) from pgseek.query_embeddings").fetchone()[0]
    assert after == before


def test_the_metrics_views_work_on_the_standby(corpus, standby):
    """The exporter can scrape a standby too (its search statistics are its own)."""
    with standby.connect(corpus.name) as replica:
        row = replica.execute(
            "select in_recovery, queue_depth, dead_letters from pgseek.metrics"
        ).fetchone()
        assert row == (1, 0, 0)
        assert replica.execute(
            "select stored, embedded from pgseek.document_metrics"
        ).fetchone() == (
            len(DOCUMENTS),
            len(DOCUMENTS),
        )
        for view in ["function_metrics", "index_metrics", "table_metrics", "purge_metrics"]:
            replica.execute(f"select * from pgseek.{view}").fetchall()


def test_writes_on_the_standby_fail_with_a_read_only_error(corpus, standby):
    with standby.connect(corpus.name) as replica:
        with pytest.raises(errors.ReadOnlySqlTransaction):
            replica.execute("insert into pgseek.documents (content) values ('not here')")
        with pytest.raises(errors.ReadOnlySqlTransaction):
            replica.execute("select pgseek.refresh_text_stats()")
        with pytest.raises(errors.ReadOnlySqlTransaction):
            replica.execute("select pgseek.process_embedding_queue(10)")


# --- pg_cron: jobs run on the primary only ---------------------------------------------


@pytest.fixture(scope="module")
def cron_database(server: Server, standby: Standby) -> Iterator[str]:
    """The cron database (cron.database_name) migrated, with pgseek's jobs scheduled on
    the primary and replayed by the standby."""
    result = run_migrate(with_dbname(server.url, server.cron_database), "upgrade")
    assert result.returncode == 0, result.stderr
    with server.connect(server.cron_database) as conn:
        # (scheduled by the first migration only: another test module may have removed them)
        conn.execute("select pgseek.schedule_jobs()")
    wait_for_replay(server, standby)
    yield server.cron_database
    with server.connect(server.cron_database) as conn:
        conn.execute("select cron.unschedule(jobid) from cron.job where jobname like 'pgseek-%'")


def scheduler_count(conn: psycopg.Connection) -> int:
    return conn.execute(
        "select count(*) from pg_stat_activity where backend_type = 'pg_cron launcher'"
    ).fetchone()[0]


def test_pg_cron_runs_its_scheduler_on_the_primary_only(server, standby, cron_database):
    with server.connect(cron_database) as primary:
        assert scheduler_count(primary) == 1
    with standby.connect(cron_database) as replica:
        assert scheduler_count(replica) == 0
        # the jobs themselves are replicated: the standby lists them
        names = [r[0] for r in replica.execute("select job_name from pgseek.jobs()")]
        assert "pgseek-embedding-worker" in names


def test_job_functions_on_the_standby_say_jobs_belong_to_the_primary(standby, cron_database):
    with standby.connect(cron_database) as replica:
        notices = []
        replica.add_notice_handler(lambda d: notices.append(d.message_primary))
        replica.execute("select * from pgseek.jobs()")
        assert any("standby" in n and "primary" in n for n in notices), notices
        for call in [
            "select pgseek.schedule_jobs()",
            "select pgseek.pause_job('pgseek-embedding-worker')",
            "select pgseek.resume_job('pgseek-embedding-worker')",
            "select pgseek.unschedule_job('pgseek-embedding-worker')",
            "select pgseek.reload_jobs()",
            "call pgseek.run_embedding_worker(1)",
            "call pgseek.purge_expired()",
        ]:
            with pytest.raises(errors.ReadOnlySqlTransaction) as exc:
                replica.execute(call)
            assert "standby" in str(exc.value) and "primary" in str(exc.value), call


def test_job_functions_on_a_standby_without_pg_cron_give_the_same_error(corpus, standby):
    """Where pg_cron is not installed (the corpus database), every job function on the
    standby still answers 25006 (jobs belong to the primary), none 0A000 first."""
    with standby.connect(corpus.name) as replica:
        for call in [
            "select pgseek.schedule_jobs()",
            "select pgseek.pause_job('pgseek-embedding-worker')",
            "select pgseek.resume_job('pgseek-embedding-worker')",
            "select pgseek.unschedule_job('pgseek-embedding-worker')",
            "select pgseek.reload_jobs()",
        ]:
            with pytest.raises(errors.ReadOnlySqlTransaction):
                replica.execute(call)


# (last: it promotes the module's standby)
def test_after_promotion_pg_cron_starts_and_jobs_can_be_managed(standby, cron_database):
    """Failover: the promoted standby starts pg_cron's scheduler with the jobs it
    replicated, and pgseek's job functions work there."""
    subprocess.run(
        [str(BIN / "pg_ctl"), "-D", str(standby.data), "-w", "-t", "60", "promote"],
        check=True,
        capture_output=True,
        **run_as_postgres(),
    )
    with standby.connect(cron_database) as promoted:
        assert promoted.execute("select pg_is_in_recovery()").fetchone()[0] is False
        deadline = time.monotonic() + 30
        while scheduler_count(promoted) != 1:
            assert time.monotonic() < deadline, "pg_cron did not start after promotion"
            time.sleep(0.2)
        notices = []
        promoted.add_notice_handler(lambda d: notices.append(d.message_primary))
        promoted.execute("select pgseek.pause_job('pgseek-purge')")
        active = promoted.execute(
            "select active from pgseek.jobs() where job_name = 'pgseek-purge'"
        ).fetchone()
        assert active == (False,)
        assert not [n for n in notices if "standby" in n]
