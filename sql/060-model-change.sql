-- Changing models without downtime (for instance 384-d local MiniLM to 1536-d OpenAI):
-- start_model_change() queues every document for the next model, whose vectors go to
-- embedding_next while searches keep using embedding; `make vector-index` then builds
-- the next model's index, and finish_model_change() swaps the columns (metadata only,
-- under a lock held for milliseconds) and drops the old vectors.

-- Checks a provider configuration without embedding anything; raises 22023 naming
-- the bad value (unknown provider, model, option or dimension).
create or replace function pgseek.check_embedding_config(config jsonb)
returns void
language plpython3u
stable
strict
as $$
import json
import sys
if "/usr/local/lib/pgseek/python" not in sys.path:
    sys.path.insert(0, "/usr/local/lib/pgseek/python")
from pgseek.embeddings.errors import EmbeddingConfigError
from pgseek.embeddings.registry import get_provider
value = json.loads(config)
if not isinstance(value, dict):  # get_provider would fail with a bare TypeError (38000)
    kind = {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )
    plpy.error(f"config must be a JSON object, not {kind}", sqlstate="22023")
try:
    get_provider(value)
except EmbeddingConfigError as exc:
    plpy.error(str(exc), sqlstate="22023")
$$;

-- Starts re-embedding every document with another model; returns how many it queued.
create or replace function pgseek.start_model_change(
    provider text, model text, dimensions integer, options jsonb default '{}'
)
returns bigint
language plpgsql
volatile
as $$
declare
    c pgseek.config;
    queued bigint;
begin
    if options is null or jsonb_typeof(options) <> 'object' then
        raise exception 'options must be a JSON object' using errcode = 'invalid_parameter_value';
    end if;
    if options ?| array['provider', 'model', 'dimensions'] then
        raise exception 'options must not set provider, model or dimensions: they are arguments'
        using errcode = 'invalid_parameter_value';
    end if;
    if dimensions is null or dimensions not between 1 and 16000 then
        raise exception 'dimensions must be between 1 and 16000, got %', coalesce(dimensions::text, 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    select * into strict c from pgseek.config for update;
    if c.next_embedding_model is not null then
        raise exception 'a change to model % is already in progress', c.next_embedding_model
        using errcode = 'object_not_in_prerequisite_state',
        hint = 'Finish it with pgseek.finish_model_change() or cancel it with '
        || 'pgseek.cancel_model_change().';
    end if;
    if (c.embedding_provider, c.embedding_model, c.embedding_dimensions, c.embedding_options)
        = (provider, model, dimensions, options) then
        raise exception 'model % is already the current model', model
        using errcode = 'invalid_parameter_value';
    end if;
    perform pgseek.check_embedding_config(
        jsonb_build_object('provider', provider, 'model', model, 'dimensions', dimensions)
        || options
    );
    update pgseek.config set
        next_embedding_provider = provider,
        next_embedding_model = model,
        next_embedding_dimensions = dimensions,
        next_embedding_options = options,
        updated_at = now();
    insert into pgseek.embedding_queue (document_id, target, content_hash)
    select d.id, 'embedding_next', d.content_hash from pgseek.documents as d;
    get diagnostics queued = row_count;
    return queued;
end
$$;

-- Makes the next model the current one once every document has its new vector and its
-- index is built; returns a summary. Fails, changing nothing, while work remains.
-- Writes to documents wait from before the checks to the swap (SHARE lock: searches go
-- on), so a row written meanwhile cannot slip past them. The old model's queue entries
-- and dead letters go with its vectors.
-- SECURITY DEFINER: it renames and drops columns of pgseek.documents, which only the
-- table's owner may (pgseek_admin may call it); and it must see every tenant's rows.
create or replace function pgseek.finish_model_change()
returns text
language plpgsql
volatile
security definer
set search_path = pg_catalog, pgseek, pg_temp
-- The locks are held for moments, but must not queue behind a long query (and block
-- every search queued behind them) for long.
set lock_timeout = '5s'
as $$
declare
    c pgseek.config;
    remaining bigint;
    next_index text;
begin
    select * into strict c from pgseek.config for update;
    if c.next_embedding_model is null then
        raise exception 'no model change is in progress'
        using errcode = 'object_not_in_prerequisite_state';
    end if;
    lock table pgseek.documents in share mode;
    select count(*) into remaining from pgseek.embedding_queue as q
    where q.target = 'embedding_next';
    if remaining > 0 then
        raise exception '% documents are still queued for model %', remaining, c.next_embedding_model
        using errcode = 'object_not_in_prerequisite_state',
        hint = 'Wait for the worker: select next_embedded, documents from pgseek.embedding_status.';
    end if;
    select count(*) into remaining from pgseek.embedding_dead_letter as f
    where f.target = 'embedding_next';
    if remaining > 0 then
        raise exception '% documents failed to embed with model %', remaining, c.next_embedding_model
        using errcode = 'object_not_in_prerequisite_state',
        hint = 'See pgseek.embedding_failures; pgseek.requeue_failed() retries them.';
    end if;
    if exists (select from pgseek.documents as d where d.embedding_next is null) then
        raise exception 'some documents have no embedding from model %', c.next_embedding_model
        using errcode = 'object_not_in_prerequisite_state',
        hint = 'Requeue them: insert into pgseek.embedding_queue (document_id, target, '
        || 'content_hash) select id, ''embedding_next'', content_hash from pgseek.documents '
        || 'where embedding_next is null';
    end if;
    if c.vector_index <> 'none' then
        next_index := format('documents_embedding_next_%s_%s_%s',
            c.next_embedding_dimensions, c.vector_index, c.distance_metric);
        if not exists (
            select from pg_catalog.pg_index as x
            inner join pg_catalog.pg_class as i on x.indexrelid = i.oid
            where i.relname = next_index and x.indisvalid
        ) then
            raise exception 'the next model''s vector index % is not built yet', next_index
            using errcode = 'object_not_in_prerequisite_state',
            hint = 'Run make vector-index (or the statements of pgseek.vector_index_ddl()).';
        end if;
    end if;
    -- Metadata-only changes: the lock lasts milliseconds.
    lock table pgseek.documents in access exclusive mode;
    delete from pgseek.embedding_queue as q where q.target = 'embedding';
    delete from pgseek.embedding_dead_letter as f where f.target = 'embedding';
    alter table pgseek.documents rename column embedding to embedding_retired;
    alter table pgseek.documents rename column embedding_next to embedding;
    alter table pgseek.documents drop column embedding_retired;
    alter table pgseek.documents add column embedding_next vector;
    if next_index is not null then
        execute format('alter index pgseek.%I rename to %I', next_index,
            replace(next_index, 'documents_embedding_next_', 'documents_embedding_'));
    end if;
    update pgseek.config set
        embedding_provider = c.next_embedding_provider,
        embedding_model = c.next_embedding_model,
        embedding_dimensions = c.next_embedding_dimensions,
        embedding_options = c.next_embedding_options,
        next_embedding_provider = null,
        next_embedding_model = null,
        next_embedding_dimensions = null,
        next_embedding_options = null,
        updated_at = now();
    return format('now embedding with %s %s (%s dimensions); the old vectors are dropped',
        c.next_embedding_provider, c.next_embedding_model, c.next_embedding_dimensions);
end
$$;

-- Abandons a model change: forgets its queue entries, failures and vectors.
create or replace function pgseek.cancel_model_change()
returns text
language plpgsql
volatile
as $$
declare
    c pgseek.config;
begin
    select * into strict c from pgseek.config for update;
    if c.next_embedding_model is null then
        raise exception 'no model change is in progress'
        using errcode = 'object_not_in_prerequisite_state';
    end if;
    delete from pgseek.embedding_queue as q where q.target = 'embedding_next';
    delete from pgseek.embedding_dead_letter as f where f.target = 'embedding_next';
    update pgseek.documents as d set embedding_next = null where d.embedding_next is not null;
    update pgseek.config set
        next_embedding_provider = null,
        next_embedding_model = null,
        next_embedding_dimensions = null,
        next_embedding_options = null,
        updated_at = now();
    return format('cancelled the change to %s; run make vector-index to drop its index',
        c.next_embedding_model);
end
$$;
