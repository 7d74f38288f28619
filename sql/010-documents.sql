-- Integrity and bookkeeping triggers of pgseek.documents. No trigger names columns
-- (update of ...): finish_model_change() renames embedding columns.

-- Trigger function: rejects an embedding whose dimension is not the configured one
-- (embedding_next: the next model's, during a model change), naming both, instead of
-- letting a wrong-model vector into the table.
create or replace function pgseek.documents_check_embedding()
returns trigger
language plpgsql
volatile
as $$
declare
    c pgseek.config;
begin
    if new.embedding is null and new.embedding_next is null then
        return new;
    end if;
    if tg_op = 'UPDATE' and new.embedding is not distinct from old.embedding
        and new.embedding_next is not distinct from old.embedding_next then
        return new;
    end if;
    select * into c from pgseek.config;
    if vector_dims(new.embedding) <> c.embedding_dimensions then
        raise exception 'embedding has % dimensions, but pgseek is configured for %',
        vector_dims(new.embedding), c.embedding_dimensions
        using
            errcode = 'data_exception',
            schema = 'pgseek',
            table = 'documents',
            column = 'embedding',
            hint = 'Embed with the configured model, or change models as README.md '
            || '"Changing models" describes.';
    end if;
    if vector_dims(new.embedding_next) is distinct from c.next_embedding_dimensions
        and new.embedding_next is not null then
        raise exception 'embedding_next has % dimensions, but the next model has %',
        vector_dims(new.embedding_next), coalesce(c.next_embedding_dimensions::text, 'none')
        using
            errcode = 'data_exception',
            schema = 'pgseek',
            table = 'documents',
            column = 'embedding_next';
    end if;
    return new;
end
$$;

create or replace trigger documents_check_embedding
before insert or update on pgseek.documents
for each row execute function pgseek.documents_check_embedding();

-- Trigger function: updated_at follows changes of content and metadata (what users
-- write), not the worker's embedding updates.
create or replace function pgseek.documents_touch_updated_at()
returns trigger
language plpgsql
volatile
as $$
begin
    if new.content is distinct from old.content or new.metadata is distinct from old.metadata then
        new.updated_at := now();
    end if;
    return new;
end
$$;

create or replace trigger documents_touch_updated_at
before update on pgseek.documents
for each row execute function pgseek.documents_touch_updated_at();
