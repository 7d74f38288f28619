"""Faults, injected for real, each followed by the check that nothing was lost.

The provider (tests/openai_stub.py, extended here with delays and malformed answers)
goes down, answers past its timeout, or answers garbage; the worker's backend is
terminated mid-batch; two workers run at once; purges run twice concurrently and are
interrupted mid-way; the server is stopped with `immediate` mode mid-queue and restarted.
(tests/test_embeddings.py covers the single-batch failure modes: 429, 500, 401, not-JSON
and wrong-dimension answers dead-lettered with their reason, a worker killed in an open
transaction, SKIP LOCKED between two open transactions.)

The invariant after every fault: each inserted row is embedded (with the vector of its
own text), queued, or dead-lettered with a reason; a completed purge leaves no expired
row and takes no live one.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import threading
import time

import psycopg
import pytest
from psycopg.types.json import Jsonb

from openai_stub import OpenAIStub, stub_vector
from pgtest import ROOT, ephemeral_cluster, free_port, run_migrate, with_dbname

DIMS = 8


class FaultyStub(OpenAIStub):
    """The stub, plus a delay before every answer and malformed 200 answers, for every
    request or only for requests holding a poisoned text."""

    def __init__(self):
        super().__init__(dimensions=DIMS)
        self.delay = 0.0
        self.garbage = None  # body -> bytes, a 200 answer
        self.poison = None  # only requests with a text containing this get garbage

    def respond(self, handler, body):
        if self.delay:
            time.sleep(self.delay)
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if self.garbage and (self.poison is None or any(self.poison in t for t in texts)):
            return self.send(handler, 200, self.garbage(body))
        return super().respond(handler, body)


@pytest.fixture
def stub():
    server = FaultyStub()
    yield server
    server.close()


def use_provider(conn, base_url: str, timeout: float = 1, **config) -> None:
    conn.execute(
        "update pgseek.config set embedding_provider = 'openai', embedding_model = 'stub-embed',"
        " embedding_dimensions = %s, embedding_options = %s",
        (DIMS, Jsonb({"base_url": base_url, "timeout": timeout})),
    )
    for column, value in config.items():
        conn.execute(f"update pgseek.config set {column} = %s", (value,))
    conn.execute("select pgseek.set_api_key('openai', 'sk-fault-test', %s)", (base_url,))


@pytest.fixture
def remote(conn, stub):
    use_provider(conn, stub.base_url)
    return conn


def insert(conn, count: int, prefix: str = "text") -> list:
    return [
        r[0]
        for r in conn.execute(
            "insert into pgseek.documents (content) select %s || ' ' || i"
            " from generate_series(1, %s) as i returning id",
            (prefix, count),
        ).fetchall()
    ]


def assert_nothing_lost(conn, ids: list) -> dict:
    """Every row embedded with its own text's vector, queued, or dead-lettered with a
    reason; returns the counts."""
    rows = conn.execute(
        """
        select d.id, d.content, d.embedding::text,
            exists (select from pgseek.embedding_queue as q where q.document_id = d.id),
            (select f.error from pgseek.embedding_dead_letter as f where f.document_id = d.id)
        from pgseek.documents as d where d.id = any(%s)
        """,
        (ids,),
    ).fetchall()
    assert len(rows) == len(ids), "a document disappeared"
    counts = {"embedded": 0, "queued": 0, "dead": 0}
    for _, content, embedding, queued, error in rows:
        if embedding is not None:
            vector = [float(x) for x in embedding.strip("[]").split(",")]
            expected = stub_vector(content, DIMS)
            cosine = sum(a * b for a, b in zip(vector, expected, strict=True))
            assert math.isclose(cosine, 1, abs_tol=1e-4), "a vector of another text"
            counts["embedded"] += 1
        elif queued:
            counts["queued"] += 1
        else:
            assert error, "a row neither embedded, queued nor dead-lettered"
            counts["dead"] += 1
    assert conn.execute("select unaccounted from pgseek.embedding_status").fetchone()[0] == 0
    return counts


def make_due(conn) -> None:
    """Skip the retry delay: the entries are due now."""
    conn.execute("update pgseek.embedding_queue set next_attempt_at = now()")


# --- the provider ---------------------------------------------------------------------


def test_provider_down_keeps_rows_queued_until_it_is_back(conn, stub):
    use_provider(conn, f"http://127.0.0.1:{free_port()}/v1")  # nothing listens there
    ids = insert(conn, 20)
    assert conn.execute("select pgseek.process_embedding_queue(64)").fetchone()[0] == 0
    errors_seen = conn.execute("select distinct last_error from pgseek.embedding_queue").fetchall()
    assert len(errors_seen) == 1 and "cannot reach" in errors_seen[0][0]
    assert assert_nothing_lost(conn, ids) == {"embedded": 0, "queued": 20, "dead": 0}
    use_provider(conn, stub.base_url)  # back, at another address
    make_due(conn)
    assert conn.execute("select pgseek.process_embedding_queue(64)").fetchone()[0] == 20
    assert assert_nothing_lost(conn, ids) == {"embedded": 20, "queued": 0, "dead": 0}


def test_a_provider_slower_than_its_timeout_is_retried_not_waited_for(remote, stub):
    ids = insert(remote, 10)
    stub.delay = 3  # the timeout is 1 s
    started = time.monotonic()
    assert remote.execute("select pgseek.process_embedding_queue(64)").fetchone()[0] == 0
    assert time.monotonic() - started < 2.9, "the worker waited past its timeout"
    error = remote.execute("select distinct last_error from pgseek.embedding_queue").fetchall()
    assert [e[0] for e in error] == [
        f"RetryableEmbeddingError: {stub.base_url} did not answer within 1.0s"
        " (gave up after 1 attempts)"
    ]
    assert assert_nothing_lost(remote, ids)["queued"] == 10
    stub.delay = 0
    make_due(remote)
    assert remote.execute("select pgseek.process_embedding_queue(64)").fetchone()[0] == 10
    assert assert_nothing_lost(remote, ids)["embedded"] == 10


def test_rate_limiting_to_the_last_attempt_dead_letters_with_the_reason(remote, stub):
    remote.execute("update pgseek.config set queue_max_attempts = 3")
    ids = insert(remote, 5)
    stub.mode = "rate_limit"
    for _ in range(3):
        make_due(remote)
        remote.execute("select pgseek.process_embedding_queue(64)")
    counts = assert_nothing_lost(remote, ids)
    assert counts == {"embedded": 0, "queued": 0, "dead": 5}
    errors_seen = remote.execute("select distinct error from pgseek.embedding_failures").fetchall()
    assert len(errors_seen) == 1 and "HTTP 429" in errors_seen[0][0]
    stub.mode = "ok"
    assert remote.execute("select pgseek.requeue_failed()").fetchone()[0] == 5
    remote.execute("select pgseek.process_embedding_queue(64)")
    assert assert_nothing_lost(remote, ids)["embedded"] == 5


def answer(body: dict, transform) -> bytes:
    """A well-formed answer for the request, passed through `transform`."""
    texts = body["input"]
    data = [
        {"object": "embedding", "index": i, "embedding": stub_vector(t, DIMS)}
        for i, t in enumerate(texts)
    ]
    return transform({"object": "list", "data": data, "model": body["model"]})


def with_nan(payload: dict) -> bytes:
    payload["data"][0]["embedding"][0] = math.nan
    return json.dumps(payload).encode()  # Python writes NaN, which JSON does not have


def out_of_range_index(payload: dict) -> bytes:
    for item in payload["data"]:
        item["index"] = len(payload["data"])
    return json.dumps(payload).encode()


GARBAGE = {
    "empty body": lambda _: b"",
    "JSON null": lambda _: b"null",
    "no data": lambda _: json.dumps({"object": "list"}).encode(),
    "data not a list": lambda _: json.dumps({"data": {"0": [1]}}).encode(),
    "one embedding short": lambda body: answer(
        body, lambda p: json.dumps({**p, "data": p["data"][:-1]}).encode()
    ),
    "index out of range": lambda body: answer(body, out_of_range_index),
    "NaN in a vector": lambda body: answer(body, with_nan),
    "strings in a vector": lambda body: answer(
        body, lambda p: json.dumps(p).replace('"embedding": [', '"embedding": ["1", ').encode()
    ),
    "truncated JSON": lambda body: answer(body, lambda p: json.dumps(p).encode()[:-7]),
}


@pytest.mark.parametrize("kind", list(GARBAGE))
def test_garbage_answers_are_dead_lettered_and_never_stored(remote, stub, kind):
    ids = insert(remote, 4)
    stub.garbage = GARBAGE[kind]
    assert remote.execute("select pgseek.process_embedding_queue(64)").fetchone()[0] == 0
    assert assert_nothing_lost(remote, ids) == {"embedded": 0, "queued": 0, "dead": 4}
    reason = remote.execute("select distinct error from pgseek.embedding_failures").fetchall()
    assert all("bad response" in r[0] or "dimensions" in r[0] for r in reason), reason
    stub.garbage = None
    remote.execute("select pgseek.requeue_failed()")
    assert remote.execute("select pgseek.process_embedding_queue(64)").fetchone()[0] == 4


def test_one_poisoned_text_does_not_sink_its_batch(remote, stub):
    ids = insert(remote, 9) + insert(remote, 1, prefix="poison")
    stub.garbage = GARBAGE["NaN in a vector"]
    stub.poison = "poison"
    assert remote.execute("select pgseek.process_embedding_queue(64)").fetchone()[0] == 9
    assert assert_nothing_lost(remote, ids) == {"embedded": 9, "queued": 0, "dead": 1}
    assert "NaN" in remote.execute("select error from pgseek.embedding_failures").fetchone()[0]


# --- the worker -------------------------------------------------------------------------


def run_worker(url: str, seconds: float, batch: int, pid_box: list, errors: list) -> None:
    try:
        with psycopg.connect(url, autocommit=True) as worker:
            pid_box.append(worker.execute("select pg_backend_pid()").fetchone()[0])
            worker.execute("call pgseek.run_embedding_worker(%s, %s)", (seconds, batch))
    except psycopg.Error as exc:
        errors.append(exc)


def test_the_worker_procedure_terminated_mid_batch_loses_nothing(remote, db, stub):
    """run_embedding_worker commits batch by batch; killed during a provider call, its
    committed batches stay embedded and the batch in flight goes back to the queue."""
    ids = insert(remote, 40)
    stub.delay = 0.4
    pid, failures = [], []
    worker = threading.Thread(target=run_worker, args=(db.url, 30, 5, pid, failures))
    worker.start()
    deadline = time.monotonic() + 20
    while len(stub.requests) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)  # the fourth request is in flight
    remote.execute("select pg_terminate_backend(%s)", (pid[0],))
    worker.join(15)
    assert not worker.is_alive()
    assert failures and isinstance(failures[0], psycopg.OperationalError)
    counts = assert_nothing_lost(remote, ids)
    assert counts["dead"] == 0 and 10 <= counts["embedded"] < 40, counts
    attempts = remote.execute("select max(attempts) from pgseek.embedding_queue").fetchone()[0]
    assert attempts == 0, "the batch in flight was counted as a failed attempt"
    stub.delay = 0
    remote.execute("select pgseek.process_embedding_queue(64)")
    assert assert_nothing_lost(remote, ids)["embedded"] == 40


def test_two_worker_procedures_at_once_embed_each_row_once(remote, db, stub):
    ids = insert(remote, 60)
    stub.delay = 0.05
    pids, failures = [], []
    workers = [
        threading.Thread(target=run_worker, args=(db.url, 3, 4, pids, failures)) for _ in range(2)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert failures == []
    assert assert_nothing_lost(remote, ids) == {"embedded": 60, "queued": 0, "dead": 0}
    sent = [t for r in stub.requests for t in r["body"]["input"]]
    assert sorted(sent) == sorted(f"text {i}" for i in range(1, 61)), "a text was embedded twice"


@pytest.fixture
def crash_cluster():
    """A cluster of the test's own (it is stopped with `immediate` mode), with a
    migrated database; yields (its database URL, a function that crashes and restarts it)."""
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    with ephemeral_cluster("pgseek-crash-") as cluster:
        with psycopg.connect(cluster.url, autocommit=True) as admin:
            admin.execute("create database pgseek_crash")
        url = with_dbname(cluster.url, "pgseek_crash")
        result = run_migrate(url, "upgrade")
        assert result.returncode == 0, result.stderr

        def crash_and_restart() -> None:
            pg_ctl = f"/usr/lib/postgresql/{os.environ.get('PGSEEK_PG_MAJOR', '15')}/bin/pg_ctl"
            subprocess.run(
                [*as_owner, pg_ctl, "-D", str(cluster.home / "data"), "-m", "immediate", "stop"],
                check=True,
                capture_output=True,
            )
            subprocess.run(
                [str(ROOT / "scripts" / "cluster.sh"), "up"],
                env=cluster.env,
                check=True,
                capture_output=True,
            )

        yield url, crash_and_restart


@pytest.mark.slow
def test_an_immediate_shutdown_mid_queue_loses_nothing(crash_cluster, stub):
    """The server stopped with `immediate` mode (no checkpoint, as a power cut) while the
    worker procedure has a batch in flight, then restarted: crash recovery keeps the
    committed batches and puts the batch in flight back in the queue."""
    url, crash_and_restart = crash_cluster
    with psycopg.connect(url, autocommit=True) as conn:
        use_provider(conn, stub.base_url, timeout=5)
        ids = insert(conn, 40)
    stub.delay = 0.4
    pid, failures = [], []
    worker = threading.Thread(target=run_worker, args=(url, 30, 5, pid, failures))
    worker.start()
    deadline = time.monotonic() + 20
    while len(stub.requests) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)
    crash_and_restart()
    worker.join(15)
    assert failures and isinstance(failures[0], psycopg.OperationalError)
    stub.delay = 0
    with psycopg.connect(url, autocommit=True) as conn:
        counts = assert_nothing_lost(conn, ids)
        assert counts["dead"] == 0 and 10 <= counts["embedded"] < 40, counts
        assert conn.execute("select max(attempts) from pgseek.embedding_queue").fetchone()[0] == 0
        conn.execute("select pgseek.process_embedding_queue(64)")
        assert assert_nothing_lost(conn, ids)["embedded"] == 40


# --- purges -----------------------------------------------------------------------------


def load_for_purge(conn, expired: int, live: int) -> None:
    conn.execute("update pgseek.config set embedding_mode = 'async'")
    conn.execute("select pgseek.set_retention('{\"kind\": \"log\"}', '1 day')")
    conn.execute("select pgseek.set_retention('{\"kind\": \"trace\"}', '7 days')")
    conn.execute(
        "insert into pgseek.documents (content, metadata, created_at)"
        " select 'expired ' || i,"
        " jsonb_build_object('kind', (array['log', 'trace'])[i %% 2 + 1]),"
        " now() - interval '30 days' from generate_series(1, %s) as i",
        (expired,),
    )
    conn.execute(
        "insert into pgseek.documents (content, metadata, created_at)"
        " select 'live ' || i,"
        " jsonb_build_object('kind', (array['log', 'trace', 'doc'])[i %% 3 + 1]),"
        " now() - interval '12 hours' from generate_series(1, %s) as i",
        (live,),
    )


def expired_and_live(conn) -> tuple[int, int]:
    return conn.execute(
        "select count(*) filter (where content like 'expired%%'),"
        " count(*) filter (where content like 'live%%') from pgseek.documents"
    ).fetchone()


def assert_purge_consistent(conn) -> None:
    orphans = conn.execute(
        "select count(*) from pgseek.embedding_queue as q"
        " where not exists (select from pgseek.documents as d where d.id = q.document_id)"
    ).fetchone()[0]
    assert orphans == 0


def purge_in(url: str, results: list, errors: list, **args) -> None:
    try:
        with psycopg.connect(url, autocommit=True) as c:
            named = ", ".join(f"{k} => %({k})s" for k in args)
            results.append(c.execute(f"call pgseek.purge_expired({named})", args).fetchone()[0])
    except psycopg.Error as exc:
        errors.append(exc)


def test_two_purges_at_once_share_the_work(conn, db):
    load_for_purge(conn, expired=3000, live=500)
    results, failures = [], []
    args = (db.url, results, failures)
    runs = [
        threading.Thread(target=purge_in, args=args, kwargs={"batch_size": 50}) for _ in range(2)
    ]
    for r in runs:
        r.start()
    for r in runs:
        r.join(120)
    assert failures == []
    assert sum(results) == 3000, results  # no row deleted twice, none missed
    assert expired_and_live(conn) == (0, 500)
    statuses = conn.execute("select status from pgseek.purge_log").fetchall()
    assert statuses == [("finished",), ("finished",)]
    assert_purge_consistent(conn)


def test_an_interrupted_purge_loses_no_live_row_and_the_next_one_finishes(conn, db):
    load_for_purge(conn, expired=6000, live=500)
    results, failures = [], []
    run = threading.Thread(
        target=purge_in, args=(db.url, results, failures), kwargs={"batch_size": 10}
    )
    run.start()
    deadline = time.monotonic() + 30
    batches = 0
    while time.monotonic() < deadline:
        row = conn.execute("select coalesce(max(batches), 0) from pgseek.purge_log").fetchone()
        batches = row[0]
        if batches >= 20:
            break
        time.sleep(0.02)
    conn.execute(
        "select pg_terminate_backend(pid) from pg_stat_activity"
        " where datname = current_database() and query like 'call pgseek.purge_expired%%'"
    )
    run.join(30)
    assert batches >= 20
    assert failures and not results, "the purge finished before it could be interrupted"
    expired, live = expired_and_live(conn)
    assert 0 < expired < 6000 and live == 500
    assert conn.execute("select status from pgseek.purge_log").fetchall() == [("running",)]
    assert_purge_consistent(conn)
    assert conn.execute("call pgseek.purge_expired()").fetchone()[0] == expired
    assert expired_and_live(conn) == (0, 500)
    assert_purge_consistent(conn)
    assert conn.execute("select status from pgseek.purge_log order by id").fetchall() == [
        ("interrupted",),
        ("finished",),
    ]
