-- pgseek's pg_cron jobs, all named 'pgseek-...'. pg_cron lives in one database per
-- server (cron.database_name); where that is not pgseek's, these functions explain how
-- to schedule from there, and the rest of pgseek works without them.
-- The functions pgseek_admin calls (jobs, schedule_jobs, pause_job, resume_job,
-- unschedule_job, reload_jobs) are SECURITY DEFINER: pg_cron shows and lets a role change
-- only its own jobs, and pgseek's jobs belong to the role that installed pgseek (they
-- run as it).
-- They only ever touch jobs named 'pgseek-...' of this database, with fixed commands.

-- Raises a clear error when pg_cron is not installed in this database.
create or replace function pgseek.require_pg_cron()
returns void
language plpgsql
stable
as $$
begin
    if not exists (select from pg_catalog.pg_extension where extname = 'pg_cron') then
        raise exception 'pg_cron is not installed in database %', current_database()
        using errcode = 'feature_not_supported',
        hint = format(
            'pg_cron runs in database %s (cron.database_name). There, run: select '
            'cron.schedule_in_database(''pgseek-embedding-worker'', ''* * * * *'', '
            '''call pgseek.run_embedding_worker(50)'', %L)',
            coalesce(current_setting('cron.database_name', true), '(pg_cron not preloaded)'),
            current_database()
        );
    end if;
end
$$;

-- Raises 25006 (read_only_sql_transaction) naming the action when this server is a
-- standby: pg_cron runs jobs on the primary only, and jobs and the work they do are
-- changes that only the primary can make (they reach standbys by replication).
create or replace function pgseek.require_primary(action text)
returns void
language plpgsql
volatile  -- pg_is_in_recovery() changes at promotion
as $$
begin
    if pg_catalog.pg_is_in_recovery() then
        raise exception '% cannot run on a standby: this server is in recovery', action
        using errcode = 'read_only_sql_transaction',
        hint = 'Run it on the primary. pg_cron runs pgseek''s jobs on the primary only; '
            'their effects reach this standby through replication.';
    end if;
end
$$;

-- Lists pgseek's jobs with their last run (on a standby: the primary's jobs and runs,
-- replicated, with a notice that they run there).
create or replace function pgseek.jobs()
returns table (
    job_name text,
    schedule text,
    command text,
    active boolean,
    last_status text,
    last_start timestamptz,
    last_message text
)
language plpgsql
stable
security definer
set search_path = pg_catalog, pgseek, pg_temp
as $$
begin
    perform pgseek.require_pg_cron();
    if pg_catalog.pg_is_in_recovery() then
        raise notice 'this server is a standby: pg_cron runs these jobs on the primary only '
            '(the runs listed are the primary''s, replicated)';
    end if;
    return query
    select
        j.jobname::text, j.schedule, j.command, j.active, r.status, r.start_time,
        r.return_message
    from cron.job as j
    left join lateral (
        select d.status, d.start_time, d.return_message
        from cron.job_run_details as d
        where d.jobid = j.jobid
        order by d.runid desc
        limit 1
    ) as r on true
    where j.jobname like 'pgseek-%' and j.database = current_database()
    order by j.jobname;
end
$$;

-- Installs (or updates, keeping paused jobs paused) pgseek's jobs; returns them.
-- The embedding worker runs every minute and works for up to 50 seconds, so documents
-- are embedded within seconds even where pg_cron has no second schedules (1.4); the
-- keyword statistics of BM25 are refreshed hourly; retention policies are applied, and
-- pg_cron's run history pruned, nightly.
create or replace function pgseek.schedule_jobs()
returns table (job_name text, schedule text, active boolean)
language plpgsql
volatile
security definer
set search_path = pg_catalog, pgseek, pg_temp
as $$
begin
    -- the primary first, as in pause_job() and the others: on a standby the answer is
    -- 25006 whether or not pg_cron is installed in this database
    perform pgseek.require_primary('pgseek.schedule_jobs()');
    perform pgseek.require_pg_cron();
    perform cron.schedule(
        'pgseek-embedding-worker', '* * * * *', 'call pgseek.run_embedding_worker(50)'
    );
    perform cron.schedule(
        'pgseek-text-stats', '17 * * * *', 'select pgseek.refresh_text_stats()'
    );
    perform cron.schedule('pgseek-purge', '15 3 * * *', 'call pgseek.purge_expired()');
    perform cron.schedule(
        'pgseek-cron-history', '45 3 * * *', 'select pgseek.clean_cron_history()'
    );
    return query select j.job_name, j.schedule, j.active from pgseek.jobs() as j;
end
$$;

-- Returns the pg_cron job id of one of pgseek's jobs, or raises naming the job.
create or replace function pgseek.job_id(job_name text)
returns bigint
language plpgsql
stable
as $$
declare
    id bigint;
begin
    perform pgseek.require_pg_cron();
    select j.jobid into id from cron.job as j
    where j.jobname = job_id.job_name and j.jobname like 'pgseek-%'
        and j.database = current_database();
    if id is null then
        raise exception 'no pgseek job named %', coalesce(quote_literal(job_name), 'NULL')
        using errcode = 'undefined_object', hint = 'select * from pgseek.jobs()';
    end if;
    return id;
end
$$;

-- Pause, resume and remove one of pgseek's jobs by name (plpgsql: pg_cron's functions
-- are looked up when called, so these exist, and explain, where pg_cron does not; the
-- check comes first, as planning a statement naming cron.* fails without the schema).
create or replace function pgseek.pause_job(job_name text)
returns void
language plpgsql
volatile
security definer
set search_path = pg_catalog, pgseek, pg_temp
as $$
begin
    perform pgseek.require_primary('pgseek.pause_job()');
    perform pgseek.require_pg_cron();  -- before cron.* is planned: 0A000, not 3F000
    perform cron.alter_job(pgseek.job_id(job_name), active => false);
end
$$;

create or replace function pgseek.resume_job(job_name text)
returns void
language plpgsql
volatile
security definer
set search_path = pg_catalog, pgseek, pg_temp
as $$
begin
    perform pgseek.require_primary('pgseek.resume_job()');
    perform pgseek.require_pg_cron();  -- before cron.* is planned: 0A000, not 3F000
    perform cron.alter_job(pgseek.job_id(job_name), active => true);
end
$$;

create or replace function pgseek.unschedule_job(job_name text)
returns void
language plpgsql
volatile
security definer
set search_path = pg_catalog, pgseek, pg_temp
as $$
begin
    perform pgseek.require_primary('pgseek.unschedule_job()');
    perform pgseek.require_pg_cron();  -- before cron.* is planned: 0A000, not 3F000
    perform cron.unschedule(pgseek.job_id(job_name));
end
$$;

-- Makes pg_cron's scheduler read its job list again, for a job change it missed. The
-- scheduler reads cron.job again when an invalidation of that table reaches it, but one
-- that fell behind the server's shared invalidation queue (a migration, or any burst of
-- catalog changes, in the same second) is reset, and pg_cron (1.4 to 1.6 at least) keeps
-- its job list through a reset (citusdata/pg_cron#406): a job scheduled, changed or
-- resumed just then does not run until cron.job changes again. Rewriting one of
-- pgseek's jobs unchanged sends that change. The scheduler skips what was queued before
-- it comes to its reset: within a second, or, with pg_cron 1.4 and background workers,
-- once no job runs (citusdata/pg_cron#200). Run this after that, as `make migrate` does
-- after applying anything. Returns whether there was a job to rewrite.
create or replace function pgseek.reload_jobs()
returns boolean
language plpgsql
volatile
security definer
set search_path = pg_catalog, pgseek, pg_temp
as $$
declare
    id bigint;
    is_active boolean;
begin
    perform pgseek.require_primary('pgseek.reload_jobs()');
    perform pgseek.require_pg_cron();  -- before cron.* is planned: 0A000, not 3F000
    select j.jobid, j.active into id, is_active from cron.job as j
    where j.jobname like 'pgseek-%' and j.database = current_database()
    order by j.jobid
    limit 1;
    if id is not null then
        perform cron.alter_job(id, active => is_active);
    end if;
    return id is not null;
end
$$;
