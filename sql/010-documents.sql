-- Integrity and bookkeeping triggers of pgseek.documents.

-- Trigger function: rejects an embedding whose dimension is not the configured one,
-- naming both, instead of letting a wrong-model vector into the table.
create or replace function pgseek.documents_check_embedding()
returns trigger
language plpgsql
volatile
as $$
declare
    expected integer;
begin
    if new.embedding is not null then
        select c.embedding_dimensions into expected from pgseek.config as c;
        if vector_dims(new.embedding) <> expected then
            raise exception 'embedding has % dimensions, but pgseek is configured for %',
            vector_dims(new.embedding), expected
            using
                errcode = 'data_exception',
                schema = 'pgseek',
                table = 'documents',
                column = 'embedding',
                hint = 'Embed with the configured model, or change models as README.md '
                || '"Changing models" describes.';
        end if;
    end if;
    return new;
end
$$;

create or replace trigger documents_check_embedding
before insert or update of embedding on pgseek.documents
for each row execute function pgseek.documents_check_embedding();

-- Trigger function: keeps updated_at current on every update.
create or replace function pgseek.documents_touch_updated_at()
returns trigger
language plpgsql
volatile
as $$
begin
    new.updated_at := now();
    return new;
end
$$;

create or replace trigger documents_touch_updated_at
before update on pgseek.documents
for each row execute function pgseek.documents_touch_updated_at();
