-- Monitoring the embedding pipeline.

-- Returns one row: queue depth and age, failures, throughput, and the invariant that
-- every document is embedded, queued or dead-lettered (unaccounted must be 0 unless
-- embedding_mode is 'off'). A function (bound when called) under the view below, so
-- that finish_model_change() can swap the embedding columns under it.
create or replace function pgseek.embedding_status_report()
returns table (
    embedding_mode text,
    provider text,
    model text,
    dimensions integer,
    documents bigint,
    embedded bigint,
    queued bigint,
    ready bigint,
    retrying bigint,
    oldest_queued_at timestamptz,
    oldest_queued_age interval,
    dead_letter bigint,
    unaccounted bigint,
    embedded_last_5_minutes bigint,
    embedded_last_hour bigint,
    failures_last_hour bigint,
    docs_per_second numeric,
    next_model text,
    next_embedded bigint
)
language sql
stable
as $$
with docs as (
    select
        count(*) as documents,
        count(*) filter (where d.embedding is not null) as embedded,
        count(*) filter (where d.embedding_next is not null) as next_embedded,
        count(*) filter (
            where d.embedding is null
            and not exists (
                select from pgseek.embedding_queue as q
                where q.document_id = d.id and q.target = 'embedding'
            )
            and not exists (
                select from pgseek.embedding_dead_letter as f
                where f.document_id = d.id and f.target = 'embedding'
            )
        ) as unaccounted
    from pgseek.documents as d
),

queue as (
    select
        count(*) as queued,
        count(*) filter (where q.next_attempt_at <= now()) as ready,
        count(*) filter (where q.attempts > 0) as retrying,
        min(q.queued_at) as oldest_queued_at
    from pgseek.embedding_queue as q
),

batches as (
    select
        coalesce(sum(b.embedded) filter (where b.finished_at > now() - interval '5 minutes'), 0)
            as embedded_last_5_minutes,
        coalesce(sum(b.embedded), 0) as embedded_last_hour,
        coalesce(sum(b.failed), 0) as failures_last_hour,
        sum(b.embedded) / nullif(sum(b.seconds), 0) as docs_per_second
    from pgseek.embedding_batches as b
    where b.finished_at > now() - interval '1 hour'
)

select
    c.embedding_mode,
    c.embedding_provider as provider,
    c.embedding_model as model,
    c.embedding_dimensions as dimensions,
    docs.documents,
    docs.embedded,
    queue.queued,
    queue.ready,
    queue.retrying,
    queue.oldest_queued_at,
    now() - queue.oldest_queued_at as oldest_queued_age,
    (select count(*) from pgseek.embedding_dead_letter) as dead_letter,
    docs.unaccounted,
    batches.embedded_last_5_minutes,
    batches.embedded_last_hour,
    batches.failures_last_hour,
    round(batches.docs_per_second::numeric, 1) as docs_per_second,
    c.next_embedding_model as next_model,
    case when c.next_embedding_model is not null then docs.next_embedded end as next_embedded
from pgseek.config as c, docs, queue, batches
$$;

create or replace view pgseek.embedding_status as
select * from pgseek.embedding_status_report();

comment on view pgseek.embedding_status is
'Embedding pipeline health: depth, age, failures, throughput (docs/s of model time).';

-- Dead-lettered documents with their error and the start of their text. A view binds
-- its functions and operators when created: qualified, so the migrating session's
-- search_path cannot substitute others.
create or replace view pgseek.embedding_failures as
select
    f.document_id,
    f.target,
    f.attempts,
    f.error,
    f.first_queued_at,
    f.failed_at,
    pg_catalog.left(d.content, 80) as content_start
from pgseek.embedding_dead_letter as f
inner join pgseek.documents as d on f.document_id operator (pg_catalog.=) d.id;
