-- How rows reach the embedding queue. Writers only insert queue entries, so they never
-- wait for a worker; the worker writes a vector only if the text is still the one it
-- embedded (content_hash), so a concurrent edit is never overwritten by a stale vector.

-- Trigger function (sync mode only): embeds inserted or re-worded rows in the writing
-- transaction. When the provider fails, the row is written without the vector and the
-- queue picks it up (a WARNING says so): sync mode never loses a write.
create or replace function pgseek.documents_embed_sync()
returns trigger
language plpgsql
volatile
as $$
begin
    if (select c.embedding_mode from pgseek.config as c) <> 'sync' then
        return new;
    end if;
    if tg_op = 'INSERT' and new.embedding is not null then
        return new;
    end if;
    -- (the after-update trigger queues the same rows: see documents_queue_updated)
    if tg_op = 'UPDATE' and not (
        (new.content is distinct from old.content and new.embedding is not distinct from old.embedding)
        or (new.embedding is null and old.embedding is not null)
    ) then
        return new;
    end if;
    begin
        new.embedding := (pgseek.compute_embeddings(array[new.content], 'embedding'))[1];
    exception when others then
        raise warning 'pgseek: sync embedding failed, the row is queued instead: %', sqlerrm;
    end;
    return new;
end
$$;

create or replace trigger documents_embed_sync
before insert or update on pgseek.documents
for each row execute function pgseek.documents_embed_sync();

-- Trigger function: queues inserted rows that have no embedding (a client that
-- inserts its own vectors skips the queue), and, during a model change, every
-- inserted row for the next model. SECURITY DEFINER, like the next one: writers get
-- no access to the queue and dead-letter tables, whose content hashes and errors
-- concern every tenant's documents; these two only act on the rows being written.
create or replace function pgseek.documents_queue_inserted()
returns trigger
language plpgsql
volatile
security definer
set search_path = pg_catalog, pgseek, pg_temp
as $$
declare
    c pgseek.config;
begin
    select * into c from pgseek.config;
    if c.embedding_mode = 'off' then
        return null;
    end if;
    insert into pgseek.embedding_queue (document_id, target, content_hash)
    select i.id, 'embedding', i.content_hash from inserted as i where i.embedding is null;
    if c.next_embedding_model is not null then
        insert into pgseek.embedding_queue (document_id, target, content_hash)
        select i.id, 'embedding_next', i.content_hash
        from inserted as i where i.embedding_next is null;
    end if;
    return null;
end
$$;

create or replace trigger documents_queue_inserted
after insert on pgseek.documents
referencing new table as inserted
for each statement execute function pgseek.documents_queue_inserted();

-- Trigger function: queues rows whose text changed (content_hash differs) or whose
-- vector was set to NULL; updates of metadata alone, or of a vector the client supplies
-- with its text, queue nothing.
-- Dead letters for the old text are obsolete and removed. SECURITY DEFINER: see above.
create or replace function pgseek.documents_queue_updated()
returns trigger
language plpgsql
volatile
security definer
set search_path = pg_catalog, pgseek, pg_temp
as $$
declare
    c pgseek.config;
begin
    select * into c from pgseek.config;
    delete from pgseek.embedding_dead_letter as f
    using new_rows as n, old_rows as o
    where f.document_id = n.id and n.id = o.id and n.content_hash <> o.content_hash;
    if c.embedding_mode = 'off' then
        return null;
    end if;
    insert into pgseek.embedding_queue (document_id, target, content_hash)
    select n.id, 'embedding', n.content_hash
    from new_rows as n inner join old_rows as o on n.id = o.id
    where
        -- re-worded, and no vector of the caller's in the same update
        (n.content_hash <> o.content_hash and n.embedding is not distinct from o.embedding)
        -- or the vector cleared (a row is always embedded, queued or dead-lettered)
        or (n.embedding is null and o.embedding is not null);
    if c.next_embedding_model is not null then
        insert into pgseek.embedding_queue (document_id, target, content_hash)
        select n.id, 'embedding_next', n.content_hash
        from new_rows as n inner join old_rows as o on n.id = o.id
        where n.content_hash <> o.content_hash
            and n.embedding_next is not distinct from o.embedding_next;
    end if;
    return null;
end
$$;

create or replace trigger documents_queue_updated
after update on pgseek.documents
referencing old table as old_rows new table as new_rows
for each statement execute function pgseek.documents_queue_updated();

-- Moves dead-lettered documents back to the queue (all of them when document_ids is
-- NULL) and returns how many entries it requeued.
create or replace function pgseek.requeue_failed(document_ids uuid[] default null)
returns integer
language sql
volatile
as $$
    with moved as (
        delete from pgseek.embedding_dead_letter as f
        where document_ids is null or f.document_id = any(document_ids)
        returning f.document_id, f.target
    ),
    queued as (
        insert into pgseek.embedding_queue (document_id, target, content_hash)
        select m.document_id, m.target, d.content_hash
        from moved as m inner join pgseek.documents as d on m.document_id = d.id
        returning 1
    )
    select count(*)::integer from queued
$$;

-- Trigger function: when embedding_mode leaves 'off', queues the documents written
-- meanwhile without a vector (for the next model too, during a model change), so that
-- every document is again embedded, queued or dead-lettered. Runs as the role that
-- changes the configuration (pgseek_admin may queue; it sees every tenant's rows).
create or replace function pgseek.config_mode_changed()
returns trigger
language plpgsql
volatile
as $$
begin
    insert into pgseek.embedding_queue (document_id, target, content_hash)
    select d.id, t.target, d.content_hash
    from pgseek.documents as d
    cross join lateral (
        values ('embedding', d.embedding is null),
            ('embedding_next', new.next_embedding_model is not null and d.embedding_next is null)
    ) as t (target, missing)
    where
        t.missing
        and not exists (
            select from pgseek.embedding_queue as q
            where q.document_id = d.id and q.target = t.target
        )
        and not exists (
            select from pgseek.embedding_dead_letter as f
            where f.document_id = d.id and f.target = t.target
        );
    return null;
end
$$;

create or replace trigger config_mode_changed
after update of embedding_mode on pgseek.config
for each row
when (old.embedding_mode = 'off' and new.embedding_mode <> 'off')
execute function pgseek.config_mode_changed();
