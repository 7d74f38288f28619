-- Reverts 0012: pgseek.current_tenant() as 0008 created it (pins of current_user only).
set local search_path = pg_catalog, pg_temp;
set local lock_timeout = '5s';
set local statement_timeout = '60s';

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
        where pg_catalog.pg_has_role(current_user, r.oid, 'member')
        order by t.tenant
    );
    if pg_catalog.cardinality(pinned) > 1 then
        raise exception 'role % is pinned to more than one tenant: %', current_user,
        pg_catalog.array_to_string(pinned, ', ')
        using errcode = 'insufficient_privilege',
        hint = 'A role may belong to one tenant: see pgseek.tenant_roles.';
    end if;
    return coalesce(pinned[1], nullif(pg_catalog.current_setting('pgseek.tenant', true), ''));
end
$$;

alter policy tenant_roles_own on pgseek.tenant_roles
using (
    exists (
        select from pg_catalog.pg_roles as r
        where
            r.rolname = tenant_roles.role_name
            and pg_catalog.pg_has_role(current_user, r.oid, 'member')
    )
);
