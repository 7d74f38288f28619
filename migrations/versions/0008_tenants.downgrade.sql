-- Reverts 0008. Tenant assignments are lost; documents of every tenant stay.
-- A downgrade removes what its upgrade added, by definition:
-- squawk-ignore-file ban-drop-column,ban-drop-constraint,ban-drop-table,ban-drop-function
set local search_path = pg_catalog, pg_temp;
set local lock_timeout = '5s';
set local statement_timeout = '60s';

drop policy documents_tenant on pgseek.documents;
drop policy documents_admin on pgseek.documents;
drop policy sources_tenant on pgseek.sources;
drop policy sources_admin on pgseek.sources;
drop policy text_stats_tenant on pgseek.text_stats;
drop policy text_stats_admin on pgseek.text_stats;
drop policy text_stats_summary_tenant on pgseek.text_stats_summary;
drop policy text_stats_summary_admin on pgseek.text_stats_summary;
alter table pgseek.documents disable row level security;
alter table pgseek.sources disable row level security;
alter table pgseek.text_stats disable row level security;
alter table pgseek.text_stats_summary disable row level security;

-- The statistics of every document stay (tenant ''), one summary row as before.
delete from pgseek.text_stats
where tenant <> '';
delete from pgseek.text_stats_summary
where tenant <> '';
alter table pgseek.text_stats
drop constraint text_stats_pkey,
drop column tenant,
-- squawk-ignore constraint-missing-not-valid,adding-serial-primary-key-field
add constraint text_stats_pkey primary key (term);
alter table pgseek.text_stats_summary
drop constraint text_stats_summary_pkey,
drop column tenant,
-- squawk-ignore constraint-missing-not-valid,adding-serial-primary-key-field
add constraint text_stats_summary_pkey primary key (singleton);

alter table pgseek.sources
drop column tenant;
alter table pgseek.documents
drop column tenant;
drop table pgseek.tenant_roles;
drop function pgseek.current_tenant();
