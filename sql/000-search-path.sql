-- The search_path every file of sql/ is applied with (set for the applying transaction
-- only): pg_catalog first (built-ins cannot be shadowed), then pgseek, then the schema
-- where pgvector is installed (public by default, 'extensions' on some platforms), then
-- pg_temp. What is bound when created (views, SQL-standard function bodies, argument
-- and result types) then cannot depend on the migrating session's own search_path, nor
-- pick up an object someone else created in a schema on it. sql/990-search-path.sql
-- pins the same path on the functions whose bodies are parsed when they run.
do $$
begin
    perform pg_catalog.set_config(
        'search_path',
        pg_catalog.format('pg_catalog, pgseek, %I, pg_temp', (
            select n.nspname
            from pg_catalog.pg_extension as e
            inner join pg_catalog.pg_namespace as n on e.extnamespace operator (pg_catalog.=) n.oid
            where e.extname operator (pg_catalog.=) 'vector'
        )),
        true
    );
end
$$;
