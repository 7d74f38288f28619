-- pgseek 0008: tenants. Documents and sources get a tenant column, filled from the
-- writing session's tenant (pgseek.current_tenant()); row-level security policies make
-- a session see and write only its tenant's rows. The policies take effect once
-- pgseek.enable_tenants() switches row security on: until then nothing changes (row
-- security costs readers the GIN indexes, whose operators are not leakproof, so an
-- install without tenants should not pay for it). BM25's statistics are kept per tenant
-- too: document frequencies over every tenant would tell one tenant which words the
-- others' documents contain.

set local search_path = pg_catalog, pg_temp;
-- Metadata changes only, but each needs a lock on a busy table: fail fast rather than
-- queue behind a long query (and block every search queued behind this).
set local lock_timeout = '5s';
set local statement_timeout = '60s';

-- Which tenant a role belongs to. Roles listed here (or members of them) are pinned to
-- their tenant; other roles name theirs per transaction with
-- set_config('pgseek.tenant', 'acme', true) (a trusted application server).
create table pgseek.tenant_roles (
    role_name text primary key,
    tenant text not null,
    created_at timestamptz not null default now(),
    constraint tenant_roles_tenant_not_blank check (tenant ~ '[^[:space:]]')
);
comment on table pgseek.tenant_roles is
'Roles pinned to a tenant: their sessions see only its rows, whatever pgseek.tenant says.';

-- Returns the tenant of the current role: the one pgseek.tenant_roles pins it (or a
-- role it is a member of) to, else the setting pgseek.tenant, else NULL. Raises when the
-- role is pinned to more than one. Row-level security and the tenant columns' defaults
-- use it, so it belongs to the migrations (like content_sha256).
create function pgseek.current_tenant()
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

-- A role sees its own pins only (the table would otherwise list every tenant's name).
alter table pgseek.tenant_roles enable row level security;
create policy tenant_roles_own on pgseek.tenant_roles
using (
    exists (
        select from pg_catalog.pg_roles as r
        where
            r.rolname = tenant_roles.role_name
            and pg_catalog.pg_has_role(current_user, r.oid, 'member')
    )
);
create policy tenant_roles_admin on pgseek.tenant_roles to pgseek_admin
using (true) with check (true);

-- The new columns are NULL in existing rows (no rewrite: the default is STABLE, so
-- PostgreSQL evaluates it once for them, and the migrating session has no tenant).
-- The checks are NOT VALID only to skip a scan that cannot fail: those rows are NULL.
alter table pgseek.documents
-- squawk-ignore adding-field-with-default
add column tenant text default pgseek.current_tenant(),
add constraint documents_tenant_not_blank check (tenant ~ '[^[:space:]]') not valid;
comment on column pgseek.documents.tenant is
'The tenant the row belongs to (pgseek.current_tenant() of the writer); NULL: no tenant.';
alter table pgseek.sources
-- squawk-ignore adding-field-with-default
add column tenant text default pgseek.current_tenant(),
add constraint sources_tenant_not_blank check (tenant ~ '[^[:space:]]') not valid;

-- Statistics per tenant: '' is every document's; with tenants enabled, each tenant
-- also gets its own (pgseek.refresh_text_stats()). Both tables are small (one row per
-- lexeme; one per tenant) and rebuilt by the hourly job anyway: re-keying them in place
-- holds their lock for moments (squawk's index-building advice is for big tables).
alter table pgseek.text_stats
add column tenant text not null default '';
alter table pgseek.text_stats
-- squawk-ignore ban-drop-constraint
drop constraint text_stats_pkey,
-- squawk-ignore constraint-missing-not-valid,adding-serial-primary-key-field
add constraint text_stats_pkey primary key (tenant, term);
alter table pgseek.text_stats_summary
add column tenant text not null default '';
alter table pgseek.text_stats_summary
-- squawk-ignore ban-drop-constraint
drop constraint text_stats_summary_pkey,
-- squawk-ignore constraint-missing-not-valid,adding-serial-primary-key-field
add constraint text_stats_summary_pkey primary key (tenant);

-- The policies. A session sees the rows of its tenant (none without a tenant: it fails
-- closed); pgseek_admin sees and writes every row. The table owner (the migrating role,
-- which pg_cron's jobs and the SECURITY DEFINER functions run as) bypasses them: the
-- embedding worker, the statistics and the purge work across tenants.
create policy documents_tenant on pgseek.documents
using (tenant = (select pgseek.current_tenant()))
with check (tenant = (select pgseek.current_tenant()));
create policy documents_admin on pgseek.documents to pgseek_admin
using (true) with check (true);
create policy sources_tenant on pgseek.sources
using (tenant = (select pgseek.current_tenant()))
with check (tenant = (select pgseek.current_tenant()));
create policy sources_admin on pgseek.sources to pgseek_admin
using (true) with check (true);
create policy text_stats_tenant on pgseek.text_stats
using (tenant = (select pgseek.current_tenant()));
create policy text_stats_admin on pgseek.text_stats to pgseek_admin
using (true) with check (true);
create policy text_stats_summary_tenant on pgseek.text_stats_summary
using (tenant = (select pgseek.current_tenant()));
create policy text_stats_summary_admin on pgseek.text_stats_summary to pgseek_admin
using (true) with check (true);

-- A tenant's keyword search, and its statistics, start from its own rows. (A partial
-- index: empty, and free, where no row has a tenant.)
-- (squawk assumes a transaction: this section runs outside one, see sqlfile.py.)
--! no-transaction
set lock_timeout = '5s';
drop index concurrently if exists pgseek.documents_tenant_idx;
-- squawk-ignore ban-concurrent-index-creation-in-transaction
create index concurrently if not exists documents_tenant_idx on pgseek.documents (tenant)
where tenant is not null;
reset lock_timeout;
