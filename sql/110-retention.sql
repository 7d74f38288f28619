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

-- Applies every retention policy: deletes expired documents and sources (with their
-- chunks, queue entries and dead letters) in batches of batch_size, each batch its own
-- short transaction, until done or time_budget is spent; prunes the query-embedding
-- cache and the purge log; logs the run in pgseek.purge_log. Concurrent runs share the
-- work (SKIP LOCKED): no row is deleted twice and none waits for another run.
-- `call pgseek.purge_expired()` returns the number of documents deleted.
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
    policy record;
    affected bigint;
    policy_deleted bigint;
    batch_count integer := 0;
    policy_counts jsonb := '{}';
    failure text;
    run_status text := 'finished';
    documents_left double precision;
begin
    select * into strict c from pgseek.config;
    batch_size := coalesce(batch_size, c.purge_batch_size);
    time_budget := coalesce(time_budget, c.purge_time_budget);
    perform pgseek.check_argument(batch_size between 1 and 100000,
        pg_catalog.format('batch_size must be between 1 and 100000, got %s', batch_size));
    perform pgseek.check_argument(time_budget > interval '0',
        pg_catalog.format('time_budget must be a positive interval, got %s', time_budget));
    deleted := 0;
    insert into pgseek.purge_log default values returning id into run_id;
    commit;
    <<policies>>
    for policy in select p.id, p.match, p.keep from pgseek.retention_policies as p order by p.id
    loop
        policy_deleted := 0;
        loop
            begin
                with victims as (
                    select d.id from pgseek.documents as d
                    where d.metadata @> policy.match and d.created_at < started - policy.keep
                    order by d.created_at
                    limit batch_size
                    for update skip locked
                )
                delete from pgseek.documents as d using victims as v where d.id = v.id;
                get diagnostics affected = row_count;
                with victims as (
                    select s.id from pgseek.sources as s
                    where s.metadata @> policy.match and s.created_at < started - policy.keep
                    limit batch_size
                    for update skip locked
                )
                delete from pgseek.sources as s using victims as v where s.id = v.id;
            exception when others then
                failure := sqlerrm;
                run_status := 'failed';
                exit policies;
            end;
            policy_deleted := policy_deleted + affected;
            deleted := deleted + affected;
            batch_count := batch_count + 1;
            update pgseek.purge_log as l
            set deleted = purge_expired.deleted, batches = batch_count
            where l.id = run_id;
            commit;
            exit when affected < batch_size;
            if pg_catalog.clock_timestamp() > started + time_budget then
                run_status := 'time budget reached';
                policy_counts := policy_counts
                    || pg_catalog.jsonb_build_object(policy.id::text, policy_deleted);
                exit policies;
            end if;
        end loop;
        policy_counts := policy_counts
            || pg_catalog.jsonb_build_object(policy.id::text, policy_deleted);
    end loop;
    delete from pgseek.query_embeddings as q where q.last_used_at < started - c.query_cache_keep;
    delete from pgseek.purge_log as l where l.started_at < started - c.purge_log_keep;
    documents_left := (select r.reltuples from pg_catalog.pg_class as r
        where r.oid = 'pgseek.documents'::regclass);
    update pgseek.purge_log as l set
        finished_at = pg_catalog.clock_timestamp(),
        status = run_status,
        deleted = purge_expired.deleted,
        batches = batch_count,
        per_policy = policy_counts,
        error = failure,
        advice = case when purge_expired.deleted
            > 0.1 * greatest(documents_left + purge_expired.deleted, 1) then
            'a large share of documents was deleted: rebuild the vector index, then vacuum '
            || '(README.md, "After large purges")'
        end
    where l.id = run_id;
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
    where d.end_time < now() - (select c.cron_history_keep from pgseek.config as c);
    get diagnostics removed = row_count;
    return removed;
end
$$;
