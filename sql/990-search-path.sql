-- Pins search_path on every pgseek function whose body is parsed when it runs, so none
-- depends on the caller's:
-- pg_catalog first (built-ins cannot be shadowed), then pgseek, then the schema where
-- pgvector is installed (public by default, 'extensions' on some platforms).
-- Runs last, so it covers every function the files before it created. Procedures are
-- left alone: a procedure with a SET clause cannot commit, so their bodies qualify
-- every name instead.
-- pgvector's schema is on every path, after pgseek: whoever may create objects there
-- could give pgseek's functions an operator or function of their own that matches
-- better than pgvector's, so a WARNING says so when PUBLIC may (PostgreSQL 14 and
-- older let PUBLIC create in schema public).
do $$
declare
    caller_path text := pg_catalog.current_setting('search_path');
    vector_schema text;
    fn regprocedure;
begin
    -- Built-ins only, whatever the migrating session's path; restored at the end.
    perform pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    vector_schema := (
        select n.nspname
        from pg_catalog.pg_extension as e
        inner join pg_catalog.pg_namespace as n on e.extnamespace = n.oid
        where e.extname = 'vector'
    );
    if pg_catalog.has_schema_privilege('public', vector_schema, 'create') then
        raise warning 'pgseek: any role may create objects in schema %, which pgseek searches',
        vector_schema
        using hint = pg_catalog.format('Run: revoke create on schema %I from public', vector_schema);
    end if;
    for fn in
        select p.oid::regprocedure
        from pg_catalog.pg_proc as p
        where p.pronamespace = 'pgseek'::regnamespace and p.prokind = 'f'
            -- SQL-standard bodies (RETURN / BEGIN ATOMIC) are parsed when created, so
            -- no caller's path can change what they call; unpinned, PostgreSQL can
            -- inline them into the calling query (a SET clause prevents inlining and
            -- costs a configuration save and restore on every call, per row)
            and p.prosqlbody is null
            -- created by this apply, or used by columns or indexes (a migration's):
            -- anything else is a stale overload that the migrate command then drops
            and (
                p.xmin = pg_current_xact_id()::xid
                or exists (
                    select from pg_catalog.pg_depend as d
                    where d.refclassid = 'pg_proc'::regclass and d.refobjid = p.oid
                        and d.classid in ('pg_class'::regclass, 'pg_attrdef'::regclass)
                )
            )
    loop
        execute format(
            'alter routine %s set search_path = pg_catalog, pgseek, %I, pg_temp',
            fn, vector_schema
        );
    end loop;
    -- and unpins SQL-standard bodies that an earlier pgseek version pinned
    for fn in
        select p.oid::regprocedure
        from pg_catalog.pg_proc as p
        where p.pronamespace = 'pgseek'::regnamespace and p.prokind = 'f'
            and p.prosqlbody is not null
            and exists (select from unnest(p.proconfig) as c (setting)
                where c.setting like 'search\_path=%')
    loop
        execute format('alter routine %s reset search_path', fn);
    end loop;
    perform pg_catalog.set_config('search_path', caller_path, true);
end
$$;
