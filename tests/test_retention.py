"""Retention: policies, purge_expired() in batches, boundaries, dependent rows,
concurrency, the purge log, and errors."""

from __future__ import annotations

import threading

import pytest
from psycopg import errors

from pgtest import wait_for


def add(conn, content: str, age: str, metadata: str = '{"source": "training"}') -> None:
    conn.execute(
        "insert into pgseek.documents (content, metadata, created_at)"
        " values (%s, %s, now() - %s::interval)",
        (content, metadata, age),
    )


def contents(conn) -> list[str]:
    return [r[0] for r in conn.execute("select content from pgseek.documents order by content")]


def purge(conn, **args) -> int:
    named = ", ".join(f"{k} => %({k})s" for k in args)
    sql = f"call pgseek.purge_expired({named})" if named else "call pgseek.purge_expired()"
    return conn.execute(sql, args).fetchone()[0]


def last_run(conn) -> tuple:
    return conn.execute(
        "select status, deleted, batches, per_policy, error from pgseek.purge_log"
        " order by id desc limit 1"
    ).fetchone()


def test_without_a_policy_nothing_is_purged(conn):
    add(conn, "ancient", "10 years")
    assert purge(conn) == 0
    assert contents(conn) == ["ancient"]
    assert last_run(conn)[:2] == ("finished", 0)


def test_a_run_whose_session_ended_is_marked_interrupted_by_the_next(conn, db):
    """A 'running' row whose run still holds its lock stays 'running'; once that session
    is gone, the next run marks the row 'interrupted' (the crash itself: test_faults)."""
    live = db.connect()
    live_pid = live.info.backend_pid
    run_id = live.execute("insert into pgseek.purge_log default values returning id").fetchone()[0]
    live.execute("select pg_advisory_lock(pgseek.purge_lock_key(%s))", (run_id,))
    status = "select status, finished_at is not null, error from pgseek.purge_log where id = %s"
    try:
        purge(conn)
        assert conn.execute(status, (run_id,)).fetchone() == ("running", False, None)
    finally:
        live.close()
    # the server ends the closed session's backend (and its lock) a moment later
    gone = "select not exists (select from pg_stat_activity where pid = %s)"
    assert wait_for(lambda: conn.execute(gone, (live_pid,)).fetchone()[0], 15, 0.05)
    purge(conn)
    marked, finished, error = conn.execute(status, (run_id,)).fetchone()
    assert (marked, finished) == ("interrupted", True)
    assert "it ended without writing its outcome" in error
    assert last_run(conn)[0] == "finished"
    # the run's own lock is released at its end: nothing of it is left
    assert (
        conn.execute(
            "select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()"
        ).fetchone()[0]
        == 0
    )
    metrics = "select failed_runs_logged, last_run_failed from pgseek.purge_metrics"
    assert conn.execute(metrics).fetchone() == (1, 0)


BLOCKED_APP = "purge under test"


def hold_document_deletes(conn, holder) -> None:
    """Makes every delete from pgseek.documents by a session named BLOCKED_APP wait
    while `holder` holds advisory lock 4242 (a statement trigger of the test's own)."""
    conn.execute(
        "create function public.wait_for_holder() returns trigger language plpgsql as $$"
        " begin if current_setting('application_name') = 'purge under test' then"
        " perform pg_advisory_xact_lock_shared(4242); end if; return null; end $$"
    )
    conn.execute(
        "create trigger wait_for_holder before delete on pgseek.documents"
        " for each statement execute function public.wait_for_holder()"
    )
    holder.execute("select pg_advisory_lock(4242)")


def purge_backend(conn, waiting_on: str) -> int | None:
    """The pid of the purge named BLOCKED_APP once it waits on `waiting_on`."""
    row = conn.execute(
        "select pid from pg_stat_activity where application_name = %s"
        " and query like 'call pgseek.purge_expired%%' and wait_event = %s",
        (BLOCKED_APP, waiting_on),
    ).fetchone()
    return row[0] if row else None


def advisory_locks_of(conn, pid: int) -> int:
    return conn.execute(
        "select count(*) from pg_locks where locktype = 'advisory' and pid = %s", (pid,)
    ).fetchone()[0]


@pytest.mark.parametrize("route", ["long-lived connection", "pgbouncer"])
def test_a_purge_cancelled_at_its_batch_log_update_leaves_nothing_behind(conn, db, request, route):
    """The reviewer's case: the purge's batch has deleted its documents and waits to
    count them in its purge_log row (locked by another session) when it is cancelled.
    Its server backend lives on (an open connection, or PgBouncer's pool): it must hold
    no lock, the row must not stay 'running', and it must count what is gone."""
    conn.execute("select pgseek.set_retention('{\"source\": \"training\"}', '1 day')")
    for i in range(10):
        add(conn, f"old {i}", "2 days")
    holder, locker = db.connect(), db.connect()
    if route == "pgbouncer":
        client = request.getfixturevalue("bouncer").connect(db.name, application_name=BLOCKED_APP)
    else:
        client = db.connect(application_name=BLOCKED_APP)
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(purge(client, batch_size=100))
        except Exception as exc:  # the old purge let the cancel escape
            outcome.append(exc)

    try:
        hold_document_deletes(conn, holder)
        thread = threading.Thread(target=run)
        thread.start()
        pid = wait_for(lambda: purge_backend(conn, "advisory"), 10, 0.02)
        assert pid, "the purge never reached its documents batch"
        locker.execute("begin")
        run_id = locker.execute(
            "select id from pgseek.purge_log where status = 'running' for update"
        ).fetchone()[0]
        holder.execute("select pg_advisory_unlock(4242)")
        # the documents are deleted (not committed); the batch waits for the row
        assert wait_for(lambda: purge_backend(conn, "transactionid"), 10, 0.02) == pid
        conn.execute("select pg_cancel_backend(%s)", (pid,))
        # the cancel is taken once the batch's transaction is gone
        documents_locked = (
            "select count(*) from pg_locks where pid = %s"
            " and relation = 'pgseek.documents'::regclass"
        )
        assert wait_for(lambda: conn.execute(documents_locked, (pid,)).fetchone()[0] == 0, 10, 0.02)
        locker.execute("rollback")
        thread.join(30)
        assert not thread.is_alive()
        assert advisory_locks_of(conn, pid) == 0
        status, deleted, error = conn.execute(
            "select status, deleted, error from pgseek.purge_log where id = %s", (run_id,)
        ).fetchone()
        assert status in ("failed", "interrupted")
        gone = 10 - conn.execute("select count(*) from pgseek.documents").fetchone()[0]
        assert deleted == gone
        assert outcome == [gone]  # the call itself returns normally
        assert status == "failed" and "canceling statement due to user request" in error
        # and the next run finishes the work
        assert purge(conn) == 10 - gone
        assert last_run(conn)[:2] == ("finished", 10 - gone)
    finally:
        for c in (client, holder, locker):
            c.close()


def test_a_run_whose_backend_went_on_is_interrupted_and_a_live_one_is_not(conn, db):
    """A 'running' row whose backend is alive but no longer in the run's statement (idle
    in a pool, as after an error that escaped the run) is marked 'interrupted' by the
    next run; a run still working in its backend (waiting here) stays 'running' and
    finishes."""
    conn.execute("select pgseek.set_retention('{\"source\": \"training\"}', '1 day')")
    for i in range(3):
        add(conn, f"old {i}", "2 days")
    idle, holder = db.connect(), db.connect()
    live = db.connect(application_name=BLOCKED_APP)
    record = (
        "insert into pgseek.purge_log (backend_pid, backend_query_start)"
        " select pid, query_start from pg_stat_activity where pid = pg_backend_pid()"
        " returning id"
    )
    dead_id = idle.execute(record).fetchone()[0]  # then idle, its backend alive
    outcome: list = []
    try:
        hold_document_deletes(conn, holder)
        thread = threading.Thread(target=lambda: outcome.append(purge(live)))
        thread.start()
        assert wait_for(lambda: purge_backend(conn, "advisory"), 10, 0.02)
        live_id = conn.execute(
            "select max(id) from pgseek.purge_log where status = 'running'"
        ).fetchone()[0]
        assert purge(conn) == 3  # (the live run waits before it takes any row)
        statuses = dict(
            conn.execute(
                "select id, status from pgseek.purge_log where id < %s + 1", (live_id,)
            ).fetchall()
        )
        assert statuses == {dead_id: "interrupted", live_id: "running"}
        holder.execute("select pg_advisory_unlock(4242)")
        thread.join(30)
        assert outcome == [0]
        status = "select status from pgseek.purge_log where id = %s"
        assert conn.execute(status, (live_id,)).fetchone()[0] == "finished"
        assert advisory_locks_of(conn, idle.info.backend_pid) == 0
    finally:
        for c in (idle, holder, live):
            c.close()


def test_only_matching_rows_older_than_the_window_go(conn):
    conn.execute("select pgseek.set_retention('{\"source\": \"training\"}', '30 days')")
    add(conn, "expired training", "30 days 1 minute")
    add(conn, "fresh training", "29 days 23 hours")
    add(conn, "expired other", "90 days", '{"source": "docs"}')
    add(conn, "expired training, more keys", "31 days", '{"source": "training", "lang": "en"}')
    conn.execute("set time zone 'Pacific/Kiritimati'")  # +14: the window is on timestamptz
    assert purge(conn) == 2
    assert contents(conn) == ["expired other", "fresh training"]


def test_batches_are_logged_per_policy(conn):
    policy = conn.execute(
        "select pgseek.set_retention('{\"source\": \"training\"}', '1 day')"
    ).fetchone()[0]
    for i in range(5):
        add(conn, f"old {i}", "2 days")
    assert purge(conn, batch_size=2) == 5
    status, deleted, batches, per_policy, error = last_run(conn)
    assert (status, deleted, batches, error) == ("finished", 5, 3, None)
    assert per_policy == {str(policy): 5}


def test_the_time_budget_stops_a_run_between_batches(conn):
    conn.execute("select pgseek.set_retention('{\"source\": \"training\"}', '1 day')")
    for i in range(6):
        add(conn, f"old {i}", "2 days")
    assert purge(conn, batch_size=2, time_budget="1 microsecond") == 2
    assert last_run(conn)[:3] == ("time budget reached", 2, 1)
    assert purge(conn) == 4  # the next run goes on


def test_chunks_queue_entries_and_dead_letters_go_with_their_document(conn):
    conn.execute("select pgseek.set_retention('{\"source\": \"manual\"}', '7 days')")
    source = conn.execute(
        "select pgseek.ingest(repeat('A sentence about retention. ', 200),"
        ' \'{"source": "manual"}\', 64, 8)'
    ).fetchone()[0]
    conn.execute("update pgseek.sources set created_at = now() - interval '8 days'")
    conn.execute("update pgseek.documents set created_at = now() - interval '8 days'")
    assert conn.execute("select count(*) from pgseek.embedding_queue").fetchone()[0] > 0
    purge(conn)
    for table in ("documents", "sources", "embedding_queue", "embedding_dead_letter"):
        assert conn.execute(f"select count(*) from pgseek.{table}").fetchone()[0] == 0, table
    assert source is not None


def ingest_expired(conn, n: int, metadata: str = '{"source": "manual"}') -> None:
    """n sources of 6 chunks each (pgseek.ingest), 8 days old."""
    for i in range(n):
        conn.execute("select pgseek.ingest(repeat(%s, 60), %s, 20, 0)", (f"word{i} ", metadata))
    for table in ("sources", "documents"):
        conn.execute(f"update pgseek.{table} set created_at = now() - interval '8 days'")


def test_chunks_deleted_with_their_source_are_counted(conn):
    policy = conn.execute(
        "select pgseek.set_retention('{\"source\": \"manual\"}', '7 days')"
    ).fetchone()[0]
    ingest_expired(conn, 2)
    chunks = conn.execute("select count(*) from pgseek.documents").fetchone()[0]
    assert chunks >= 6
    for i in range(chunks):
        add(conn, f"kept {i}", "1 hour", '{"source": "docs"}')
    assert purge(conn, batch_size=2) == chunks
    status, deleted, _, per_policy, _ = last_run(conn)
    assert (status, deleted, per_policy) == ("finished", chunks, {str(policy): chunks})
    advice = maintenance_of_last_run(conn)[0]
    assert advice.startswith("50.0% of the documents were deleted")


def test_expired_sources_go_even_when_their_chunks_no_longer_match(conn):
    """The run goes on while sources remain, not only while documents do."""
    conn.execute("select pgseek.set_retention('{\"source\": \"manual\"}', '7 days')")
    ingest_expired(conn, 5)
    conn.execute('update pgseek.documents set metadata = \'{"source": "retagged"}\'')
    chunks = conn.execute("select count(*) from pgseek.documents").fetchone()[0]
    assert purge(conn, batch_size=2) == chunks
    assert last_run(conn)[0] == "finished"
    assert conn.execute("select count(*) from pgseek.sources").fetchone()[0] == 0
    assert contents(conn) == []


def hold_queue_row_of(db, content: str):
    """Another session holding the queue row of a document: deleting it waits."""
    other = db.connect()
    other.execute("begin")
    held = other.execute(
        "select count(*) from (select from pgseek.embedding_queue as q join pgseek.documents"
        " as d on d.id = q.document_id where d.content = %s for update of q) as l",
        (content,),
    )
    assert held.fetchone()[0] == 1
    return other


def advisory_locks(conn) -> int:
    return conn.execute(
        "select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()"
    ).fetchone()[0]


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        ("lock_timeout", "canceling statement due to lock timeout"),
        ("statement_timeout", "canceling statement due to statement timeout"),
    ],
)
def test_a_failed_or_cancelled_run_logs_what_it_did_and_gives_back_its_lock(
    conn, db, setting, error
):
    policy = conn.execute(
        "select pgseek.set_retention('{\"source\": \"training\"}', '1 day')"
    ).fetchone()[0]
    for i in range(5):
        add(conn, f"old {i}", f"{10 - i} days")  # deleted oldest first: old 0, old 1, ...
    other = hold_queue_row_of(db, "old 2")
    try:
        conn.execute(f"set {setting} = '1s'")
        assert purge(conn, batch_size=2) == 2
        conn.execute(f"reset {setting}")
    finally:
        other.close()
    status, deleted, _, per_policy, message = last_run(conn)
    assert (status, deleted, per_policy) == ("failed", 2, {str(policy): 2})
    assert message == error
    assert advisory_locks(conn) == 0
    assert contents(conn) == ["old 2", "old 3", "old 4"]
    assert purge(conn) == 3  # the next run goes on
    assert last_run(conn)[0] == "finished"


def test_the_time_budget_is_checked_between_policies_too(conn):
    first = conn.execute(
        "select pgseek.set_retention('{\"source\": \"training\"}', '1 day')"
    ).fetchone()[0]
    conn.execute("select pgseek.set_retention('{\"source\": \"docs\"}', '1 day')")
    add(conn, "old training", "2 days")
    add(conn, "old docs", "2 days", '{"source": "docs"}')
    assert purge(conn, batch_size=2, time_budget="1 microsecond") == 1
    assert last_run(conn)[:4] == ("time budget reached", 1, 1, {str(first): 1})
    assert contents(conn) == ["old docs"]


def test_old_query_embeddings_and_purge_log_rows_are_pruned(conn):
    conn.execute(
        "insert into pgseek.query_embeddings (model, text_hash, embedding, last_used_at)"
        " values ('m', '\\x01', '[1,2]', now() - interval '31 days'),"
        " ('m', '\\x02', '[1,2]', now())"
    )
    conn.execute(
        "insert into pgseek.purge_log (started_at, status) values (now() - interval '91 days',"
        " 'finished')"
    )
    purge(conn)
    assert conn.execute("select count(*) from pgseek.query_embeddings").fetchone()[0] == 1
    old_runs = "select count(*) from pgseek.purge_log where started_at < now() - interval '1 day'"
    assert conn.execute(old_runs).fetchone()[0] == 0


def purge_concurrently(db, runs: int = 2, **args) -> list[int]:
    """What each of `runs` purge_expired() calls, each in a session of its own running
    at the same time, returned; fails on any error."""
    results, failures = [], []

    def run() -> None:
        try:
            with db.connect() as other:
                results.append(purge(other, **args))
        except Exception as exc:  # any error fails the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    return results


def test_concurrent_runs_share_the_work(conn, db):
    conn.execute("select pgseek.set_retention('{\"source\": \"training\"}', '1 day')")
    conn.execute(
        "insert into pgseek.documents (content, metadata, created_at)"
        " select 'old ' || i, '{\"source\": \"training\"}', now() - interval '2 days'"
        " from generate_series(1, 3000) as i"
    )
    results = purge_concurrently(db, batch_size=100)
    assert sum(results) == 3000
    assert contents(conn) == []


def test_concurrent_runs_share_sources_and_their_chunks(conn, db):
    """Both runs' documents batches take chunks while their sources batches delete
    chunks of the sources they hold: nothing is counted twice, nothing deadlocks."""
    conn.execute("select pgseek.set_retention('{\"source\": \"manual\"}', '7 days')")
    ingest_expired(conn, 40)
    chunks = conn.execute("select count(*) from pgseek.documents").fetchone()[0]
    results = purge_concurrently(db, batch_size=3)
    assert sum(results) == chunks
    runs = conn.execute("select status, error from pgseek.purge_log order by id").fetchall()
    assert runs == [("finished", None)] * 2
    assert conn.execute("select count(*) from pgseek.sources").fetchone()[0] == 0


def maintenance_of_last_run(conn) -> tuple:
    return conn.execute(
        "select advice, maintenance from pgseek.purge_log order by id desc limit 1"
    ).fetchone()


def test_a_large_purge_advises_maintenance_where_pg_cron_is_not_installed(conn):
    conn.execute("select pgseek.set_retention('{\"source\": \"training\"}', '1 day')")
    for i in range(3):
        add(conn, f"old {i}", "2 days")
    add(conn, "kept", "1 hour", '{"source": "docs"}')
    purge(conn)
    advice, maintenance = maintenance_of_last_run(conn)
    assert advice.startswith("75.0% of the documents were deleted: rebuild the indexes")
    assert maintenance.startswith("advised: run REINDEX TABLE CONCURRENTLY pgseek.documents")


def test_a_small_purge_needs_no_maintenance(conn):
    conn.execute("select pgseek.set_retention('{\"source\": \"training\"}', '1 day')")
    add(conn, "old", "2 days")
    for i in range(10):
        add(conn, f"kept {i}", "1 hour")
    purge(conn)
    assert maintenance_of_last_run(conn) == (None, None)  # 1 of 11 deleted: 9.1% < 10%


def test_maintenance_share_is_configurable_and_can_be_turned_off(conn):
    conn.execute("select pgseek.set_retention('{\"source\": \"training\"}', '1 day')")
    conn.execute("update pgseek.config set maintenance_after_purge_share = 0.05")
    add(conn, "old", "2 days")
    for i in range(10):
        add(conn, f"kept {i}", "1 hour")
    purge(conn)
    assert maintenance_of_last_run(conn)[1].startswith("advised:")
    conn.execute("update pgseek.config set maintenance_after_purge_share = null")
    for i in range(20):
        add(conn, f"old {i}", "2 days")
    purge(conn)
    advice, maintenance = maintenance_of_last_run(conn)
    assert advice.startswith("66.7% of the documents were deleted") and maintenance is None
    with pytest.raises(errors.CheckViolation):
        conn.execute("update pgseek.config set maintenance_after_purge_share = 0")


def test_policies_are_upserted_listed_and_removed(conn):
    first = conn.execute('select pgseek.set_retention(\'{"source": "a"}\')').fetchone()[0]
    again = conn.execute("select pgseek.set_retention('{\"source\": \"a\"}', '7 days')").fetchone()[
        0
    ]
    assert first == again
    rows = conn.execute("select match, keep::text from pgseek.retention_policies").fetchall()
    assert rows == [({"source": "a"}, "7 days")]
    assert conn.execute('select pgseek.remove_retention(\'{"source": "a"}\')').fetchone()[0]
    assert not conn.execute('select pgseek.remove_retention(\'{"source": "a"}\')').fetchone()[0]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("select pgseek.set_retention(null)", "match must be a JSON object, not NULL"),
        ("select pgseek.set_retention('[1]')", "match must be a JSON object, not array"),
        ("select pgseek.set_retention('{}')", "match must name at least one metadata key"),
        ("select pgseek.set_retention('{\"a\": 1}', '0 days')", "keep must be a positive"),
        ("select pgseek.set_retention('{\"a\": 1}', '-1 day')", "keep must be a positive"),
        ("select pgseek.set_retention('{\"a\": 1}', null)", "keep must be a positive"),
        ("call pgseek.purge_expired(batch_size => 0)", "batch_size must be between"),
        ("call pgseek.purge_expired(time_budget => '-1 s')", "time_budget must be a positive"),
    ],
)
def test_bad_arguments_raise_22023(conn, call, message):
    with pytest.raises(errors.InvalidParameterValue, match=message):
        conn.execute(call)
