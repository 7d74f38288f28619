-- Pins search_path on every pgseek function, so none depends on the caller's:
-- pg_catalog first (built-ins cannot be shadowed), then pgseek, then the schema where
-- pgvector is installed (public by default, 'extensions' on some platforms).
-- Runs last, so it covers every function the files before it created. Procedures are
-- left alone: a procedure with a SET clause cannot commit, so their bodies qualify
-- every name instead.
do $$
declare
    vector_schema text := (
        select n.nspname
        from pg_catalog.pg_extension as e
        inner join pg_catalog.pg_namespace as n on e.extnamespace = n.oid
        where e.extname = 'vector'
    );
    fn regprocedure;
begin
    for fn in
        select p.oid::regprocedure
        from pg_catalog.pg_proc as p
        where p.pronamespace = 'pgseek'::regnamespace and p.prokind = 'f'
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
end
$$;
