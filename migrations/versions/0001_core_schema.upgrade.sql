-- pgseek 0001: extensions, the pgseek schema, its configuration and the document store.

-- pgvector 0.8 or later: pgseek relies on iterative index scans (0.8.0).
create extension if not exists vector;

do $$
begin
    if string_to_array(
        (select extversion from pg_catalog.pg_extension where extname = 'vector'), '.'
    )::int [] < array[0, 8] then
        raise exception 'pgseek needs pgvector 0.8 or later, this database has %',
        (select extversion from pg_catalog.pg_extension where extname = 'vector')
        using hint = 'Install pgvector 0.8+ on the server, then run: alter extension vector update';
    end if;
end
$$;

create extension if not exists plpython3u;

-- pg_cron can only be created in the database named by cron.database_name, and only
-- when preloaded. Elsewhere pgseek works without it (scheduling is then unavailable).
do $$
begin
    if current_setting('cron.database_name', true) = current_database() then
        create extension if not exists pg_cron;
    else
        raise notice 'pg_cron not created here: cron.database_name is %, this database is %',
        coalesce(current_setting('cron.database_name', true), '(pg_cron not preloaded)'),
        current_database();
    end if;
end
$$;

create schema pgseek;
comment on schema pgseek is 'pgseek: hybrid (vector + keyword) retrieval inside PostgreSQL';

-- One row of install-wide settings. Vector index settings take effect through
-- pgseek.vector_index_ddl() / `make vector-index`.
create table pgseek.config (
    singleton boolean primary key default true,
    embedding_dimensions integer not null default 384,
    distance_metric text not null default 'cosine',
    vector_index text not null default 'hnsw',
    hnsw_m integer not null default 16,
    hnsw_ef_construction integer not null default 64,
    ivfflat_lists integer,
    updated_at timestamptz not null default now(),
    constraint config_single_row check (singleton),
    constraint config_embedding_dimensions_range check (
        embedding_dimensions between 1 and 16000
    ),
    constraint config_distance_metric_known check (
        distance_metric in ('cosine', 'l2', 'inner_product')
    ),
    constraint config_vector_index_known check (
        vector_index in ('hnsw', 'ivfflat', 'none')
    ),
    constraint config_hnsw_m_range check (hnsw_m between 2 and 100),
    constraint config_hnsw_ef_construction_range check (
        hnsw_ef_construction between 4 and 1000 and hnsw_ef_construction >= 2 * hnsw_m
    ),
    constraint config_ivfflat_lists_range check (ivfflat_lists between 1 and 32768)
);
comment on table pgseek.config is
'Install-wide settings (one row). ivfflat_lists null: chosen from the row count at build time.';

insert into pgseek.config default values;

-- The document store. The embedding column has no fixed dimension, so a model change
-- (384-d MiniLM to 1536-d OpenAI, say) needs no table rewrite; the vector index is a
-- partial expression index per dimension (see 0002 and pgseek.vector_index_ddl()).
create table pgseek.documents (
    id uuid primary key default gen_random_uuid(),
    content text not null,
    metadata jsonb not null default '{}',
    embedding vector,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    fts tsvector generated always as (to_tsvector('english', content)) stored,
    constraint documents_content_not_blank check (content ~ '[^[:space:]]'),
    constraint documents_metadata_is_object check (jsonb_typeof(metadata) = 'object')
);
comment on table pgseek.documents is 'Documents (or chunks) to search: text, metadata, embedding.';
comment on column pgseek.documents.fts is 'to_tsvector(''english'', content), kept by PostgreSQL.';
comment on column pgseek.documents.embedding is
'The embedding; its dimension must match pgseek.config.embedding_dimensions.';

create index documents_fts_idx on pgseek.documents using gin (fts);
-- jsonb_path_ops: smaller and faster than the default opclass for @> containment,
-- the only operator pgseek's metadata filters use.
create index documents_metadata_idx on pgseek.documents using gin (metadata jsonb_path_ops);
create index documents_created_at_idx on pgseek.documents (created_at);
