"""pgseek's pg_cron jobs, run for real by pg_cron (which has minute schedules in 1.4)."""

from __future__ import annotations

import time

import pytest
from psycopg import errors

from pgtest import run_migrate, wait_for, wait_for_pg_cron, with_dbname


@pytest.fixture(scope="module")
def cron_conn(server, template_db):  # noqa: ARG001 (after it: see below)
    """The cron database (cron.database_name) of a cluster this session started, migrated.
    After the template database: migrating it changes many catalog entries at once, and
    pg_cron 1.4 can miss job changes made while that churn overflows the shared
    invalidation queue (citusdata/pg_cron#362), so it happens before any job changes."""
    if not server.owned:
        pytest.skip("runs only on the test session's own cluster (it migrates the cron database)")
    result = run_migrate(with_dbname(server.url, server.cron_database), "upgrade")
    assert result.returncode == 0, result.stderr
    with server.connect(server.cron_database) as conn:
        yield conn
        conn.execute("select cron.unschedule(jobid) from cron.job where jobname like 'pgseek-%'")


@pytest.mark.slow
def test_the_scheduled_worker_embeds_new_rows(cron_conn):
    jobs = cron_conn.execute("select job_name, schedule, active from pgseek.jobs()").fetchall()
    assert ("pgseek-embedding-worker", "* * * * *", True) in jobs
    cron_conn.execute(
        "insert into pgseek.documents (content) select 'scheduled embedding ' || i"
        " from generate_series(1, 20) as i"
    )
    embedded = wait_for(
        lambda: cron_conn.execute(
            "select embedded = 20 and queued = 0 from pgseek.embedding_status"
        ).fetchone()[0],
        timeout=150,
    )
    assert embedded, cron_conn.execute("select * from pgseek.jobs()").fetchall()
    run = cron_conn.execute(
        "select d.status from cron.job_run_details as d join cron.job as j using (jobid)"
        " where j.jobname = 'pgseek-embedding-worker' order by d.runid desc limit 1"
    ).fetchone()
    assert run[0] in ("running", "succeeded")


def test_jobs_can_be_paused_resumed_and_rescheduled_idempotently(cron_conn):
    cron_conn.execute("select pgseek.pause_job('pgseek-embedding-worker')")
    paused = "select active from pgseek.jobs() where job_name = 'pgseek-embedding-worker'"
    assert cron_conn.execute(paused).fetchone()[0] is False
    # Scheduling again updates the job by name and keeps it paused.
    cron_conn.execute("select pgseek.schedule_jobs()")
    rows = cron_conn.execute("select job_name, active from pgseek.jobs()").fetchall()
    assert rows == [
        ("pgseek-cron-history", True),
        ("pgseek-embedding-worker", False),
        ("pgseek-purge", True),
        ("pgseek-text-stats", True),
    ]
    cron_conn.execute("select pgseek.resume_job('pgseek-embedding-worker')")
    assert cron_conn.execute(paused).fetchone()[0] is True


@pytest.mark.slow
def test_reload_jobs_makes_pg_cron_see_a_change_it_missed(cron_conn):
    """A job change committed with a burst of catalog changes (3,000 temporary tables)
    resets pg_cron's scheduler, which keeps its old job list (citusdata/pg_cron#406);
    pgseek.reload_jobs() a few seconds later makes it read the change. (Without it the
    job does not run at all: the change waits for the next one to cron.job.)"""
    history = "pgseek-cron-history"
    runs = (
        "select count(*) from cron.job_run_details"
        " where jobid = pgseek.job_id('pgseek-cron-history')"
    )
    before = cron_conn.execute(runs).fetchone()[0]
    try:
        with cron_conn.transaction():
            cron_conn.execute(
                "select cron.alter_job(pgseek.job_id(%s), schedule => '* * * * *')", (history,)
            )
            cron_conn.execute(
                "do $$ begin for i in 1..3000 loop"
                " execute format('create temporary table reload_probe_%s (a int)', i);"
                " end loop; end $$"
            )
        # The scheduler comes to its reset within a second, or, pg_cron 1.4 with
        # background workers, once no job runs (citusdata/pg_cron#200): what it was sent
        # before then is skipped. (make migrate waits the same way.)
        idle = wait_for(
            lambda: cron_conn.execute(
                "select count(*) = 0 from pg_stat_activity where backend_type = 'pg_cron'"
            ).fetchone()[0],
            timeout=70,
        )
        assert idle
        time.sleep(2)
        assert cron_conn.execute("select pgseek.reload_jobs()").fetchone()[0] is True
        ran = wait_for(lambda: cron_conn.execute(runs).fetchone()[0] > before, timeout=75)
        assert ran, cron_conn.execute("select * from pgseek.jobs()").fetchall()
    finally:
        cron_conn.execute("select pgseek.schedule_jobs()")  # back to the nightly schedule
        cron_conn.execute("discard temporary")


def test_a_migration_that_applies_something_reloads_the_jobs(server, cron_conn):
    url = with_dbname(server.url, server.cron_database)
    cron_conn.execute(
        "delete from pgseek_meta.repeatable_objects where file = '980-schedule-jobs.sql'"
    )
    result = run_migrate(url, "upgrade")
    assert result.returncode == 0, result.stderr
    assert "pg_cron told to read its jobs again" in result.stderr
    result = run_migrate(url, "upgrade")  # nothing to apply: no wait, no reload
    assert result.returncode == 0, result.stderr
    assert "pg_cron told" not in result.stderr


def test_unknown_job_names_are_reported(cron_conn):
    with pytest.raises(errors.UndefinedObject, match="no pgseek job named 'nightly'"):
        cron_conn.execute("select pgseek.pause_job('nightly')")


def test_without_pg_cron_scheduling_explains_what_to_do(conn):
    with pytest.raises(errors.FeatureNotSupported) as exc:
        conn.execute("select pgseek.schedule_jobs()")
    assert "pg_cron is not installed in database" in str(exc.value)
    assert "cron.schedule_in_database('pgseek-embedding-worker'" in exc.value.diag.message_hint


@pytest.mark.slow
def test_the_scheduled_purge_runs_and_cron_history_is_cleaned(cron_conn):
    cron_conn.execute("select pgseek.set_retention('{\"source\": \"cron-test\"}', '1 day')")
    cron_conn.execute(
        "insert into pgseek.documents (content, metadata, created_at) values"
        " ('expired', '{\"source\": \"cron-test\"}', now() - interval '2 days')"
    )
    runs_before = cron_conn.execute("select count(*) from pgseek.purge_log").fetchone()[0]
    cron_conn.execute(
        "select cron.alter_job(jobid, schedule => '* * * * *') from cron.job"
        " where jobname = 'pgseek-purge'"
    )
    try:
        finished = wait_for_pg_cron(
            cron_conn,
            lambda: cron_conn.execute(
                "select count(*) > %s from pgseek.purge_log where status = 'finished'",
                (runs_before,),
            ).fetchone()[0],
            timeout=150,
        )
    finally:
        cron_conn.execute("select pgseek.schedule_jobs()")  # back to the nightly schedule
    assert finished
    assert (
        cron_conn.execute(
            "select count(*) from pgseek.documents where content = 'expired'"
        ).fetchone()[0]
        == 0
    )
    # pg_cron 1.4 records a run's end in its launcher loop, which can lag behind the
    # purge's own commit while another job (the 50-second embedding worker) runs.
    succeeded = wait_for(
        lambda: cron_conn.execute(
            "select d.status = 'succeeded' from cron.job_run_details as d"
            " join cron.job as j using (jobid)"
            " where j.jobname = 'pgseek-purge' order by d.runid desc limit 1"
        ).fetchone()[0],
        timeout=90,
    )
    assert succeeded
    cron_conn.execute(
        "insert into cron.job_run_details (jobid, runid, command, status, start_time, end_time)"
        " values (0, nextval('cron.runid_seq'), 'old', 'succeeded', now() - interval '30 days',"
        " now() - interval '30 days')"
    )
    assert cron_conn.execute("select pgseek.clean_cron_history()").fetchone()[0] >= 1


def test_cron_history_cleaning_takes_runs_that_never_ended_but_not_running_ones(cron_conn):
    old_rows = (
        "insert into cron.job_run_details"
        " (jobid, runid, command, status, return_message, start_time, end_time) values"
        " (0, nextval('cron.runid_seq'), 'old', 'succeeded', null, now() - interval '30 days',"
        " now() - interval '30 days'),"
        # what pg_cron 1.4 leaves of a run the server's restart cut short: no end_time
        " (0, nextval('cron.runid_seq'), 'cut', 'failed', 'server restarted',"
        " now() - interval '30 days', null),"
        # a run still going (however long): kept
        " (0, nextval('cron.runid_seq'), 'long', 'running', null, now() - interval '30 days',"
        " null)"
    )
    cron_conn.execute(old_rows)
    try:
        assert cron_conn.execute("select pgseek.clean_cron_history()").fetchone()[0] >= 2
        left = "select command from cron.job_run_details where jobid = 0 order by runid"
        assert [r[0] for r in cron_conn.execute(left)] == ["long"]
    finally:
        cron_conn.execute("delete from cron.job_run_details where jobid = 0")


def maintenance_jobs(conn) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "select jobname from cron.job where jobname in"
            " ('pgseek-maintenance', 'pgseek-reindex', 'pgseek-vacuum') order by jobname"
        )
    ]


@pytest.mark.slow
def test_a_large_purge_reindexes_then_vacuums_through_pg_cron(cron_conn):
    """The real chain: purge -> one-shot pgseek-reindex (REINDEX TABLE CONCURRENTLY) ->
    pgseek-maintenance sees it succeed -> one-shot pgseek-vacuum -> done, jobs removed.
    pg_cron 1.4 has minute schedules only: about four minutes."""
    cron_conn.execute("select pgseek.set_retention('{\"source\": \"maintenance-test\"}', '1 day')")
    cron_conn.execute(
        "insert into pgseek.documents (content, metadata, created_at)"
        " select 'maintenance ' || i, '{\"source\": \"maintenance-test\"}',"
        " now() - interval '2 days' from generate_series(1, 200) as i"
    )
    deleted = cron_conn.execute("call pgseek.purge_expired()").fetchone()[0]
    assert deleted == 200
    run_id, maintenance = cron_conn.execute(
        "select id, maintenance from pgseek.purge_log order by id desc limit 1"
    ).fetchone()
    assert maintenance == "reindex scheduled"
    assert maintenance_jobs(cron_conn) == ["pgseek-maintenance", "pgseek-reindex"]
    # A second large purge meanwhile does not start a second chain.
    cron_conn.execute(
        "insert into pgseek.documents (content, metadata, created_at)"
        " select 'again ' || i, '{\"source\": \"maintenance-test\"}',"
        " now() - interval '2 days' from generate_series(1, 100) as i"
    )
    cron_conn.execute("call pgseek.purge_expired()")
    assert (
        cron_conn.execute(
            "select maintenance from pgseek.purge_log order by id desc limit 1"
        ).fetchone()[0]
        == f"already under way for purge run {run_id}"
    )

    def outcome():
        status = cron_conn.execute(
            "select maintenance from pgseek.purge_log where id = %s", (run_id,)
        ).fetchone()[0]
        return status if status == "done" or status.startswith("failed") else None

    status = wait_for(outcome, timeout=330, interval=5)
    runs = cron_conn.execute(
        "select command, status from cron.job_run_details where command in"
        " ('reindex table concurrently pgseek.documents', 'vacuum (analyze) pgseek.documents')"
        " order by runid"
    ).fetchall()
    assert status == "done", (status, runs)
    assert runs == [
        ("reindex table concurrently pgseek.documents", "succeeded"),
        ("vacuum (analyze) pgseek.documents", "succeeded"),
    ]
    assert maintenance_jobs(cron_conn) == []
    invalid = cron_conn.execute(
        "select count(*) from pg_index where indrelid = 'pgseek.documents'::regclass"
        " and not indisvalid"
    ).fetchone()[0]
    assert invalid == 0


def test_maintenance_whose_job_was_removed_is_reported(cron_conn):
    run_id = cron_conn.execute(
        "insert into pgseek.purge_log (status, maintenance, maintenance_updated_at)"
        " values ('finished', 'reindex scheduled', now()) returning id"
    ).fetchone()[0]
    status = cron_conn.execute("select pgseek.advance_maintenance()").fetchone()[0]
    assert status == "failed: the job pgseek-reindex was removed"
    assert cron_conn.execute(
        "select maintenance from pgseek.purge_log where id = %s", (run_id,)
    ).fetchone() == (status,)
    assert cron_conn.execute("select pgseek.advance_maintenance()").fetchone()[0] is None


def test_maintenance_ignores_runs_of_an_earlier_job_of_the_same_name(cron_conn):
    """A pgseek-reindex job left from an earlier chain keeps its id when scheduled again
    (cron.schedule updates a job of the same name): its old 'succeeded' run must not
    count as this chain's reindex."""
    job = cron_conn.execute(
        "select cron.schedule('pgseek-reindex', '0 0 1 1 *', 'select 1')"
    ).fetchone()[0]
    try:
        cron_conn.execute(
            "insert into cron.job_run_details (jobid, runid, command, status, start_time,"
            " end_time) values (%s, nextval('cron.runid_seq'), 'select 1', 'succeeded',"
            " now() - interval '1 day', now() - interval '1 day')",
            (job,),
        )
        cron_conn.execute(
            "insert into pgseek.purge_log (status, maintenance, maintenance_updated_at)"
            " values ('finished', 'reindex scheduled', now())"
        )
        status = cron_conn.execute("select pgseek.advance_maintenance()").fetchone()[0]
        assert status == "reindex scheduled"  # still waiting for this chain's reindex
    finally:
        cron_conn.execute("delete from cron.job_run_details where jobid = %s", (job,))
        cron_conn.execute("update pgseek.purge_log set maintenance = 'done'")
        cron_conn.execute("select pgseek.advance_maintenance()")  # removes the job
