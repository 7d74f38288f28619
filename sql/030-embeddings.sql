-- In-database embeddings: the SQL face of plpython/pgseek (thin wrappers).
-- The embedding functions are SECURITY DEFINER for one reason: they read the provider
-- API key from pgseek.provider_secrets, which no caller may read. They never return it.
-- (They also write the query-embedding cache and the worker's vectors, which callers
-- may not write either.) Each pins search_path (sql/990 adds pgvector's schema).

-- Returns the embedding of query text with the current model, through the
-- query-embedding cache (a repeated query does not run the model). NULL gives NULL.
create or replace function pgseek.embed(query text)
returns vector
language plpython3u
volatile
strict
security definer
set search_path = pg_catalog, pgseek, pg_temp
as $$
import sys
if "/usr/local/lib/pgseek/python" not in sys.path:
    sys.path.insert(0, "/usr/local/lib/pgseek/python")
from pgseek import database
if database.is_blank(query):
    plpy.error("query must not be empty", sqlstate="22023")
return database.query_embeddings(plpy, GD, [query])[0]
$$;

-- Returns the embeddings of several query texts, in order (NULL elements give NULL).
create or replace function pgseek.embed(queries text[])
returns vector[]
language plpython3u
volatile
strict
security definer
set search_path = pg_catalog, pgseek, pg_temp
as $$
import sys
if "/usr/local/lib/pgseek/python" not in sys.path:
    sys.path.insert(0, "/usr/local/lib/pgseek/python")
from pgseek import database
if any(isinstance(q, list) for q in queries):
    plpy.error("queries must be a one-dimensional array", sqlstate="22023")
if any(q is not None and database.is_blank(q) for q in queries):
    plpy.error("queries must not contain empty texts", sqlstate="22023")
return database.query_embeddings(plpy, GD, queries)
$$;

-- Returns the embeddings of document texts for storage in a target column
-- ('embedding' or 'embedding_next'), bypassing the query cache. Used by sync mode.
create or replace function pgseek.compute_embeddings(
    texts text[], target text default 'embedding'
)
returns vector[]
language plpython3u
volatile
strict
security definer
set search_path = pg_catalog, pgseek, pg_temp
as $$
import sys
if "/usr/local/lib/pgseek/python" not in sys.path:
    sys.path.insert(0, "/usr/local/lib/pgseek/python")
from pgseek import database
if target not in database.TARGETS:
    plpy.error(f"target must be 'embedding' or 'embedding_next', not {target!r}", sqlstate="22023")
return database.embed_texts(plpy, GD, texts, target)
$$;

-- Embeds up to max_rows ready queue entries (FOR UPDATE SKIP LOCKED: concurrent
-- workers never take the same entry) and returns how many documents it embedded.
-- Failures are retried with exponential backoff, then dead-lettered with the reason.
create or replace function pgseek.process_embedding_queue(max_rows integer default 64)
returns integer
language plpython3u
volatile
security definer
set search_path = pg_catalog, pgseek, pg_temp
as $$
import sys
if "/usr/local/lib/pgseek/python" not in sys.path:
    sys.path.insert(0, "/usr/local/lib/pgseek/python")
from pgseek import database
return database.process_queue(plpy, GD, max_rows)
$$;

-- The worker pg_cron runs: drains the queue batch by batch, committing each, and
-- polls once a second while it is empty, until max_seconds have passed. Scheduled
-- every minute with pg_cron 1.4 (which has no second schedules), it keeps latency low.
create or replace procedure pgseek.run_embedding_worker(
    max_seconds double precision default 50, batch_size integer default 64
)
language plpgsql
as $$
declare
    deadline timestamptz;
    embedded integer;
begin
    if max_seconds is null or max_seconds < 0 or max_seconds > 3600 then
        raise exception 'max_seconds must be between 0 and 3600, got %', max_seconds
        using errcode = 'invalid_parameter_value';
    end if;
    if (batch_size between 1 and 10000) is not true then
        raise exception 'batch_size must be between 1 and 10000, got %',
        coalesce(batch_size::pg_catalog.text, 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    perform pgseek.require_primary('pgseek.run_embedding_worker()');
    deadline := pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs => max_seconds);
    loop
        embedded := pgseek.process_embedding_queue(batch_size);
        commit;
        exit when pg_catalog.clock_timestamp() >= deadline;
        if embedded = 0 then
            perform pg_catalog.pg_sleep(least(1.0, pg_catalog.date_part(
                'epoch', deadline - pg_catalog.clock_timestamp()
            )));
        end if;
    end loop;
end
$$;

-- Stores the API key of a remote provider ('openai') for the server base_url (NULL: the
-- provider's default, https://api.openai.com/v1). pgseek sends the key to that server
-- only: a configuration naming another base_url gets no key (whoever may change the
-- configuration cannot send the key elsewhere). Callers cannot read it back.
-- SECURITY DEFINER: provider_secrets has no grant at all (pgseek_admin may call this).
create or replace function pgseek.set_api_key(
    provider text, api_key text, base_url text default null
)
returns void
language plpgsql
volatile
security definer
set search_path = pg_catalog, pgseek, pg_temp
as $$
begin
    if provider is distinct from 'openai' then
        raise exception 'provider must be ''openai'', not %', coalesce(quote_literal(provider), 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    if api_key is null or api_key !~ '[^[:space:]]' then
        raise exception 'api_key must not be empty' using errcode = 'invalid_parameter_value';
    end if;
    if base_url !~ '^https?://[^/@[:space:]]+(/[^@[:space:]]*)?$' then
        raise exception 'base_url must be an http(s) URL without credentials, not %',
        quote_literal(base_url)
        using errcode = 'invalid_parameter_value';
    end if;
    insert into pgseek.provider_secrets (provider, api_key, base_url)
    values (set_api_key.provider, set_api_key.api_key, rtrim(set_api_key.base_url, '/'))
    on conflict on constraint provider_secrets_pkey
    do update set api_key = excluded.api_key, base_url = excluded.base_url, updated_at = now();
end
$$;

-- Returns the chunks of a long text: overlapping pieces of about chunk_tokens
-- WordPiece tokens that end at paragraph or sentence boundaries where possible.
create or replace function pgseek.chunk_text(
    content text, chunk_tokens integer default 254, overlap_tokens integer default 32
)
returns table (chunk_index integer, chunk text, start_char integer, end_char integer)
language plpython3u
stable
strict
as $$
import sys
if "/usr/local/lib/pgseek/python" not in sys.path:
    sys.path.insert(0, "/usr/local/lib/pgseek/python")
from pgseek import database
if not 16 <= chunk_tokens <= 8192:
    plpy.error(f"chunk_tokens must be between 16 and 8192, got {chunk_tokens}", sqlstate="22023")
if not 0 <= overlap_tokens <= chunk_tokens // 2:
    plpy.error(
        f"overlap_tokens must be between 0 and chunk_tokens / 2, got {overlap_tokens}",
        sqlstate="22023",
    )
return database.chunk(GD, content, chunk_tokens, overlap_tokens)
$$;

-- Stores a long text as a source split into chunk documents (each embedded through the
-- queue, each carrying the source's metadata) and returns the source's id.
-- Deleting the source (delete from pgseek.sources) deletes its chunks.
create or replace function pgseek.ingest(
    content text,
    metadata jsonb default '{}',
    chunk_tokens integer default 254,
    overlap_tokens integer default 32
)
returns uuid
language plpgsql
volatile
as $$
declare
    source_id uuid;
begin
    if content is null or content !~ '[^[:space:]]' then
        raise exception 'content must not be empty' using errcode = 'invalid_parameter_value';
    end if;
    if metadata is null or jsonb_typeof(metadata) <> 'object' then
        raise exception 'metadata must be a JSON object, not %', coalesce(jsonb_typeof(metadata), 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    -- Checked here too: NULL would otherwise fail the sources insert (23502), not name it.
    if chunk_tokens is null or overlap_tokens is null then
        raise exception 'chunk_tokens and overlap_tokens must not be NULL'
        using errcode = 'invalid_parameter_value';
    end if;
    insert into pgseek.sources (content, metadata, chunk_tokens, overlap_tokens)
    values (ingest.content, ingest.metadata, ingest.chunk_tokens, ingest.overlap_tokens)
    returning id into source_id;
    insert into pgseek.documents (content, metadata, source_id, chunk_index)
    select c.chunk, ingest.metadata, source_id, c.chunk_index
    from pgseek.chunk_text(ingest.content, ingest.chunk_tokens, ingest.overlap_tokens) as c;
    -- Text of separators only (control, zero-width characters) has no chunks: refuse it
    -- rather than store a source that nothing can find.
    if not found then
        raise exception 'content has no words to index (only spaces, control or zero-width characters)'
        using errcode = 'invalid_parameter_value';
    end if;
    return source_id;
end
$$;
