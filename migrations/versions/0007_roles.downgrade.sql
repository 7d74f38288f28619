-- Reverts 0007 in this database: takes every privilege sql/985-grants.sql gave the
-- roles here (the repeatable objects, functions included, are already gone when a
-- downgrade runs). The roles themselves belong to the whole server, so they are
-- dropped only when nothing else uses them: no privilege or object in another database
-- (another pgseek install on this server), and no member but each other (the logins a
-- DBA granted them). Otherwise they stay, with a NOTICE saying why; dropping a role
-- would silently take it away from its members.

set local search_path = pg_catalog, pg_temp;

revoke all on all tables in schema pgseek from pgseek_reader, pgseek_writer, pgseek_admin;
revoke all on all sequences in schema pgseek from pgseek_reader, pgseek_writer, pgseek_admin;
revoke all on all routines in schema pgseek from pgseek_reader, pgseek_writer, pgseek_admin;
revoke all on schema pgseek from pgseek_reader, pgseek_writer, pgseek_admin;

do $$
declare
    ours oid [] := array(
        select r.oid from pg_catalog.pg_roles as r
        where r.rolname in ('pgseek_reader', 'pgseek_writer', 'pgseek_admin')
    );
    used_by text;
begin
    select string_agg(distinct coalesce(db.datname, 'the server'), ', ') into used_by
    from pg_catalog.pg_shdepend as s
    left join pg_catalog.pg_database as db on s.dbid = db.oid
    where s.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass
        and s.refobjid = any(ours);
    if used_by is not null then
        raise notice 'roles pgseek_reader, pgseek_writer and pgseek_admin kept: % still uses them',
        used_by;
        return;
    end if;
    select string_agg(distinct m.member::pg_catalog.regrole::text, ', ') into used_by
    from pg_catalog.pg_auth_members as m
    where m.roleid = any(ours) and m.member <> all(ours);
    if used_by is not null then
        raise notice 'roles pgseek_reader, pgseek_writer and pgseek_admin kept: granted to %',
        used_by
        using hint = 'Revoke them from those roles and drop them, when no longer needed.';
        return;
    end if;
    drop role if exists pgseek_admin;
    drop role if exists pgseek_writer;
    drop role if exists pgseek_reader;
end
$$;
