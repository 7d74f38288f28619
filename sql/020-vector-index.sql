-- Vector index management: the index pgseek.config asks for, as DDL to run.

-- Returns pgvector's distance operator for a metric: cosine <=>, l2 <->, inner_product
-- <#> (the metric is checked by the caller).
create or replace function pgseek.distance_operator(metric text)
returns text
language sql
immutable
parallel safe
return case metric when 'cosine' then '<=>' when 'l2' then '<->' else '<#>' end;

-- Returns the name of the vector index that pgseek.config asks for (null for 'none').
-- Managed indexes are named documents_embedding_<dimensions>_<method>_<metric>.
create or replace function pgseek.vector_index_name()
returns text
language sql
stable
as $$
    select case when c.vector_index <> 'none' then
        format('documents_embedding_%s_%s_%s', c.embedding_dimensions, c.vector_index,
            c.distance_metric)
    end
    from pgseek.config as c
$$;

-- Returns the statements that bring the vector indexes in line with pgseek.config, in
-- the order to run them: for each wanted index (the current model's on embedding;
-- during a model change, once re-embedding is complete, the next model's on
-- embedding_next) drop an INVALID copy and create it concurrently; then drop the
-- managed indexes no longer wanted (so searches keep an index while a new one builds).
-- They cannot run inside a function or transaction: `make vector-index` runs them, or
-- a DBA runs them in psql.
create or replace function pgseek.vector_index_ddl()
returns setof text
language plpgsql
stable
as $$
declare
    c pgseek.config;
    wanted record;
    wanted_names text [] := '{}';
    wanted_valid boolean;
    opclass text;
    options text;
    vector_rows bigint;
    stale record;
begin
    select * into strict c from pgseek.config;
    opclass := case c.distance_metric
        when 'cosine' then 'vector_cosine_ops'
        when 'l2' then 'vector_l2_ops'
        else 'vector_ip_ops'
    end;
    for wanted in
        select w.name, w.col, w.dims
        from (
            values
            (pgseek.vector_index_name(), 'embedding', c.embedding_dimensions),
            (
                format('documents_embedding_next_%s_%s_%s', c.next_embedding_dimensions,
                    c.vector_index, c.distance_metric),
                'embedding_next', c.next_embedding_dimensions
            )
        ) as w (name, col, dims)
        where c.vector_index <> 'none' and w.dims is not null
            and (w.col = 'embedding' or not exists (
                select from pgseek.embedding_queue as q where q.target = 'embedding_next'
            ))
    loop
        wanted_names := wanted_names || wanted.name;
        if wanted.dims > 2000 then
            raise exception 'a % index on vector supports at most 2000 dimensions, config asks for %',
            c.vector_index, wanted.dims
            using errcode = 'feature_not_supported',
            hint = 'Use a model with at most 2000 dimensions '
            || '(e.g. text-embedding-3-large with dimensions = 1536).';
        end if;
        wanted_valid := null;
        select x.indisvalid into wanted_valid
        from pg_catalog.pg_index as x
        inner join pg_catalog.pg_class as i on x.indexrelid = i.oid
        where x.indrelid = 'pgseek.documents'::regclass and i.relname = wanted.name;
        continue when wanted_valid;
        if wanted_valid is false then
            return next format('drop index concurrently if exists pgseek.%I', wanted.name);
        end if;
        if c.vector_index = 'hnsw' then
            options := format('m = %s, ef_construction = %s', c.hnsw_m, c.hnsw_ef_construction);
        else
            -- pgvector's guidance: rows / 1000 lists up to 1M rows, sqrt(rows) above.
            execute format(
                'select count(*) from pgseek.documents where vector_dims(%I) = %s',
                wanted.col, wanted.dims
            ) into vector_rows;
            options := format('lists = %s', coalesce(c.ivfflat_lists, case
                when vector_rows <= 1000000 then greatest(vector_rows / 1000, 1)
                else ceil(sqrt(vector_rows))::bigint
            end));
        end if;
        return next format(
            'create index concurrently %I on pgseek.documents using %s '
            '((%I::vector(%s)) %s) with (%s) where vector_dims(%I) = %s',
            wanted.name, c.vector_index, wanted.col, wanted.dims, opclass, options,
            wanted.col, wanted.dims
        );
    end loop;

    for stale in
        select i.relname
        from pg_catalog.pg_index as x
        inner join pg_catalog.pg_class as i on x.indexrelid = i.oid
        where x.indrelid = 'pgseek.documents'::regclass
            and i.relname like 'documents\_embedding\_%'
            and i.relname <> all(wanted_names)
        order by i.relname
    loop
        return next format('drop index concurrently if exists pgseek.%I', stale.relname);
    end loop;
end
$$;

-- (Re)creates pgseek.nearest_indexed(query_embedding, depth): the `depth` documents
-- nearest to a query vector by pgseek.config's metric, through its vector index (id,
-- content, metadata, distance), written for the configured dimensions. A cast to
-- vector(N) and the index's predicate must appear as constants for PostgreSQL to use
-- the index, so a query written once for every configuration is dynamic SQL, parsed
-- and planned on every call; this one is a static statement, whose one plan PL/pgSQL
-- keeps for the session (force_generic_plan: not knowing the LIMIT, PostgreSQL would
-- cost its generic plan for a tenth of the table and plan every call anew). Rewritten
-- whenever the configuration's dimensions or metric change (trigger below); PL/pgSQL,
-- not a SQL-standard body, which would tie the columns it reads (a model change
-- renames and drops them). SECURITY DEFINER: whoever may change pgseek.config
-- (pgseek_admin) may have pgseek's own function follow it, and nothing else: the
-- statement is built from the config's integer and a fixed operator.
create or replace function pgseek.write_nearest_indexed()
returns void
language plpgsql
volatile
security definer
set search_path = pg_catalog, pgseek, pg_temp
as $$
declare
    c pgseek.config;
    vector_schema text;  -- pgvector's
begin
    select * into strict c from pgseek.config;
    select n.nspname into strict vector_schema
    from pg_catalog.pg_extension as e
    inner join pg_catalog.pg_namespace as n on e.extnamespace = n.oid
    where e.extname = 'vector';
    execute format(
        'create or replace function pgseek.nearest_indexed('
        'query_embedding %3$I.vector, depth integer) '
        'returns table (id uuid, content text, metadata jsonb, distance double precision) '
        'language plpgsql stable parallel safe '
        'set search_path = pg_catalog, pgseek, %3$I, pg_temp '
        'set plan_cache_mode = force_generic_plan '
        'as $body$ begin return query '
        'select d.id, d.content, d.metadata, (d.embedding::%3$I.vector(%1$s) '
        'operator(%3$I.%2$s) query_embedding::%3$I.vector(%1$s))::double precision '
        'from pgseek.documents as d where %3$I.vector_dims(d.embedding) = %1$s '
        'order by d.embedding::%3$I.vector(%1$s) operator(%3$I.%2$s) '
        'query_embedding::%3$I.vector(%1$s) limit depth; end $body$',
        c.embedding_dimensions,
        pgseek.distance_operator(c.distance_metric),
        vector_schema
    );
    execute format(
        'comment on function pgseek.nearest_indexed(%I.vector, integer) is %L', vector_schema,
        format('Written by pgseek.write_nearest_indexed() for %s dimensions, %s',
            c.embedding_dimensions, c.distance_metric)
    );
end
$$;

-- Trigger function: keeps pgseek.nearest_indexed() written for the configuration.
-- SECURITY DEFINER: see write_nearest_indexed().
create or replace function pgseek.config_nearest_changed()
returns trigger
language plpgsql
volatile
security definer
set search_path = pg_catalog, pgseek, pg_temp
as $$
begin
    if tg_op = 'UPDATE' and (old.embedding_dimensions, old.distance_metric)
        is not distinct from (new.embedding_dimensions, new.distance_metric) then
        return null;  -- nothing to rewrite (DDL is not free: each is a catalog change)
    end if;
    perform pgseek.write_nearest_indexed();
    return null;
end
$$;

create or replace trigger config_nearest_changed
after insert or update of embedding_dimensions, distance_metric on pgseek.config
for each row execute function pgseek.config_nearest_changed();

select pgseek.write_nearest_indexed();
