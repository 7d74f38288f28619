-- pgseek 0012: pgseek.current_tenant() looked up the pins of current_user only, so a
-- pinned login could SET ROLE to an unpinned role it belongs to (pgseek_writer, say),
-- name any tenant in pgseek.tenant and read and write that tenant's rows. Pins now
-- apply to session_user (the login) as well as current_user: a pinned login keeps its
-- tenant whatever role it sets. And pg_has_role() is true for a superuser on every
-- role, which pinned superusers (the usual owner) to every tenant once two were pinned:
-- a superuser's own pins are ignored (it bypasses row security anyway).
set local search_path = pg_catalog, pg_temp;
set local lock_timeout = '5s';
set local statement_timeout = '60s';

-- Returns the tenant of the session: the one its login (session_user) or current role
-- is pinned to in pgseek.tenant_roles (directly or through membership; superusers are
-- pinned to none), else the setting pgseek.tenant, else NULL. Raises 42501 when the
-- session is pinned to more than one. Row-level security and the tenant columns'
-- defaults use it, so it belongs to the migrations.
create or replace function pgseek.current_tenant()
returns text
language plpgsql
stable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
    pinned text [];
begin
    pinned := array(
        select distinct t.tenant
        from pgseek.tenant_roles as t
        inner join pg_catalog.pg_roles as r on t.role_name = r.rolname
        cross join lateral (values (current_user), (session_user)) as s (role_name)
        inner join pg_catalog.pg_roles as who on who.rolname = s.role_name
        where not who.rolsuper and pg_catalog.pg_has_role(who.oid, r.oid, 'member')
        order by t.tenant
    );
    if pg_catalog.cardinality(pinned) > 1 then
        raise exception 'role % is pinned to more than one tenant: %',
        case when current_user = session_user then current_user
            else current_user || ' (session ' || session_user || ')' end,
        pg_catalog.array_to_string(pinned, ', ')
        using errcode = 'insufficient_privilege',
        hint = 'A role may belong to one tenant: see pgseek.tenant_roles.';
    end if;
    return coalesce(pinned[1], nullif(pg_catalog.current_setting('pgseek.tenant', true), ''));
end
$$;

-- A role sees its own pins, and its login's: current_tenant() reads them as the caller.
alter policy tenant_roles_own on pgseek.tenant_roles
using (
    exists (
        select from pg_catalog.pg_roles as r
        where
            r.rolname = tenant_roles.role_name
            and (
                pg_catalog.pg_has_role(current_user, r.oid, 'member')
                or pg_catalog.pg_has_role(session_user, r.oid, 'member')
            )
    )
);
