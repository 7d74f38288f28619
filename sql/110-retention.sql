-- Retention: policies, the purge that applies them, and pg_cron's own history.

-- Creates or updates (by match) the retention policy for documents whose metadata
-- contains `match`: they are deleted once older than `keep` (on created_at). Returns
-- the policy's id.
create or replace function pgseek.set_retention(match jsonb, keep interval default '30 days')
returns bigint
language plpgsql
volatile
as $$
declare
    policy_id bigint;
begin
    perform pgseek.check_argument(match is not null and jsonb_typeof(match) = 'object',
        format('match must be a JSON object, not %s', coalesce(jsonb_typeof(match), 'NULL')));
    perform pgseek.check_argument(match <> '{}',
        'match must name at least one metadata key: {} would match every document');
    perform pgseek.check_argument(keep is not null and keep > interval '0',
        format('keep must be a positive interval, got %s', coalesce(keep::text, 'NULL')));
    insert into pgseek.retention_policies as p (match, keep)
    values (set_retention.match, set_retention.keep)
    on conflict on constraint retention_policies_match_unique
    do update set keep = excluded.keep, updated_at = now()
    returning p.id into policy_id;
    return policy_id;
end
$$;

-- Removes the retention policy for `match`; returns whether there was one.
create or replace function pgseek.remove_retention(match jsonb)
returns boolean
language sql
volatile
begin atomic
    with removed as (
        delete from pgseek.retention_policies as p
        where p.match = remove_retention.match
        returning 1
    )

    select count(*) > 0 from removed;
end;

-- Returns a pg_cron schedule that fires once: at the first minute boundary at least
-- 15 seconds from now, in pg_cron's time zone (cron.timezone from pg_cron 1.5, GMT
-- before). It would fire again a year later; pgseek unschedules it after its run.
create or replace function pgseek.one_shot_schedule()
returns text
language sql
volatile
return pg_catalog.to_char(
    pg_catalog.date_trunc('minute', pg_catalog.clock_timestamp() + interval '75 seconds')
    at time zone coalesce(nullif(pg_catalog.current_setting('cron.timezone', true), ''), 'GMT'),
    'FMMI FMHH24 FMDD FMMM *'
);

-- Starts the maintenance of pgseek.documents after a large purge, or says why not:
-- where pg_cron is installed in this database, schedules the one-shot job
-- pgseek-reindex (`reindex table concurrently`: a fresh HNSW graph without the deleted
-- rows, and compact GIN and btree indexes, while searches and writes go on) and the
-- job pgseek-maintenance, which runs advance_maintenance() every minute and follows up
-- with a vacuum. Returns the status recorded in purge_log.maintenance.
-- SECURITY DEFINER: an admin's purge_expired() schedules these jobs, which must belong
-- to (and run as) the role that owns pgseek.documents; the commands are fixed.
create or replace function pgseek.schedule_purge_maintenance()
returns text
language plpgsql
volatile
security definer
set search_path = pg_catalog, pgseek, pg_temp
as $$
declare
    busy bigint;
begin
    if not exists (select from pg_catalog.pg_extension where extname = 'pg_cron') then
        return 'advised: run REINDEX TABLE CONCURRENTLY pgseek.documents, then VACUUM '
            || '(ANALYZE) pgseek.documents (pg_cron is not installed in this database)';
    end if;
    perform pg_catalog.pg_advisory_xact_lock(
        pg_catalog.hashtextextended('pgseek.purge_maintenance', 0)
    );
    select l.id into busy from pgseek.purge_log as l
    where l.maintenance in ('reindex scheduled', 'vacuum scheduled')
    order by l.id desc
    limit 1;
    if busy is not null then
        return pg_catalog.format('already under way for purge run %s', busy);
    end if;
    perform cron.schedule(
        'pgseek-reindex', pgseek.one_shot_schedule(),
        'reindex table concurrently pgseek.documents'
    );
    perform cron.schedule(
        'pgseek-maintenance', '* * * * *', 'select pgseek.advance_maintenance()'
    );
    return 'reindex scheduled';
end
$$;

-- Moves the maintenance after a large purge one step on (run every minute by the job
-- pgseek-maintenance): once pgseek-reindex has succeeded, schedules the one-shot
-- pgseek-vacuum (`vacuum (analyze)`, fast once the index is rebuilt: pgvector's HNSW
-- vacuum has to repair the graph around every deleted row, a fresh graph has none);
-- once that has succeeded, or either failed, removes the jobs and records the outcome in
-- purge_log.maintenance. Returns the status, NULL when nothing is under way.
create or replace function pgseek.advance_maintenance()
returns text
language plpgsql
volatile
as $$
declare
    run record;
    step text;
    job bigint;
    outcome text;
    message text;
    next_status text;
begin
    perform pgseek.require_pg_cron();
    perform pg_catalog.pg_advisory_xact_lock(
        pg_catalog.hashtextextended('pgseek.purge_maintenance', 0)
    );
    select l.id, l.maintenance, l.maintenance_updated_at into run
    from pgseek.purge_log as l
    where l.maintenance in ('reindex scheduled', 'vacuum scheduled')
    order by l.id desc
    limit 1;
    if run.id is null then
        perform cron.unschedule(j.jobid) from cron.job as j
        where j.jobname in ('pgseek-maintenance', 'pgseek-reindex', 'pgseek-vacuum')
            and j.database = pg_catalog.current_database();
        return null;
    end if;
    step := case run.maintenance when 'reindex scheduled' then 'reindex' else 'vacuum' end;
    select j.jobid into job from cron.job as j
    where j.jobname = 'pgseek-' || step and j.database = pg_catalog.current_database();
    if job is not null then
        select d.status, d.return_message into outcome, message
        from cron.job_run_details as d
        where d.jobid = job and d.status in ('succeeded', 'failed')
            -- this chain's runs: cron.schedule() keeps the id of a job of the same name
            and d.start_time >= run.maintenance_updated_at
        order by d.runid desc
        limit 1;
    end if;
    next_status := case
        when job is null then pg_catalog.format('failed: the job pgseek-%s was removed', step)
        when outcome = 'failed' then pg_catalog.format('failed: %s: %s', step, message)
        when outcome is null and pg_catalog.now() > run.maintenance_updated_at
            + interval '1 day' and not exists (
                select from cron.job_run_details as d
                where d.jobid = job and d.start_time >= run.maintenance_updated_at
            ) then pg_catalog.format('failed: pgseek-%s never started', step)
        when outcome is null then run.maintenance
        when step = 'reindex' then 'vacuum scheduled'
        else 'done'
    end;
    if next_status = run.maintenance then
        return next_status;  -- still waiting
    end if;
    perform cron.unschedule(job) where job is not null;
    if next_status = 'vacuum scheduled' then
        perform cron.schedule(
            'pgseek-vacuum', pgseek.one_shot_schedule(), 'vacuum (analyze) pgseek.documents'
        );
    else
        perform cron.unschedule(j.jobid) from cron.job as j
        where j.jobname in ('pgseek-maintenance', 'pgseek-reindex', 'pgseek-vacuum')
            and j.database = pg_catalog.current_database();
    end if;
    update pgseek.purge_log as l
    set maintenance = next_status, maintenance_updated_at = pg_catalog.now()
    where l.id = run.id;
    return next_status;
end
$$;

-- Returns the advisory lock key a purge run written before migration 0014 held while it
-- worked (a row without backend_pid is judged by it): its id hashed with a name of its
-- own, so it meets no other advisory lock.
create or replace function pgseek.purge_lock_key(run_id bigint)
returns bigint
language sql
immutable
parallel safe
return pg_catalog.hashtextextended('pgseek.purge_log', run_id);

-- Returns whether the purge run that recorded this backend and statement start may still
-- be working: its backend is active in that same statement (query_start stays the same
-- through the procedure's commits). Its backend gone, idle, or in another statement (a
-- pooled connection's next client) means the run ended without writing its outcome. A
-- backend this function may not see (no pg_read_all_stats) counts as alive.
-- SECURITY DEFINER: pg_stat_activity hides other roles' sessions, and a run must judge
-- the runs of other roles too (pg_cron's, another admin's); it returns one boolean.
create or replace function pgseek.purge_run_alive(
    run_pid integer, run_query_start timestamptz
)
returns boolean
language plpgsql
stable
parallel restricted
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    return exists (
        select from pg_catalog.pg_stat_activity as a
        where
            a.pid = run_pid
            and (
                a.backend_start is null  -- hidden from this function's owner
                or (a.state = 'active' and a.query_start = run_query_start)
            )
    );
end
$$;

-- Applies every retention policy: deletes expired documents and sources (with their
-- chunks, queue entries and dead letters), batch_size documents and then batch_size
-- sources at a time, each its own short transaction, until done or time_budget is
-- spent; prunes the query-embedding cache and the purge log; logs the run in
-- pgseek.purge_log. `call pgseek.purge_expired()` returns the number of documents
-- deleted, chunks deleted with their source included.
--
-- Concurrent runs share the work (SKIP LOCKED): no row is deleted twice. A sources
-- batch deletes its sources' chunks itself and may wait for a chunk that another run's
-- documents batch is deleting (one short transaction, which waits for nobody): no
-- cycle, so no deadlock. The two batches are separate transactions for that reason.
--
-- Every statement after the run's row is written runs in a block that catches any
-- error, a cancel or statement timeout included: the run ends 'failed' with the error.
-- Each batch writes its counts to the run's row in its own transaction, so the log
-- counts exactly what is committed. The run keeps nothing on the session (no lock): an
-- interrupt that lands between two blocks (where a procedure that commits cannot catch
-- it) ends the call with the row 'running', and the next run marks it 'interrupted', as
-- it does for a run whose session ended (purge_run_alive). A cancelled run skips the
-- pruning and the maintenance and ends at once.
create or replace procedure pgseek.purge_expired(
    inout deleted bigint default null,
    batch_size integer default null,
    time_budget interval default null
)
language plpgsql
as $$
declare
    c pgseek.config;
    started timestamptz := pg_catalog.clock_timestamp();
    run_id bigint;
    policies pgseek.retention_policies [];
    policy pgseek.retention_policies;
    documents_gone bigint;
    chunks_gone bigint;
    sources_gone bigint;
    batch_count integer := 0;
    policy_counts jsonb := '{}';
    failure text;
    cancelled boolean := false;
    run_status text := 'finished';
    documents_left double precision;
    share double precision;
    run_advice text;
    run_maintenance text;
begin
    perform pgseek.require_primary('pgseek.purge_expired()');
    select * into strict c from pgseek.config;
    batch_size := coalesce(batch_size, c.purge_batch_size);
    time_budget := coalesce(time_budget, c.purge_time_budget);
    perform pgseek.check_argument(batch_size between 1 and 100000,
        pg_catalog.format('batch_size must be between 1 and 100000, got %s', batch_size));
    perform pgseek.check_argument(time_budget > interval '0',
        pg_catalog.format('time_budget must be a positive interval, got %s', time_budget));
    deleted := 0;
    -- (an error before the commit below rolls this row back: no run, nothing logged)
    insert into pgseek.purge_log (backend_pid, backend_query_start)
    values (pg_catalog.pg_backend_pid(), (
        select a.query_start from pg_catalog.pg_stat_activity as a
        where a.pid = pg_catalog.pg_backend_pid()
    ))
    returning id into run_id;
    begin
        -- runs that will not finish: their backend ended (terminated, the server
        -- stopped) or went on to another statement (an error escaped them)
        update pgseek.purge_log as l set
            status = 'interrupted',
            finished_at = pg_catalog.clock_timestamp(),
            error = 'it ended without writing its outcome (its session ended, or an error'
            ' escaped it between two batches); the batches it committed stay deleted and'
            ' counted'
        where
            l.status = 'running'
            and l.id < run_id
            and case when l.backend_pid is null  -- written before migration 0014
                then pg_catalog.pg_try_advisory_xact_lock(pgseek.purge_lock_key(l.id))
                else not pgseek.purge_run_alive(l.backend_pid, l.backend_query_start)
            end;
        policies := array(select p from pgseek.retention_policies as p order by p.id);
    exception when others or query_canceled then
        failure := sqlerrm;
        run_status := 'failed';
        cancelled := sqlstate = '57014';
    end;
    commit;
    <<policies>>
    foreach policy in array coalesce(policies, '{}')
    loop
        exit when run_status <> 'finished';
        if batch_count > 0 and pg_catalog.clock_timestamp() > started + time_budget then
            run_status := 'time budget reached';  -- checked between policies too
            exit;
        end if;
        loop
            documents_gone := 0;
            chunks_gone := 0;
            sources_gone := 0;
            -- Each batch's counts are written in its transaction: committed together
            -- with its deletions or rolled back with them. The variables take the
            -- counts from the row, in the block's last statement.
            begin
                with victims as (
                    select d.id from pgseek.documents as d
                    where d.metadata @> policy.match and d.created_at < started - policy.keep
                    order by d.created_at
                    limit batch_size
                    for update skip locked
                )
                delete from pgseek.documents as d using victims as v where d.id = v.id;
                get diagnostics documents_gone = row_count;
                update pgseek.purge_log as l set
                    deleted = l.deleted + documents_gone,
                    batches = l.batches + 1,
                    per_policy = l.per_policy || pg_catalog.jsonb_build_object(
                        policy.id::pg_catalog.text,
                        coalesce((l.per_policy ->> policy.id::pg_catalog.text)::bigint, 0)
                        + documents_gone
                    )
                where l.id = run_id
                returning l.deleted, l.batches, l.per_policy
                into deleted, batch_count, policy_counts;
            exception when others or query_canceled then
                documents_gone := 0;
                failure := sqlerrm;
                run_status := 'failed';
                cancelled := sqlstate = '57014';
            end;
            commit;
            if run_status = 'finished' then
                begin
                    -- the chunks explicitly (not by the cascade) to count them
                    with victims as (
                        select s.id from pgseek.sources as s
                        where s.metadata @> policy.match and s.created_at < started - policy.keep
                        limit batch_size
                        for update skip locked
                    ),
                    chunks as (
                        delete from pgseek.documents as d using victims as v
                        where d.source_id = v.id
                        returning d.id
                    ),
                    gone as (
                        delete from pgseek.sources as s using victims as v
                        where s.id = v.id
                        returning s.id
                    )
                    select (select pg_catalog.count(*) from chunks),
                        (select pg_catalog.count(*) from gone)
                    into chunks_gone, sources_gone;
                    update pgseek.purge_log as l set
                        deleted = l.deleted + chunks_gone,
                        per_policy = l.per_policy || pg_catalog.jsonb_build_object(
                            policy.id::pg_catalog.text,
                            coalesce((l.per_policy ->> policy.id::pg_catalog.text)::bigint, 0)
                            + chunks_gone
                        )
                    where l.id = run_id
                    returning l.deleted, l.per_policy into deleted, policy_counts;
                exception when others or query_canceled then
                    chunks_gone := 0;
                    sources_gone := 0;
                    failure := sqlerrm;
                    run_status := 'failed';
                    cancelled := sqlstate = '57014';
                end;
                commit;
            end if;
            exit policies when run_status <> 'finished';
            exit when documents_gone < batch_size and sources_gone < batch_size;
            if pg_catalog.clock_timestamp() > started + time_budget then
                run_status := 'time budget reached';
                exit policies;
            end if;
        end loop;
    end loop;
    if not cancelled then
        begin
            delete from pgseek.query_embeddings as q
            where q.last_used_at < started - c.query_cache_keep;
            delete from pgseek.purge_log as l where l.started_at < started - c.purge_log_keep;
        exception when others or query_canceled then
            failure := pg_catalog.concat_ws('; ', failure, sqlerrm);
            run_status := 'failed';
            cancelled := sqlstate = '57014';
        end;
    end if;
    if purge_expired.deleted > 0 and not cancelled then
        begin
            documents_left := (select pg_catalog.count(*) from pgseek.documents);
            share := purge_expired.deleted / (documents_left + purge_expired.deleted);
            if share > coalesce(c.maintenance_after_purge_share, 0.1) then
                run_advice := pg_catalog.format('%s%% of the documents were deleted: rebuild '
                    'the indexes, then vacuum (README.md, "After large purges")',
                    pg_catalog.round((100 * share)::numeric, 1));
            end if;
            if share > c.maintenance_after_purge_share then
                run_maintenance := pgseek.schedule_purge_maintenance();
            end if;
        exception when others or query_canceled then
            run_maintenance := 'failed: ' || sqlerrm;
        end;
    end if;
    begin
        update pgseek.purge_log as l set
            finished_at = pg_catalog.clock_timestamp(),
            status = run_status,
            error = failure,
            advice = run_advice,
            maintenance = run_maintenance,
            maintenance_updated_at = case when run_maintenance is not null
                then pg_catalog.now() end
        where l.id = run_id;
    exception when others or query_canceled then
        -- once more, as failed (a cancel is spent); an error again ends the call with
        -- it, and the next run marks the row 'interrupted'
        failure := pg_catalog.concat_ws('; ', failure, sqlerrm);
        update pgseek.purge_log as l set
            finished_at = pg_catalog.clock_timestamp(), status = 'failed', error = failure
        where l.id = run_id;
    end;
    commit;
end
$$;

-- Deletes pg_cron's run history older than config.cron_history_keep (it grows forever
-- otherwise, as pg_cron's README warns); returns the rows deleted.
create or replace function pgseek.clean_cron_history()
returns bigint
language plpgsql
volatile
as $$
declare
    removed bigint;
begin
    perform pgseek.require_pg_cron();
    delete from cron.job_run_details as d
    where
        -- runs that never ended have no end_time ('server restarted': failed), and
        -- those that never started no start_time either; running ones stay
        coalesce(d.end_time, d.start_time) < now() - (select c.cron_history_keep from pgseek.config as c)
        and (d.end_time is not null or d.status in ('failed', 'succeeded'));
    get diagnostics removed = row_count;
    return removed;
end
$$;
