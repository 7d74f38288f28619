-- Tenants (migration 0008): switching row-level security on pgseek's tables on and off.
-- Off (the default), the tenant column is only a label. On, a session sees and writes
-- only the rows of pgseek.current_tenant(), pgseek_admin every row. Row security is
-- not free: PostgreSQL then cannot use the GIN indexes for a role it applies to (the
-- operators @@ and @> are not leakproof), so metadata filters, and keyword search with
-- one, start from the tenant's rows (index documents_tenant_idx) instead. Keyword
-- search without a filter reads pgseek.text_postings by its primary key (text
-- equality is leakproof), the tenant checked on each index entry.

-- Returns whether row-level security is on for pgseek's tenant tables.
create or replace function pgseek.tenants_enabled()
returns boolean
language sql
stable
as $$
    select c.relrowsecurity from pg_catalog.pg_class as c
    where c.oid = 'pgseek.documents'::pg_catalog.regclass
$$;

-- Returns whose BM25 statistics a search uses: with tenants enabled, those of
-- pgseek.current_tenant() (a tenant must not learn from the statistics which words other
-- tenants' documents contain); otherwise, or without a tenant, those of every document ('').
create or replace function pgseek.stats_tenant()
returns text
language sql
stable
as $$
    select case when pgseek.tenants_enabled() then coalesce(pgseek.current_tenant(), '') else '' end
$$;

-- Switches row-level security on (enabled true) or off for documents, sources and the
-- keyword statistics, then recomputes the statistics (per tenant when on); returns a
-- summary. SECURITY DEFINER: altering a table is its owner's privilege (pgseek_admin
-- may call this); the statements are fixed.
create or replace function pgseek.set_tenants(enabled boolean)
returns text
language plpgsql
volatile
security definer
set search_path = pg_catalog, pgseek, pg_temp
-- A quick metadata change, but on busy tables: fail rather than queue behind a long
-- query (and block every search queued behind this).
set lock_timeout = '5s'
as $$
declare
    tbl text;
    untenanted bigint;
begin
    perform pgseek.check_argument(enabled is not null, 'enabled must be true or false');
    foreach tbl in array array[
        'documents', 'sources', 'text_stats', 'text_stats_summary', 'text_postings'
    ] loop
        execute pg_catalog.format(
            'alter table pgseek.%I %s row level security', tbl,
            case when enabled then 'enable' else 'disable' end
        );
    end loop;
    perform pgseek.refresh_text_stats();
    if not enabled then
        return 'tenants disabled: every role with access sees every row';
    end if;
    select pg_catalog.count(*) into untenanted from pgseek.documents as d where d.tenant is null;
    return pg_catalog.format(
        'tenants enabled: sessions see the rows of pgseek.current_tenant() only%s',
        case when untenanted > 0 then pg_catalog.format(
            '; %s documents have no tenant and are visible to pgseek_admin only', untenanted
        ) else '' end
    );
end
$$;
