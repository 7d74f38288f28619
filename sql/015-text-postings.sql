-- Keyword postings (migration 0010): pgseek.text_postings mirrors every document's
-- tsvector as rows (lexeme, document, tf, length, tenant) that BM25 reads from the
-- table's primary key alone (pgseek.text_candidates). Statement triggers keep it
-- current in the writing transaction; each trigger function is SECURITY DEFINER:
-- writers have no access to the postings, and these functions only copy the rows being
-- written.

-- Trigger function, after INSERT, UPDATE and DELETE on pgseek.documents (statement
-- level, transition tables old_rows / new_rows): removes the postings of the old rows
-- and adds those of the new ones, skipping rows whose tsvector and tenant did not change
-- (an embedding written by the queue's worker touches no posting). A removed posting is
-- looked up through the primary key, (lexeme, document) by (lexeme, document), in a
-- subquery the planner cannot turn into a hash join (OFFSET 0): it cannot see how many
-- lexemes unnest() yields, and would otherwise read the whole table to delete a few
-- rows. Lookups and inserts go in key order (a third faster than in row order: each
-- index page is visited once per run of neighbouring keys). Removing postings is most
-- of what deleting a document costs: about 35 lookups for a passage of 100 words.
-- SECURITY DEFINER: see above.
create or replace function pgseek.documents_postings_changed()
returns trigger
language plpgsql
volatile
security definer
set search_path = pg_catalog, pgseek, pg_temp
as $$
begin
    -- Each statement names only the transition tables its trigger has: plpgsql parses
    -- a statement whole, whichever branch it is in.
    if tg_op = 'INSERT' then
        insert into pgseek.text_postings (term, document_id, tf, doc_length, tenant)
        select t.lexeme, n.id, coalesce(array_length(t.positions, 1), 1), length(n.fts), n.tenant
        from new_rows as n, unnest(n.fts) as t
        order by 1, 2;
    elsif tg_op = 'DELETE' then
        delete from pgseek.text_postings as p
        using (
            select x.posting
            from (
                select o.id, t.term
                from old_rows as o, unnest(tsvector_to_array(o.fts)) as t (term)
                order by t.term, o.id
                offset 0
            ) as o
            cross join lateral (
                select q.ctid as posting from pgseek.text_postings as q
                where q.term = o.term and q.document_id = o.id
                offset 0
            ) as x
        ) as gone
        where p.ctid = gone.posting;
    else
        -- the rows whose text or tenant changed (or whose id did): old side, new side
        delete from pgseek.text_postings as p
        using (
            select x.posting
            from (
                select o.id, t.term
                from old_rows as o, unnest(tsvector_to_array(o.fts)) as t (term)
                where not exists (
                    select from new_rows as n
                    where n.id = o.id and n.fts = o.fts and n.tenant is not distinct from o.tenant
                )
                order by t.term, o.id
                offset 0
            ) as o
            cross join lateral (
                select q.ctid as posting from pgseek.text_postings as q
                where q.term = o.term and q.document_id = o.id
                offset 0
            ) as x
        ) as gone
        where p.ctid = gone.posting;
        insert into pgseek.text_postings (term, document_id, tf, doc_length, tenant)
        select t.lexeme, n.id, coalesce(array_length(t.positions, 1), 1), length(n.fts), n.tenant
        from new_rows as n, unnest(n.fts) as t
        where not exists (
            select from old_rows as o
            where o.id = n.id and o.fts = n.fts and o.tenant is not distinct from n.tenant
        )
        order by 1, 2;
    end if;
    return null;
end
$$;

create or replace trigger documents_postings_inserted
after insert on pgseek.documents
referencing new table as new_rows
for each statement execute function pgseek.documents_postings_changed();

create or replace trigger documents_postings_updated
after update on pgseek.documents
referencing old table as old_rows new table as new_rows
for each statement execute function pgseek.documents_postings_changed();

create or replace trigger documents_postings_deleted
after delete on pgseek.documents
referencing old table as old_rows
for each statement execute function pgseek.documents_postings_changed();

-- Trigger function, after TRUNCATE of pgseek.documents: empties the postings.
-- SECURITY DEFINER: see above.
create or replace function pgseek.documents_postings_truncated()
returns trigger
language plpgsql
volatile
security definer
set search_path = pg_catalog, pgseek, pg_temp
as $$
begin
    truncate pgseek.text_postings;
    return null;
end
$$;

create or replace trigger documents_postings_truncated
after truncate on pgseek.documents
for each statement execute function pgseek.documents_postings_truncated();

-- Rebuilds pgseek.text_postings from the documents and returns the number of postings.
-- Writes to the documents, and keyword searches, wait until it commits (about 10 s per
-- 100K passages). Needed only if the postings were bypassed (triggers disabled, e.g. a data-only
-- restore with --disable-triggers). SECURITY DEFINER: pgseek_admin may call it; the
-- statements are fixed.
create or replace function pgseek.rebuild_text_postings()
returns bigint
language plpgsql
volatile
security definer
set search_path = pg_catalog, pgseek, pg_temp
set lock_timeout = '5s'
as $$
declare
    postings bigint;
begin
    lock table pgseek.documents in share mode;
    truncate pgseek.text_postings;  -- no dead rows left behind, unlike a delete
    insert into pgseek.text_postings (term, document_id, tf, doc_length, tenant)
    select t.lexeme, d.id, coalesce(array_length(t.positions, 1), 1), length(d.fts), d.tenant
    from pgseek.documents as d, unnest(d.fts) as t
    order by 1, 2;  -- appended in key order, the primary key comes out compact
    get diagnostics postings = row_count;
    return postings;
end
$$;

-- Fill the postings once, in the transaction that installed the triggers above (their
-- creation locks out writers until it commits, so no document is missed): after
-- migration 0010, or any time they are empty while documents exist.
do $$
begin
    if not exists (select from pgseek.text_postings) and exists (select from pgseek.documents) then
        raise notice 'pgseek: filled the keyword postings: % rows', pgseek.rebuild_text_postings();
    end if;
end
$$;
