-- pgseek 0003: in-database embeddings. Provider settings, API keys, the content hash
-- that decides when text must be re-embedded, the embedding queue with its dead
-- letters and batch log, the query-embedding cache, chunk sources, and the second
-- embedding column used while changing models.

alter table pgseek.config
add column embedding_provider text not null default 'local',
add column embedding_model text not null default 'all-MiniLM-L6-v2',
add column embedding_options jsonb not null default '{}',
add column embedding_mode text not null default 'async',
add column queue_max_attempts integer not null default 5,
add column queue_retry_delay interval not null default '30 seconds',
add column queue_retry_max_delay interval not null default '1 hour',
add column next_embedding_provider text,
add column next_embedding_model text,
add column next_embedding_dimensions integer,
add column next_embedding_options jsonb,
add constraint config_embedding_provider_known check (
    embedding_provider in ('local', 'openai')
),
add constraint config_embedding_options_is_object check (
    jsonb_typeof(embedding_options) = 'object'
),
add constraint config_embedding_mode_known check (
    embedding_mode in ('async', 'sync', 'off')
),
add constraint config_queue_max_attempts_range check (queue_max_attempts between 1 and 100),
add constraint config_queue_retry_delays_positive check (
    queue_retry_delay > interval '0' and queue_retry_max_delay >= queue_retry_delay
),
add constraint config_next_embedding_complete check (
    num_nulls(
        next_embedding_provider, next_embedding_model,
        next_embedding_dimensions, next_embedding_options
    ) in (0, 4)
),
add constraint config_next_embedding_provider_known check (
    next_embedding_provider in ('local', 'openai')
),
add constraint config_next_embedding_dimensions_range check (
    next_embedding_dimensions between 1 and 16000
);

-- API keys of remote providers. No grant to anyone: only pgseek's SECURITY DEFINER
-- embedding functions (owned by the installing role) read it, and never return it.
create table pgseek.provider_secrets (
    provider text primary key,
    api_key text not null,
    updated_at timestamptz not null default now(),
    constraint provider_secrets_provider_known check (provider in ('openai')),
    constraint provider_secrets_api_key_not_blank check (api_key ~ '[^[:space:]]')
);
revoke all on pgseek.provider_secrets from public;

-- sha256 of text as UTF-8. Immutable: a database's encoding never changes, so the
-- conversion is fixed. Used by the generated content_hash column.
create function pgseek.content_sha256(content text)
returns bytea
language sql
immutable
strict
parallel safe
return pg_catalog.sha256(pg_catalog.convert_to(content, 'UTF8'));

-- Long texts ingested with pgseek.ingest(): each is split into chunks stored in
-- pgseek.documents (source_id, chunk_index); deleting the source deletes its chunks.
create table pgseek.sources (
    id uuid primary key default gen_random_uuid(),
    content text not null,
    metadata jsonb not null default '{}',
    chunk_tokens integer not null,
    overlap_tokens integer not null,
    created_at timestamptz not null default now(),
    constraint sources_content_not_blank check (content ~ '[^[:space:]]'),
    constraint sources_metadata_is_object check (jsonb_typeof(metadata) = 'object')
);

alter table pgseek.documents
add column content_hash bytea generated always as (pgseek.content_sha256(content)) stored,
add column embedding_next vector,
add column source_id uuid references pgseek.sources (id) on delete cascade,
add column chunk_index integer,
add constraint documents_chunk_has_source check ((source_id is null) = (chunk_index is null));
comment on column pgseek.documents.content_hash is
'sha256 of content: the embedding is recomputed only when this changes.';
comment on column pgseek.documents.embedding_next is
'During a model change: the new model''s embedding, swapped in by finish_model_change().';
create index documents_source_idx on pgseek.documents (source_id, chunk_index)
where source_id is not null;

-- Work for the embedding worker: one entry per (re-)embedding needed. Writers only
-- ever insert here, so they never wait for a worker holding entries.
create table pgseek.embedding_queue (
    id bigint generated always as identity primary key,
    document_id uuid not null references pgseek.documents (id) on delete cascade,
    target text not null default 'embedding',
    content_hash bytea not null,
    queued_at timestamptz not null default now(),
    attempts integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    last_error text,
    constraint embedding_queue_target_known check (target in ('embedding', 'embedding_next'))
);
create index embedding_queue_ready_idx on pgseek.embedding_queue (next_attempt_at, id);
create index embedding_queue_document_idx on pgseek.embedding_queue (document_id, target);

-- Entries that failed permanently or too often, with the reason. Requeue with
-- pgseek.requeue_failed().
create table pgseek.embedding_dead_letter (
    document_id uuid not null references pgseek.documents (id) on delete cascade,
    target text not null,
    content_hash bytea not null,
    attempts integer not null,
    error text not null,
    first_queued_at timestamptz not null,
    failed_at timestamptz not null default now(),
    primary key (document_id, target)
);

-- One row per worker batch, for throughput figures; the worker prunes it.
create table pgseek.embedding_batches (
    finished_at timestamptz not null default now(),
    target text not null,
    model text not null,
    embedded integer not null,
    failed integer not null,
    seconds double precision not null
);
create index embedding_batches_finished_idx on pgseek.embedding_batches (finished_at);

-- Query embeddings, keyed by model and a hash of the text, so a repeated query does
-- not run the model again.
create table pgseek.query_embeddings (
    model text not null,
    text_hash bytea not null,
    embedding vector not null,
    created_at timestamptz not null default now(),
    last_used_at timestamptz not null default now(),
    primary key (model, text_hash)
);
create index query_embeddings_last_used_idx on pgseek.query_embeddings (last_used_at);

-- Documents already stored without an embedding are queued, like new ones.
insert into pgseek.embedding_queue (document_id, content_hash)
select
    d.id,
    d.content_hash
from pgseek.documents as d
where d.embedding is null;
