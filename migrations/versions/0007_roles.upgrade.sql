-- pgseek 0007: the roles applications are granted. Three NOLOGIN group roles, each
-- containing the one before: pgseek_reader (search), pgseek_writer (documents and
-- ingest), pgseek_admin (configuration, providers, API keys, retention, jobs, model
-- changes). What each may do is granted by sql/985-grants.sql, which runs after every
-- repeatable object is (re-)created, so re-creating a function never loses its grants.
-- Roles belong to the whole server: a role that already exists (another database on
-- this server installed pgseek, or a DBA created it) is used as it is, unless it could
-- bypass what the grants and row-level security allow.

set local search_path = pg_catalog, pg_temp;

do $$
declare
    role_name text;
    existing record;
begin
    foreach role_name in array array['pgseek_reader', 'pgseek_writer', 'pgseek_admin'] loop
        select r.rolsuper, r.rolbypassrls, r.rolcanlogin into existing
        from pg_catalog.pg_roles as r
        where r.rolname = role_name;
        if not found then
            begin
                execute format('create role %I nologin', role_name);
            exception when insufficient_privilege then
                raise exception 'cannot create role %: % (% needs CREATEROLE)',
                role_name, sqlerrm, current_user
                using errcode = 'insufficient_privilege',
                hint = 'Have a DBA run once per server: create role pgseek_reader nologin; '
                || 'create role pgseek_writer nologin; create role pgseek_admin nologin; '
                || 'then migrate again.';
            end;
        elsif existing.rolsuper or existing.rolbypassrls then
            raise exception 'role % exists with SUPERUSER or BYPASSRLS', role_name
            using errcode = 'object_not_in_prerequisite_state',
            hint = 'pgseek''s roles must be ordinary group roles: privileges and row-level '
            || 'security would not apply to its members. Rename or alter the existing role.';
        elsif existing.rolcanlogin then
            raise warning 'role % can log in: pgseek expects a NOLOGIN group role', role_name;
        end if;
    end loop;
end
$$;

-- Writers can do everything readers can, admins everything writers can.
grant pgseek_reader to pgseek_writer;
grant pgseek_writer to pgseek_admin;

-- A schema is private to its owner until granted; say so explicitly all the same.
revoke all on schema pgseek from public;
