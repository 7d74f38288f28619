-- Metrics for Prometheus (monitoring/postgres-exporter-queries.yaml reads these views
-- through prometheus-postgres-exporter) and for anyone with psql. Each view is cheap
-- enough to read every scrape except pgseek.document_metrics, which counts the
-- documents (a full scan; the queries file caches it for 5 minutes).
--
-- Search calls and latency come from PostgreSQL's own function statistics
-- (pg_stat_user_functions), which cost nothing per call but are only collected with
-- track_functions = 'pl' (or 'all'), set in postgresql.conf or per database:
--     alter database pgseek set track_functions = 'pl';
-- pgseek.metrics.function_tracking says whether it is on.
--
-- Readers: members of pg_monitor (the role monitoring agents get) may read every view
-- here and nothing else of pgseek's; the three SECURITY DEFINER functions below exist so
-- that they need no access to the documents, the purge log or pg_cron's tables.

-- One row about the embedding queue: its entries (one per document and target: two
-- per document during a model change), those due now, those that failed and wait for
-- their retry (not yet due: a due retry is ready), and the age of the oldest entry (0
-- when empty). A full scan of the queue (no index gives the count or the oldest
-- queued_at): 76 to 120 ms at 1,000,000 entries, which is what start_model_change()
-- queues on a large install, so the queries file reads it in a group of its own, cached
-- for a minute.
create or replace view pgseek.queue_metrics as
select
    count(*) as depth,
    count(*) filter (where q.next_attempt_at <= now()) as ready,
    count(*) filter (where q.attempts > 0 and q.next_attempt_at > now()) as retrying,
    coalesce(extract(epoch from now() - min(q.queued_at)), 0) as oldest_age_seconds
from pgseek.embedding_queue as q;

comment on view pgseek.queue_metrics is
'Embedding queue entries: all, due now, waiting for a retry, age of the oldest (a full scan).';

-- One row of gauges about the embedding pipeline and the caches: the queue's (as in
-- queue_metrics), dead letters, work and failures of the last hour (from the batch
-- log), query-cache entries, age of the BM25 statistics, whether function statistics
-- are collected, and whether this server is a standby. A query that leaves out the
-- queue_* columns does not scan the queue (the planner removes the left join of a
-- one-row aggregate nobody reads), so that the exporter can read the rest every scrape.
-- function_tracking is what new sessions of this database get (the database's setting,
-- else the server's), not the reading session's own value: a monitoring agent keeps its
-- session for days, and `alter database ... set` reaches only the sessions started
-- after it (the searches' sessions, which are the ones measured).
create or replace view pgseek.metrics as
select
    queue.depth as queue_depth,
    queue.ready as queue_ready,
    queue.retrying as queue_retrying,
    queue.oldest_age_seconds as queue_oldest_age_seconds,
    (
        -- documents: one may have a dead letter per target during a model change
        select count(*)
        from (select distinct f.document_id from pgseek.embedding_dead_letter as f) as f
    ) as dead_letters,
    batches.embedded_last_hour,
    batches.embedding_failures_last_hour,
    batches.embedding_seconds_last_hour,
    (select count(*) from pgseek.query_embeddings) as query_cache_entries,
    (
        select extract(epoch from now() - s.refreshed_at)
        from pgseek.text_stats_summary as s
        where s.tenant = ''  -- every document's (with tenants, each also has its own)
    ) as text_stats_age_seconds,
    (
        coalesce(
            -- alter database ... set track_functions (for every role: setrole 0)
            (
                select substr(c.setting, length('track_functions=') + 1)
                from pg_db_role_setting as r
                cross join lateral unnest(r.setconfig) as c (setting)
                where
                    r.setrole = 0
                    and r.setdatabase = (
                        select d.oid from pg_database as d
                        where d.datname = current_database()
                    )
                    and c.setting like 'track_functions=%'
            ),
            -- else the server's (postgresql.conf, alter system, reloaded into this
            -- session too), unless this session's value is a per-session one (set at
            -- its start from a database or role setting since removed): then the
            -- default, as the server's own value is not readable by pg_monitor
            (
                select
                    case
                        when
                            s.source in (
                                'default', 'configuration file', 'command line',
                                'environment variable', 'override'
                            )
                            then s.reset_val
                        else s.boot_val
                    end
                from pg_settings as s
                where s.name = 'track_functions'
            )
        ) in ('pl', 'all')
    )::integer as function_tracking,
    pg_is_in_recovery()::integer as in_recovery
from (
    select
        coalesce(sum(b.embedded), 0) as embedded_last_hour,
        coalesce(sum(b.failed), 0) as embedding_failures_last_hour,
        coalesce(sum(b.seconds), 0) as embedding_seconds_last_hour
    from pgseek.embedding_batches as b
    where b.finished_at > now() - interval '1 hour'
) as batches
left join pgseek.queue_metrics as queue on true;

comment on view pgseek.metrics is
'Gauges of the embedding queue, dead letters, the last hour of embedding work and caches.';

-- Returns the number of documents (or chunks) stored, embedded with the current model,
-- and, during a model change, embedded with the next one (NULL otherwise). A full scan
-- of pgseek.documents. SECURITY DEFINER so that monitoring roles may count documents
-- without reading them; a function (bound when called) so that finish_model_change()
-- can swap the embedding columns under it.
create or replace function pgseek.document_counts(
    out stored bigint, out embedded bigint, out embedded_next bigint
)
language sql
stable
security definer
set search_path = pg_catalog, pgseek, pg_temp
as $$
    select
        count(*),
        count(*) filter (where d.embedding is not null),
        case when (select c.next_embedding_model from pgseek.config as c) is not null
            then count(*) filter (where d.embedding_next is not null)
        end
    from pgseek.documents as d
$$;

create or replace view pgseek.document_metrics as
select * from pgseek.document_counts();

comment on view pgseek.document_metrics is
'Documents stored and embedded (a full scan: scrape it every few minutes, not seconds).';

-- Calls and time (in seconds, including and excluding the functions they call) of
-- each pgseek function PostgreSQL has statistics for (overloads summed). Empty unless
-- track_functions is 'pl' or 'all' (SQL-language functions only with 'all').
-- search_similar and hybrid_search are the search calls; mean latency over an interval
-- is the increase of seconds_total divided by the increase of calls_total.
create or replace view pgseek.function_metrics as
select
    f.funcname::text as function_name,
    sum(f.calls)::bigint as calls_total,
    sum(f.total_time) / 1000 as seconds_total,
    sum(f.self_time) / 1000 as self_seconds_total
from pg_stat_user_functions as f
where f.schemaname = 'pgseek'
group by f.funcname;

comment on view pgseek.function_metrics is
'Calls and seconds per pgseek function (pg_stat_user_functions; needs track_functions).';

-- Size on disk and scans of each index of pgseek's tables, with its access method
-- (hnsw, ivfflat, gin, btree): the vector index is the one that must fit in memory.
create or replace view pgseek.index_metrics as
select
    i.relname::text as table_name,
    i.indexrelname::text as index_name,
    am.amname::text as access_method,
    pg_relation_size(i.indexrelid) as bytes,
    i.idx_scan as scans_total
from pg_stat_user_indexes as i
inner join pg_class as c on i.indexrelid = c.oid
inner join pg_am as am on c.relam = am.oid
where i.schemaname = 'pgseek';

comment on view pgseek.index_metrics is 'Size and scans of each index of pgseek''s tables.';

-- Size on disk (with TOAST, without indexes) and estimated live and dead rows of each
-- of pgseek's tables (the estimates come from the statistics collector: no scan).
create or replace view pgseek.table_metrics as
select
    t.relname::text as table_name,
    pg_table_size(t.relid) as bytes,
    t.n_live_tup as live_rows,
    t.n_dead_tup as dead_rows
from pg_stat_user_tables as t
where t.schemaname = 'pgseek';

comment on view pgseek.table_metrics is
'Size and estimated live and dead rows of pgseek''s tables.';

-- Returns the purge runs that pgseek.purge_log says are 'running' but that are not:
-- their session ended (terminated, crashed, the server stopped) or went on to other
-- work (an error escaped the run between two batches) before they finished.
-- purge_expired() marks such a row 'interrupted' only when the next run starts, after
-- inserting its own, newer row: without this a crashed run is never the latest run.
-- A run is alive while its backend is still in the statement that started it
-- (pgseek.purge_run_alive, sql/110-retention.sql); a row written before migration 0014
-- has no backend recorded, and its run is alive while its session holds the advisory
-- lock pgseek.purge_lock_key(id). A run that ends writes its outcome and commits while
-- still in that statement, so one that pg_stat_activity shows gone has either committed
-- its outcome or never will: the candidate rows are judged first (pg_stat_activity and
-- pg_locks), then read again with a newer snapshot (volatile: each statement has its
-- own), and only those still 'running' are returned. On a standby nothing is returned
-- (the primary's sessions are not visible there). SECURITY DEFINER so that monitoring
-- roles may read it without access to pgseek.purge_log.
create or replace function pgseek.dead_purge_runs()
returns table (run_id bigint)
language plpgsql
volatile
security definer
set search_path = pg_catalog, pgseek, pg_temp
as $$
declare
    gone bigint [];
    advisory_keys bigint [];
begin
    if pg_catalog.pg_is_in_recovery()
        or not exists (select from pgseek.purge_log as l where l.status = 'running') then
        return;
    end if;
    advisory_keys := array(
        select (k.classid::bigint << 32) | k.objid::bigint
        from pg_catalog.pg_locks as k
        where
            k.granted and k.locktype = 'advisory' and k.objsubid = 1
            and k.database = (
                select d.oid from pg_catalog.pg_database as d
                where d.datname = pg_catalog.current_database()
            )
    );
    gone := array(
        select l.id
        from pgseek.purge_log as l
        where
            l.status = 'running'
            and case when l.backend_pid is null
                then not pgseek.purge_lock_key(l.id) = any(advisory_keys)
                else not pgseek.purge_run_alive(l.backend_pid, l.backend_query_start)
            end
    );
    return query
    select l.id from pgseek.purge_log as l where l.id = any(gone) and l.status = 'running';
end
$$;

-- One row about retention: purge runs and documents deleted in pgseek.purge_log (kept
-- for config.purge_log_keep, so these are not counters), the failed runs among them
-- (interrupted ones included: also those still marked 'running' whose session is gone,
-- see dead_purge_runs), and the latest run's start (Unix time), duration (so far, while
-- it runs), documents deleted, and whether it failed or was interrupted. NULLs (NaN in
-- Prometheus) before the first run.
create or replace view pgseek.purge_metrics as
with runs as (
    select
        l.id,
        l.started_at,
        l.finished_at,
        l.deleted,
        l.status in ('failed', 'interrupted')
        or l.id in (select d.run_id from pgseek.dead_purge_runs() as d) as failed
    from pgseek.purge_log as l
),

latest as (
    select
        r.started_at,
        r.finished_at,
        r.deleted,
        r.failed
    from runs as r
    order by r.id desc
    limit 1
),

logged as (
    select
        count(*) as runs_logged,
        count(*) filter (where r.failed) as failed_runs_logged,
        coalesce(sum(r.deleted), 0) as deleted_logged
    from runs as r
)

select
    logged.runs_logged,
    logged.failed_runs_logged,
    logged.deleted_logged,
    extract(epoch from latest.started_at) as last_run_start_seconds,
    extract(epoch from coalesce(latest.finished_at, clock_timestamp()) - latest.started_at)
        as last_run_duration_seconds,
    latest.deleted as last_run_deleted,
    latest.failed::integer as last_run_failed
from logged
left join latest on true;

comment on view pgseek.purge_metrics is 'Purge runs in the log and the latest run.';

-- One row per pg_cron job of pgseek's in this database: whether it is active, whether
-- its latest finished run succeeded (NULL before the first), that run's start (Unix
-- time) and duration, and its failed runs over the last day. No rows where pg_cron is
-- not installed in this database. SECURITY DEFINER: pg_cron shows a role only its own
-- jobs (row security on cron.job), and pgseek's jobs belong to the role that installed
-- pgseek, not to the monitoring role.
create or replace function pgseek.job_metrics_report()
returns table (
    job text,
    active integer,
    last_run_succeeded integer,
    last_run_start_seconds double precision,
    last_run_duration_seconds double precision,
    failed_runs_last_day bigint
)
language plpgsql
stable
security definer
set search_path = pg_catalog, pgseek, pg_temp
as $$
begin
    if not exists (select from pg_catalog.pg_extension where extname = 'pg_cron') then
        return;
    end if;
    return query
    select
        j.jobname::text,
        j.active::integer,
        (r.status = 'succeeded')::integer,
        extract(epoch from r.start_time)::float8,
        extract(epoch from r.end_time - r.start_time)::float8,
        (
            select count(*)
            from cron.job_run_details as d
            where
                d.jobid = j.jobid and d.status = 'failed'
                and d.start_time > now() - interval '1 day'
        )
    from cron.job as j
    left join lateral (
        select d.status, d.start_time, d.end_time
        from cron.job_run_details as d
        where d.jobid = j.jobid and d.status in ('succeeded', 'failed')
        order by d.runid desc
        limit 1
    ) as r on true
    where j.jobname like 'pgseek-%' and j.database = current_database();
end
$$;

create or replace view pgseek.job_metrics as
select * from pgseek.job_metrics_report();

comment on view pgseek.job_metrics is 'pgseek''s pg_cron jobs: active, latest run, failures.';

grant usage on schema pgseek to pg_monitor;
grant select on
pgseek.metrics,
pgseek.queue_metrics,
pgseek.document_metrics,
pgseek.function_metrics,
pgseek.index_metrics,
pgseek.table_metrics,
pgseek.purge_metrics,
pgseek.job_metrics
to pg_monitor;
grant execute on function
pgseek.document_counts(),
pgseek.job_metrics_report(),
pgseek.dead_purge_runs()
to pg_monitor;
